"""The institution's side of private set intersection (隐私求交): the bank's list never leaves as itself.

Two paths, chosen by size (`choose_mode`):

- **OPRF over HTTP** (OpenMined PSI's wire format). The SDK opens a session, fetches the
  zone's setup (or, for labeled PSI, the sealed label table) and sends its codes in chunks
  as blinded P-256 points; what comes back is unblinded here and compared here. The zone
  sees points under a key it does not know, never a code or a hash of one.
- **SecretFlow's engine** (RR22, ECDH, unbalanced ECDH-OPRF) for large lists: the gateway
  creates a job and hands back a ticket; this machine runs the institution's side of the
  engine, which the zone's worker joins over the engine's own link.

The OPRF path is resumable. Before anything is sent, a state file (mode 0600) records the
session's idempotency key, the input's digest and, as chunks are answered, their results.
A plain session uses one OpenMined client key for all its chunks, kept in the state file,
so a chunk sent again after a dropped connection is byte for byte the chunk sent before,
which the gateway answers again for free; a labeled chunk keeps its blinding scalar and
body in the state file until its answer is recorded, for the same reason. Once every chunk is
answered the state file drops the key and stays as the run's receipt: running the same command
on the same list again gives the same result from it, asking the zone nothing and paying
nothing; a run of another list (or purpose, or product) replaces it. It holds nothing secret
beyond what the result file holds.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from datazone import uscc
from datazone.client.enterprises import BULK_CHECK_FROM, find_invalid, flatten, normalize
from datazone.client.errors import BadUSCC, ConfigError, InvalidUSCCs, ZoneError
from datazone.client.sheets import InputFileError, read_listed_codes
from datazone.purposes import Purpose

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # the same base class, before it joined the standard library
    from backports.strenum import StrEnum

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

Progress = Callable[[int, int], None]  # (codes joined so far, codes in all)

OPRF_MAX_ITEMS = 100_000  # mode "auto": above this the engine, when the bank gave a peer address
STATE_VERSION = 1
STATE_SUFFIX = ".psi-state.json"
SETUP_PATIENCE_S = 900.0  # the zone builds a slice's setup once per key epoch; 2.6M items take minutes
JOB_SETTLE_S = 60.0  # after our side of the engine finished, how long the zone's status may lag
PROTOBUF = "application/x-protobuf"
PROBLEM = "application/problem+json"
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})")
_CACHE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # it becomes a directory name


class PsiMode(StrEnum):
    auto = "auto"
    oprf = "oprf"
    engine = "engine"


class EngineProtocol(StrEnum):
    auto = "auto"
    rr22 = "rr22"
    ecdh = "ecdh"
    unbalanced = "unbalanced"


# -- errors --------------------------------------------------------------------------------------


class InvalidListedUSCCs(InvalidUSCCs):
    """Codes of a list that are not USCCs, by the line they are on; nothing was sent.

    The message names lines and problems, never the codes: the list is the bank's secret
    and the message may end up in a log. `bad` still holds the codes for the caller."""

    def __init__(self, bad: list[BadUSCC], total: int, *, lines: list[int], source: str) -> None:
        super().__init__(bad, total)
        self.lines = lines  # the line of each entry of `bad`
        shown = "; ".join(f"line {line}: {b.reason}" for line, b in zip(lines[:20], bad[:20], strict=True))
        more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
        # replaces the parent's text, which quotes each code
        self.args = (f"{len(bad)} of {total} USCCs in {source} are invalid, nothing was sent: {shown}{more}",)

    @property
    def problems(self) -> list[tuple[int, str]]:
        """(line, what is wrong) for each invalid code, in file order."""
        return [(line, b.reason) for line, b in zip(self.lines, self.bad, strict=True)]


class PsiStateError(ValueError):
    """The state file cannot be used to continue (another input, product or purpose; expired session)."""


class PsiJobFailed(ZoneError):
    """The engine job did not finish: our side's error and, when the zone said why, its reason."""

    def __init__(self, detail: str, *, job_id: str | None, reason: str | None = None) -> None:
        problem: dict[str, Any] = {"type": "psi-job-failed", "title": "PSI job failed", "detail": detail}
        if job_id is not None:
            problem["job_id"] = job_id
        if reason:
            problem["reason"] = reason
        super().__init__(None, problem)


def _unexpected(detail: str, status: int | None = None) -> ZoneError:
    return ZoneError(status, {"type": "unexpected-answer", "detail": detail})


# -- the bank's list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicate:
    line: int
    first_line: int  # the line whose code it repeats (that one is joined)


@dataclass(frozen=True)
class InstitutionList:
    """The bank's codes, checked, normalized and each kept once, with the line each came from."""

    codes: list[str] = field(repr=False)
    lines: list[int] = field(repr=False)
    duplicates: list[Duplicate] = field(repr=False)
    source: str  # the file's name, or "the list" for codes given directly

    def digest(self) -> str:
        """Identifies the list in the local state file (never sent: a list's hash would fingerprint it)."""
        h = hashlib.sha256(b"datazone/psi/state/v1\n")
        if self.codes:
            # the same bytes as one update per code followed by a newline, in one call
            h.update(("\n".join(self.codes) + "\n").encode("ascii"))
        return h.hexdigest()


def read_institution_list(
    codes_or_path: str | Path | Sequence[str] | InstitutionList, column: str | None = None
) -> InstitutionList:
    """The list from a CSV/XLSX file (lines as in the file, header = 1) or from codes (line = position + 1).

    Raises `InvalidListedUSCCs` naming every bad line, `InputFileError` for a file that cannot be
    read or lists nothing."""
    if isinstance(codes_or_path, InstitutionList):
        return codes_or_path
    if isinstance(codes_or_path, (str, Path)):
        path = Path(codes_or_path)
        listed = read_listed_codes(path, column)
        raw = [item.code for item in listed]
        lines = [item.line for item in listed]
        unreadable = {i: item.problem for i, item in enumerate(listed) if item.problem}
        source = str(path)
    else:
        raw = list(codes_or_path)
        lines = list(range(1, len(raw) + 1))
        unreadable = {}
        source = "the list"
    normalized = _all_valid(raw) if not unreadable else None
    if normalized is None:
        bad = {i: BadUSCC(i, raw[i], why) for i, why in unreadable.items()}
        for b in find_invalid(raw):
            bad.setdefault(b.position, b)
        if bad:
            ordered = [bad[i] for i in sorted(bad)]
            raise InvalidListedUSCCs(ordered, len(raw), lines=[lines[b.position] for b in ordered], source=source)
        normalized = [normalize(c) for c in raw]
    if not raw:
        raise InputFileError(f"{source} lists no USCCs")
    if len(set(normalized)) == len(normalized):
        return InstitutionList(normalized, lines, [], source)  # no duplicate: nothing to drop
    first: dict[str, int] = {}
    codes: list[str] = []
    kept_lines: list[int] = []
    duplicates: list[Duplicate] = []
    for code, line in zip(normalized, lines, strict=True):
        if code in first:
            duplicates.append(Duplicate(line, first[code]))
            continue
        first[code] = line
        codes.append(code)
        kept_lines.append(line)
    return InstitutionList(codes, kept_lines, duplicates, source)


def _all_valid(raw: Sequence[object]) -> list[str] | None:
    """The codes normalized when every one is a valid USCC, checked at once (a million codes in
    well under a second); None when one is not, and `find_invalid` then names each bad one."""
    if len(raw) < BULK_CHECK_FROM:
        return None
    try:
        normalized: list[str] = [c.strip().upper() for c in raw]  # type: ignore[attr-defined]  # `normalize`, inlined
    except AttributeError:  # not text: find_invalid says which
        return None
    if not all(type(c) is str for c in normalized):
        return None
    return normalized if bool(uscc.valid_mask(normalized).all()) else None


def choose_mode(mode: str | PsiMode, items: int, peer_address: str | None) -> PsiMode:
    """OPRF over HTTP up to OPRF_MAX_ITEMS codes (or without a peer address), the engine above."""
    try:
        chosen = PsiMode(mode)
    except ValueError:
        raise ValueError(f"unknown PSI mode {mode!r}; one of: auto, oprf, engine") from None
    if chosen is PsiMode.engine and not peer_address:
        raise ValueError(
            "the engine mode needs peer_address: the host:port this machine's engine listens on"
            " and the zone's worker connects to"
        )
    if peer_address and chosen is not PsiMode.oprf:
        match = _HOST_PORT.fullmatch(peer_address)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            # checked before a job is created (and charged), not when the engine starts
            raise ValueError(
                f"peer_address must be host:port with a port from 1 to 65535, got {peer_address!r}"
            )
    if chosen is PsiMode.auto:
        return PsiMode.engine if items > OPRF_MAX_ITEMS and peer_address else PsiMode.oprf
    return chosen


# -- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PsiMatch:
    line: int
    uscc: str
    labels: dict[str, Any] | None = None  # the product's fields, labeled PSI only


@dataclass(frozen=True)
class PsiResult:
    product: str
    purpose: str
    mode: str  # "oprf" or "engine"
    result: str  # "intersection" (matched holds the enterprises) or "size" (only the count)
    items: int  # distinct codes joined
    size: int  # how many of them are in the zone's slice
    matched: list[PsiMatch] = field(repr=False)
    duplicates: list[Duplicate] = field(repr=False)
    session_id: str | None = None
    job_id: str | None = None
    protocol: str | None = None  # the engine's protocol
    charged_fen: int | None = None
    resumed_chunks: int = 0  # chunks answered in an earlier run and taken from the state file
    # the same run finished before: the result is its receipt's, nothing was asked or charged now
    from_receipt: bool = False
    cache_transferred: bool = False  # unbalanced engine job: the zone's cache came in this job
    output: Path | None = None


def write_matches(path: Path, result: PsiResult) -> int:
    """The result as CSV: one row per matched enterprise (line, uscc, label fields), or the size.

    Written to a temporary file and renamed, so the file never holds half a result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # utf-8-sig: Excel opens it with Chinese field values intact
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            if result.result == "size":
                writer.writerow(["product", "items", "intersection_size"])
                writer.writerow([result.product, result.items, result.size])
                rows = 1
            elif not any(m.labels for m in result.matched):
                # the engine's result: line and code only, written at once rather than row by row
                out.write("line,uscc\r\n")
                out.write("".join(f"{m.line},{m.uscc}\r\n" for m in result.matched))
                rows = len(result.matched)
            else:
                flat = [dict(flatten(m.labels or {})) for m in result.matched]
                fields: dict[str, None] = {}
                for labels in flat:
                    fields.update(dict.fromkeys(labels))
                writer.writerow(["line", "uscc", *fields])
                for match, labels in zip(result.matched, flat, strict=True):
                    writer.writerow([match.line, match.uscc, *(_cell(labels.get(f)) for f in fields)])
                rows = len(result.matched)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


# -- the state file ----------------------------------------------------------------------------


def default_state_path(
    output: Path | None, codes_or_path: str | Path | Sequence[str] | InstitutionList, product: str
) -> Path | None:
    """`<output>.psi-state.json`; without an output, `<input>.<product>.psi-state.json`; else none."""
    if output is not None:
        return output.with_name(output.name + STATE_SUFFIX)
    if isinstance(codes_or_path, (str, Path)):
        path = Path(codes_or_path)
        return path.with_name(f"{path.name}.{product}{STATE_SUFFIX}")
    if isinstance(codes_or_path, InstitutionList) and codes_or_path.source != "the list":
        path = Path(codes_or_path.source)
        return path.with_name(f"{path.name}.{product}{STATE_SUFFIX}")
    return None


@dataclass
class SessionState:
    """What a resumed run needs; saved after every step that the gateway would bill or remember."""

    product: str
    purpose: str
    labeled: bool
    input_digest: str
    items: int
    idempotency_key: str
    session: dict[str, Any] | None = None  # the gateway's answer to POST /v1/psi/sessions
    client_key: str | None = field(default=None, repr=False)  # hex, plain sessions
    # per chunk index: {"matched": [global positions]} | {"size": n} | {"labels": {position: json}}
    chunks: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    # a labeled chunk sent but not yet recorded: {"index", "scalar" (hex), "body" (base64)}
    pending: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        """Every chunk is answered: the session's whole result is here, and a rerun of the same
        run needs nothing more of the zone (nor pays again)."""
        if self.session is None:
            return False
        size = int(self.session.get("max_chunk_items") or 0)
        return size > 0 and len(self.chunks) == -(-self.items // size)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "kind": "datazone-psi-session",
            "product": self.product,
            "purpose": self.purpose,
            "labeled": self.labeled,
            "input_digest": self.input_digest,
            "items": self.items,
            "idempotency_key": self.idempotency_key,
            "session": self.session,
            "client_key": self.client_key,
            "chunks": {str(k): v for k, v in sorted(self.chunks.items())},
            "pending": self.pending,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SessionState:
        return cls(
            product=str(raw["product"]),
            purpose=str(raw["purpose"]),
            labeled=bool(raw["labeled"]),
            input_digest=str(raw["input_digest"]),
            items=int(raw["items"]),
            idempotency_key=str(raw["idempotency_key"]),
            session=dict(raw["session"]) if raw.get("session") else None,
            client_key=str(raw["client_key"]) if raw.get("client_key") else None,
            chunks={int(k): dict(v) for k, v in dict(raw.get("chunks") or {}).items()},
            pending=dict(raw["pending"]) if raw.get("pending") else None,
        )


class StateFile:
    """The state on disk (when there is a path): private, replaced whole on every save."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> SessionState | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("kind") != "datazone-psi-session":
                raise ValueError("not a PSI state file")
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"state version {raw.get('version')!r}, this SDK writes {STATE_VERSION}")
            return SessionState.from_json(raw)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise PsiStateError(
                f"{self.path} cannot be read as a PSI state file ({type(exc).__name__}: {exc});"
                " move it away or delete it to start a new PSI session"
            ) from None

    def save(self, state: SessionState) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state.to_json(), out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _differences(state: SessionState, fresh: SessionState) -> list[str]:
    """What makes this run another run than the one `state` records (none: the same run)."""
    different = [
        f"{what} {theirs!r} (now {ours!r})"
        for what, theirs, ours in (
            ("product", state.product, fresh.product),
            ("purpose", state.purpose, fresh.purpose),
            ("labeled", state.labeled, fresh.labeled),
        )
        if theirs != ours
    ]
    if state.input_digest != fresh.input_digest:
        different.append(f"another list ({state.items} distinct codes then, {fresh.items} now)")
    return different


def _check_resumable(state: SessionState, fresh: SessionState, path: Path | None) -> None:
    different = _differences(state, fresh)
    if different:
        raise PsiStateError(
            f"{path} belongs to an unfinished PSI run with {'; '.join(different)}, so it cannot be"
            " continued with this input; run the same command on the same list to continue it, pass"
            " another state path, or delete the state file to start anew (chunks it already paid"
            " for are billed again)"
        )


# -- the gateway's PSI API ---------------------------------------------------------------------


def _gateway_path(zone: ZoneClient, url: object, what: str) -> str:
    """A URL the gateway handed us, as a path on the gateway: the bearer token goes nowhere else."""
    if not isinstance(url, str) or not url:
        raise _unexpected(f"the session's {what} is missing")
    if url.startswith("/") and not url.startswith("//"):
        return url
    base = zone.config.url
    if url.startswith(base + "/"):
        return url[len(base) :]
    raise _unexpected(
        f"the session's {what} points outside the gateway ({base}); the SDK sends its token only there"
    )


def _json_object(resp_body: Any, what: str) -> dict[str, Any]:
    if not isinstance(resp_body, dict):
        raise _unexpected(f"{what} did not answer a JSON object")
    return resp_body


def _checked_session(body: dict[str, Any], *, items: int, labeled: bool) -> dict[str, Any]:
    problems = []
    if not isinstance(body.get("session_id"), str) or not body["session_id"]:
        problems.append("no session_id")
    if body.get("result") not in ("intersection", "size"):
        problems.append(f"result {body.get('result')!r} is neither 'intersection' nor 'size'")
    if bool(body.get("labeled")) != labeled:
        problems.append(f"labeled is {body.get('labeled')!r}, asked {labeled}")
    if labeled and body.get("result") != "intersection":
        problems.append("a labeled session must reveal the intersection")
    chunk = body.get("max_chunk_items")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        problems.append(f"max_chunk_items {chunk!r} is not a positive integer")
    if body.get("set_size") not in (None, items):
        problems.append(f"set_size {body.get('set_size')!r}, asked {items}")
    if problems:
        raise _unexpected("the PSI session answer is not usable: " + "; ".join(problems))
    return body


def _fetch_bytes(zone: ZoneClient, path: str, accept: str) -> bytes:
    resp = zone._exchange("GET", path, accept=f"{accept}, {PROBLEM}", patience=SETUP_PATIENCE_S)
    return resp.content


def _put_chunk(zone: ZoneClient, session: dict[str, Any], index: int, body: bytes) -> bytes:
    template = session.get("chunks_url")
    if not isinstance(template, str) or "{index}" not in template:
        raise _unexpected("the session's chunks_url has no {index} placeholder")
    path = _gateway_path(zone, template.replace("{index}", str(index)), "chunks_url")
    resp = zone._exchange("PUT", path, content=body, content_type=PROTOBUF, accept=f"{PROTOBUF}, {PROBLEM}")
    return resp.content


def _open_session(zone: ZoneClient, state: SessionState) -> dict[str, Any]:
    if state.session is None:
        body = zone._call(
            "POST",
            "/v1/psi/sessions",
            json={
                "product": state.product,
                "purpose": state.purpose,
                "set_size": state.items,
                "labeled": state.labeled,
            },
            idempotency_key=state.idempotency_key,
        )
        return _checked_session(
            _json_object(body, "POST /v1/psi/sessions"), items=state.items, labeled=state.labeled
        )
    session_id = str(state.session["session_id"])
    try:
        now = _json_object(
            zone._call("GET", f"/v1/psi/sessions/{quote(session_id, safe='')}"), "GET /v1/psi/sessions/{id}"
        )
    except ZoneError as exc:
        if exc.status != 404:
            raise
        now = {"state": "gone"}
    if now.get("state") not in (None, "open"):
        raise PsiStateError(
            f"PSI session {session_id} can no longer be continued (state {now.get('state')!r},"
            f" expired at {state.session.get('expires_at', '?')}); delete the state file to start a new"
            f" session ({len(state.chunks)} chunks it already answered are billed again)"
        )
    return state.session


# -- the OPRF path -----------------------------------------------------------------------------


def _run_oprf(
    zone: ZoneClient,
    product: str,
    purpose: Purpose,
    listed: InstitutionList,
    *,
    labeled: bool,
    progress: Progress | None,
    state_file: StateFile,
) -> PsiResult:
    fresh = SessionState(
        product=product,
        purpose=purpose.value,
        labeled=labeled,
        input_digest=listed.digest(),
        items=len(listed.codes),
        idempotency_key=str(uuid.uuid4()),
    )
    state = state_file.load()
    if state is not None and state.finished and _differences(state, fresh):
        state = None  # the receipt of a finished run of another list gives way to this run
    if state is None:
        state = fresh
        state_file.save(state)  # the idempotency key is on disk before the session is asked for
    else:
        _check_resumable(state, fresh, state_file.path)
    resumed = len(state.chunks)
    from_receipt = state.finished
    if state.finished and state.session is not None:
        # this very run finished before: its result is all in the receipt, nothing is asked or billed
        session = state.session
    else:
        try:
            session = _open_session(zone, state)
        except ZoneError as exc:
            if state.session is None and exc.status is not None and 400 <= exc.status < 500:
                state_file.delete()  # refused outright: there is nothing to continue
            raise
    if state.session is None:
        state.session = session
        state_file.save(state)
    size = int(session["max_chunk_items"])
    total = len(listed.codes)
    chunk_count = -(-total // size)
    _report(progress, state, size, total)
    todo = [i for i in range(chunk_count) if i not in state.chunks]
    if todo and labeled:
        _labeled_chunks(zone, state, state_file, listed, todo, size, progress)
    elif todo:
        _plain_chunks(zone, state, state_file, listed, todo, size, progress)

    if state.client_key is not None or state.pending is not None:
        # finished: the state stays as the run's receipt, without the key it no longer needs
        state.client_key, state.pending = None, None
        state_file.save(state)
    result_kind = str(session["result"])
    matched: list[PsiMatch] = []
    found = 0
    for index in range(chunk_count):
        record = state.chunks[index]
        if result_kind == "size":
            found += int(record["size"])
        elif labeled:
            for position, label in sorted((int(p), v) for p, v in record["labels"].items()):
                matched.append(PsiMatch(listed.lines[position], listed.codes[position], json.loads(label)))
        else:
            for position in record["matched"]:
                matched.append(PsiMatch(listed.lines[position], listed.codes[position]))
    matched.sort(key=lambda m: m.line)
    charged = session.get("charged_fen")
    return PsiResult(
        product=product,
        purpose=purpose.value,
        mode=PsiMode.oprf.value,
        result=result_kind,
        items=total,
        size=found if result_kind == "size" else len(matched),
        matched=matched,
        duplicates=listed.duplicates,
        session_id=str(session["session_id"]),
        charged_fen=0 if from_receipt else charged if isinstance(charged, int) else None,
        resumed_chunks=resumed,
        from_receipt=from_receipt,
    )


def _report(progress: Progress | None, state: SessionState, size: int, total: int) -> None:
    """Codes in the chunks answered so far (those of an earlier run included) out of all."""
    if progress is not None:
        progress(sum(min(size, total - i * size) for i in state.chunks), total)


def _plain_chunks(
    zone: ZoneClient,
    state: SessionState,
    state_file: StateFile,
    listed: InstitutionList,
    todo: list[int],
    size: int,
    progress: Progress | None,
) -> None:
    from datazone.privacy.openmined import OpenMinedClient

    assert state.session is not None
    reveal = state.session["result"] == "intersection"
    if state.client_key is None:
        client = OpenMinedClient.new(reveal)
        state.client_key = client.key_bytes().hex()
        state_file.save(state)  # before the first chunk: every later run must send the same bodies
    else:
        client = OpenMinedClient.from_key(bytes.fromhex(state.client_key), reveal)
    setup = _fetch_bytes(zone, _gateway_path(zone, state.session.get("setup_url"), "setup_url"), PROTOBUF)
    total = len(listed.codes)
    for index in todo:
        start = index * size
        items = listed.codes[start : start + size]
        answer = _put_chunk(zone, state.session, index, client.request(items))
        try:
            if reveal:
                hits = client.intersection(setup, answer, request_size=len(items))
                if any(not 0 <= h < len(items) for h in hits):
                    raise ValueError("an index outside the chunk")
                record: dict[str, Any] = {"matched": sorted(start + h for h in hits)}
            else:
                record = {"size": client.intersection_size(setup, answer, request_size=len(items))}
        except ZoneError:
            raise
        except Exception as exc:  # the library's own errors on bytes the gateway sent
            raise _unexpected(f"chunk {index}'s answer cannot be read: {type(exc).__name__}: {exc}") from None
        state.chunks[index] = record
        state_file.save(state)
        _report(progress, state, size, total)


def _labeled_chunks(
    zone: ZoneClient,
    state: SessionState,
    state_file: StateFile,
    listed: InstitutionList,
    todo: list[int],
    size: int,
    progress: Progress | None,
) -> None:
    import private_set_intersection.python as om

    from datazone.privacy import labels, oprf

    assert state.session is not None
    table = _fetch_bytes(
        zone, _gateway_path(zone, state.session.get("labels_url"), "labels_url"), "application/octet-stream"
    )
    total = len(listed.codes)
    for index in todo:
        start = index * size
        items = listed.codes[start : start + size]
        pending = state.pending
        if pending is not None and pending.get("index") == index:
            # sent before and maybe answered: the same body again is a free replay of that answer
            body = base64.b64decode(pending["body"])
            request = om.Request()
            request.ParseFromString(body)
            blinded = oprf.Blinded(points=list(request.encrypted_elements), scalar=int(pending["scalar"], 16))
        else:
            blinded = oprf.blind(items)
            request = om.Request()
            request.reveal_intersection = True
            request.encrypted_elements.extend(blinded.points)
            body = request.SerializeToString()
            state.pending = {
                "index": index,
                "scalar": format(blinded.scalar, "x"),
                "body": base64.b64encode(body).decode("ascii"),
            }
            state_file.save(state)
        answer = _put_chunk(zone, state.session, index, body)
        try:
            response = om.Response()
            response.ParseFromString(answer)
            evaluated = list(response.encrypted_elements)
            if len(evaluated) != len(items):
                raise ValueError(f"{len(evaluated)} points for {len(items)} sent")
            outputs = oprf.finalize(blinded, evaluated)
            opened = labels.open_labels(table, outputs)
            record = {"labels": {str(start + i): _label_text(label) for i, label in sorted(opened.items())}}
        except Exception as exc:  # the library's own errors on bytes the gateway sent
            raise _unexpected(f"chunk {index}'s answer cannot be read: {type(exc).__name__}: {exc}") from None
        state.chunks[index] = record
        state.pending = None
        state_file.save(state)
        _report(progress, state, size, total)


def _label_text(label: bytes) -> str:
    """The label (the product's fields as compact JSON), checked to be a JSON object."""
    text = label.decode("utf-8")
    if not isinstance(json.loads(text), dict):
        raise ValueError("a label is not a JSON object")
    return text


# -- the engine path ---------------------------------------------------------------------------


# how many failed earlier jobs of the same command a rerun steps over before giving up
MAX_FAILED_REPLAYS = 20


def cache_root(cache_dir: Path | None) -> Path:
    """Where unbalanced PSI keeps the zone's transferred cache between jobs (~/.cache/datazone/psi)."""
    if cache_dir is not None:
        return cache_dir
    if os.environ.get("DATAZONE_CACHE_DIR"):
        return Path(os.environ["DATAZONE_CACHE_DIR"]).expanduser() / "psi"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("datazone")) / "psi"


def _known_cache(root: Path, product: str) -> str | None:
    """The cache id of this product's zone cache held here, complete (the engine marks a finished transfer)."""
    from datazone.privacy.engine import CLIENT_CACHE_RECORD

    try:
        cache_id = (root / f"{product}.cache-id").read_text(encoding="ascii").strip()
        if not _CACHE_ID.fullmatch(cache_id):
            return None
        held = (root / cache_id / CLIENT_CACHE_RECORD).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return cache_id if held == cache_id else None


def _remember_cache(root: Path, product: str, cache_id: str) -> None:
    """This product's cache is now `cache_id`; the previous one (an older slice or key epoch) goes."""
    previous = _known_cache(root, product)
    (root / f"{product}.cache-id").write_text(cache_id + "\n", encoding="ascii")
    if previous is not None and previous != cache_id:
        shutil.rmtree(root / previous, ignore_errors=True)  # up to ~36 bytes an item of the slice


def _job_status(zone: ZoneClient, job_id: str, *, settle_s: float) -> dict[str, Any]:
    """The job's status once the zone has settled it (succeeded, failed, expired), or the last seen."""
    deadline = time.monotonic() + settle_s
    path = f"/v1/psi/jobs/{quote(job_id, safe='')}"
    while True:
        status = _json_object(zone._call("GET", path), f"GET {path}")
        if status.get("status") in ("succeeded", "failed", "expired") or time.monotonic() >= deadline:
            return status
        time.sleep(0.1)  # the real clock even when a test stubs the retry waits: this polls a process


def _run_engine(
    zone: ZoneClient,
    product: str,
    purpose: Purpose,
    listed: InstitutionList,
    *,
    progress: Progress | None,
    peer_address: str,
    protocol: EngineProtocol,
    cache_dir: Path | None,
    output: Path | None,
) -> PsiResult:
    from datazone.privacy import engine

    try:
        engine.require_installed()  # before the zone is asked for a job
    except engine.EngineNotInstalled as exc:
        raise ConfigError(str(exc)) from None
    root = cache_root(cache_dir)
    have = _known_cache(root, product)
    total = len(listed.codes)
    # the same list, product, purpose, protocol, addresses and output again is the same job:
    # a rerun finds it (charged once) instead of creating and paying for another
    job_key = zone.job_key(
        "psi-engine",
        product,
        purpose.value,
        listed.digest(),
        peer_address,
        protocol.value,
        str(output.resolve()) if output is not None else "",
    )
    workdir = Path(tempfile.mkdtemp(prefix="datazone-psi-"))  # 0700: it holds the list while the job runs
    try:
        request = _job_request(root, job_key, have_cache=have is not None)
        for _ in range(MAX_FAILED_REPLAYS):
            job = _json_object(
                zone._call(
                    "POST",
                    "/v1/psi/jobs",
                    json={
                        "product": product,
                        "purpose": purpose.value,
                        "set_size": total,
                        "peer_address": peer_address,
                        "protocol": protocol.value,
                        "institution_certificate_pem": request.certificate.read_text(encoding="ascii"),
                        "have_cache": request.have_cache,
                    },
                    idempotency_key=job_key,
                ),
                "POST /v1/psi/jobs",
            )
            if job.get("status") not in ("failed", "expired"):
                break
            # this command's earlier job, which ended without a result: a key of its own makes the next
            job_key = zone.job_key("psi-engine-after", job_key, str(job.get("job_id")))
            request = _job_request(root, job_key, have_cache=have is not None)
        cert, key = request.certificate, request.private_key
        if job.get("ticket") is None and job.get("job_id"):
            return _earlier_engine_result(product, purpose, listed, job, output)
        missing = [k for k in ("job_id", "ticket", "protocol", "zone_address") if not job.get(k)]
        if missing:
            raise _unexpected(f"the PSI job answer lacks {', '.join(missing)}")
        job_id = str(job["job_id"])
        tls = None
        if job.get("zone_certificate_pem"):
            zone_ca = workdir / "zone.pem"
            zone_ca.write_text(str(job["zone_certificate_pem"]), encoding="ascii")
            tls = engine.TlsFiles(certificate=cert, private_key=key, peer_ca=zone_ca)
        timeout = job.get("link_timeout_s")
        link = engine.LinkSpec(
            job_id=job_id,
            zone_address=str(job["zone_address"]),
            institution_address=peer_address,
            connect_timeout_s=float(timeout) if isinstance(timeout, (int, float)) else 60.0,
            tls=tls,
        )
        cache_id = job.get("cache_id")
        client_cache: Path | None = None
        if job["protocol"] == "unbalanced":
            if not isinstance(cache_id, str) or not _CACHE_ID.fullmatch(cache_id):
                raise _unexpected("an unbalanced PSI job came without a usable cache_id")
            client_cache = root / cache_id
            client_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        items_csv = workdir / "items.csv"
        engine.write_items_csv(items_csv, listed.codes)
        if progress is not None:
            progress(0, total)
        try:
            report = engine.run_institution_side(
                link=link,
                ticket=str(job["ticket"]),
                protocol=job["protocol"],
                items_csv=items_csv,
                output_csv=workdir / "matches.csv",
                workdir=workdir / "engine",
                client_cache_dir=client_cache,
            )
        except engine.EngineError as exc:
            try:
                reason = _job_status(zone, job_id, settle_s=5.0).get("reason")
            except ZoneError:
                reason = None  # our side's error is the one to report
            raise PsiJobFailed(
                f"PSI job {job_id}: {exc}" + (f"; the zone says: {reason}" if reason else ""),
                job_id=job_id,
                reason=str(reason) if reason else None,
            ) from None
        found = _read_engine_output(report.output)
        status = _job_status(zone, job_id, settle_s=JOB_SETTLE_S)
        if status.get("status") == "failed":
            reason = status.get("reason")
            raise PsiJobFailed(
                f"PSI job {job_id} failed on the zone's side" + (f": {reason}" if reason else ""),
                job_id=job_id,
                reason=str(reason) if reason else None,
            )
        if client_cache is not None and (client_cache / engine.CLIENT_CACHE_RECORD).is_file():
            assert isinstance(cache_id, str)
            _remember_cache(root, product, cache_id)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if progress is not None:
        progress(total, total)
    size_only = job.get("result") == "size"
    matched = [
        PsiMatch(line, code) for code, line in zip(listed.codes, listed.lines, strict=True) if code in found
    ]
    charged = job.get("charged_fen")
    return PsiResult(
        product=product,
        purpose=purpose.value,
        mode=PsiMode.engine.value,
        result="size" if size_only else "intersection",
        items=total,
        size=len(matched),
        matched=[] if size_only else matched,
        duplicates=listed.duplicates,
        job_id=job_id,
        protocol=str(job["protocol"]),
        cache_transferred=report.cache_transferred,
        charged_fen=charged if isinstance(charged, int) else None,
    )


@dataclass(frozen=True)
class _JobRequest:
    """What a job's request holds that is not derived from its input: the link certificate (and
    its key) and whether a cache was held then. Made once per job key and kept (mode 0600 in a
    0700 directory under the cache root), so a rerun sends the same body and the zone knows it
    for the same job (a different body under the key would be refused), and can still run a job
    that is only queued yet."""

    certificate: Path
    private_key: Path
    have_cache: bool


# a job key's request files are kept past the zone's idempotency window (24 h by default)
JOB_REQUEST_KEEP_S = 3 * 24 * 3600


def _job_request(root: Path, job_key: str, *, have_cache: bool) -> _JobRequest:
    from datazone.privacy import engine

    links = root / "links"
    if links.is_dir():
        stale = time.time() - JOB_REQUEST_KEEP_S
        for old in links.iterdir():
            with contextlib.suppress(OSError):
                if old.stat().st_mtime < stale:
                    shutil.rmtree(old, ignore_errors=True)
    directory = links / job_key
    cert, key, held = directory / "institution.crt", directory / "institution.key", directory / "have-cache"
    if not (cert.is_file() and key.is_file() and held.is_file()):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert, key = engine.new_link_certificate(directory, common_name="institution")
        held.write_text("true" if have_cache else "false", encoding="ascii")
    return _JobRequest(cert, key, held.read_text(encoding="ascii").strip() == "true")


def _earlier_engine_result(
    product: str, purpose: Purpose, listed: InstitutionList, job: dict[str, Any], output: Path | None
) -> PsiResult:
    """The result of this command's earlier job, which the zone answered again (free) without a
    ticket: it is running or finished. The zone never holds the intersection: a finished job's
    result is the output file its run wrote."""
    job_id = str(job["job_id"])
    if job.get("status") != "succeeded":
        raise PsiJobFailed(
            f"PSI job {job_id}, created by this same command earlier, is {job.get('status')} now (another run of "
            "it may be going on): wait until it ends and run the command again",
            job_id=job_id,
        )
    if output is None or not output.is_file():
        raise PsiJobFailed(
            f"PSI job {job_id}, created by this same command earlier, succeeded and was charged once; the zone "
            f"does not keep the intersection, and {output or 'no output file'} does not hold it now. Run it "
            "with another output file to create (and pay for) a new job",
            job_id=job_id,
        )
    with output.open(encoding="utf-8-sig", newline="") as f:
        found = {normalize(row.get("uscc") or "") for row in csv.DictReader(f)}
    matched = [
        PsiMatch(line, code) for code, line in zip(listed.codes, listed.lines, strict=True) if code in found
    ]
    charged = job.get("charged_fen")
    return PsiResult(
        product=product,
        purpose=purpose.value,
        mode=PsiMode.engine.value,
        result="intersection",
        items=len(listed.codes),
        size=len(matched),
        matched=matched,
        duplicates=listed.duplicates,
        job_id=job_id,
        protocol=str(job.get("protocol")),
        cache_transferred=False,
        charged_fen=charged if isinstance(charged, int) else None,
    )


def _read_engine_output(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    header, _, body = text.partition("\n")
    if header == "uscc" and "," not in body and '"' not in body:
        # the engine's plain output (a header, then one code a line): split at once
        return {normalize(code) for code in body.split("\n") if code}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "uscc" not in reader.fieldnames:
            raise _unexpected("the engine's output has no uscc column")
        return {normalize(row["uscc"]) for row in reader if row.get("uscc")}


# -- the entry point ---------------------------------------------------------------------------


def run_psi(
    zone: ZoneClient,
    product: str,
    codes_or_path: str | Path | Sequence[str] | InstitutionList,
    *,
    purpose: Purpose,
    mode: str | PsiMode = PsiMode.auto,
    labeled: bool = False,
    output: Path | None = None,
    column: str | None = None,
    progress: Progress | None = None,
    state_path: Path | None = None,
    peer_address: str | None = None,
    protocol: str | EngineProtocol = EngineProtocol.auto,
    cache_dir: Path | None = None,
) -> PsiResult:
    """`ZoneClient.psi`: the list checked before anything is sent, then the chosen path, then the CSV."""
    listed = read_institution_list(codes_or_path, column)
    chosen = choose_mode(mode, len(listed.codes), peer_address)
    try:
        engine_protocol = EngineProtocol(protocol)
    except ValueError:
        raise ValueError(
            f"unknown engine protocol {protocol!r}; one of: auto, rr22, ecdh, unbalanced"
        ) from None
    if chosen is PsiMode.engine:
        if labeled:
            raise ValueError("labeled PSI runs on the OPRF path; use mode 'oprf' or 'auto'")
        assert peer_address is not None
        result = _run_engine(
            zone,
            product,
            purpose,
            listed,
            progress=progress,
            peer_address=peer_address,
            protocol=engine_protocol,
            cache_dir=cache_dir,
            output=output,
        )
    else:
        state_file = StateFile(state_path or default_state_path(output, codes_or_path, product))
        result = _run_oprf(
            zone, product, purpose, listed, labeled=labeled, progress=progress, state_file=state_file
        )
    if output is not None:
        write_matches(output, result)
        result = replace(result, output=output)
    return result


__all__ = [
    "Duplicate",
    "EngineProtocol",
    "InstitutionList",
    "InvalidListedUSCCs",
    "PsiJobFailed",
    "PsiMatch",
    "PsiMode",
    "PsiResult",
    "PsiStateError",
    "choose_mode",
    "read_institution_list",
    "run_psi",
    "write_matches",
]
