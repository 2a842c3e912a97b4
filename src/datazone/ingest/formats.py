"""Reading department files (CSV, XLSX, JSON Lines) in bounded memory.

Every reader yields `RawBatch`es: untyped string columns exactly as the file
has them (stripped, empty -> null) plus the source line of each row, so the
validator can say *where* a value is wrong. Typing and checking against the
dataset spec happen in `datazone.ingest.validation`.

CSV is the bulk path (millions of rows) and goes through pyarrow's streaming
reader without per-row Python; XLSX and JSONL are smaller in practice and are
converted row by row.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from charset_normalizer import from_bytes

from datazone.dataset.schemas import SourceFormat

SOURCE_ERROR_CODES = ("empty", "encoding", "malformed", "truncated", "unsupported")

# Enough text for charset detection to be reliable, small enough to be instant.
_SAMPLE_BYTES = 1 << 20
_SCAN_CHUNK = 1 << 20
_UTF8_BOM = codecs.BOM_UTF8
_CSV_BLOCK_BYTES = 4 << 20


class SourceError(Exception):
    """The file as a whole cannot be read.

    `code` is one of 'empty', 'encoding', 'malformed', 'truncated', 'unsupported';
    str(exc) says what and where, e.g.
    "file is not valid GB18030: undecodable bytes at line 7 (byte offset 1234)".
    """

    def __init__(self, code: str, message: str, line: int | None = None) -> None:
        if code not in SOURCE_ERROR_CODES:
            raise ValueError(f"unknown SourceError code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.line = line


@dataclass
class RawBatch:
    """Rows of a source file, not yet typed.

    `columns` are the headers as written (for JSONL: keys in order of first
    appearance; the list only ever grows, so a later batch may have more columns
    than an earlier one). `data` has one pa.string() column per header, in the
    same order (names may repeat only for blank headers). `lines` is the source
    line of each row. `bad_rows` are (line, reason) for rows the reader could not
    split into columns; they are not in `data`.
    """

    columns: list[str]
    data: pa.Table
    lines: npt.NDArray[np.int64]
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- encodings


def _display(encoding: str) -> str:
    return {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf8": "UTF-8", "gb18030": "GB18030", "gbk": "GBK"}.get(
        encoding.lower(), encoding.upper()
    )


def _is_gb(name: str) -> bool:
    n = name.lower().replace("-", "").replace("_", "")
    return n in {"gb2312", "gbk", "gb18030", "cp936", "euccn", "hz"}


def _read_sample(path: Path) -> tuple[bytes, bool]:
    """The first bytes of the file, cut at a line end so no character is split; whether that is all of it."""
    with path.open("rb") as f:
        sample = f.read(_SAMPLE_BYTES + 1)
    if len(sample) <= _SAMPLE_BYTES:
        return sample, True
    sample = sample[:_SAMPLE_BYTES]
    cut = sample.rfind(b"\n")
    return (sample[: cut + 1] if cut > 0 else sample), False


# Guesses for short Chinese samples that are really GB: the double-byte ranges of these
# East Asian encodings overlap GB's, and the detector cannot tell them apart on little text.
_GB_LOOKALIKES = {
    "big5",
    "big5hkscs",
    "cp950",
    "cp949",
    "euc_kr",
    "cp932",
    "shift_jis",
    "shift_jis_2004",
    "euc_jp",
    "euc_jis_2004",
    "iso2022_jp",
    "johab",
}


def _decodes(sample: bytes, encoding: str) -> bool:
    try:
        sample.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _guess_charset(sample: bytes) -> str | None:
    """charset-normalizer's guess, leaning to GB18030 where the detector cannot tell.

    Short Chinese samples are ambiguous between GB, Big5, EUC-KR and Shift-JIS; the
    detector then ranks them arbitrarily, but mainland departments write GB, so a
    tie with GB, or an East Asian guess that GB18030 also decodes, counts as GB18030.
    """
    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return None
    if any(_is_gb(c) for c in best.could_be_from_charset):
        return "gb18030"
    for m in matches:
        tied = m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.01
        if tied and any(_is_gb(c) for c in m.could_be_from_charset):
            return "gb18030"
    if str(best.encoding).lower() in _GB_LOOKALIKES and _decodes(sample, "gb18030"):
        return "gb18030"
    return str(best.encoding)


def detect_encoding(path: Path, declared: str | None) -> str:
    """The Python codec name to read `path` with.

    `declared` wins (a UTF-8 BOM with declared 'utf-8' gives 'utf-8-sig'). Otherwise:
    BOM -> 'utf-8-sig'; a 1 MiB sample that decodes as UTF-8 -> 'utf-8'; a GB2312/GBK/GB18030
    guess by charset-normalizer -> 'gb18030' (a superset of both); anything else is a
    SourceError('encoding'). Only the sample is checked: undecodable bytes further on are
    reported by `read_batches` with their line.
    """
    with path.open("rb") as f:
        head = f.read(3)
    if declared is not None:
        d = declared.lower().replace("_", "-")
        if d in {"utf-8", "utf8"}:
            return "utf-8-sig" if head == _UTF8_BOM else "utf-8"
        return d
    if head == _UTF8_BOM:
        return "utf-8-sig"
    sample, whole = _read_sample(path)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=whole)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    guess = _guess_charset(sample)
    if guess == "gb18030":
        return "gb18030"
    seen = f"it looks like {guess}" if guess else "no encoding fits"
    raise SourceError(
        "encoding",
        f"cannot tell the file's encoding: it is not UTF-8 and {seen}; "
        "declare the encoding (utf-8 or gb18030) in the dataset spec",
    )


def _locate_decode_error(path: Path, encoding: str) -> tuple[int, int] | None:
    """(line, byte offset) of the first byte `encoding` cannot decode, or None if the file decodes.

    Only run after a failure, so a second pass over the file is affordable.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    consumed = 0  # bytes handed to the decoder before the current chunk
    newlines = 0
    with path.open("rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            final = not chunk
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                # exc.start indexes the decoder's buffered bytes followed by this chunk
                offset = consumed - len(pending) + exc.start
                in_chunk = max(0, offset - consumed)
                return newlines + chunk[:in_chunk].count(b"\n") + 1, offset
            if final:
                return None
            consumed += len(chunk)
            newlines += chunk.count(b"\n")


def _encoding_error(path: Path, encoding: str) -> SourceError | None:
    where = _locate_decode_error(path, encoding)
    if where is None:
        return None
    line, offset = where
    message = (
        f"file is not valid {_display(encoding)}: undecodable bytes at line {line} (byte offset {offset})"
    )
    # a hint only when the bytes around the error read cleanly as the other usual encoding;
    # anything else is more likely corruption than a wrong declaration
    with path.open("rb") as f:
        start = max(0, offset - 32_768)
        f.seek(start)
        window = f.read(65_536)
    first = window.find(b"\n") + 1 if start else 0
    last = window.rfind(b"\n")
    window = window[first : last + 1] if last >= first else window[first:]
    other = "utf-8" if _is_gb(encoding) else "gb18030"
    if window and _decodes(window, other):
        message += f"; the file looks like {_display(other)}, declare that encoding in the dataset spec"
    return SourceError("encoding", message, line)


# --------------------------------------------------------------------------- shared


def _check_header(columns: list[str]) -> None:
    if not any(c.strip() for c in columns):
        raise SourceError("empty", "file has no header row", 1)
    seen: set[str] = set()
    dupes: list[str] = []
    for c in columns:
        # blank headers come from trailing delimiters; the validator deals with them
        if c.strip() and c in seen and c not in dupes:
            dupes.append(c)
        seen.add(c)
    if dupes:
        raise SourceError("malformed", f"duplicate column headers: {', '.join(repr(d) for d in dupes)}", 1)


def _string_table(columns: list[str], values: list[list[str | None]]) -> pa.Table:
    arrays = [pa.array(v, type=pa.string()) for v in values]
    return pa.Table.from_arrays(arrays, names=columns)


def read_batches(
    path: Path,
    *,
    format: SourceFormat,
    encoding: str | None,
    sheet: str | None = None,
    batch_rows: int = 100_000,
) -> Iterator[RawBatch]:
    """Yield the file's rows in batches of at most `batch_rows` rows.

    At least one batch (possibly with no rows) is yielded whenever the file has a
    header, so callers always learn the columns. Errors that make the whole file
    unusable raise SourceError; rows that cannot be split into columns come back
    in `RawBatch.bad_rows`.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if not path.exists():
        raise SourceError("unsupported", f"file not found: {path}")
    if path.stat().st_size == 0:
        raise SourceError("empty", "file is empty")
    fmt = SourceFormat(format)
    if fmt is SourceFormat.csv:
        yield from _read_csv(path, detect_encoding(path, encoding), batch_rows)
    elif fmt is SourceFormat.jsonl:
        yield from _read_jsonl(path, detect_encoding(path, encoding), batch_rows)
    elif fmt is SourceFormat.xlsx:
        yield from _read_xlsx(path, sheet, batch_rows)
    else:  # pragma: no cover - SourceFormat() above rejects anything else
        raise SourceError("unsupported", f"unsupported format {format!r}")


# --------------------------------------------------------------------------- CSV


def _string_buffers(col: pa.Array) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint8]]:
    """(offsets, data) of a pa.string() array, honouring its slice offset."""
    buffers = col.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


# Bytes that can start or end whitespace utf8_trim_whitespace removes: ASCII whitespace,
# and the lead bytes of Unicode spaces (U+0085/U+00A0: C2, U+1680: E1, U+2000..U+205F: E2,
# U+3000: E3). A hit only means "trim this column", so false positives are harmless.
_ASCII_WS = np.zeros(256, dtype=bool)
_ASCII_WS[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20]] = True
_WS_LEAD = _ASCII_WS.copy()
_WS_LEAD[[0xC2, 0xE1, 0xE2, 0xE3]] = True
_WS_LEAD3 = np.zeros(256, dtype=bool)
_WS_LEAD3[[0xE1, 0xE2, 0xE3]] = True


def _may_need_trim(col: pa.Array) -> bool:
    offsets, data = _string_buffers(col)
    starts, ends = offsets[:-1], offsets[1:]
    nonempty = ends > starts
    if not nonempty.any():
        return False
    starts, ends = starts[nonempty], ends[nonempty]
    if _WS_LEAD[data[starts]].any() or _ASCII_WS[data[ends - 1]].any():
        return True
    two = ends - starts >= 2
    if (data[ends[two] - 2] == 0xC2).any():
        return True
    three = ends - starts >= 3
    return bool(_WS_LEAD3[data[ends[three] - 3]].any())


def _clean_column(col: pa.Array) -> pa.Array:
    """Strip surrounding whitespace (incl. U+3000) and turn blanks into nulls."""
    # pyarrow already made empty cells null; trimming (the slow part) only when some value needs it
    if not _may_need_trim(col):
        return col
    trimmed = pc.utf8_trim_whitespace(col)
    blank = pc.equal(trimmed, "")
    if pc.any(blank).as_py():
        return pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    return trimmed


def _line_breaks(col: pa.Array) -> npt.NDArray[np.int64] | None:
    """Line breaks inside each value of `col` (quoted newlines), or None when there are none."""
    offsets, data = _string_buffers(col)
    used = data[offsets[0] : offsets[-1]]
    if not ((used == 0x0A).any() or (used == 0x0D).any()):
        return None
    counts = pc.count_substring_regex(col, r"\r\n|\r|\n")
    return np.asarray(counts.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _text_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _ints(values: array[int]) -> npt.NDArray[np.int64]:
    # a copy: a live view would stop the array from being trimmed afterwards
    return np.frombuffer(values, dtype=np.int64).copy() if values else np.zeros(0, dtype=np.int64)


class _CsvLines:
    """Maps pyarrow's record numbers to physical line numbers.

    pyarrow (serial reader, empty lines not ignored) numbers every record, valid
    or invalid, 1-based from the header, but does not count line breaks inside
    quoted values and only reports numbers for invalid rows. Valid rows are
    placed between the invalid ones by counting ("gap" arithmetic), and the
    quoted line breaks of every earlier record are added, so each row gets the
    physical line its record starts on. This is exact for any file pyarrow can
    parse, at the cost of a substring scan per column and batch.
    """

    def __init__(self, header_breaks: int, width: int) -> None:
        self.width = width
        self.next_record = 2  # record number after the last valid row seen
        self.extra = header_breaks  # quoted line breaks in all records before next_record
        # invalid records not yet placed (pyarrow parses ahead, so some lie beyond the
        # rows returned so far): record number, line breaks, columns found (-1: blank line).
        # Flat int arrays, because a file can have millions of them.
        self.pending_rec = array("q")
        self.pending_breaks = array("q")
        self.pending_cols = array("q")
        self.bad_rows: list[tuple[int, str]] = []

    def invalid(self, number: int | None, text: str, columns: int) -> None:
        # number is None only if pyarrow cannot tell; place the row where parsing stands
        rec = number if number is not None else max(self.next_record, *self.pending_rec[-1:])
        self.pending_rec.append(rec)
        self.pending_breaks.append(_text_breaks(text))
        self.pending_cols.append(columns)

    def _bad(self, line: int, columns: int) -> None:
        if columns >= 0:
            self.bad_rows.append(
                (line, f"expected {self.width} columns, found {columns} (truncated or malformed row)")
            )

    def place(self, n: int, breaks: npt.NDArray[np.int64] | None) -> npt.NDArray[np.int64]:
        """Lines of the next `n` valid rows; `breaks` is line breaks per row (None = none)."""
        inv, inv_breaks = _ints(self.pending_rec), _ints(self.pending_breaks)
        # how many valid rows precede each invalid record
        gap = inv - self.next_record - np.arange(len(inv), dtype=np.int64)
        k = np.arange(n, dtype=np.int64)
        before = np.searchsorted(gap, k, side="right").astype(np.int64)
        records = self.next_record + k + before
        row_breaks = breaks if breaks is not None else np.zeros(n, dtype=np.int64)
        valid_cum = np.concatenate(([0], np.cumsum(row_breaks)))
        inv_cum = np.concatenate(([0], np.cumsum(inv_breaks)))
        lines = records + self.extra + valid_cum[:-1] + inv_cum[before]
        # invalid records before this batch's last row are placed now, later ones wait
        consumed = int(np.searchsorted(gap, n - 1, side="right")) if n else 0
        for i in range(consumed):
            valid_before = int(min(max(gap[i], 0), n))
            line = int(inv[i] + self.extra + valid_cum[valid_before] + inv_cum[i])
            self._bad(line, self.pending_cols[i])
        if n:
            self.next_record = int(records[-1]) + 1
            self.extra += int(valid_cum[-1]) + int(inv_cum[consumed])
            del self.pending_rec[:consumed], self.pending_breaks[:consumed], self.pending_cols[:consumed]
        return np.asarray(lines, dtype=np.int64)

    def finish(self) -> None:
        """Place invalid records after the last valid row (e.g. a truncated last line)."""
        extra = self.extra
        for rec, breaks, columns in zip(
            self.pending_rec, self.pending_breaks, self.pending_cols, strict=True
        ):
            self._bad(rec + extra, columns)
            extra += breaks
        del self.pending_rec[:], self.pending_breaks[:], self.pending_cols[:]

    def take_bad_rows(self) -> list[tuple[int, str]]:
        out, self.bad_rows = self.bad_rows, []
        return out


def _csv_options(
    encoding: str, columns: list[str] | None, handler: Any
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions, pacsv.ConvertOptions]:
    # pyarrow decodes UTF-8 natively (and skips a BOM); other encodings go through
    # a Python codec on pyarrow's input stream.
    arrow_encoding = "utf8" if encoding in {"utf-8", "utf-8-sig"} else encoding
    # use_threads=False: pyarrow only numbers invalid rows when reading serially
    read = pacsv.ReadOptions(encoding=arrow_encoding, use_threads=False, block_size=_CSV_BLOCK_BYTES)
    # ignore_empty_lines=False keeps pyarrow's record numbers equal to ours;
    # blank lines come back as all-null rows and are dropped below.
    parse = pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=handler)
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(columns, pa.string()) if columns else None,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],  # the default list would turn 'NA', 'null', 'nan' into nulls
    )
    return read, parse, convert


def _csv_failure(path: Path, encoding: str, exc: Exception) -> SourceError:
    located = _encoding_error(path, encoding)
    if located is not None:
        return located
    text = str(exc)
    if "Empty CSV file" in text:
        return SourceError("empty", "file has no header row")
    return SourceError("malformed", f"cannot parse the file as CSV: {text}")


def _check_unterminated_quote(path: Path, encoding: str, last_value: str, line: int) -> None:
    """Refuse a file whose last quoted value never closes (a cut-off transfer).

    pyarrow accepts such a value, running it to the end of the file. Then, and only
    then, the file ends with a quote followed by exactly the value's text. (Missed if
    the cut-off value holds escaped quotes; those are rare in department data.)
    """
    codec = "utf-8" if encoding in {"utf-8", "utf-8-sig"} else encoding
    try:
        raw = b'"' + last_value.encode(codec)
    except UnicodeEncodeError:
        return
    size = path.stat().st_size
    if len(raw) > size:
        return
    with path.open("rb") as f:
        f.seek(size - len(raw) - 1 if size > len(raw) else 0)
        tail = f.read()
    before, tail = (tail[:1], tail[1:]) if size > len(raw) else (b"", tail)
    if tail == raw and before != b'"':
        raise SourceError(
            "truncated",
            f"the file ends inside a quoted value that starts at line {line} "
            "(unterminated quote: the file is probably cut off)",
            line,
        )


def _read_csv(path: Path, encoding: str, batch_rows: int) -> Iterator[RawBatch]:
    def ignore(_row: Any) -> str:
        return "skip"

    try:
        # a first, throwaway reader only learns the header, so every column can be typed as string
        with pacsv.open_csv(path, *_csv_options(encoding, None, ignore)) as probe:
            columns = list(probe.schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _csv_failure(path, encoding, exc) from exc
    _check_header(columns)
    width = len(columns)
    lines = _CsvLines(sum(_text_breaks(c) for c in columns), width)

    def on_invalid(row: pacsv.InvalidRow) -> str:
        blank = row.actual_columns == 1 and not row.text.strip(" \t,")
        lines.invalid(row.number, row.text, -1 if blank else row.actual_columns)
        return "skip"

    out_tables: list[pa.Table] = []
    out_lines: list[npt.NDArray[np.int64]] = []
    buffered = 0
    yielded = False
    # raw last cell of the last row and its line, for the unterminated-quote check
    last_value: str | None = None
    last_line = 0

    def emit(
        tables: list[pa.Table], line_parts: list[npt.NDArray[np.int64]], bad: list[tuple[int, str]]
    ) -> RawBatch:
        if tables:
            data = pa.concat_tables(tables)
            row_lines = np.concatenate(line_parts)
        else:
            data = pa.Table.from_arrays([pa.array([], pa.string())] * width, names=columns)
            row_lines = np.zeros(0, dtype=np.int64)
        return RawBatch(columns=list(columns), data=data, lines=row_lines, bad_rows=bad)

    try:
        with pacsv.open_csv(path, *_csv_options(encoding, columns, on_invalid)) as reader:
            for record_batch in reader:
                n = record_batch.num_rows
                if n:
                    last_value = record_batch.column(width - 1)[n - 1].as_py()
                breaks: npt.NDArray[np.int64] | None = None
                cleaned: list[pa.Array] = []
                for col in record_batch.columns:
                    b = _line_breaks(col)
                    if b is not None:
                        breaks = b if breaks is None else breaks + b
                    cleaned.append(_clean_column(col))
                row_lines = lines.place(n, breaks)
                if n:
                    last_line = int(row_lines[-1])
                table = pa.Table.from_arrays(cleaned, names=columns)
                if n and all(c.null_count for c in cleaned):
                    # blank lines and lines of bare delimiters carry no data
                    blank = np.ones(n, dtype=bool)
                    for c in cleaned:
                        blank &= np.asarray(pc.is_null(c).to_numpy(zero_copy_only=False), dtype=bool)
                    if blank.any():
                        table = table.filter(pa.array(~blank))
                        row_lines = row_lines[~blank]
                out_tables.append(table)
                out_lines.append(row_lines)
                buffered += table.num_rows
                while buffered >= batch_rows:
                    data = pa.concat_tables(out_tables)
                    all_lines = np.concatenate(out_lines)
                    head = data.slice(0, batch_rows)
                    bad = lines.take_bad_rows()
                    # invalid rows after this batch's last row belong to the next batch
                    last = int(all_lines[batch_rows - 1])
                    keep_bad = [b for b in bad if b[0] > last]
                    lines.bad_rows = keep_bad
                    yield emit([head], [all_lines[:batch_rows]], [b for b in bad if b[0] <= last])
                    yielded = True
                    out_tables = [data.slice(batch_rows)]
                    out_lines = [all_lines[batch_rows:]]
                    buffered -= batch_rows
                if len(lines.bad_rows) >= batch_rows:
                    # a file of mostly broken rows: hand them on rather than hoard them
                    yield emit(out_tables, out_lines, lines.take_bad_rows())
                    yielded = True
                    out_tables, out_lines, buffered = [], [], 0
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _csv_failure(path, encoding, exc) from exc
    lines.finish()
    bad = lines.take_bad_rows()
    if last_value is not None and not any(b[0] > last_line for b in bad):
        _check_unterminated_quote(path, encoding, last_value, last_line)
    if buffered or not yielded or bad:
        yield emit(out_tables, out_lines, bad[:batch_rows])
    for i in range(batch_rows, len(bad), batch_rows):
        yield emit([], [], bad[i : i + batch_rows])


# --------------------------------------------------------------------------- JSON Lines


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _read_jsonl(path: Path, encoding: str, batch_rows: int) -> Iterator[RawBatch]:
    """One object per line; numbers keep their JSON text (parsed as strings, never floats)."""
    columns: list[str] = []
    index: dict[str, int] = {}
    rows: list[dict[str, str | None]] = []
    row_lines: list[int] = []
    bad: list[tuple[int, str]] = []
    yielded = False

    def emit() -> RawBatch:
        values: list[list[str | None]] = [[r.get(c) for r in rows] for c in columns]
        batch = RawBatch(
            columns=list(columns),
            data=_string_table(columns, values),
            lines=np.array(row_lines, dtype=np.int64),
            bad_rows=list(bad),
        )
        rows.clear()
        row_lines.clear()
        bad.clear()
        return batch

    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if number == 1 and raw.startswith(_UTF8_BOM) and encoding in {"utf-8", "utf-8-sig"}:
                raw, start = raw[len(_UTF8_BOM) :], start + len(_UTF8_BOM)
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                err = _encoding_error(path, encoding)
                if err is not None:
                    raise err from exc
                raise SourceError(
                    "encoding",
                    f"file is not valid {_display(encoding)}: undecodable bytes at line {number} "
                    f"(byte offset {start + exc.start})",
                    number,
                ) from exc
            if not text.strip():
                continue
            try:
                obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
            except json.JSONDecodeError as exc:
                bad.append((number, f"not a JSON object: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(obj, dict):
                bad.append((number, f"not a JSON object: the line holds {_json_kind(obj)}"))
                continue
            nested = next((k for k, v in obj.items() if isinstance(v, dict | list)), None)
            if nested is not None:
                bad.append((number, f"nested value in column {nested!r}"))
                continue
            for key in obj:
                if key not in index:
                    index[key] = len(columns)
                    columns.append(key)
            rows.append({k: _json_text(v) for k, v in obj.items()})
            row_lines.append(number)
            if len(rows) >= batch_rows:
                yield emit()
                yielded = True
    if not columns and not bad:
        raise SourceError("empty", "file has no JSON objects")
    if rows or bad or not yielded:
        yield emit()


# --------------------------------------------------------------------------- XLSX


def _cell_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        # positional, shortest round-trip digits: 1e-05 -> '0.00001', never '1e-05'
        return np.format_float_positional(value, trim="-")
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    return text or None


def _read_xlsx(path: Path, sheet: str | None, batch_rows: int) -> Iterator[RawBatch]:
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types for non-workbooks
        raise SourceError("unsupported", f"cannot open the file as an Excel workbook: {exc}") from exc
    names = list(workbook.sheet_names)
    if sheet is not None and sheet not in names:
        raise SourceError("malformed", f"sheet {sheet!r} not found; the workbook has: {', '.join(names)}")
    if not names:
        raise SourceError("empty", "the workbook has no sheets")
    ws = workbook.get_sheet_by_name(sheet if sheet is not None else names[0])

    columns: list[str] | None = None
    values: list[list[str | None]] = []
    row_lines: list[int] = []
    yielded = False

    def emit(cols: list[str]) -> RawBatch:
        batch = RawBatch(
            columns=list(cols),
            data=_string_table(cols, values),
            lines=np.array(row_lines, dtype=np.int64),
        )
        for v in values:
            v.clear()
        row_lines.clear()
        return batch

    # iter_rows starts at the sheet's first row (leading empty rows included), so
    # enumerate() gives the sheet row number; columns start at the used range.
    for number, row in enumerate(ws.iter_rows(), start=1):
        cells = [_cell_text(v) for v in row]
        if all(c is None for c in cells):
            continue
        if columns is None:
            columns = [c or "" for c in cells]
            _check_header(columns)
            values = [[] for _ in columns]
            continue
        for i, col_values in enumerate(values):
            col_values.append(cells[i] if i < len(cells) else None)
        row_lines.append(number)
        if len(row_lines) >= batch_rows:
            yield emit(columns)
            yielded = True
    if columns is None:
        raise SourceError("empty", "the sheet is empty")
    if row_lines or not yielded:
        yield emit(columns)
