"""The one masking engine: every method on good and awkward input, and the grade/clearance matrix."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from datazone.dataset.schemas import Masking
from datazone.masking.service import (
    FieldRule,
    address,
    amount_band,
    id_number,
    mask_answer,
    mask_value,
    person_name,
    phone,
)

WAN = 10_000 * 100  # 1万 yuan in fen


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("王小明", "王**"),
        ("欧阳娜娜", "欧阳**"),
        ("司马相如", "司马**"),
        ("诸葛亮", "诸葛*"),
        ("欧阳", "欧*"),  # a two-character name that looks like a compound surname: only one kept
        ("张", "*"),  # a lone surname would be the whole name
        ("  李四 ", "李*"),
        ("买买提·艾力", "买**·**"),
        ("John Smith", "J*** *****"),
        ("li", "l*"),
        ("", ""),
    ],
)
def test_person_name(name: str, masked: str) -> None:
    assert person_name(name) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("110101199003071234", "110101********1234"),
        ("11010119900307123x", "110101********123X"),
        ("110101900307123", "110*********123"),  # old 15-digit ID: a quarter at each end
        ("12345678", "12****78"),
        ("123", "***"),
        ("", ""),
    ],
)
def test_id_number(number: str, masked: str) -> None:
    assert id_number(number) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138-1234-5678", "138****5678"),
        ("010-12345678", "010-******78"),
        ("01012345678", "010-******78"),
        ("0755-1234567", "0755-*****67"),
        ("075512345678", "0755-******78"),
        ("(0571) 8888 1234", "0571-******34"),
        ("12345678", "******78"),  # local number without area code
        ("110", "***"),
        ("n/a", "***"),
        ("", ""),
    ],
)
def test_phone(number: str, masked: str) -> None:
    assert phone(number) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("北京市朝阳区建国路88号", "北京市朝阳区****"),
        ("浙江省杭州市西湖区文三路90号", "浙江省杭州市西湖区****"),
        ("上海市浦东新区世纪大道100号", "上海市浦东新区****"),
        ("江苏省昆山市玉山镇前进路1号", "江苏省昆山市****"),  # county-level city
        ("河北省保定市涞水县某村", "河北省保定市涞水县****"),
        ("内蒙古自治区呼和浩特市新城区某路", "内蒙古自治区呼和浩特市新城区****"),
        ("广东省东莞市长安镇工业区3号", "广东省东莞市****"),  # a street-level 区 is not a district
        ("北京市朝阳区", "北京市朝阳区"),  # nothing below the district to hide
        ("建国路88号", "****"),  # no administrative part: everything masked
        ("", ""),
    ],
)
def test_address(text: str, masked: str) -> None:
    assert address(text) == masked


@pytest.mark.parametrize(
    ("fen", "band"),
    [
        (0, (0, WAN, "0–1万元")),
        (150_000, (0, WAN, "0–1万元")),
        (WAN, (WAN, 10 * WAN, "1万–10万元")),  # a bound belongs to the band above
        (10 * WAN - 1, (WAN, 10 * WAN, "1万–10万元")),
        (30 * WAN, (10 * WAN, 50 * WAN, "10万–50万元")),
        (700 * WAN, (500 * WAN, 1000 * WAN, "500万–1000万元")),
        (9_999 * WAN, (5000 * WAN, 10_000 * WAN, "5000万–1亿元")),
        (10_000 * WAN, (10_000 * WAN, None, "1亿元以上")),
        (10**15, (10_000 * WAN, None, "1亿元以上")),
        (-30 * WAN, (-50 * WAN, -10 * WAN, "负10万–50万元")),
        (-(10**15), (None, -10_000 * WAN, "负1亿元以上")),
        (Decimal("123456.7"), (0, WAN, "0–1万元")),
        (Decimal(20 * WAN), (10 * WAN, 50 * WAN, "10万–50万元")),
        (2.5e6, (WAN, 10 * WAN, "1万–10万元")),
    ],
)
def test_amount_band(fen: Any, band: tuple[int | None, int | None, str]) -> None:
    assert amount_band(fen) == {"min_fen": band[0], "max_fen": band[1], "label": band[2]}


@pytest.mark.parametrize("value", ["100", True, float("nan"), float("inf"), Decimal("NaN"), object()])
def test_amount_band_refuses_what_is_not_a_number(value: Any) -> None:
    assert amount_band(value) is None


def test_leaves_of_lists_and_dicts_are_masked_one_by_one() -> None:
    assert mask_value(["张三", "欧阳娜娜", None], Masking.person_name) == ["张*", "欧阳**", None]
    assert mask_value({"legal_rep": "王小明", "contacts": ["李四"]}, Masking.person_name) == {
        "legal_rep": "王**",
        "contacts": ["李*"],
    }
    assert mask_value({"y2024": 30 * WAN, "y2025": [WAN]}, Masking.amount_band) == {
        "y2024": {"min_fen": 10 * WAN, "max_fen": 50 * WAN, "label": "10万–50万元"},
        "y2025": [{"min_fen": WAN, "max_fen": 10 * WAN, "label": "1万–10万元"}],
    }
    # a phone stored as an integer is still a phone number; a float is not a text leaf
    assert mask_value(13812345678, Masking.phone) == "138****5678"
    assert mask_value(1.5, Masking.person_name) is None
    assert mask_value(["a", 1.5], Masking.redact) == [None, None]


RULES = [
    FieldRule("uscc", 1, Masking.none),
    FieldRule("legal_rep", 3, Masking.person_name),
    FieldRule("capital_fen", 2, Masking.amount_band),
    FieldRule("phone", 4, Masking.phone),
    FieldRule("staff", 3, Masking.none),
    FieldRule("secret", 5, Masking.none),
    FieldRule("note", 2, Masking.redact),
]
ANSWER = {
    "uscc": "91110105000000001X",
    "legal_rep": "张三",
    "capital_fen": 30 * WAN,
    "phone": "13812345678",
    "staff": 42,
    "secret": "only in the zone",
    "note": "free text",
    "unlisted": "no rule for me",
}
BAND_30W = {"min_fen": 10 * WAN, "max_fen": 50 * WAN, "label": "10万–50万元"}


@pytest.mark.parametrize(
    ("clearance", "values", "applied"),
    [
        (
            1,
            {"uscc": ANSWER["uscc"], "legal_rep": "张*", "capital_fen": BAND_30W, "phone": "138****5678",
             "staff": None, "secret": None, "note": None, "unlisted": None},
            {"uscc": "clear", "legal_rep": "person_name", "capital_fen": "amount_band", "phone": "phone",
             "staff": "withheld", "secret": "withheld", "note": "redact", "unlisted": "withheld"},
        ),
        (
            2,
            {"uscc": ANSWER["uscc"], "legal_rep": "张*", "capital_fen": 30 * WAN, "phone": "138****5678",
             "staff": None, "secret": None, "note": "free text", "unlisted": None},
            {"uscc": "clear", "legal_rep": "person_name", "capital_fen": "clear", "phone": "phone",
             "staff": "withheld", "secret": "withheld", "note": "clear", "unlisted": "withheld"},
        ),
        (
            3,
            {"uscc": ANSWER["uscc"], "legal_rep": "张三", "capital_fen": 30 * WAN, "phone": "138****5678",
             "staff": 42, "secret": None, "note": "free text", "unlisted": None},
            {"uscc": "clear", "legal_rep": "clear", "capital_fen": "clear", "phone": "phone",
             "staff": "clear", "secret": "withheld", "note": "clear", "unlisted": "withheld"},
        ),
        (
            4,
            {"uscc": ANSWER["uscc"], "legal_rep": "张三", "capital_fen": 30 * WAN, "phone": "13812345678",
             "staff": 42, "secret": None, "note": "free text", "unlisted": None},
            {"uscc": "clear", "legal_rep": "clear", "capital_fen": "clear", "phone": "clear",
             "staff": "clear", "secret": "withheld", "note": "clear", "unlisted": "withheld"},
        ),
    ],
)  # fmt: skip
def test_grade_and_clearance_matrix(clearance: int, values: dict[str, Any], applied: dict[str, str]) -> None:
    masked = mask_answer(ANSWER, RULES, clearance=clearance)
    assert masked.values == values
    assert masked.applied == applied
    # grade 5 and fields without a rule never leave the zone, whatever the contract
    assert set(masked.withheld) >= {"secret", "unlisted"}


def test_the_answer_passed_in_is_not_changed() -> None:
    answer = {"legal_rep": ["张三"]}
    mask_answer(answer, [FieldRule("legal_rep", 3, Masking.person_name)], clearance=1)
    assert answer == {"legal_rep": ["张三"]}


@pytest.mark.parametrize("clearance", [0, 5, -1])
def test_clearance_outside_1_to_4_is_refused(clearance: int) -> None:
    with pytest.raises(ValueError, match=r"clearance must be 1\.\.4"):
        mask_answer({}, [], clearance=clearance)


@pytest.mark.parametrize("grade", [0, 6])
def test_a_rule_with_a_grade_outside_1_to_5_is_refused(grade: int) -> None:
    with pytest.raises(ValueError, match=r"grade must be 1\.\.5"):
        FieldRule("x", grade, Masking.none)
