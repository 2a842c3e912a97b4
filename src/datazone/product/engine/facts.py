"""Per-enterprise facts, computed once and shared by the logics.

risk-insight and admission-analysis read the same `FactSheet`, so a bank never sees one
product call an enterprise dishonest-listed and the other not. Windows are part of a
fact's name (`enforcement_cases_24m`), so a rule or a signal can never disagree with
another about what "recent" means.

`FACTS` is the vocabulary admission rules may use: each fact's type, the dataset fields
it needs (so a product file is checked to declare them), and whether its value is a
graded figure that fired-rule output shows as a band rather than exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from datazone.product.engine.records import (
    EnterpriseRecords,
    Row,
    percent_change,
    whole_years,
    within_months,
    yuan_to_fen,
)

REGISTRATION = "mr_registration"
TAX_GRADE = "tax_credit_grade"
TAX_PAYMENT = "tax_payment"
JUDGMENT = "court_judgment"
ENFORCEMENT = "court_enforcement"
DISHONEST = "court_dishonest"
PENALTY = "mr_penalty"
ABNORMAL = "mr_abnormal_operation"
HEADCOUNT = "si_headcount"
UTILITY = "utility_usage"
HOUSING_FUND = "hf_contribution"
CERTIFICATION = "sci_certification"
PATENT = "ip_patent"

JUDGMENT_MONTHS = 24
ENFORCEMENT_MONTHS = 24
PENALTY_MONTHS = 36

FactKind = Literal["bool", "int", "number", "str"]


@dataclass(frozen=True)
class FactDef:
    name: str
    kind: FactKind
    description: str
    needs: dict[str, tuple[str, ...]]
    values: tuple[str, ...] | None = None  # the closed vocabulary of a str fact
    banded: bool = False  # a graded figure: fired-rule output shows its band, not the number


def _fact(
    name: str,
    kind: FactKind,
    description: str,
    needs: dict[str, tuple[str, ...]],
    *,
    values: tuple[str, ...] | None = None,
    banded: bool = False,
) -> tuple[str, FactDef]:
    return name, FactDef(name, kind, description, needs, values, banded)


FACTS: dict[str, FactDef] = dict(
    [
        _fact(
            "status",
            "str",
            "登记状态 registration status",
            {REGISTRATION: ("status",)},
            values=("active", "revoked", "deregistered"),
        ),
        _fact(
            "enterprise_type",
            "str",
            "企业类型 enterprise type",
            {REGISTRATION: ("enterprise_type",)},
            values=(
                "llc_natural_person",
                "llc_corporate_sole",
                "llc_other",
                "joint_stock",
                "sole_proprietorship",
                "partnership",
                "foreign_invested",
                "branch",
                "individual_business",
                "cooperative",
            ),
        ),
        _fact(
            "industry_section",
            "str",
            "国民经济行业门类 GB/T 4754 section letter",
            {REGISTRATION: ("industry_code",)},
            values=tuple("ABCDEFGHIJKLMNOPQRST"),
        ),
        _fact("years_since_founding", "int", "成立年限（整年）", {REGISTRATION: ("founded",)}),
        _fact(
            "tax_grade",
            "str",
            "最近一年纳税信用等级",
            {TAX_GRADE: ("year", "grade")},
            values=("A", "B", "M", "C", "D"),
        ),
        _fact("has_tax_arrears", "bool", "最近一年末有欠税", {TAX_PAYMENT: ("year", "arrears")}),
        _fact("dishonest_listed", "bool", "列入失信被执行人名单", {DISHONEST: ("listed_on", "performance")}),
        _fact(
            "dishonest_unperformed_cases",
            "int",
            "失信被执行案件中全部未履行的件数",
            {DISHONEST: ("listed_on", "performance")},
        ),
        _fact("abnormal_listed", "bool", "当前列入经营异常名录", {ABNORMAL: ("listed_on", "removed_on")}),
        _fact("enforcement_cases_24m", "int", "近24个月被执行案件数", {ENFORCEMENT: ("filed_on",)}),
        _fact(
            "open_defendant_cases_24m",
            "int",
            "近24个月作为被告的未结诉讼数",
            {JUDGMENT: ("filed_on", "role", "closed")},
        ),
        _fact("penalties_36m", "int", "近36个月行政处罚次数", {PENALTY: ("decided_on",)}),
        _fact("has_social_insurance", "bool", "有社保参保记录", {HEADCOUNT: ("period", "insured")}),
        _fact(
            "insured_latest",
            "int",
            "最近一季参保人数",
            {HEADCOUNT: ("period", "insured")},
            banded=True,
        ),
        _fact(
            "headcount_change_pct",
            "number",
            "参保人数区间变化（%，近8季首末）",
            {HEADCOUNT: ("period", "insured")},
        ),
    ]
)


def headcount_band(n: int) -> str:
    """Bands that follow the SME classification's headcount steps."""
    for upper, label in ((10, "10人以下"), (20, "10-19人"), (100, "20-99人"), (300, "100-299人")):
        if n < upper:
            return label
    return "300人及以上" if n < 1000 else "1000人及以上"


def display_value(fact: FactDef, value: Any) -> Any:
    """A fact's value as fired-rule output shows it: graded figures as a band."""
    if value is None or not fact.banded:
        return value
    return headcount_band(int(value))


@dataclass
class FactSheet:
    """Facts and the figures behind them for one enterprise as of a day."""

    records: EnterpriseRecords
    as_of: date
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def value(self, name: str) -> Any:
        if name not in FACTS:
            raise KeyError(name)
        return getattr(self, name)

    def _dated(self, dataset_id: str, column: str) -> list[Row]:
        """Rows dated on or before as_of: later rows are not yet facts on that day."""
        return [
            r for r in self.records.rows(dataset_id) if r.get(column) is not None and r[column] <= self.as_of
        ]

    # ------------------------------------------------------------ registration

    @cached_property
    def registration(self) -> Row | None:
        return self.records.first(REGISTRATION)

    @cached_property
    def status(self) -> str | None:
        return self.registration["status"] if self.registration else None

    @cached_property
    def enterprise_type(self) -> str | None:
        return self.registration.get("enterprise_type") if self.registration else None

    @cached_property
    def industry_section(self) -> str | None:
        code = self.registration.get("industry_code") if self.registration else None
        return code[0] if code else None

    @cached_property
    def years_since_founding(self) -> int | None:
        founded = self.registration.get("founded") if self.registration else None
        return whole_years(founded, self.as_of) if founded else None

    # ------------------------------------------------------------ tax

    @cached_property
    def latest_tax_grade(self) -> Row | None:
        rows = [r for r in self.records.rows(TAX_GRADE) if r["year"] <= self.as_of.year]
        return max(rows, key=lambda r: r["year"]) if rows else None

    @cached_property
    def tax_grade(self) -> str | None:
        return self.latest_tax_grade["grade"] if self.latest_tax_grade else None

    @cached_property
    def tax_grade_year(self) -> int | None:
        return int(self.latest_tax_grade["year"]) if self.latest_tax_grade else None

    @cached_property
    def tax_years(self) -> list[Row]:
        """Tax paid and arrears by year, oldest first."""
        return sorted(
            (r for r in self.records.rows(TAX_PAYMENT) if r["year"] <= self.as_of.year),
            key=lambda r: r["year"],
        )

    @cached_property
    def tax_arrears_year(self) -> int | None:
        return int(self.tax_years[-1]["year"]) if self.tax_years else None

    @cached_property
    def tax_arrears_fen(self) -> int | None:
        """Arrears at the end of the latest reported year."""
        return yuan_to_fen(self.tax_years[-1]["arrears"]) if self.tax_years else None

    @cached_property
    def has_tax_arrears(self) -> bool | None:
        return None if self.tax_arrears_fen is None else self.tax_arrears_fen > 0

    # ------------------------------------------------------------ courts

    @cached_property
    def dishonest_rows(self) -> list[Row]:
        # the court takes a debtor off the list by withdrawing the record: every current row is a live listing
        return self._dated(DISHONEST, "listed_on")

    @cached_property
    def dishonest_listed(self) -> bool:
        return bool(self.dishonest_rows)

    @cached_property
    def dishonest_unperformed_cases(self) -> int:
        return sum(1 for r in self.dishonest_rows if r["performance"] == "unperformed")

    @cached_property
    def enforcement_rows_24m(self) -> list[Row]:
        return [
            r
            for r in self.records.rows(ENFORCEMENT)
            if within_months(r["filed_on"], self.as_of, ENFORCEMENT_MONTHS)
        ]

    @cached_property
    def enforcement_cases_24m(self) -> int:
        return len(self.enforcement_rows_24m)

    @cached_property
    def enforcement_amount_24m_fen(self) -> int:
        return sum(yuan_to_fen(r.get("amount")) or 0 for r in self.enforcement_rows_24m)

    @cached_property
    def defendant_rows_24m(self) -> list[Row]:
        return [
            r
            for r in self.records.rows(JUDGMENT)
            if r["role"] == "defendant" and within_months(r["filed_on"], self.as_of, JUDGMENT_MONTHS)
        ]

    @cached_property
    def defendant_cases_24m(self) -> int:
        return len(self.defendant_rows_24m)

    @cached_property
    def open_defendant_cases_24m(self) -> int:
        return sum(1 for r in self.defendant_rows_24m if not r["closed"])

    # ------------------------------------------------------------ market regulation

    @cached_property
    def penalty_rows_36m(self) -> list[Row]:
        return [
            r
            for r in self.records.rows(PENALTY)
            if within_months(r["decided_on"], self.as_of, PENALTY_MONTHS)
        ]

    @cached_property
    def penalties_36m(self) -> int:
        return len(self.penalty_rows_36m)

    @cached_property
    def penalty_amount_36m_fen(self) -> int:
        return sum(yuan_to_fen(r.get("amount")) or 0 for r in self.penalty_rows_36m)

    @cached_property
    def abnormal_current(self) -> Row | None:
        """The listing in force at as_of (listed, and not removed by then), the latest if several."""
        live = [
            r
            for r in self._dated(ABNORMAL, "listed_on")
            if r.get("removed_on") is None or r["removed_on"] > self.as_of
        ]
        return max(live, key=lambda r: r["listed_on"]) if live else None

    @cached_property
    def abnormal_listed(self) -> bool:
        return self.abnormal_current is not None

    # ------------------------------------------------------------ social security

    @cached_property
    def headcount_series(self) -> list[tuple[date, int]]:
        """(quarter, insured), oldest first, the last 8 quarters on record up to as_of."""
        rows = sorted(self._dated(HEADCOUNT, "period"), key=lambda r: r["period"])[-8:]
        return [(r["period"], int(r["insured"])) for r in rows]

    @cached_property
    def has_social_insurance(self) -> bool:
        return bool(self.headcount_series)

    @cached_property
    def insured_latest(self) -> int | None:
        return self.headcount_series[-1][1] if self.headcount_series else None

    @cached_property
    def headcount_change_pct(self) -> float | None:
        if len(self.headcount_series) < 2:
            return None
        return percent_change(self.headcount_series[0][1], self.headcount_series[-1][1])

    # ------------------------------------------------------------ tax paid, utilities, housing fund, IP
    # (the portrait and the scoring features read the same figures)

    @cached_property
    def tax_paid_years(self) -> list[tuple[int, int]]:
        """(year, tax paid in fen), oldest first, for the years that report it."""
        return [
            (int(r["year"]), yuan_to_fen(r["tax_paid"]) or 0)
            for r in self.tax_years
            if r.get("tax_paid") is not None
        ]

    @cached_property
    def electricity_kwh_12m(self) -> list[Decimal]:
        """Monthly electricity use of the last 12 months on record up to as_of, oldest first."""
        months = sorted(
            (
                r
                for r in self.records.rows(UTILITY)
                if r["period"] <= self.as_of and r.get("electricity_kwh") is not None
            ),
            key=lambda r: r["period"],
        )[-12:]
        return [Decimal(r["electricity_kwh"]) for r in months]

    @cached_property
    def electricity_change_pct(self) -> float | None:
        """The last 3 months against the 3 before, in percent; None without 6 months or a base."""
        kwh = self.electricity_kwh_12m
        if len(kwh) < 6:
            return None
        return percent_change(sum(kwh[-6:-3], Decimal(0)), sum(kwh[-3:], Decimal(0)))

    @cached_property
    def housing_fund_latest(self) -> Row | None:
        rows = [r for r in self.records.rows(HOUSING_FUND) if r["period"] <= self.as_of]
        return max(rows, key=lambda r: r["period"]) if rows else None

    @cached_property
    def certifications_live(self) -> list[Row]:
        """Certifications in force at as_of, by type and issue date."""
        return sorted(
            (r for r in self.records.rows(CERTIFICATION) if r["issued_on"] <= self.as_of <= r["expires_on"]),
            key=lambda r: (r["cert_type"], r["issued_on"]),
        )

    @cached_property
    def ip_latest(self) -> Row | None:
        """The latest IP count on record (each row counts everything held at its as_of)."""
        return max(self.records.rows(PATENT), key=lambda r: r["as_of"], default=None)


def needs_of(names: list[str]) -> dict[str, set[str]]:
    """The dataset fields the named facts read."""
    out: dict[str, set[str]] = {}
    for name in names:
        for ds, fields in FACTS[name].needs.items():
            out.setdefault(ds, set()).update(fields)
    return out


def as_decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
