"""Desensitization (脱敏) of product answers: one engine for every product.

A field's grade (1-5, from the dataset spec) and the caller's contract clearance
decide what is shown: grade 5 never leaves the zone; a grade at or below the
clearance is shown in clear; a higher grade is masked by the field's method, and a
field with no method (or no rule at all) is withheld. The module is pure: no
database, no I/O, so products, the gateway and tests share it as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from datazone.dataset.schemas import Masking

CLEAR = "clear"
WITHHELD = "withheld"
NEVER_RELEASED_GRADE = 5  # grade 5 data never leaves the zone, whatever the contract says
MASK = "*"


@dataclass(frozen=True)
class FieldRule:
    """How one answer field is treated: its grade and its masking method."""

    name: str
    grade: int
    method: Masking = Masking.none

    def __post_init__(self) -> None:
        if not 1 <= self.grade <= NEVER_RELEASED_GRADE:
            raise ValueError(f"field {self.name!r}: grade must be 1..5, not {self.grade}")


@dataclass(frozen=True)
class MaskedAnswer:
    values: dict[str, Any]
    # field -> "clear", the masking method's name, or "withheld"
    applied: dict[str, str] = field(default_factory=dict)

    @property
    def withheld(self) -> list[str]:
        return [name for name, how in self.applied.items() if how == WITHHELD]


def treatment(rule: FieldRule | None, *, clearance: int) -> str:
    """How a field is shown at `clearance`: clear, withheld, or its masking method's name.
    It depends on the rule alone, never on the value, so it can be published ahead of answers."""
    if not 1 <= clearance <= NEVER_RELEASED_GRADE - 1:
        raise ValueError(f"clearance must be 1..4, not {clearance}")
    if rule is None or rule.grade >= NEVER_RELEASED_GRADE or (rule.grade > clearance and rule.method is Masking.none):
        return WITHHELD
    return CLEAR if rule.grade <= clearance else rule.method.value


def treatments(rules: Sequence[FieldRule], *, clearance: int) -> dict[str, str]:
    """Each rule's field and how it is shown at `clearance`."""
    return {rule.name: treatment(rule, clearance=clearance) for rule in rules}


def mask_answer(answer: Mapping[str, Any], rules: Sequence[FieldRule], *, clearance: int) -> MaskedAnswer:
    """Apply the rules to one answer. Fields without a rule are withheld (fail closed)."""
    if not 1 <= clearance <= NEVER_RELEASED_GRADE - 1:
        raise ValueError(f"clearance must be 1..4, not {clearance}")
    by_name = {r.name: r for r in rules}
    values: dict[str, Any] = {}
    applied: dict[str, str] = {}
    for name, value in answer.items():
        rule = by_name.get(name)
        how = applied[name] = treatment(rule, clearance=clearance)
        if how == WITHHELD:
            values[name] = None
        elif how == CLEAR:
            values[name] = value
        else:
            assert rule is not None
            values[name] = mask_value(value, rule.method)
    return MaskedAnswer(values=values, applied=applied)


def mask_value(value: Any, method: Masking) -> Any:
    """Mask one value leaf by leaf (lists and dicts keep their shape, keys are not masked)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: mask_value(v, method) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, method) for v in value]
    if method is Masking.redact or method is Masking.none:
        return None
    if method is Masking.amount_band:
        return amount_band(value)
    text_method = _TEXT_METHODS[method]
    if isinstance(value, str):
        return text_method(value)
    if isinstance(value, int) and not isinstance(value, bool):
        # a phone or ID number stored as an integer is still that number
        return text_method(str(value))
    return None  # a leaf of an unexpected type: fail closed


# ---- person names -------------------------------------------------------------------

# common two-character compound surnames (复姓): kept whole, like a one-character surname
COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "司空",
        "夏侯",
        "轩辕",
        "令狐",
        "钟离",
        "闾丘",
        "澹台",
        "公冶",
        "太史",
        "申屠",
        "端木",
        "西门",
        "南宫",
        "百里",
        "呼延",
        "独孤",
        "万俟",
        "闻人",
        "赫连",
        "拓跋",
        "濮阳",
        "淳于",
        "单于",
        "第五",
        "东郭",
        "公羊",
        "左丘",
        "梁丘",
        "谷梁",
        "宗政",
        "颛孙",
        "仲孙",
        "巫马",
        "公西",
        "漆雕",
        "乐正",
        "壤驷",
        "公良",
        "亓官",
        "司寇",
        "羊舌",
        "微生",
        "东门",
        "子车",
        "南门",
        "呼韩",
    ]
)
_CJK = re.compile(r"[\u3400-\u9fff]")
_NAME_SEPARATORS = "·• -'."


def person_name(name: str) -> str:
    """张三 -> 张*, 欧阳娜娜 -> 欧阳**, John Smith -> J*** *****; separators are kept."""
    name = name.strip()
    if not name:
        return name
    # a Chinese name keeps its surname (two characters for a compound one); any other its first letter
    compound = _CJK.match(name) is not None and name[:2] in COMPOUND_SURNAMES and len(name) > 2
    keep = 2 if compound else 1
    if len(name) <= keep:
        return MASK * len(name)  # nothing but a surname: showing it would show the whole name
    return name[:keep] + "".join(c if c in _NAME_SEPARATORS else MASK for c in name[keep:])


# ---- identity document numbers -------------------------------------------------------


def id_number(number: str) -> str:
    """18-digit resident ID: first 6 (region) and last 4 kept; other lengths keep a quarter at each end."""
    number = number.strip().upper()
    n = len(number)
    if n == 18:
        return number[:6] + MASK * 8 + number[-4:]
    keep = n // 4
    if keep == 0:
        return MASK * n
    return number[:keep] + MASK * (n - 2 * keep) + number[-keep:]


# ---- phone numbers -------------------------------------------------------------------

_GROUPS = re.compile(r"\d+")


def phone(number: str) -> str:
    """Mobile: 138****5678; landline: area code and the last 2 digits kept (010-******78)."""
    text = number.strip()
    digits = "".join(_GROUPS.findall(text))
    if not digits:
        return MASK * len(text)
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]  # country code
    if len(digits) == 11 and digits[0] == "1":
        return digits[:3] + MASK * 4 + digits[-4:]
    if len(digits) < 5:
        return MASK * len(digits)
    area = ""
    if digits[0] == "0":
        groups = _GROUPS.findall(text)
        if len(groups) > 1 and groups[0].startswith("0") and 3 <= len(groups[0]) <= 4:
            area = groups[0]  # written with a separator: 010-12345678, (0755) 1234567
        elif digits[1] in "12":
            area = digits[:3]  # 010 Beijing, 02x the big cities
        else:
            area = digits[:4]
    local = digits[len(area) :]
    masked = MASK * max(len(local) - 2, 0) + local[-2:]
    return f"{area}-{masked}" if area else masked


# ---- addresses -----------------------------------------------------------------------

# province (or autonomous region / SAR), then prefecture, then district/county/county-level city;
# the lower levels exclude the characters of street names so a street is never taken for a district
_ADMIN = re.compile(
    r"^(?:[^省市区县]{1,8}?(?:省|自治区|特别行政区))?"
    r"(?:[^省市区县镇乡街路道号村]{1,8}?(?:市|自治州|地区|盟))?"
    r"(?:[^省市区县镇乡街路道号村]{1,8}?(?:区|县|市|旗))?"
)


def address(text: str) -> str:
    """Keep the administrative part up to the district/county, mask the rest: 北京市朝阳区****."""
    text = text.strip()
    if not text:
        return text
    match = _ADMIN.match(text)
    admin = match.group(0) if match else ""
    if len(admin) == len(text):
        return admin
    return admin + MASK * 4


# ---- amounts -------------------------------------------------------------------------

_YUAN = 100  # fen
_WAN = 10_000 * _YUAN
# lower bounds of the bands, in fen: 0, 1万, 10万, 50万, 100万, 500万, 1000万, 5000万, 1亿 yuan
AMOUNT_BANDS_FEN: tuple[int, ...] = tuple(w * _WAN for w in (0, 1, 10, 50, 100, 500, 1000, 5000, 10_000))


def _yuan_label(fen: int) -> str:
    wan = fen // _WAN
    if wan == 0:
        return "0"
    if wan % 10_000 == 0:
        return f"{wan // 10_000}亿"
    return f"{wan}万"


def amount_band(value: Any) -> dict[str, Any] | None:
    """Integer fen -> {"min_fen", "max_fen", "label"}: min <= amount < max, None = open-ended.

    A negative amount is banded by its absolute value and keeps its sign (负10万–50万元:
    min_fen -50万 元 < amount <= max_fen -10万 元). Anything that is not a number gives None.
    """
    if isinstance(value, bool):
        return None
    try:
        amount = Decimal(value) if isinstance(value, int | str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if isinstance(value, str) or not amount.is_finite():
        return None  # text is not an amount; NaN and infinities band nowhere
    magnitude = abs(amount)
    i = max(i for i, lo in enumerate(AMOUNT_BANDS_FEN) if magnitude >= lo)
    lo = AMOUNT_BANDS_FEN[i]
    hi = AMOUNT_BANDS_FEN[i + 1] if i + 1 < len(AMOUNT_BANDS_FEN) else None
    label = f"{_yuan_label(lo)}元以上" if hi is None else f"{_yuan_label(lo)}–{_yuan_label(hi)}元"
    if amount < 0:
        return {"min_fen": -hi if hi is not None else None, "max_fen": -lo, "label": "负" + label}
    return {"min_fen": lo, "max_fen": hi, "label": label}


_TEXT_METHODS: dict[Masking, Callable[[str], str]] = {
    Masking.person_name: person_name,
    Masking.id_number: id_number,
    Masking.phone: phone,
    Masking.address: address,
}

__all__ = [
    "AMOUNT_BANDS_FEN",
    "CLEAR",
    "WITHHELD",
    "FieldRule",
    "MaskedAnswer",
    "address",
    "amount_band",
    "id_number",
    "mask_answer",
    "mask_value",
    "person_name",
    "phone",
]
