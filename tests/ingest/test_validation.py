"""Validating raw batches against a dataset spec (pure: no database)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from stdnum.cn import uscc as stdnum_uscc

from datazone import uscc
from datazone.dataset.schemas import DatasetSpec
from datazone.ingest.formats import RawBatch, read_batches
from datazone.ingest.validation import HeaderError, RecordValidator, Reject

GOOD = "91350100M000100Y43"  # check character computed with uscc.check_character
GOOD2 = "91110000" + "600037341" + uscc.check_character("91110000600037341")


def make_spec(fields: list[dict[str, Any]] | None = None, **extra: Any) -> DatasetSpec:
    base: dict[str, Any] = {
        "id": "ent_basic",
        "name": "企业基本信息",
        "department": "amr",
        "entity_key": "uscc",
        "source": {"kind": "directory", "path": "x/*.csv"},
        "fields": [
            {"name": "uscc", "type": "uscc", "required": True, "headers": ["统一社会信用代码"], "grade": 1},
            *(fields or []),
        ],
    }
    base.update(extra)
    return DatasetSpec.model_validate(base)


def raw(
    columns: list[str], rows: list[list[str | None]], lines: list[int] | None = None, **kw: Any
) -> RawBatch:
    data = pa.Table.from_arrays(
        [pa.array([r[i] for r in rows], type=pa.string()) for i in range(len(columns))], names=columns
    )
    line_numbers = lines if lines is not None else list(range(2, len(rows) + 2))
    return RawBatch(columns=columns, data=data, lines=np.array(line_numbers, dtype=np.int64), **kw)


def one_field(ftype: str, cells: list[str | None], **field: Any) -> tuple[list[Any], list[Reject]]:
    """Validate `cells` in a single field 'v' next to a valid uscc; (accepted values, rejects)."""
    spec = make_spec([{"name": "val", "type": ftype, "headers": ["值"], **field}])
    vb = RecordValidator(spec, ["统一社会信用代码", "值"]).validate(
        raw(["统一社会信用代码", "值"], [[GOOD, v] for v in cells])
    )
    return vb.table.column("val").to_pylist(), vb.rejects


# --------------------------------------------------------------------------- headers


def test_header_problems_are_all_reported_at_once() -> None:
    spec = make_spec(
        [
            {"name": "name", "type": "string", "required": True, "headers": ["企业名称"]},
            {"name": "reg_date", "type": "date", "required": True, "headers": ["成立日期"]},
            {"name": "capital", "type": "decimal", "headers": ["注册资本（万元）"]},
        ]
    )
    with pytest.raises(HeaderError) as err:
        RecordValidator(spec, ["企业名称", "注册资本(万元)", "注册地", "企业 名称", "note"])
    assert err.value.problems == [
        "unknown column '注册地' (column 3); expected one of: 统一社会信用代码, 企业名称, 成立日期, 注册资本（万元）",
        "columns '企业名称' (column 1) and '企业 名称' (column 4) both map to field 'name'",
        "unknown column 'note' (column 5); expected one of: 统一社会信用代码, 企业名称, 成立日期, 注册资本（万元）",
        "missing required column for field 'uscc' (统一社会信用代码)",
        "missing required column for field 'reg_date' (成立日期)",
    ]


def test_headers_match_by_name_and_normalized_alias_and_optional_fields_may_be_absent() -> None:
    spec = make_spec(
        [
            {"name": "capital", "type": "decimal", "headers": ["注册资本（万元）"]},
            {"name": "note", "type": "string"},
        ]
    )
    v = RecordValidator(spec, ["\ufeff统一社会信用代码 ", "注册资本 (万元)"])
    vb = v.validate(raw(["\ufeff统一社会信用代码 ", "注册资本 (万元)"], [[GOOD, "10"]]))
    assert vb.table.column_names == ["_line", "uscc", "capital", "note", "_deleted"]
    assert vb.table.to_pylist() == [
        {"_line": 2, "uscc": GOOD, "capital": "10", "note": None, "_deleted": False}
    ]


def test_ignore_unknown_columns() -> None:
    spec = make_spec(ignore_unknown_columns=True)
    vb = RecordValidator(spec, ["统一社会信用代码", "别的"]).validate(
        raw(["统一社会信用代码", "别的"], [[GOOD, "x"]])
    )
    assert vb.table.column_names == ["_line", "uscc", "_deleted"]
    assert vb.rejects == []


def test_blank_header_column_is_ignored_unless_it_holds_values() -> None:
    spec = make_spec()
    batch = raw(["统一社会信用代码", ""], [[GOOD, None], [GOOD2, "stray"]])
    vb = RecordValidator(spec, batch.columns).validate(batch)
    assert vb.table.column("_line").to_pylist() == [2]
    assert vb.rejects == [Reject(3, None, "value in column 2, which has no header", None)]


def test_later_batch_with_new_columns_is_mapped_or_refused() -> None:
    spec = make_spec([{"name": "name", "type": "string", "headers": ["企业名称"]}])
    v = RecordValidator(spec, ["统一社会信用代码"])
    vb = v.validate(raw(["统一社会信用代码", "企业名称"], [[GOOD, "甲"]]))
    assert vb.table.column("name").to_pylist() == ["甲"]
    with pytest.raises(HeaderError) as err:
        v.validate(raw(["统一社会信用代码", "企业名称", "extra"], [[GOOD, "甲", "x"]]))
    assert err.value.problems[0].startswith("unknown column 'extra' (column 3)")


def test_missing_deletion_marker_column() -> None:
    spec = make_spec(
        mode="incremental", deletion_marker={"column": "op", "headers": ["操作类型"], "values": ["D", "删除"]}
    )
    with pytest.raises(HeaderError) as err:
        RecordValidator(spec, ["统一社会信用代码"])
    assert err.value.problems == ["missing deletion-marker column (accepted headers: op, 操作类型)"]


# --------------------------------------------------------------------------- row rules


def test_every_failing_field_of_a_row_is_reported_and_counts_are_right() -> None:
    spec = make_spec(
        [
            {"name": "name", "type": "string", "required": True, "headers": ["企业名称"], "max_length": 4},
            {"name": "staff", "type": "integer", "headers": ["人数"]},
            {"name": "founded", "type": "date", "headers": ["成立日期"]},
        ]
    )
    cols = ["统一社会信用代码", "企业名称", "人数", "成立日期"]
    batch = raw(
        cols,
        [
            [GOOD, "甲公司", "12", "2024-01-05"],
            ["91350100M000100Y4X", None, "1.5", "2024-02-30"],
            [GOOD2, "某某某某公司", "7", None],
            [GOOD2, "乙", None, None],
        ],
        lines=[2, 3, 5, 6],
        bad_rows=[(4, "expected 4 columns, found 2 (truncated or malformed row)")],
    )
    vb = RecordValidator(spec, cols).validate(batch)
    assert vb.table.to_pylist() == [
        {
            "_line": 2,
            "uscc": GOOD,
            "name": "甲公司",
            "staff": 12,
            "founded": dt.date(2024, 1, 5),
            "_deleted": False,
        },
        {"_line": 6, "uscc": GOOD2, "name": "乙", "staff": None, "founded": None, "_deleted": False},
    ]
    assert vb.rejects == [
        Reject(
            3,
            "统一社会信用代码",
            "not a valid USCC: check character is 'X', GB 32100-2015 gives '3' for the first 17",
            "91350100M000100Y4X",
        ),
        Reject(3, "企业名称", "required value missing", None),
        Reject(3, "人数", "'1.5' is not a whole number", "1.5"),
        Reject(
            3, "成立日期", "'2024-02-30' is not a real calendar date (no such month or day)", "2024-02-30"
        ),
        Reject(4, None, "expected 4 columns, found 2 (truncated or malformed row)", None),
        Reject(5, "企业名称", "too long: 6 characters, at most 4 allowed", "某某某某公司"),
    ]
    assert (vb.rows_read, vb.rows_rejected) == (5, 3)


def test_output_types() -> None:
    spec = make_spec(
        [
            {"name": "f_s", "type": "string"},
            {"name": "f_i", "type": "integer"},
            {"name": "f_d", "type": "decimal"},
            {"name": "f_t", "type": "date"},
            {"name": "f_b", "type": "boolean"},
            {"name": "f_e", "type": "enum", "values": {"a": []}},
        ]
    )
    cols = ["uscc", "f_s", "f_i", "f_d", "f_t", "f_b", "f_e"]
    vb = RecordValidator(spec, cols).validate(raw(cols, []))
    assert vb.table.schema == pa.schema(
        [
            ("_line", pa.int64()),
            ("uscc", pa.string()),
            ("f_s", pa.string()),
            ("f_i", pa.int64()),
            ("f_d", pa.string()),
            ("f_t", pa.date32()),
            ("f_b", pa.bool_()),
            ("f_e", pa.string()),
            ("_deleted", pa.bool_()),
        ]
    )
    assert (vb.rows_read, vb.rows_rejected, vb.rejects) == (0, 0, [])


def test_sensitive_values_stay_out_of_rejects() -> None:
    values, rejects = one_field("integer", ["12abc", None], grade=3, required=True)
    assert values == []
    assert rejects == [
        Reject(
            2,
            "值",
            "the value is not a whole number; expected digits with an optional sign, '.' and ',' "
            "thousands separators",
            None,
        ),
        Reject(3, "值", "required value missing", None),
    ]


# --------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-05", dt.date(2024, 1, 5)),
        ("2024/1/5", dt.date(2024, 1, 5)),
        ("2024.1.5", dt.date(2024, 1, 5)),
        ("20240105", dt.date(2024, 1, 5)),
        ("2024年1月5日", dt.date(2024, 1, 5)),
        ("２０２４年１月５日", dt.date(2024, 1, 5)),
        ("2024-01-05 00:00:00", dt.date(2024, 1, 5)),
        ("2024-01-05T08:30:00", dt.date(2024, 1, 5)),
        ("2024-01-05T08:30:00+08:00", dt.date(2024, 1, 5)),
        ("2024-02-29", dt.date(2024, 2, 29)),
        ("2000-02-29", dt.date(2000, 2, 29)),
        ("45296", dt.date(2024, 1, 5)),
        ("45296.0", dt.date(2024, 1, 5)),
        ("1", dt.date(1899, 12, 31)),
        ("99999", dt.date(2173, 10, 13)),
    ],
)
def test_date_forms(text: str, expected: dt.date) -> None:
    assert one_field("date", [text]) == ([expected], [])


@pytest.mark.parametrize(
    "text", ["2024-02-30", "2023-02-29", "2024-13-01", "1900-02-29", "2024-00-10", "0000-01-01"]
)
def test_impossible_dates(text: str) -> None:
    assert one_field("date", [text]) == (
        [],
        [Reject(2, "值", f"'{text}' is not a real calendar date (no such month or day)", text)],
    )


@pytest.mark.parametrize(
    "text", ["2024-1", "05/01/2024", "tomorrow", "0", "100000", "45296.5", "2024-01-05x"]
)
def test_unrecognized_dates(text: str) -> None:
    expected = (
        f"'{text}' is not a date; accepted forms: 2024-01-05, 2024/1/5, 20240105, 2024年1月5日, "
        "or an Excel serial number"
    )
    assert one_field("date", [text]) == ([], [Reject(2, "值", expected, text)])


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", 12),
        ("+12", 12),
        ("-12", -12),
        ("1,234,567", 1234567),
        ("１２３４", 1234),
        ("１，２３４", 1234),
        ("－５", -5),
        ("12.00", 12),
        ("007", 7),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("000000000000000000000042", 42),
    ],
)
def test_integers(text: str, expected: int) -> None:
    assert one_field("integer", [text]) == ([expected], [])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1.5", "'1.5' is not a whole number"),
        ("9223372036854775808", "'9223372036854775808' is too large for a 64-bit integer"),
        ("-9223372036854775809", "'-9223372036854775809' is too large for a 64-bit integer"),
        (
            "12abc",
            "'12abc' is not a whole number; expected digits with an optional sign, '.' and ',' thousands separators",
        ),
        (
            "1,23,4",
            "'1,23,4' is not a whole number; expected digits with an optional sign, '.' and ',' thousands separators",
        ),
        (
            "1.2E+07",
            "'1.2E+07' is in scientific notation (often Excel rounding); send the number with all its digits",
        ),
    ],
)
def test_bad_integers(text: str, reason: str) -> None:
    assert one_field("integer", [text]) == ([], [Reject(2, "值", reason, text)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1,234.5", "-1234.5"),
        ("+5", "5"),
        ("-0", "0"),
        ("-0.00", "0.00"),
        ("-0.01", "-0.01"),
        ("１，２３４．５", "1234.5"),
        ("007.50", "007.50"),
        ("12345678901234567890.123456789", "12345678901234567890.123456789"),
    ],
)
def test_decimals_keep_their_digits(text: str, expected: str) -> None:
    assert one_field("decimal", [text]) == ([expected], [])


@pytest.mark.parametrize("text", ["abc", "1.2.3", "1,23,4", "1.", ".5", "--1", "1 234"])
def test_bad_decimals(text: str) -> None:
    reason = (
        f"'{text}' is not a number; expected digits with an optional sign, '.' and ',' thousands separators"
    )
    assert one_field("decimal", [text]) == ([], [Reject(2, "值", reason, text)])


# --------------------------------------------------------------------------- boolean, enum, string


def test_booleans() -> None:
    trues = ["是", "Y", "y", "yes", "YES", "true", "True", "1", "T", "t"]
    falses = ["否", "N", "no", "No", "false", "FALSE", "0", "F", "f"]
    assert one_field("boolean", trues + falses) == ([True] * len(trues) + [False] * len(falses), [])
    values, rejects = one_field("boolean", ["maybe", "对"])
    assert values == []
    assert [r.reason for r in rejects] == [
        "'maybe' is not a yes/no value; expected one of 是/否/y/n/yes/no/true/false/1/0/t/f",
        "'对' is not a yes/no value; expected one of 是/否/y/n/yes/no/true/false/1/0/t/f",
    ]


ENUM = {"llc": ["有限责任公司", "LLC", "有限公司"], "sole": ["个体工商户", "个体"], "other": []}


def test_enum_aliases_map_to_canonical_values() -> None:
    values, rejects = one_field(
        "enum", ["llc", "LLC", "Llc", "有限公司", "个体", "other", "OTHER"], values=ENUM
    )
    assert rejects == []
    assert values == ["llc", "llc", "llc", "llc", "sole", "other", "other"]


def test_enum_rejects_list_allowed_values() -> None:
    assert one_field("enum", ["合伙企业"], values=ENUM) == (
        [],
        [
            Reject(
                2, "值", "'合伙企业' is not an allowed value; expected one of: llc, sole, other", "合伙企业"
            )
        ],
    )


def test_enum_alias_of_two_values_is_refused() -> None:
    spec = make_spec([{"name": "val", "type": "enum", "values": {"a": ["X"], "b": ["x"]}}])
    with pytest.raises(ValueError, match="'x' is a value or alias of both 'a' and 'b'"):
        RecordValidator(spec, ["uscc", "val"])


def test_strings_and_max_length() -> None:
    assert one_field("string", ["甲乙丙", "abcd", None], max_length=4) == (["甲乙丙", "abcd", None], [])
    assert one_field("string", ["甲乙丙丁戊"], max_length=4) == (
        [],
        [Reject(2, "值", "too long: 5 characters, at most 4 allowed", "甲乙丙丁戊")],
    )


# --------------------------------------------------------------------------- USCC


def _random_codes(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    alphabet = uscc.ALPHABET
    for _ in range(n):
        body = "".join(rng.choice("0123456789") for _ in range(8)) + "".join(
            rng.choice(alphabet) for _ in range(9)
        )
        code = body + uscc.check_character(body)
        kind = rng.randrange(5)
        if kind == 1:  # wrong check character
            code = body + rng.choice([c for c in alphabet if c != code[17]])
        elif kind == 2:  # a character no USCC has
            i = rng.randrange(18)
            code = code[:i] + rng.choice("IOSVZ") + code[i + 1 :]
        elif kind == 3:  # wrong length
            code = code[: rng.choice([16, 17])] if rng.random() < 0.5 else code + rng.choice(alphabet)
        out.append(code)
    return out


def test_uscc_checks_agree_with_stdnum_and_valid_mask() -> None:
    rng = random.Random(2024)
    codes = _random_codes(rng, 600)
    expected = [stdnum_uscc.is_valid(c) for c in codes]
    assert 100 < sum(expected) < 500
    # the validator on the whole batch
    values, rejects = one_field("uscc", codes)
    accepted = set(values)
    assert [c in accepted for c in codes] == expected
    assert len(rejects) == expected.count(False)
    for r in rejects:
        assert r.value is not None
        assert r.reason == f"not a valid USCC: {uscc.explain_invalid(r.value)}"
    # the byte-level check against uscc.valid_mask, on the 18-character codes
    eighteen = [c for c in codes if len(c) == 18]
    matrix = np.frombuffer("".join(eighteen).encode(), dtype=np.uint8).reshape(-1, 18)
    assert uscc.valid_bytes(matrix).tolist() == uscc.valid_mask(eighteen).tolist()


def test_uscc_is_stripped_and_upper_cased() -> None:
    assert one_field("uscc", [GOOD.lower(), "９１３５０１００Ｍ０００１００Ｙ４３"]) == ([GOOD, GOOD], [])


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (GOOD + "0", "a USCC has 18 characters, this has 19"),
        (GOOD[:-1], "a USCC has 18 characters, this has 17"),
        ("91350100M000100YO3", "character 'O' cannot appear in a USCC (0-9 and A-Y without I, O, S, V, Z)"),
        ("91350100统一代码100Y43", "a USCC has 18 characters, this has 18"),
    ],
)
def test_bad_uscc_reasons(code: str, reason: str) -> None:
    if "统" in code:  # 18 characters but not ASCII: explain_invalid words it by character
        reason = "character '统' cannot appear in a USCC (0-9 and A-Y without I, O, S, V, Z)"
    assert one_field("uscc", [code]) == ([], [Reject(2, "值", f"not a valid USCC: {reason}", code)])


def test_entity_key_missing() -> None:
    spec = make_spec()
    vb = RecordValidator(spec, ["统一社会信用代码"]).validate(raw(["统一社会信用代码"], [[None]]))
    assert vb.rejects == [Reject(2, "统一社会信用代码", "required value missing", None)]


# --------------------------------------------------------------------------- deletion markers


def incremental_spec() -> DatasetSpec:
    return make_spec(
        [
            {"name": "name", "type": "string", "required": True, "headers": ["企业名称"]},
            {"name": "staff", "type": "integer", "headers": ["人数"]},
        ],
        mode="incremental",
        deletion_marker={"column": "op", "headers": ["操作类型"], "values": ["D", "删除"]},
    )


def test_deleted_rows_need_only_their_key() -> None:
    cols = ["统一社会信用代码", "企业名称", "人数", "操作类型"]
    batch = raw(
        cols,
        [
            [GOOD, "甲", "1", None],
            [GOOD2, None, "junk", "删除"],
            [GOOD, None, None, "d"],
            ["BAD", None, None, "D"],
            [GOOD2, None, None, "U"],
        ],
    )
    vb = RecordValidator(incremental_spec(), cols).validate(batch)
    assert vb.table.to_pylist() == [
        {"_line": 2, "uscc": GOOD, "name": "甲", "staff": 1, "_deleted": False},
        {"_line": 3, "uscc": GOOD2, "name": None, "staff": None, "_deleted": True},
        {"_line": 4, "uscc": GOOD, "name": None, "staff": None, "_deleted": True},
    ]
    assert vb.rejects == [
        Reject(5, "统一社会信用代码", "not a valid USCC: a USCC has 18 characters, this has 3", "BAD"),
        Reject(6, "企业名称", "required value missing", None),
    ]
    assert vb.rows_rejected == 2


# --------------------------------------------------------------------------- end to end


def test_reader_and_validator_together(tmp_path: Path) -> None:
    spec = make_spec(
        [
            {"name": "name", "type": "string", "required": True, "headers": ["企业名称"]},
            {"name": "capital", "type": "decimal", "headers": ["注册资本"]},
            {"name": "founded", "type": "date", "headers": ["成立日期"]},
        ]
    )
    text = (
        "统一社会信用代码,企业名称,注册资本,成立日期\n"
        f'{GOOD},福州甲公司,"1,000.50",2020/3/1\n'
        f"{GOOD2},厦门乙公司,１２,2020年13月1日\n"
        f"{GOOD},泉州丙\n"
    )
    p = tmp_path / "gb.csv"
    p.write_bytes(text.encode("gb18030"))
    out = []
    for batch in read_batches(p, format="csv", encoding=None):  # type: ignore[arg-type]
        out.append(RecordValidator(spec, batch.columns).validate(batch))
    (vb,) = out
    assert vb.table.to_pylist() == [
        {
            "_line": 2,
            "uscc": GOOD,
            "name": "福州甲公司",
            "capital": "1000.50",
            "founded": dt.date(2020, 3, 1),
            "_deleted": False,
        }
    ]
    assert vb.rejects == [
        Reject(
            3,
            "成立日期",
            "'2020年13月1日' is not a real calendar date (no such month or day)",
            "2020年13月1日",
        ),
        Reject(4, None, "expected 4 columns, found 2 (truncated or malformed row)", None),
    ]
    assert (vb.rows_read, vb.rows_rejected) == (3, 2)


def test_uscc_byte_check_matches_valid_mask_on_letters_in_every_position() -> None:
    rng = random.Random(5)
    codes = []
    for pos in range(17):
        for _ in range(20):
            chars = [rng.choice("0123456789") for _ in range(17)]
            chars[pos] = rng.choice("ABCDEFGHJKLMNPQRTUWXY")
            body = "".join(chars)
            codes.append(body + uscc.check_character(body))
    matrix = np.frombuffer("".join(codes).encode(), dtype=np.uint8).reshape(-1, 18)
    ours = uscc.valid_bytes(matrix).tolist()
    assert ours == uscc.valid_mask(codes).tolist()
    # letters in characters 3-8 (the division code) are never valid; elsewhere they are
    assert [ok for code, ok in zip(codes, ours, strict=True) if not code[2:8].isdigit()] == [False] * 120
    assert all(ok for code, ok in zip(codes, ours, strict=True) if code[2:8].isdigit())
