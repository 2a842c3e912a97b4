"""Reading department files: encodings, CSV/XLSX/JSONL, line numbers, batching (no database)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
from pathlib import Path

import openpyxl
import pytest

from datazone.dataset.schemas import SourceFormat
from datazone.ingest import formats
from datazone.ingest.formats import RawBatch, SourceError, detect_encoding, read_batches

HEADER_ZH = "统一社会信用代码,企业名称,注册资本"


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return p


def read_all(path: Path, fmt: str = "csv", encoding: str | None = None, **kw: object) -> list[RawBatch]:
    return list(read_batches(path, format=SourceFormat(fmt), encoding=encoding, **kw))  # type: ignore[arg-type]


def rows(batches: list[RawBatch]) -> list[dict[str, str | None]]:
    return [r for b in batches for r in b.data.to_pylist()]


def lines(batches: list[RawBatch]) -> list[int]:
    return [int(x) for b in batches for x in b.lines]


def bad_rows(batches: list[RawBatch]) -> list[tuple[int, str]]:
    return [x for b in batches for x in b.bad_rows]


# --------------------------------------------------------------------------- encodings


def test_gb18030_file_with_chinese_headers_is_detected_and_read(tmp_path: Path) -> None:
    text = f"{HEADER_ZH}\n91350100M000100Y43,福州市鼓楼区某某科技有限公司,100\n91350100M000100Y43,厦门𠀀贸易,200\n"
    p = write(tmp_path, "gb.csv", text, "gb18030")
    assert detect_encoding(p, None) == "gb18030"
    batches = read_all(p)
    assert batches[0].columns == ["统一社会信用代码", "企业名称", "注册资本"]
    assert rows(batches)[1]["企业名称"] == "厦门𠀀贸易"  # a 4-byte GB18030 character
    assert lines(batches) == [2, 3]


def test_gbk_file_is_detected_as_gb18030(tmp_path: Path) -> None:
    p = write(tmp_path, "gbk.csv", "名称,日期\n甲,2024\n乙,2025\n", "gbk")
    assert detect_encoding(p, None) == "gb18030"
    assert rows(read_all(p)) == [{"名称": "甲", "日期": "2024"}, {"名称": "乙", "日期": "2025"}]


def test_declared_encoding_wins(tmp_path: Path) -> None:
    p = write(tmp_path, "a.csv", "名称\n甲\n", "gbk")
    assert detect_encoding(p, "gbk") == "gbk"
    assert rows(read_all(p, encoding="gbk")) == [{"名称": "甲"}]


def test_utf8_bom(tmp_path: Path) -> None:
    p = write(tmp_path, "bom.csv", "\ufeff名称,金额\n甲,1\n", "utf-8")
    assert detect_encoding(p, None) == "utf-8-sig"
    assert detect_encoding(p, "utf-8") == "utf-8-sig"
    batches = read_all(p, encoding="utf-8")
    assert batches[0].columns == ["名称", "金额"]
    assert rows(batches) == [{"名称": "甲", "金额": "1"}]


def test_plain_utf8_is_detected(tmp_path: Path) -> None:
    p = write(tmp_path, "u.csv", "名称\n甲\n")
    assert detect_encoding(p, None) == "utf-8"


def test_gbk_declared_as_utf8_names_line_offset_and_likely_encoding(tmp_path: Path) -> None:
    head = b"uscc,name\n91350100M000100Y43,ok\n"
    body = "91350100M000100Y43,福州市某某科技有限公司\n".encode("gbk")
    p = write(tmp_path, "mis.csv", head + body)
    with pytest.raises(SourceError) as err:
        read_all(p, encoding="utf-8")
    assert err.value.code == "encoding"
    assert err.value.line == 3
    offset = len(head) + len("91350100M000100Y43,")
    assert str(err.value).startswith(
        f"file is not valid UTF-8: undecodable bytes at line 3 (byte offset {offset})"
    )
    assert "looks like GB18030" in str(err.value)


def test_invalid_bytes_in_gb18030_file(tmp_path: Path) -> None:
    head = "名称,金额\n甲,1\n乙,2\n".encode("gb18030")
    p = write(tmp_path, "bad.csv", head + b"\x81\x20,3\n")
    with pytest.raises(SourceError) as err:
        read_all(p, encoding="gb18030")
    assert err.value.code == "encoding"
    assert (
        str(err.value) == f"file is not valid GB18030: undecodable bytes at line 4 (byte offset {len(head)})"
    )


# pyarrow cannot hand the undecodable row to the handler and says so on stderr before failing
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_invalid_utf8_in_a_short_row_is_an_encoding_error(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.csv", b"a,b\n1,2\n3,\xff\xfe\xfd,4\n")
    with pytest.raises(SourceError) as err:
        read_all(p, encoding="utf-8")
    assert err.value.code == "encoding"
    assert err.value.line == 3


def test_undetectable_encoding(tmp_path: Path) -> None:
    p = write(tmp_path, "x.csv", b"a,b\n\xff\xfe\xfd\xfc,\x80\x81\n")
    with pytest.raises(SourceError) as err:
        detect_encoding(p, None)
    assert err.value.code == "encoding"
    assert "declare the encoding" in str(err.value)


# --------------------------------------------------------------------------- CSV shape


def test_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", b"")
    with pytest.raises(SourceError) as err:
        read_all(p)
    assert (err.value.code, str(err.value)) == ("empty", "file is empty")


def test_bom_only_file_has_no_header(tmp_path: Path) -> None:
    p = write(tmp_path, "e.csv", b"\xef\xbb\xbf")
    with pytest.raises(SourceError) as err:
        read_all(p)
    assert err.value.code == "empty"


def test_header_only_yields_one_empty_batch(tmp_path: Path) -> None:
    p = write(tmp_path, "h.csv", f"{HEADER_ZH}\n")
    batches = read_all(p)
    assert len(batches) == 1
    assert batches[0].columns == HEADER_ZH.split(",")
    assert batches[0].data.num_rows == 0
    assert batches[0].data.column_names == HEADER_ZH.split(",")
    assert len(batches[0].lines) == 0


def test_duplicate_headers(tmp_path: Path) -> None:
    p = write(tmp_path, "d.csv", "名称,金额,名称,日期,日期\n1,2,3,4,5\n")
    with pytest.raises(SourceError) as err:
        read_all(p)
    assert err.value.code == "malformed"
    assert str(err.value) == "duplicate column headers: '名称', '日期'"


def test_values_are_stripped_and_blanks_become_null(tmp_path: Path) -> None:
    p = write(tmp_path, "s.csv", 'a,b,c,d\n  x ,"",\u3000全角空格\u3000,NA\n"  ",null, ,nan\n')
    assert rows(read_all(p)) == [
        {"a": "x", "b": None, "c": "全角空格", "d": "NA"},
        {"a": None, "b": "null", "c": None, "d": "nan"},
    ]


def test_truncated_last_row_becomes_a_bad_row(tmp_path: Path) -> None:
    body = "".join(f"{i},name{i},{i}\n" for i in range(5))
    p = write(tmp_path, "t.csv", "a,b,c\n" + body + "5,nam")
    batches = read_all(p)
    assert lines(batches) == [2, 3, 4, 5, 6]
    assert bad_rows(batches) == [(7, "expected 3 columns, found 2 (truncated or malformed row)")]


def test_rows_with_wrong_column_counts_and_blank_lines(tmp_path: Path) -> None:
    text = "a,b,c\n1,2,3\n\n4,5\n6,7,8\n,,\n1,2,3,4\n9,9,9\n"
    batches = read_all(p := write(tmp_path, "w.csv", text))
    assert p.exists()
    assert [r["a"] for r in rows(batches)] == ["1", "6", "9"]
    assert lines(batches) == [2, 5, 8]
    assert bad_rows(batches) == [
        (4, "expected 3 columns, found 2 (truncated or malformed row)"),
        (7, "expected 3 columns, found 4 (truncated or malformed row)"),
    ]


def test_unterminated_quote_at_end_of_file(tmp_path: Path) -> None:
    p = write(tmp_path, "q.csv", 'a,b\n1,2\n3,"4\n5,6\n')
    with pytest.raises(SourceError) as err:
        read_all(p)
    assert err.value.code == "truncated"
    assert err.value.line == 3
    assert "line 3" in str(err.value)


def test_properly_quoted_last_value_is_fine(tmp_path: Path) -> None:
    p = write(tmp_path, "q.csv", 'a,b\n1,2\n3,"4"\n')
    assert rows(read_all(p)) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_embedded_newlines_give_the_line_the_record_starts_on(tmp_path: Path) -> None:
    text = 'a,b\r\n1,"x\r\ny"\r\n2,z\r\n3,"p\nq\nr"\r\n4,\r\n5,6,7\r\n8,w\r\n'
    batches = read_all(write(tmp_path, "n.csv", text))
    assert [r["b"] for r in rows(batches)] == ["x\r\ny", "z", "p\nq\nr", None, "w"]
    assert lines(batches) == [2, 4, 5, 8, 10]
    assert bad_rows(batches) == [(9, "expected 2 columns, found 3 (truncated or malformed row)")]


def test_line_numbers_match_python_csv_on_a_messy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small pyarrow blocks so records and invalid rows straddle block and batch boundaries
    monkeypatch.setattr(formats, "_CSV_BLOCK_BYTES", 4096)
    rng = random.Random(7)
    out = io.StringIO()
    out.write("id,text,n\n")
    expected_good: list[int] = []
    expected_bad: list[int] = []
    line = 2
    for i in range(3000):
        kind = rng.random()
        if kind < 0.05:
            out.write("\n")
            line += 1
            continue
        if kind < 0.1:
            out.write(f"{i},short\n")
            expected_bad.append(line)
            line += 1
            continue
        breaks = rng.choice([0, 0, 0, 1, 2])
        value = "\n".join(f"part{j}" for j in range(breaks + 1))
        out.write(f'{i},"{value}",{i}\n')
        expected_good.append(line)
        line += 1 + breaks
    p = write(tmp_path, "m.csv", out.getvalue())
    # cross-check the expectation itself with the csv module
    with p.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        starts, prev = [], 1
        for rec in reader:
            if rec and len(rec) == 3:
                starts.append(prev + 1)
            prev = reader.line_num
    assert starts == expected_good
    batches = read_all(p, batch_rows=97)
    assert lines(batches) == expected_good
    assert [b[0] for b in bad_rows(batches)] == expected_bad
    assert all(b.data.num_rows <= 97 for b in batches)


def test_batching_keeps_line_numbers_across_batches(tmp_path: Path) -> None:
    p = write(tmp_path, "b.csv", "a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(35)))
    batches = read_all(p, batch_rows=10)
    assert [b.data.num_rows for b in batches] == [10, 10, 10, 5]
    assert lines(batches) == list(range(2, 37))
    assert [r["a"] for r in rows(batches)] == [str(i) for i in range(35)]
    assert all(b.columns == ["a", "b"] for b in batches)


def test_bad_rows_travel_with_the_batch_they_belong_to(tmp_path: Path) -> None:
    body = "".join(f"{i},{i}\n" if i != 14 else "14\n" for i in range(30))
    batches = read_all(write(tmp_path, "b.csv", "a,b\n" + body), batch_rows=10)
    assert [b.data.num_rows for b in batches] == [10, 10, 9]
    assert batches[1].bad_rows == [(16, "expected 2 columns, found 1 (truncated or malformed row)")]
    assert batches[0].bad_rows == [] and batches[2].bad_rows == []


# --------------------------------------------------------------------------- XLSX


def make_workbook(tmp_path: Path) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "说明"
    ws["A1"] = "this sheet is notes"
    data = wb.create_sheet("数据")
    # header on sheet row 3, data from column B, like departments' templates
    data["B3"], data["C3"], data["D3"], data["E3"], data["F3"] = (
        "企业名称",
        "成立日期",
        "人数",
        "注册资本",
        "存续",
    )
    data.append([])  # row 4 stays empty
    values = [
        ("甲公司", dt.date(2024, 1, 5), 12, 1234.5, True),
        ("乙公司", dt.datetime(2023, 12, 31, 8, 30), 12.0, 0.1, False),
        (" 丙公司 ", None, None, 1e-05, None),
    ]
    for i, row in enumerate(values, start=5):
        for j, v in enumerate(row, start=2):
            data.cell(i, j, v)
    data.cell(8, 2, "丁公司")
    data.cell(8, 4, 3.0)
    p = tmp_path / "book.xlsx"
    wb.save(p)
    return p


def test_xlsx_cells_are_converted(tmp_path: Path) -> None:
    batches = read_all(make_workbook(tmp_path), "xlsx", sheet="数据")
    assert batches[0].columns == ["企业名称", "成立日期", "人数", "注册资本", "存续"]
    assert rows(batches) == [
        {"企业名称": "甲公司", "成立日期": "2024-01-05", "人数": "12", "注册资本": "1234.5", "存续": "true"},
        {"企业名称": "乙公司", "成立日期": "2023-12-31", "人数": "12", "注册资本": "0.1", "存续": "false"},
        {"企业名称": "丙公司", "成立日期": None, "人数": None, "注册资本": "0.00001", "存续": None},
        {"企业名称": "丁公司", "成立日期": None, "人数": "3", "注册资本": None, "存续": None},
    ]
    assert lines(batches) == [5, 6, 7, 8]


def test_xlsx_first_sheet_by_default(tmp_path: Path) -> None:
    batches = read_all(make_workbook(tmp_path), "xlsx")
    assert batches[0].columns == ["this sheet is notes"]
    assert batches[0].data.num_rows == 0


def test_xlsx_sheet_not_found(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        read_all(make_workbook(tmp_path), "xlsx", sheet="Sheet9")
    assert err.value.code == "malformed"
    assert str(err.value) == "sheet 'Sheet9' not found; the workbook has: 说明, 数据"


def test_xlsx_batches(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["a", "b"])
    for i in range(35):
        ws.append([i, f"v{i}"])
    wb.save(p := tmp_path / "b.xlsx")
    batches = read_all(p, "xlsx", batch_rows=10)
    assert [b.data.num_rows for b in batches] == [10, 10, 10, 5]
    assert lines(batches) == list(range(2, 37))
    assert rows(batches)[34] == {"a": "34", "b": "v34"}


def test_xlsx_duplicate_headers(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["a", "a"])
    ws.append([1, 2])
    wb.save(p := tmp_path / "d.xlsx")
    with pytest.raises(SourceError) as err:
        read_all(p, "xlsx")
    assert err.value.code == "malformed"


def test_not_a_workbook(tmp_path: Path) -> None:
    p = write(tmp_path, "x.xlsx", "a,b\n1,2\n")
    with pytest.raises(SourceError) as err:
        read_all(p, "xlsx")
    assert err.value.code == "unsupported"


# --------------------------------------------------------------------------- JSON Lines


def test_jsonl_values_bad_lines_and_line_numbers(tmp_path: Path) -> None:
    text = "\n".join(
        [
            json.dumps({"uscc": "91350100M000100Y43", "name": " 甲 ", "capital": 1.50}, ensure_ascii=False),
            '{"uscc": "X", "name": "乙" "capital": 2}',
            "",
            '{"uscc": "Y", "capital": 12345678901234567890.123, "active": true, "note": null}',
            "[1, 2]",
            '{"uscc": "Z", "tags": ["a"]}',
            '{"name": "", "capital": -0}',
        ]
    )
    batches = read_all(write(tmp_path, "a.jsonl", text), "jsonl")
    assert batches[-1].columns == ["uscc", "name", "capital", "active", "note"]
    assert rows(batches) == [
        {"uscc": "91350100M000100Y43", "name": "甲", "capital": "1.5", "active": None, "note": None},
        {"uscc": "Y", "name": None, "capital": "12345678901234567890.123", "active": "true", "note": None},
        {"uscc": None, "name": None, "capital": "-0", "active": None, "note": None},
    ]
    assert lines(batches) == [1, 4, 7]
    assert bad_rows(batches) == [
        (2, "not a JSON object: Expecting ',' delimiter at column 27"),
        (5, "not a JSON object: the line holds an array"),
        (6, "nested value in column 'tags'"),
    ]


def test_jsonl_numbers_keep_their_json_text(tmp_path: Path) -> None:
    p = write(tmp_path, "n.jsonl", '{"a": 1.50, "b": 100, "c": false}\n')
    assert rows(read_all(p, "jsonl")) == [{"a": "1.50", "b": "100", "c": "false"}]


def test_jsonl_columns_grow_between_batches(tmp_path: Path) -> None:
    objs = [{"a": i} if i < 12 else {"a": i, "b": f"x{i}"} for i in range(25)]
    p = write(tmp_path, "g.jsonl", "\n".join(json.dumps(o) for o in objs) + "\n")
    batches = read_all(p, "jsonl", batch_rows=10)
    assert [b.columns for b in batches] == [["a"], ["a", "b"], ["a", "b"]]
    assert lines(batches) == list(range(1, 26))
    assert batches[1].data.column("b").to_pylist() == [None, None, "x12", *[f"x{i}" for i in range(13, 20)]]


def test_jsonl_gb18030_and_encoding_errors(tmp_path: Path) -> None:
    good = '{"名称": "甲"}\n'.encode("gb18030")
    p = write(tmp_path, "g.jsonl", good * 2)
    assert detect_encoding(p, None) == "gb18030"
    assert rows(read_all(p, "jsonl")) == [{"名称": "甲"}, {"名称": "甲"}]
    with pytest.raises(SourceError) as err:
        read_all(p, "jsonl", encoding="utf-8")
    assert err.value.code == "encoding"
    assert err.value.line == 1


def test_jsonl_header_only_equivalent(tmp_path: Path) -> None:
    p = write(tmp_path, "blank.jsonl", "\n\n")
    with pytest.raises(SourceError) as err:
        read_all(p, "jsonl")
    assert err.value.code == "empty"


def test_a_file_of_broken_rows_is_handed_on_in_batches(tmp_path: Path) -> None:
    # a header with a trailing comma makes every row one column short
    p = write(tmp_path, "c.csv", "a,b,\n" + "".join(f"{i},{i}\n" for i in range(25)))
    batches = read_all(p, batch_rows=10)
    assert all(b.data.num_rows == 0 and len(b.bad_rows) <= 10 for b in batches)
    assert [line for line, _ in bad_rows(batches)] == list(range(2, 27))
    assert bad_rows(batches)[0] == (2, "expected 3 columns, found 2 (truncated or malformed row)")
