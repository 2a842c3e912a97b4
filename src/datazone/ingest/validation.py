"""Validate and normalize raw batches against a dataset spec.

Every check is vectorized over a whole batch (pyarrow compute + NumPy); Python
runs per row only to word the reject records of rows that fail. A row with any
failing field is dropped from the output and every failing field of it is
reported.

Choices worth knowing:
- numbers: thousands separators must be in groups of three ('1,234' yes,
  '1,23,4' no); full-width digits/punctuation are folded with NFKC; scientific
  notation is refused (it is usually Excel display rounding); '12.00' is accepted
  as the integer 12.
- dates: also accept Excel serial numbers 1..99999, so a bare '2024' reads as
  serial 2024 (1905-07-16), as the spec asks.
- a column with a blank header (a trailing delimiter) is ignored unless a row has
  a value in it; that row is rejected.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from datazone import uscc
from datazone.dataset.schemas import DatasetSpec, FieldSpec, FieldType, Mode, normalize_header
from datazone.ingest.formats import RawBatch, _string_buffers

BoolMask = npt.NDArray[np.bool_]

DATE_FORMS = "2024-01-05, 2024/1/5, 20240105, 2024年1月5日, or an Excel serial number"
TRUE_WORDS = ("是", "y", "yes", "true", "1", "t")
FALSE_WORDS = ("否", "n", "no", "false", "0", "f")

_TIME = r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_DATE_PATTERNS = (
    rf"^(?P<y>\d{{4}})[-/.](?P<m>\d{{1,2}})[-/.](?P<d>\d{{1,2}}){_TIME}$",
    r"^(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})日$",
    r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$",
)
_SERIAL = r"^[1-9]\d{0,4}(?:\.0+)?$"
_EXCEL_EPOCH = -25569  # 1899-12-30 in days since 1970-01-01
_NUMBER = r"^(?P<sign>[+-]?)(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?$"
# a whole number, or one with only zeros after the point ('12.00')
_INTEGER = r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.0+)?$"
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:\.\d+)?[eE][+-]?\d+$")
_INT64_MAX = "9223372036854775807"
_INT64_MIN_ABS = "9223372036854775808"
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)

ARROW_TYPES: dict[FieldType, pa.DataType] = {
    FieldType.string: pa.string(),
    FieldType.uscc: pa.string(),
    FieldType.integer: pa.int64(),
    FieldType.decimal: pa.string(),
    FieldType.date: pa.date32(),
    FieldType.boolean: pa.bool_(),
    FieldType.enum: pa.string(),
}


@dataclass(frozen=True)
class Reject:
    line: int
    column: str | None  # the file's header for the bad value (None for row-level problems)
    reason: str  # says what is wrong and what was expected
    value: str | None  # the offending value, only for fields of grade <= 2


class HeaderError(Exception):
    """The file's columns do not fit the spec; `problems` lists all of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class ValidBatch:
    table: pa.Table  # '_line', the spec's fields in order, '_deleted'
    rejects: list[Reject]
    rows_read: int  # rows in the input batch, incl. rejected ones and bad_rows
    rows_rejected: int  # distinct lines rejected, incl. bad_rows


# A reason for each failing row: gets the failing values (None-free) and returns sentences.
ReasonFn = Callable[[list[str]], list[str]]


@dataclass
class _Parsed:
    values: pa.Array  # target type, null where missing or invalid
    invalid: BoolMask  # present but not acceptable
    reasons: ReasonFn


@dataclass(frozen=True)
class _Plan:
    field_columns: dict[str, int]  # field name -> column index
    marker_column: int | None
    blank_columns: list[int]


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> BoolMask:
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _nfkc(s: pa.Array) -> pa.Array:
    """Fold full-width digits and punctuation ('１２．５' -> '12.5'); a no-op for ASCII batches."""
    if pc.all(pc.string_is_ascii(s)).as_py() is not False:
        return s
    folded = pc.utf8_normalize(s, "NFKC")
    folded = pc.replace_substring(folded, "\u2212", "-")  # the minus sign NFKC leaves alone
    return pc.utf8_trim_whitespace(folded)


def _quote(value: str, grade: int) -> str:
    return f"{value!r}" if grade <= 2 else "the value"


# --------------------------------------------------------------------------- parsers


def _parse_string(s: pa.Array, f: FieldSpec) -> _Parsed:
    if f.max_length is None:
        return _Parsed(s, np.zeros(len(s), dtype=bool), lambda vs: [])
    limit = f.max_length
    too_long = _np_bool(pc.greater(pc.utf8_length(s), limit))

    def reasons(vs: list[str]) -> list[str]:
        return [f"too long: {len(v)} characters, at most {limit} allowed" for v in vs]

    return _Parsed(pc.if_else(pa.array(too_long), pa.scalar(None, pa.string()), s), too_long, reasons)


def _parse_uscc(s: pa.Array, f: FieldSpec) -> _Parsed:
    # after NFKC a valid code is ASCII, so ASCII upper-casing is enough
    codes = pc.ascii_upper(_nfkc(s))
    n = len(codes)
    # 18 bytes and valid means 18 ASCII characters; anything else is invalid anyway
    candidate = _np_bool(pc.equal(pc.binary_length(codes), 18))
    ok = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(candidate)
    if len(idx):
        picked = codes if len(idx) == n else pc.take(codes, pa.array(idx))
        offsets, data = _string_buffers(picked)
        fixed = data[offsets[0] : offsets[-1]].reshape(len(idx), 18)
        ok[idx] = uscc.valid_bytes(fixed)
    present = _np_bool(pc.is_valid(codes))
    invalid = present & ~ok

    def reasons(vs: list[str]) -> list[str]:
        out = []
        for v in vs:
            code = unicodedata.normalize("NFKC", v).strip().upper()
            why = uscc.explain_invalid(code) if f.grade <= 2 else None
            out.append(f"not a valid USCC: {why}" if why else "not a valid USCC")
        return out

    return _Parsed(pc.if_else(pa.array(ok), codes, pa.scalar(None, pa.string())), invalid, reasons)


def _ymd(matched: pa.StructArray) -> tuple[npt.NDArray[np.int64], ...]:
    return tuple(
        np.asarray(
            pc.cast(pc.struct_field(matched, k), pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        )
        for k in ("y", "m", "d")
    )


def _parse_date(s: pa.Array, f: FieldSpec) -> _Parsed:
    text = _nfkc(s)
    n = len(text)
    present = _np_bool(pc.is_valid(text))
    y = np.zeros(n, dtype=np.int64)
    m = np.zeros(n, dtype=np.int64)
    d = np.zeros(n, dtype=np.int64)
    matched = np.zeros(n, dtype=bool)
    todo = np.flatnonzero(present)
    # the common form first on everything, the rarer ones only on what is left
    for pattern in _DATE_PATTERNS:
        if not len(todo):
            break
        part = text if len(todo) == n else pc.take(text, pa.array(todo))
        found = pc.extract_regex(part, pattern)
        hit = _np_bool(pc.is_valid(found))
        if hit.any():
            yy, mm, dd = _ymd(found)
            where = todo[hit]
            y[where], m[where], d[where] = yy[hit], mm[hit], dd[hit]
            matched[where] = True
        todo = todo[~hit]
    serial = np.zeros(n, dtype=bool)
    days = np.zeros(n, dtype=np.int64)
    if len(todo):
        part = pc.take(text, pa.array(todo))
        hit = _np_bool(pc.match_substring_regex(part, _SERIAL))
        if hit.any():
            nums = pc.cast(pc.cast(pc.filter(part, pa.array(hit)), pa.float64()), pa.int64())
            where = todo[hit]
            days[where] = _EXCEL_EPOCH + np.asarray(nums.to_numpy(zero_copy_only=False), dtype=np.int64)
            serial[where] = True
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_ok = (m >= 1) & (m <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, m, 0)] + (leap & (m == 2))
    real = matched & (y >= 1) & month_ok & (d >= 1) & (d <= dim)
    months = np.where(real, (y - 1970) * 12 + (m - 1), 0)
    epoch_days = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    days = np.where(real, epoch_days + d - 1, days)
    ok = real | serial
    values = pa.array(days.astype(np.int32), type=pa.date32(), mask=~ok)

    def reasons(vs: list[str]) -> list[str]:
        out = []
        for v in vs:
            q = _quote(v, f.grade)
            if _matches_date_form(v):
                out.append(f"{q} is not a real calendar date (no such month or day)")
            else:
                out.append(f"{q} is not a date; accepted forms: {DATE_FORMS}")
        return out

    return _Parsed(values, present & ~ok, reasons)


_DATE_FORMS_RE = [re.compile(p, flags=re.ASCII) for p in _DATE_PATTERNS]


def _matches_date_form(value: str) -> bool:
    v = unicodedata.normalize("NFKC", value).strip()
    return any(r.match(v) for r in _DATE_FORMS_RE)


def _plain_numbers(s: pa.Array, pattern: str) -> tuple[BoolMask, BoolMask, pa.Array]:
    """(present, matches pattern, text without thousands separators or a leading '+').

    Values that do not match are null in the text; each rewrite only runs when some value needs it.
    """
    text = _nfkc(s)
    present = _np_bool(pc.is_valid(text))
    ok = _np_bool(pc.match_substring_regex(text, pattern))
    clean = pc.if_else(pa.array(ok), text, pa.scalar(None, pa.string()))
    if pc.any(pc.match_substring(clean, ",")).as_py():
        clean = pc.replace_substring(clean, ",", "")
    if pc.any(pc.starts_with(clean, "+")).as_py():
        clean = pc.utf8_ltrim(clean, "+")
    return present, ok, clean


def _parse_integer(s: pa.Array, f: FieldSpec) -> _Parsed:
    present, ok, clean = _plain_numbers(s, _INTEGER)
    # '-1234.00' -> '-1234'
    if pc.any(pc.match_substring(clean, ".")).as_py():
        clean = pc.replace_substring_regex(clean, r"\.0+$", "")
    # more than 18 digits may overflow int64: compare those as text, against the limits
    long = _np_bool(pc.greater_equal(pc.utf8_length(clean), 19))
    for i in np.flatnonzero(long).tolist():
        v = clean[i].as_py()
        negative = v.startswith("-")
        digits = v.lstrip("-").lstrip("0")
        limit = _INT64_MIN_ABS if negative else _INT64_MAX
        if len(digits) > 19 or (len(digits) == 19 and digits > limit):
            ok[i] = False
    values = pc.cast(pc.if_else(pa.array(ok), clean, pa.scalar(None, pa.string())), pa.int64())

    def reasons(vs: list[str]) -> list[str]:
        out = []
        for v in vs:
            q = _quote(v, f.grade)
            one = _split_one(v)
            if one is not None and one[1] and set(one[1]) != {"0"}:
                out.append(f"{q} is not a whole number")
            elif one is not None:
                out.append(f"{q} is too large for a 64-bit integer")
            else:
                out.append(_number_reason(v, f.grade, "a whole number"))
        return out

    return _Parsed(values, present & ~ok, reasons)


def _number_reason(v: str, grade: int, what: str) -> str:
    q = _quote(v, grade)
    if _SCIENTIFIC.match(v.strip()):
        return f"{q} is in scientific notation (often Excel rounding); send the number with all its digits"
    return f"{q} is not {what}; expected digits with an optional sign, '.' and ',' thousands separators"


def _split_one(value: str) -> tuple[str, str | None] | None:
    """(integer digits, fraction digits) for one value, mirroring _NUMBER; None if not a number."""
    v = unicodedata.normalize("NFKC", value).replace("\u2212", "-").strip()
    found = re.match(_NUMBER, v, flags=re.ASCII)
    return (found.group("int"), found.group("frac")) if found else None


def _parse_decimal(s: pa.Array, f: FieldSpec) -> _Parsed:
    present, ok, clean = _plain_numbers(s, _NUMBER)
    negative_zero = pc.match_substring_regex(clean, r"^-[0.]+$")
    if pc.any(negative_zero).as_py():
        clean = pc.if_else(negative_zero, pc.utf8_ltrim(clean, "-"), clean)

    def reasons(vs: list[str]) -> list[str]:
        return [_number_reason(v, f.grade, "a number") for v in vs]

    return _Parsed(clean, present & ~ok, reasons)


def _parse_boolean(s: pa.Array, f: FieldSpec) -> _Parsed:
    lower = pc.utf8_lower(s)
    is_true = _np_bool(pc.is_in(lower, value_set=pa.array(TRUE_WORDS)))
    is_false = _np_bool(pc.is_in(lower, value_set=pa.array(FALSE_WORDS)))
    present = _np_bool(pc.is_valid(s))
    values = pa.array(is_true, type=pa.bool_(), mask=~(is_true | is_false))
    allowed = "/".join(f"{t}/{fl}" for t, fl in zip(TRUE_WORDS, FALSE_WORDS, strict=True))

    def reasons(vs: list[str]) -> list[str]:
        return [f"{_quote(v, f.grade)} is not a yes/no value; expected one of {allowed}" for v in vs]

    return _Parsed(values, present & ~(is_true | is_false), reasons)


class _EnumParser:
    def __init__(self, f: FieldSpec) -> None:
        assert f.values is not None  # FieldSpec guarantees values for enums
        lookup: dict[str, str] = {}
        for canonical, aliases in f.values.items():
            for word in [canonical, *aliases]:
                key = _ascii_lower(word.strip())
                if lookup.setdefault(key, canonical) != canonical:
                    raise ValueError(
                        f"field {f.name!r}: {word!r} is a value or alias of both "
                        f"{lookup[key]!r} and {canonical!r}"
                    )
        self.keys = pa.array(list(lookup), type=pa.string())
        self.canonical = pa.array(list(lookup.values()), type=pa.string())
        self.allowed = ", ".join(f.values)

    def __call__(self, s: pa.Array, f: FieldSpec) -> _Parsed:
        idx = pc.index_in(pc.ascii_lower(s), value_set=self.keys)
        values = pc.take(self.canonical, idx)
        present = _np_bool(pc.is_valid(s))
        invalid = present & ~_np_bool(pc.is_valid(idx))
        allowed = self.allowed

        def reasons(vs: list[str]) -> list[str]:
            return [f"{_quote(v, f.grade)} is not an allowed value; expected one of: {allowed}" for v in vs]

        return _Parsed(values, invalid, reasons)


Parser = Callable[[pa.Array, FieldSpec], _Parsed]

_PARSERS: dict[FieldType, Parser] = {
    FieldType.string: _parse_string,
    FieldType.uscc: _parse_uscc,
    FieldType.integer: _parse_integer,
    FieldType.decimal: _parse_decimal,
    FieldType.date: _parse_date,
    FieldType.boolean: _parse_boolean,
}


# --------------------------------------------------------------------------- validator


class RecordValidator:
    """Checks batches of one file against `spec`; construction checks the file's columns."""

    def __init__(self, spec: DatasetSpec, columns: list[str]) -> None:
        self.spec = spec
        self.key_fields = set(spec.record_key())
        self._by_header: dict[str, str] = {}
        for f in spec.fields:
            for h in f.accepted_headers():
                self._by_header[normalize_header(h)] = f.name
        marker = spec.deletion_marker
        self._marker_headers = (
            {normalize_header(h) for h in [marker.column, *marker.headers]} if marker is not None else set()
        )
        self._marker_values = pa.array(
            sorted({_ascii_lower(v.strip()) for v in marker.values}) if marker is not None else [],
            type=pa.string(),
        )
        self._parsers: dict[str, Parser] = {}
        for f in spec.fields:
            self._parsers[f.name] = _EnumParser(f) if f.type is FieldType.enum else _PARSERS[f.type]
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self.columns = list(columns)
        self._plan(self.columns)

    def _expected(self) -> str:
        names = [f.headers[0] if f.headers else f.name for f in self.spec.fields]
        if self.spec.deletion_marker is not None:
            names.append(self.spec.deletion_marker.column)
        return ", ".join(names)

    def _plan(self, columns: list[str]) -> _Plan:
        key = tuple(columns)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        problems: list[str] = []
        field_columns: dict[str, int] = {}
        marker_column: int | None = None
        blank: list[int] = []
        for i, header in enumerate(columns):
            norm = normalize_header(header)
            name = self._by_header.get(norm)
            if not norm:
                blank.append(i)
            elif name is not None:
                if name in field_columns:
                    first = columns[field_columns[name]]
                    problems.append(
                        f"columns {first!r} (column {field_columns[name] + 1}) and {header!r} "
                        f"(column {i + 1}) both map to field {name!r}"
                    )
                else:
                    field_columns[name] = i
            elif norm in self._marker_headers:
                if marker_column is not None:
                    problems.append(
                        f"columns {columns[marker_column]!r} and {header!r} are both the deletion marker"
                    )
                else:
                    marker_column = i
            elif not self.spec.ignore_unknown_columns:
                problems.append(
                    f"unknown column {header!r} (column {i + 1}); expected one of: {self._expected()}"
                )
        for f in self.spec.fields:
            if f.required and f.name not in field_columns:
                named = f" ({' / '.join(f.headers)})" if f.headers else ""
                problems.append(f"missing required column for field {f.name!r}{named}")
        marker = self.spec.deletion_marker
        if marker is not None and self.spec.mode is Mode.incremental and marker_column is None:
            accepted = ", ".join([marker.column, *marker.headers])
            problems.append(f"missing deletion-marker column (accepted headers: {accepted})")
        if problems:
            raise HeaderError(problems)
        plan = _Plan(field_columns, marker_column, blank)
        self._plans[key] = plan
        return plan

    def validate(self, batch: RawBatch) -> ValidBatch:
        """Typed, accepted rows of `batch` plus a reject record for every failing value.

        A batch may have more columns than the validator was built with (JSONL
        keys first seen later); they are checked like the first ones, and a
        HeaderError is raised if they do not fit.
        """
        plan = self._plan(batch.columns)
        data = batch.data
        n = data.num_rows
        lines = np.asarray(batch.lines, dtype=np.int64)
        row_bad = np.zeros(n, dtype=bool)
        # (row indices, column, reasons, values or None), in field order
        found: list[tuple[npt.NDArray[np.intp], str | None, list[str], list[str | None]]] = []

        def column(i: int) -> pa.Array:
            return data.column(i).combine_chunks() if n else pa.array([], pa.string())

        deleted = np.zeros(n, dtype=bool)
        if plan.marker_column is not None and n:
            marks = pc.ascii_lower(column(plan.marker_column))
            deleted = _np_bool(pc.is_in(marks, value_set=self._marker_values))

        for i in plan.blank_columns:
            has_value = _np_bool(pc.is_valid(column(i))) if n else np.zeros(0, dtype=bool)
            rows = np.flatnonzero(has_value)
            if len(rows):
                row_bad[rows] = True
                why = f"value in column {i + 1}, which has no header"
                found.append((rows, None, [why] * len(rows), [None] * len(rows)))

        arrays: list[pa.Array] = [pa.array(lines, type=pa.int64())]
        names = ["_line"]
        for f in self.spec.fields:
            ci = plan.field_columns.get(f.name)
            header = batch.columns[ci] if ci is not None else None
            raw = column(ci) if ci is not None else pa.nulls(n, pa.string())
            parsed = self._parsers[f.name](raw, f)
            is_key = f.name in self.key_fields
            # a deletion only needs its key; other fields may be empty or junk
            counts = np.ones(n, dtype=bool) if is_key else ~deleted
            missing = _np_bool(pc.is_null(raw)) & counts if f.required else np.zeros(n, dtype=bool)
            invalid = parsed.invalid & counts
            if missing.any():
                rows = np.flatnonzero(missing)
                row_bad[rows] = True
                found.append((rows, header, ["required value missing"] * len(rows), [None] * len(rows)))
            if invalid.any():
                rows = np.flatnonzero(invalid)
                row_bad[rows] = True
                bad_values = pc.take(raw, pa.array(rows)).to_pylist()
                reasons = parsed.reasons([v or "" for v in bad_values])
                shown: list[str | None] = list(bad_values) if f.grade <= 2 else [None] * len(rows)
                found.append((rows, header, reasons, shown))
            arrays.append(parsed.values.cast(ARROW_TYPES[f.type]))
            names.append(f.name)
        arrays.append(pa.array(deleted, type=pa.bool_()))
        names.append("_deleted")

        table = pa.Table.from_arrays(arrays, names=names)
        if row_bad.any():
            table = table.filter(pa.array(~row_bad))

        rejects = [Reject(line, None, reason, None) for line, reason in batch.bad_rows]
        order: list[tuple[int, int, Reject]] = []
        for seq, (rows, header, reasons, values) in enumerate(found):
            for r, reason, value in zip(rows.tolist(), reasons, values, strict=True):
                order.append((r, seq, Reject(int(lines[r]), header, reason, value)))
        order.sort(key=lambda t: (t[0], t[1]))
        rejects.extend(t[2] for t in order)
        rejects.sort(key=lambda rj: rj.line)  # stable: a line's rejects stay in field order
        return ValidBatch(
            table=table,
            rejects=rejects,
            rows_read=n + len(batch.bad_rows),
            rows_rejected=int(row_bad.sum()) + len({line for line, _ in batch.bad_rows}),
        )
