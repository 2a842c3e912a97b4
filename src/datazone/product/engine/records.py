"""One enterprise's current records across the product's source datasets, and the unit
conversions every logic shares (yuan and 万元 to fen, month windows, whole years)."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Row = dict[str, Any]

FEN_PER_YUAN = Decimal(100)
FEN_PER_WAN = Decimal(1_000_000)  # 1 万元 = 10,000 yuan = 1,000,000 fen


@dataclass(frozen=True)
class EnterpriseRecords:
    """The rows one enterprise has in each source dataset (current version)."""

    uscc: str
    by_dataset: Mapping[str, list[Row]]

    def rows(self, dataset_id: str) -> list[Row]:
        return self.by_dataset.get(dataset_id, [])

    def first(self, dataset_id: str) -> Row | None:
        rows = self.rows(dataset_id)
        return rows[0] if rows else None


def _decimal(value: Any) -> Decimal:
    # str() first: a float (should one ever reach here) converts by its shortest repr, not its binary value
    return value if isinstance(value, Decimal) else Decimal(str(value))


def yuan_to_fen(value: Any) -> int | None:
    """Departments send yuan with up to two decimals; answers carry integer fen."""
    if value is None:
        return None
    return int((_decimal(value) * FEN_PER_YUAN).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def wan_to_fen(value: Any) -> int | None:
    """Registered capital is declared in 万元 (10,000 yuan)."""
    if value is None:
        return None
    return int((_decimal(value) * FEN_PER_WAN).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (clamped to the month's end)."""
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def within_months(when: date | None, as_of: date, months: int) -> bool:
    """In the window [as_of - months, as_of], both ends included."""
    return when is not None and months_before(as_of, months) <= when <= as_of


def whole_years(start: date, end: date) -> int:
    """Completed years from start to end (an age as people count it)."""
    years = end.year - start.year - ((end.month, end.day) < (start.month, start.day))
    return max(years, 0)


def percent_change(first: Decimal | int, last: Decimal | int) -> float | None:
    """(last - first) / first in percent, one decimal; None when first is 0 (no base to compare)."""
    base = Decimal(first)
    if base == 0:
        return None
    change = (Decimal(last) - base) / base * 100
    return float(change.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def amount_band_label(fen: int) -> str:
    """A coarse band for reason sentences, so free text never carries an exact amount."""
    yuan = fen // 100
    bands = [
        (10_000, "1万元以下"),
        (100_000, "1万至10万元"),
        (1_000_000, "10万至100万元"),
        (10_000_000, "100万至1000万元"),
    ]
    for upper, label in bands:
        if yuan < upper:
            return label
    return "1000万元以上"
