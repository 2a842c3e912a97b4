"""The bank's files: the USCC column of a CSV or XLSX list in, one CSV row per enterprise out.

Line numbers are the file's own (header = line 1), so a reported bad code can be found
in the spreadsheet it came from.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datazone.client.enterprises import flatten

DEFAULT_COLUMNS = ("uscc", "统一社会信用代码")  # what a bank's list is likely to call the column
_ENCODINGS = ("utf-8-sig", "gb18030")  # Excel on Chinese Windows saves CSV as GB18030


class InputFileError(ValueError):
    """The list cannot be read: missing file, unknown format, no such column."""


@dataclass(frozen=True)
class ListedCode:
    line: int  # the file's line (CSV) or row (XLSX) number, header = 1
    code: str
    problem: str | None = None  # set when the cell cannot hold a USCC at all (e.g. an Excel number)


def _pick_column(header: Sequence[str], column: str | None, path: Path) -> int:
    names = [h.strip().lstrip("\ufeff") for h in header]
    wanted = (column,) if column else DEFAULT_COLUMNS
    for name in wanted:
        for index, have in enumerate(names):
            if have.lower() == name.lower():
                return index
    shown = ", ".join(repr(n) for n in names if n) or "none"
    asked = repr(column) if column else " or ".join(repr(n) for n in DEFAULT_COLUMNS)
    raise InputFileError(
        f"{path} has no column {asked} in its first row (columns: {shown}); name it with --column"
    )


def _read_csv(path: Path, column: str | None) -> list[ListedCode]:
    raw = path.read_bytes()
    for encoding in _ENCODINGS:
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise InputFileError(f"{path} is neither UTF-8 nor GB18030 text")
    reader = csv.reader(io.StringIO(text, newline=""))
    index: int | None = None
    listed: list[ListedCode] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank lines, before or between rows
        if index is None:
            index = _pick_column(row, column, path)
            continue
        cell = row[index] if index < len(row) else ""
        listed.append(ListedCode(reader.line_num, cell.strip()))
    if index is None:
        raise InputFileError(f"{path} is empty")
    return listed


def _read_xlsx(path: Path, column: str | None) -> list[ListedCode]:
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:  # calamine has its own error types for files that are not workbooks
        raise InputFileError(f"{path} cannot be opened as an Excel workbook: {exc}") from exc
    index: int | None = None
    listed: list[ListedCode] = []
    for number, row in enumerate(sheet.iter_rows(), start=1):
        if all(v is None or str(v).strip() == "" for v in row):
            continue
        if index is None:
            index = _pick_column([str(v) if v is not None else "" for v in row], column, path)
            continue
        cell: Any = row[index] if index < len(row) else None
        if isinstance(cell, (int, float)) and not isinstance(cell, bool):
            # an all-digit USCC typed into a General cell becomes a float and loses digits past the 15th
            listed.append(
                ListedCode(
                    number,
                    str(cell),
                    "stored as a number by Excel, digits may be lost; format the column as text",
                )
            )
        else:
            listed.append(ListedCode(number, "" if cell is None else str(cell).strip()))
    if index is None:
        raise InputFileError(f"{path} has no rows in its first sheet")
    return listed


def read_listed_codes(path: Path, column: str | None = None) -> list[ListedCode]:
    if not path.is_file():
        raise InputFileError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return _read_csv(path, column)
    if suffix in (".xlsx", ".xlsm", ".xls"):
        return _read_xlsx(path, column)
    raise InputFileError(f"{path}: give a .csv or .xlsx file")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def write_results(path: Path, results: Iterable[dict[str, Any]]) -> int:
    """One row per enterprise: uscc, found, then the answer's fields flattened (`risk.level`).

    Written to a temporary file and renamed, so OUT never holds half a file."""
    rows = [(r.get("uscc"), r.get("found"), dict(flatten(r.get("answer") or {}))) for r in results]
    fields: dict[str, None] = {}
    for _, _, answer in rows:
        fields.update(dict.fromkeys(answer))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # utf-8-sig: Excel opens it with the Chinese names intact
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["uscc", "found", *fields])
            for code, found, answer in rows:
                writer.writerow([code, _cell(bool(found)), *(_cell(answer.get(f)) for f in fields)])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)
