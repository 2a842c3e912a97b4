"""SecretFlow's PSI engine (`spu.psi` 0.9.5) for batch PSI jobs: the zone's side and an institution's.

The protocols are SecretFlow's (RR22, ECDH over Curve25519, KKRT, unbalanced
ECDH-OPRF with an offline server cache); this module only drives them over the
engine's own brpc link, where both parties listen (`LinkSpec`). The zone is
rank 0, the institution rank 1; the institution alone receives the intersection
(receiver rank 1, no broadcast), and the zone learns the institution's set size
and nothing else.

Messages on the link before the engine's own:

    institution -> zone   the job's ticket (the zone compares sha256(ticket) in constant time)
    zone -> institution   "ok" | "rejected" (on "rejected" the zone closes the link)
    institution -> zone   {"protocol": p, "items": n, "cache": cache id the institution holds | null}
    zone -> institution   {"protocol": p, "transfer_cache": bool, "cache": the zone's cache id | null}
                          or {"error": "protocol", "protocol": p} when the two sides disagree
    then psi_execute (rr22, ecdh, kkrt), or ub_psi_execute in MODE_OFFLINE_TRANSFER_CACHE
    (only when the institution lacks this cache) and MODE_ONLINE, both on the same link;
    both                  stop_link(), the institution once its result file is in place: the
                          zone's returns only when the institution's arrives, which confirms
                          that the institution has its result (send nothing after the PSI:
                          a message left unread makes the zone's stop_link abort)

Every run (either side, and the offline cache build) happens in a child process:
the engine logs on stdout (spdlog) and stderr (brpc), and those go to a log file
rather than the gateway's or the SDK's terminal; its temporary files (sorted
copies of the items, bucket stores) go to a private directory the parent removes
however the child ends; a job can be stopped by killing the child's process
group (a grant revoked mid-job); a crash in native code cannot take the caller
down; and the caller never loads the engine's native libraries (about 440 MB).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import hmac
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar, cast, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Protocol = Literal["rr22", "ecdh", "kkrt", "unbalanced"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)

# Unbalanced ECDH-OPRF PSI moves the zone's cost offline: its online work and
# traffic grow with the institution's set only (one blinded point each way per
# item), against RR22's cost in both sets. Measured here (DEPENDENCY-NOTES):
# 10^5 against 2.6x10^6 online 3.3 s unbalanced against 7.1 s RR22, a ratio of 26.
# At 20x the saving still pays for a first-time cache transfer (36 bytes a zone
# item); beyond 10^6 institution items RR22 is quick (10^6 vs 10^6 in 4.4 s)
# while one-point-per-item ECDH is not.
UNBALANCED_MIN_RATIO = 20
UNBALANCED_MAX_INSTITUTION_ITEMS = 1_000_000

# brpc re-checks a peer that was not listening at its first call only every 3 s
# (its health_check_interval flag, which the engine does not expose): bringing a
# link up can take that long once both sides run, and each side waits for the
# other's hello with the receive timeout. Allow for it in both timeouts.
MIN_RECV_TIMEOUT_S = 5.0

KEY_COLUMN = "uscc"
SECRET_KEY_BYTES = 32
CACHE_RECORD = "datazone-cache.json"  # in the zone's cache directory, written last
CLIENT_CACHE_RECORD = "datazone-cache-id"  # in the institution's, written after a full transfer
ENGINE_LOG = "engine.log"

_ACCEPTED = "ok"
# the zone's last phase: the PSI is over and it waits for the institution to close the link
_CLOSING_PHASE = "waiting for the institution to close the link"
_CLOSING_REPORT = "closing-report.json"
_REJECTED = "rejected"
_MAX_TICKET_BYTES = 1024
_MAX_HELLO_BYTES = 4096
# Connection attempts: each costs the retry interval plus one brpc retry after
# the first failure (measured: n attempts fail after 0.75 s x (n - 1) + 0.35 s).
_CONNECT_INTERVAL_MS = 500
_RPC_RETRY_INTERVAL_MS = 250
_ATTEMPT_SECONDS = 0.75
# If the engine's connection loop overruns anyway, the child gives up this much later.
_CONNECT_GRACE_SECONDS = 10.0
_TERMINATE_GRACE_SECONDS = 3.0
_STOP_SECONDS = 3.0
_LINGER_SECONDS = 2.0
# the plain-TCP meeting before the link (see _rendezvous)
_RENDEZVOUS_HELLO = b"datazone-link/1 ready\n"
_RENDEZVOUS_GO = b"go\n"
_RENDEZVOUS_POLL_SECONDS = 0.02
_RENDEZVOUS_READ_SECONDS = 2.0
_POLL_SECONDS = 0.05
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CACHE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # institutions name directories after it
# A USCC-shaped token (18 characters of the code's alphabet): scrubbed from the
# engine's log and from any engine message we keep, in case the engine ever
# quotes an input line.
_USCC_LIKE = re.compile(r"(?<![0-9A-Z])[0-9A-HJ-NP-RTUWXY]{18}(?![0-9A-Z])")
# The engine writes a Perfetto trace of every psi_execute to a fixed place; we remove ours.
_TRACE_LINE = re.compile(rb"Trace has been written to (/tmp/psi_[A-Za-z0-9_-]+\.trace)")
_CHILD_ENTRY = "from datazone.privacy.engine import _child_main; _child_main()"


class EngineError(RuntimeError):
    """A PSI job failed. Messages never hold a ticket, a key or an item."""


class EngineNotInstalled(EngineError):
    """SecretFlow's engine (the `spu` package) is not installed where this job would run."""


ENGINE_EXTRA = "datazone-client[engine]"


def require_installed() -> None:
    """Raise EngineNotInstalled, saying how to install it, unless SecretFlow's engine can be imported here.

    The engine is an optional extra of the client distribution (spu is large and has wheels for
    Python 3.10 and 3.11 only), so a bank that only uses the OPRF path never installs it.
    """
    if importlib.util.find_spec("spu") is None:
        raise EngineNotInstalled(
            "SecretFlow's PSI engine (the spu package) is not installed in this Python environment: "
            f"install it with pip install '{ENGINE_EXTRA}' (Python 3.10 or 3.11), or use the OPRF path"
        )


class PeerNeverConnected(EngineError):
    """The other side did not come up on the link within the connect timeout."""


class TicketRejected(EngineError):
    """The institution presented a ticket whose hash is not the job's."""


class LinkDropped(EngineError):
    """The peer went away or fell silent for longer than the receive timeout mid-job."""


class ResultUnconfirmed(EngineError):
    """The engine finished, but the institution never closed the link: its result is unconfirmed."""


class Cancelled(EngineError):
    """The job's process was stopped by its owner (for example: its grant was revoked)."""


class ProtocolMismatch(EngineError):
    """The two sides were told to run different protocols."""


_ERRORS: dict[str, type[EngineError]] = {
    cls.__name__: cls
    for cls in (
        EngineError, PeerNeverConnected, TicketRejected, LinkDropped, ResultUnconfirmed, Cancelled, ProtocolMismatch
    )
}


def choose_protocol(*, zone_items: int, institution_items: int) -> Protocol:
    """Unbalanced ECDH-OPRF for a small institution set against a large slice, else RR22.

    Unbalanced when zone_items >= 20 x institution_items and institution_items <= 1,000,000.
    """
    if zone_items < 0 or institution_items < 0:
        raise ValueError("set sizes are counts of items: zone_items and institution_items must be >= 0")
    if (
        institution_items <= UNBALANCED_MAX_INSTITUTION_ITEMS
        and zone_items >= UNBALANCED_MIN_RATIO * institution_items
    ):
        return "unbalanced"
    return "rr22"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the link's mutual TLS: this side's certificate and key, and the peer's certificate as CA."""

    certificate: Path
    private_key: Path
    peer_ca: Path


@dataclass(frozen=True)
class LinkSpec:
    """Where the two sides of one job listen; brpc makes both parties servers and clients."""

    job_id: str
    zone_address: str  # "host:port" the zone's worker listens on
    institution_address: str  # "host:port" the institution's side listens on
    connect_timeout_s: float = 60.0  # how long to wait for the peer; keep it >= 5 s (see MIN_RECV_TIMEOUT_S)
    recv_timeout_s: float = 120.0  # a peer silent this long mid-job has dropped
    tls: TlsFiles | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _JOB_ID.match(self.job_id):
            problems.append("job_id must be 1-64 characters of letters, digits, '_', '.' or '-'")
        for name in ("zone_address", "institution_address"):
            if not _is_host_port(getattr(self, name)):
                problems.append(f"{name} must be 'host:port' with a port from 1 to 65535")
        if self.zone_address == self.institution_address:
            problems.append("zone_address and institution_address must differ: each side listens on its own")
        if not self.connect_timeout_s > 0:
            problems.append("connect_timeout_s must be positive")
        if not self.recv_timeout_s >= MIN_RECV_TIMEOUT_S:
            problems.append(
                f"recv_timeout_s must be at least {MIN_RECV_TIMEOUT_S:g}: bringing the link up alone can take 3 s"
            )
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class ZoneReport:
    protocol: str
    zone_items: int
    institution_items: int | None  # as the institution declared it on the link
    seconds: float  # from the link coming up to the end of the PSI
    cache_transferred: bool = False  # unbalanced: the institution lacked this cache and received it


@dataclass(frozen=True)
class InstitutionReport:
    protocol: str
    institution_items: int
    intersection: int
    seconds: float  # from the link coming up to the result file in place
    output: Path
    cache_transferred: bool = False  # unbalanced: this job brought the zone's cache into client_cache_dir


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)


def link_certificate_pem(*, common_name: str, days: int = 7) -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate and its key, as PEM, for one side of a link.

    The peer trusts it by naming it as its `TlsFiles.peer_ca`, so it is its own CA.
    Returns (certificate PEM, PKCS#8 private key PEM)."""
    if not common_name or len(common_name) > 64:
        raise ValueError("common_name must be 1-64 characters")
    if days < 1:
        raise ValueError("days must be at least 1")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alternative: x509.GeneralName
    try:
        alternative = x509.IPAddress(ipaddress.ip_address(common_name))
    except ValueError:
        alternative = x509.DNSName(re.sub(r"[^A-Za-z0-9.-]", "-", common_name))
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate a peer's clock a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def new_link_certificate(directory: Path, *, common_name: str, days: int = 7) -> tuple[Path, Path]:
    """`link_certificate_pem` written to files: the key with mode 0600. Returns (certificate,
    private key) paths named after the common name."""
    certificate, key = link_certificate_pem(common_name=common_name, days=days)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", common_name)
    certificate_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    write_private(key_path, key)
    certificate_path.write_bytes(certificate)
    return certificate_path, key_path


def reason_for_peer(message: str, run_dir: Path) -> str:
    """An engine error's message as the other party may read it: without the path of this
    machine's log or of the job's directory."""
    return re.sub(r"[;,]? *(its|the) log is \S+", "", message).replace(str(run_dir), "<job>")


def close_run_dir(run_dir: Path, *, logs: Path, name: str) -> None:
    """Keep a finished job's engine log (no item, label or share is ever in it) as
    `logs/<name>.log` for the operator, then remove the job's directory and what else it held."""
    log_file = run_dir / ENGINE_LOG
    if log_file.exists():
        logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(log_file, logs / f"{name}.log")
    shutil.rmtree(run_dir, ignore_errors=True)


def new_unbalanced_key(path: Path) -> Path:
    """A fresh 32-byte secret key (mode 0600) for the zone's unbalanced-PSI cache of one key epoch."""
    write_private(path, secrets.token_bytes(SECRET_KEY_BYTES))
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a key, a ticket's companion) readable by the owner only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def write_items_csv(path: Path, items: Iterable[str]) -> int:
    """Write the engine's input: a "uscc" header and one distinct item a line (mode 0600).

    Duplicates are dropped (the engine is told keys are unique); returns how many
    items were written. An item that is empty or holds a comma, quote or line
    break is refused by its position, never by its value.
    """
    listed = list(items)
    body = _items_body(listed)
    if body is None:
        path.unlink(missing_ok=True)  # no earlier file passes for this one
        _refuse_first_bad(listed)
        raise AssertionError("_items_body refused the items but _refuse_first_bad found none")
    text, count = body
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(KEY_COLUMN + "\n")
            out.write(text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return count


@contextlib.contextmanager
def items_csv_writer(path: Path) -> Iterator[BinaryIO]:
    """The engine's input file (mode 0600) with its header written, open for the caller to add
    distinct plain items, one a line, as bytes (a database's COPY output); removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(KEY_COLUMN.encode() + b"\n")
            yield out
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _items_body(listed: list[str]) -> tuple[str, int] | None:
    """The CSV's lines after the header and how many, checked on the joined text at once (a
    million items in a fraction of a second, against seconds item by item); None if any item
    is not plain text, and `_refuse_first_bad` then names the first."""
    try:
        distinct = dict.fromkeys(listed)  # first appearance kept, in order
        text = "\n".join(distinct)  # TypeError if an item is not text
    except TypeError:
        return None
    if not distinct:
        return "", 0
    if "" in distinct or any(c in text for c in ',"\r') or text.count("\n") != len(distinct) - 1:
        return None  # an empty item, a comma, quote or carriage return, or a line break inside an item
    return text + "\n", len(distinct)


def _refuse_first_bad(listed: list[str]) -> None:
    for position, item in enumerate(listed, start=1):
        if not isinstance(item, str) or not item or any(c in item for c in ',"\r\n'):
            raise ValueError(
                f"item {position} is empty, not text, or holds a comma, quote or line break; "
                "pass one bare code per item"
            )


def _count_items(items_csv: Path) -> int:
    """Data lines of a CSV written by `write_items_csv` (header excluded)."""
    lines = 0
    last = b"\n"
    with items_csv.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def _check_items_csv(items_csv: Path, what: str) -> Path:
    path = items_csv.resolve()
    if not path.is_file():
        raise ValueError(f"{what} {items_csv} is not a file: write it with write_items_csv first")
    with path.open("rb") as f:
        header = f.readline().strip()
    if header != KEY_COLUMN.encode():
        raise ValueError(f"{what} {items_csv} must start with the header line {KEY_COLUMN!r}")
    return path


def _check_protocol(protocol: str) -> Protocol:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    return protocol


def _read_cache_record(cache_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((cache_dir / CACHE_RECORD).read_text())
    except (OSError, ValueError):
        raise ValueError(
            f"{cache_dir} holds no complete unbalanced cache: build it with build_unbalanced_cache"
        ) from None
    return cast(dict[str, Any], record)


def _key_digest(secret_key_file: Path) -> str:
    try:
        key = secret_key_file.read_bytes()
    except OSError:
        raise ValueError(f"secret key file {secret_key_file} cannot be read") from None
    if len(key) != SECRET_KEY_BYTES:
        raise ValueError(
            f"secret key file {secret_key_file} must hold exactly {SECRET_KEY_BYTES} bytes "
            "(make one with new_unbalanced_key)"
        )
    return hashlib.sha256(b"datazone/psi/ub-key\x00" + key).hexdigest()


# --- the child process: everything that touches the engine -------------------------------------


class EngineProcess:
    """One engine run in a child process of its own session, with its own temporary directory.

    The parent polls the child without reaping it first (waitid WNOWAIT), kills
    whatever the engine left in the child's process group (it runs `sort`
    through a shell) while the group id cannot yet be reused, then reaps it,
    deletes the run directory and turns the child's result file into a report
    or an exception.
    """

    def __init__(
        self,
        kind: str,
        params: dict[str, Any],
        workdir: Path,
        *,
        child_entry: str = _CHILD_ENTRY,
        files: dict[str, bytes] | None = None,
        label: str = "PSI",
        engine_phase: str = "psi",
    ) -> None:
        """`child_entry` is the Python source the child runs (it calls `run_child`); `files` are
        written (mode 0600) into the run directory before it starts, and removed with it; `label`
        names the job's kind in messages ("PSI"); a child killed during `engine_phase` means a dropped link."""
        self._kind = kind
        self._params = params
        self._workdir = workdir.resolve()
        self._child_entry = child_entry
        self._files = dict(files or {})
        self._label = label
        self._engine_phase = engine_phase
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._log_offset = 0
        self._outcome: dict[str, Any] | None = None
        self._cancel_reason: str | None = None
        self._lock = threading.Lock()

    @property
    def log_path(self) -> Path:
        return self._workdir / ENGINE_LOG

    def start(self) -> None:
        with self._lock:
            if self._proc is not None:
                raise RuntimeError("this engine process was already started")
            require_installed()  # here, not as a bare ImportError in the child's log
            self._workdir.mkdir(parents=True, exist_ok=True)
            run_dir = Path(tempfile.mkdtemp(prefix=f"psi-{self._kind}-", dir=self._workdir))
            (run_dir / "tmp").mkdir()
            self._run_dir = run_dir
            try:
                for name, data in self._files.items():
                    write_private(run_dir / name, data)
            except BaseException:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise
            self._files.clear()  # the child has them now; the parent keeps no copy
            payload = {
                **self._params,
                "kind": self._kind,
                "run_dir": str(run_dir),
                "result": str(run_dir / "result.json"),
                "engine_label": self._label,
            }
            source_root = str(Path(__file__).resolve().parents[2])
            env = {
                **os.environ,
                "TMPDIR": str(run_dir / "tmp"),
                "PYTHONPATH": os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")])),
            }
            try:
                with self.log_path.open("ab") as log:
                    self._log_offset = log.tell()
                    self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and entry point
                        [sys.executable, "-c", self._child_entry],
                        stdin=subprocess.PIPE,
                        stdout=log,
                        stderr=log,
                        cwd=run_dir,
                        env=env,
                        start_new_session=True,
                    )
            except BaseException:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise
            assert self._proc.stdin is not None
            # The ticket travels on the child's stdin: not on its command line, which
            # `ps` shows and the engine copies into its trace file.
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.write(json.dumps(payload).encode())
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._outcome is None and not self._exited()

    @property
    def phase(self) -> str | None:
        """What the running child last said it was doing (`mark_phase`), for a progress display."""
        if self._run_dir is None or self._outcome is not None:
            return None
        try:
            return (self._run_dir / "phase").read_text()
        except OSError:
            return None

    def _exited(self) -> bool:
        assert self._proc is not None
        if self._proc.returncode is not None:
            return True
        return os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None

    def _wait_exit(self, timeout: float) -> bool:
        """True once the child has exited (still unreaped), False if it still runs after timeout."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not self._exited():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(_POLL_SECONDS, remaining))
        return True

    def _signal_group(self, signum: int) -> None:
        assert self._proc is not None
        if self._proc.returncode is None:  # unreaped: the group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The child's report as a dict once it has ended, None while it runs; raises its EngineError.

        It polls rather than block holding the lock, so another thread can cancel meanwhile.
        """
        if self._proc is None:
            raise RuntimeError("start() the engine process before waiting for it")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._outcome is None and self._exited():
                    self._finish()
                elif self._outcome is None and self._kind == "zone":
                    self._take_lingering_result()
                if self._outcome is not None:
                    return self._result()
            remaining = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(_POLL_SECONDS, remaining))

    def cancel(self, reason: str) -> bool:
        """Stop a running child (SIGTERM to its group, SIGKILL after 3 s); False if it had already ended."""
        with self._lock:
            if self._proc is None or self._outcome is not None or self._exited():
                return False
            self._cancel_reason = reason
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit(_TERMINATE_GRACE_SECONDS):
                self._signal_group(signal.SIGKILL)
                self._wait_exit(_TERMINATE_GRACE_SECONDS)  # SIGKILL cannot be refused
            self._finish()
            return True

    def _take_lingering_result(self) -> None:
        """The zone's child stays on a while after its successful result (see `_child_main`): that
        result is final once written, so the caller has it now and `close()` reaps the child."""
        assert self._run_dir is not None
        try:
            outcome = json.loads((self._run_dir / "result.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(outcome, dict) and outcome.get("ok"):
            self._outcome = outcome

    def _finish(self) -> None:
        outcome = self._reap()
        if self._outcome is None:
            self._outcome = outcome

    def _reap(self) -> dict[str, Any]:
        """Kill what is left of the child's group, reap it, delete its run directory: its outcome."""
        assert self._proc is not None and self._run_dir is not None
        self._signal_group(signal.SIGKILL)  # engine leftovers (a `sort` mid-run) die with the job
        returncode = self._proc.wait()
        try:
            outcome = json.loads((self._run_dir / "result.json").read_text())
        except (OSError, ValueError):
            outcome = None
        try:
            phase = (self._run_dir / "phase").read_text()
        except OSError:
            phase = "starting"
        closing: dict[str, Any] | None = None
        if phase == _CLOSING_PHASE and not isinstance(outcome, dict):
            with contextlib.suppress(OSError, ValueError):
                closing = json.loads((self._run_dir / _CLOSING_REPORT).read_text())
        shutil.rmtree(self._run_dir, ignore_errors=True)
        self._scrub_log()
        if not isinstance(outcome, dict) and isinstance(closing, dict) and self._cancel_reason is None:
            # the engine aborted while the link closed, after the institution closed its end
            outcome = {"ok": True, "report": closing}
        if not isinstance(outcome, dict):
            outcome = self._outcome_without_result(returncode, phase)
        return cast(dict[str, Any], outcome)

    def _outcome_without_result(self, returncode: int, phase: str) -> dict[str, Any]:
        if self._cancel_reason is not None:
            return {
                "ok": False,
                "error": "Cancelled",
                "message": f"the {self._label} job was cancelled: {self._cancel_reason}",
            }
        ending = f"exit status {returncode}"
        if returncode < 0:
            with contextlib.suppress(ValueError):
                ending = signal.Signals(-returncode).name
        if phase == self._engine_phase or phase.startswith(self._engine_phase + " "):
            # The engine aborts (SIGABRT from a native thread) when its peer stops
            # abruptly mid-protocol: for the caller that is a dropped link, worth a retry.
            return {
                "ok": False,
                "error": "LinkDropped",
                "message": f"the link to the {'zone' if 'institution' in self._kind else 'institution'} dropped "
                f"mid-job: the {self._label} engine stopped ({ending}), as it does when its peer goes away during "
                f"the protocol; its log is {self.log_path}",
            }
        return {
            "ok": False,
            "error": "EngineError",
            "message": f"the {self._label} engine process ended without a result ({ending}) while {phase}; "
            f"its log is {self.log_path}",
        }

    def _result(self) -> dict[str, Any]:
        assert self._outcome is not None
        if self._outcome.get("ok"):
            return cast(dict[str, Any], self._outcome["report"])
        error = _ERRORS.get(str(self._outcome.get("error")), EngineError)
        raise error(str(self._outcome.get("message")))

    def _scrub_log(self) -> None:
        """Remove this run's engine trace files and blank USCC-shaped tokens in its part of the log."""
        try:
            with self.log_path.open("r+b") as log:
                log.seek(self._log_offset)
                written = log.read()
                for match in _TRACE_LINE.finditer(written):
                    Path(match.group(1).decode()).unlink(missing_ok=True)
                scrubbed = _USCC_LIKE.sub("<redacted>", written.decode("utf-8", "replace")).encode()
                if scrubbed != written:
                    log.seek(self._log_offset)
                    log.truncate()
                    log.write(scrubbed)
        except OSError:
            pass

    def close(self, reason: str) -> None:
        """Stop the child if it still runs (see cancel), and in any case reap it and delete its run directory.

        A child that already gave its result and lingers (the zone's) is left its time to close first."""
        if self._proc is None:
            return
        if self._outcome is not None:
            with self._lock:
                if self._proc.returncode is None:
                    self._wait_exit(_LINGER_SECONDS + _TERMINATE_GRACE_SECONDS)
                    self._reap()
            return
        if not self.cancel(reason):
            with self._lock:
                if self._outcome is None:
                    self._finish()

    def __del__(self) -> None:
        # A forgotten running job must not outlive its owner object silently.
        if getattr(self, "_lock", None) is not None:
            with contextlib.suppress(Exception):
                self.close("its owner was garbage-collected")


def link_params(link: LinkSpec) -> dict[str, Any]:
    """The link for the child process, as JSON, its TLS files checked and resolved."""
    checked = replace(link, tls=_check_tls(link.tls))
    return cast(dict[str, Any], json.loads(json.dumps(asdict(checked), default=str)))


def link_from_params(params: dict[str, Any]) -> LinkSpec:
    tls = params.get("tls")
    return LinkSpec(
        job_id=params["job_id"],
        zone_address=params["zone_address"],
        institution_address=params["institution_address"],
        connect_timeout_s=float(params["connect_timeout_s"]),
        recv_timeout_s=float(params["recv_timeout_s"]),
        tls=None
        if tls is None
        else TlsFiles(Path(tls["certificate"]), Path(tls["private_key"]), Path(tls["peer_ca"])),
    )


def _check_tls(tls: TlsFiles | None) -> TlsFiles | None:
    if tls is None:
        return None
    resolved = TlsFiles(tls.certificate.resolve(), tls.private_key.resolve(), tls.peer_ca.resolve())
    missing = [name for name, path in asdict(resolved).items() if not Path(path).is_file()]
    if missing:
        raise ValueError(f"TLS files missing: {', '.join(missing)} (make them with new_link_certificate)")
    return resolved


_Side = TypeVar("_Side", bound="SideProcess")  # typing.Self is Python 3.11+


class SideProcess:
    """What both sides' handles share: one engine child process, started, cancelled, closed."""

    _process: EngineProcess

    def start(self) -> None:
        self._process.start()

    def cancel(self, reason: str) -> bool:
        return self._process.cancel(reason)

    def close(self, reason: str) -> None:
        """Reap the child (stopping it with `reason` if it still runs); what leaving the `with` block does."""
        self._process.close(reason)

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def log_path(self) -> Path:
        return self._process.log_path

    def __enter__(self: _Side) -> _Side:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._process.close("the caller left the job's block")


class ZoneSideProcess(SideProcess):
    """The zone's side of one job (rank 0) in a child process: start, poll, cancel; always reaped.

    `wait()` returns the ZoneReport, None while the job runs, or raises the
    EngineError the child hit; after `cancel(reason)` stopped a running job it
    raises Cancelled(reason). If the job had already ended, cancel() changes
    nothing and returns False: the institution got its result.
    """

    def __init__(
        self,
        *,
        link: LinkSpec,
        ticket_sha256: bytes,
        protocol: Protocol,
        items_csv: Path,
        workdir: Path,
        unbalanced_cache: Path | None = None,
        secret_key_file: Path | None = None,
        items_pending: bool = False,
    ) -> None:
        protocol = _check_protocol(protocol)
        if len(ticket_sha256) != 32:
            raise ValueError("ticket_sha256 must be the 32-byte SHA-256 digest of the job's ticket")
        self._items_pending = items_pending
        if items_pending:
            # the link comes up while the caller writes the items; `items_written()` lets the PSI start
            if protocol == "unbalanced":
                raise ValueError("items_pending is for rr22, ecdh and kkrt: unbalanced jobs run on a built cache")
            items = items_csv.resolve()
            if not items.parent.is_dir():
                raise ValueError(f"the directory of items_csv {items_csv} does not exist")
            _items_ready_marker(items).unlink(missing_ok=True)
        else:
            items = _check_items_csv(items_csv, "items_csv")
            if protocol != "unbalanced" and _count_items(items) == 0:
                raise ValueError(f"items_csv {items_csv} holds no items: a PSI job needs a non-empty slice")
        self._items = items
        params: dict[str, Any] = {
            "link": link_params(link),
            "ticket_sha256": ticket_sha256.hex(),
            "protocol": protocol,
            "items_csv": str(items),
            "items_ready": str(_items_ready_marker(items)) if items_pending else None,
        }
        if protocol == "unbalanced":
            if unbalanced_cache is None or secret_key_file is None:
                raise ValueError(
                    "the unbalanced protocol needs unbalanced_cache and the secret_key_file that built it"
                )
            record = _read_cache_record(unbalanced_cache)
            if record.get("key") != _key_digest(secret_key_file):
                raise ValueError(
                    f"secret key file {secret_key_file} is not the key that built the cache in {unbalanced_cache}"
                )
            params["cache_dir"] = str(unbalanced_cache.resolve())
            params["cache_id"] = record["cache_id"]
            params["zone_items"] = int(record["items"])
            params["secret_key_file"] = str(secret_key_file.resolve())
        self._process = EngineProcess("zone", params, workdir)

    def items_written(self) -> None:
        """The items file of an `items_pending` job is complete: checked here, then the child,
        which has been bringing the link up meanwhile, goes on to the PSI. Raises ValueError
        for a file that is not write_items_csv's or holds no items (then close() the job)."""
        if not self._items_pending:
            raise RuntimeError("items_written() is for a job created with items_pending=True")
        items = _check_items_csv(self._items, "items_csv")
        if _count_items(items) == 0:
            raise ValueError(f"items_csv {items} holds no items: a PSI job needs a non-empty slice")
        _items_ready_marker(items).write_text("ready\n")

    def wait(self, timeout: float | None = None) -> ZoneReport | None:
        report = self._process.wait(timeout)
        return None if report is None else ZoneReport(**report)



class InstitutionSideProcess(SideProcess):
    """The institution's side of one job (rank 1) in a child process; `run_institution_side` waits on it.

    The SDK can poll `wait(timeout)` to draw progress, and `cancel()` on Ctrl-C.
    """

    def __init__(
        self,
        *,
        link: LinkSpec,
        ticket: str,
        protocol: Protocol,
        items_csv: Path,
        output_csv: Path,
        workdir: Path,
        client_cache_dir: Path | None = None,
    ) -> None:
        protocol = _check_protocol(protocol)
        if not ticket or len(ticket.encode()) > _MAX_TICKET_BYTES:
            raise ValueError(f"the ticket must be 1-{_MAX_TICKET_BYTES} bytes, as the gateway issued it")
        items = _check_items_csv(items_csv, "items_csv")
        if _count_items(items) == 0:
            raise ValueError(f"items_csv {items_csv} holds no items")
        if protocol == "unbalanced" and client_cache_dir is None:
            raise ValueError(
                "the unbalanced protocol needs client_cache_dir for the zone's transferred cache"
            )
        output = output_csv.resolve()
        if not output.parent.is_dir():
            raise ValueError(f"the directory of output_csv {output_csv} does not exist")
        params: dict[str, Any] = {
            "link": link_params(link),
            "ticket": ticket,
            "protocol": protocol,
            "items_csv": str(items),
            "output_csv": str(output),
            "client_cache_dir": None if client_cache_dir is None else str(client_cache_dir.resolve()),
        }
        self._process = EngineProcess("institution", params, workdir)

    def wait(self, timeout: float | None = None) -> InstitutionReport | None:
        report = self._process.wait(timeout)
        if report is None:
            return None
        return InstitutionReport(**{**report, "output": Path(report["output"])})



def run_zone_side(
    *,
    link: LinkSpec,
    ticket_sha256: bytes,
    protocol: Protocol,
    items_csv: Path,
    workdir: Path,
    unbalanced_cache: Path | None = None,
    secret_key_file: Path | None = None,
) -> ZoneReport:
    """The zone's side of one job, blocking (in a child process; see ZoneSideProcess to stop it)."""
    with ZoneSideProcess(
        link=link,
        ticket_sha256=ticket_sha256,
        protocol=protocol,
        items_csv=items_csv,
        workdir=workdir,
        unbalanced_cache=unbalanced_cache,
        secret_key_file=secret_key_file,
    ) as job:
        job.start()
        report = job.wait()
    assert report is not None
    return report


def run_institution_side(
    *,
    link: LinkSpec,
    ticket: str,
    protocol: Protocol,
    items_csv: Path,
    output_csv: Path,
    workdir: Path,
    client_cache_dir: Path | None = None,
) -> InstitutionReport:
    """The institution's side of one job, blocking; the intersection lands in output_csv ("uscc" + codes).

    For the unbalanced protocol, client_cache_dir keeps the zone's transferred
    cache: a later job against the same cache (same slice version and key epoch)
    skips the transfer. Name the directory after the job's cache id.
    """
    with InstitutionSideProcess(
        link=link,
        ticket=ticket,
        protocol=protocol,
        items_csv=items_csv,
        output_csv=output_csv,
        workdir=workdir,
        client_cache_dir=client_cache_dir,
    ) as job:
        job.start()
        report = job.wait()
    assert report is not None
    return report


def build_unbalanced_cache(
    *,
    items_csv: Path,
    cache_dir: Path,
    secret_key_file: Path,
    workdir: Path | None = None,
    cache_id: str | None = None,
) -> int:
    """The zone's offline cache for unbalanced PSI (MODE_OFFLINE_GEN_CACHE); returns the items cached.

    Build once per slice version and key epoch into a new, empty cache_dir (made
    mode 0700: the engine keeps the secret key in the cache's metadata too). The
    same secret_key_file must serve every job on this cache. The engine log goes
    to workdir (default: cache_dir's parent). cache_id names this cache to the
    institutions (default: a random one); it must change whenever the slice or
    the key does, since an institution holding a cache of that id skips the transfer.
    """
    if cache_id is not None and not _CACHE_ID.fullmatch(cache_id):
        raise ValueError(
            "cache_id must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    items = _check_items_csv(items_csv, "items_csv")
    if _count_items(items) == 0:
        raise ValueError(f"items_csv {items_csv} holds no items: there is nothing to cache")
    key_digest = _key_digest(secret_key_file)
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"cache_dir {cache_dir} is not empty: build each slice version into a new directory")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.chmod(0o700)
    process = EngineProcess(
        "cache",
        {
            "items_csv": str(items),
            "cache_dir": str(cache_dir.resolve()),
            "secret_key_file": str(secret_key_file.resolve()),
        },
        workdir if workdir is not None else cache_dir.resolve().parent,
    )
    try:
        process.start()
        report = process.wait()
    except BaseException:
        shutil.rmtree(cache_dir, ignore_errors=True)  # it was empty: a half-built cache must not linger
        raise
    assert report is not None
    cache_dir.chmod(0o700)  # the engine recreates the directory with the default mode
    count = int(report["items"])
    # the caller's id (the gateway names a cache by product, slice version and epoch) lets an
    # institution know before a job whether the cache it holds is this one
    record = {"cache_id": cache_id or secrets.token_hex(16), "items": count, "key": key_digest}
    temporary = cache_dir / (CACHE_RECORD + ".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(cache_dir / CACHE_RECORD)
    return count


# --- inside the child ------------------------------------------------------------------------


def _psi_job(payload: dict[str, Any], links: list[Any]) -> dict[str, Any]:
    kind = payload["kind"]
    if kind == "zone":
        return asdict(_zone_side_here(payload, links))
    if kind == "institution":
        report = _institution_side_here(payload, links)
        return {**asdict(report), "output": str(report.output)}
    return {"items": _build_cache_here(payload)}


def _child_main() -> None:
    """Entry point of the PSI engine's child process."""
    run_child(_psi_job, linger_kinds=frozenset({"zone"}))


def run_child(
    job: Callable[[dict[str, Any], list[Any]], dict[str, Any]], *, linger_kinds: frozenset[str] = frozenset()
) -> None:
    """The body of an `EngineProcess` child: read the job's parameters from stdin, run `job` (which
    appends the links it opens to its second argument), write result.json, close the links, exit.

    A child whose kind is in `linger_kinds` stays a moment after a success (see below)."""
    _stop_with_parent(os.getppid())
    payload = json.loads(sys.stdin.buffer.read())
    result_path = Path(payload["result"])
    outcome: dict[str, Any]
    links: list[Any] = []
    try:
        outcome = {"ok": True, "report": job(payload, links)}
    except EngineError as exc:
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    except Exception as exc:
        log_engine_failure(exc)
        outcome = {
            "ok": False,
            "error": "EngineError",
            "message": f"the {payload.get('engine_label', 'PSI')} engine failed ({type(exc).__name__}); its log is {Path(payload['run_dir']).parent / ENGINE_LOG}",
        }
    temporary = result_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(outcome))
    temporary.replace(result_path)
    # The link closes only now: closing it can crash the engine (brpc aborts when
    # the peer has already gone), and by now that no longer changes the outcome.
    for context in links:
        stop_link_quietly(context)
    if payload["kind"] in linger_kinds and outcome.get("ok"):
        # brpc on the institution's side aborts its process when the zone's end vanishes while
        # it still finishes closing (seen with spu called directly): stay a moment longer
        time.sleep(_LINGER_SECONDS)
    exit_child(0)


# how often a child looks whether the process that started it is still there
_PARENT_WATCH_SECONDS = 0.5
EXIT_PARENT_GONE = 75


def _stop_with_parent(parent: int) -> None:
    """Exit when the process that started this child is gone (killed, say). The child runs in a
    session of its own, so no signal reaches it; without this an orphaned engine would go on
    training or intersecting for nobody, and its peer would wait on a job no one will read."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_WATCH_SECONDS)
        print("the process that started this engine is gone: stopping", file=sys.stderr, flush=True)
        exit_child(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def exit_child(status: int) -> None:
    """Exit without running brpc's and the engine's static destructors, which can hang at exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
    os._exit(status)


def log_engine_failure(exc: BaseException) -> None:
    text = _USCC_LIKE.sub("<redacted>", str(exc))
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    print(
        f"datazone: engine failure {type(exc).__name__}: " + " | ".join(lines[:6]),
        file=sys.stderr,
        flush=True,
    )


def is_link_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in ("timeout", "channel", "brpc", "rpc", "send", "recv", "link"))


def _rendezvous(link: LinkSpec, rank: int, *, deadline: float) -> bool | None:
    """Meet the peer by plain TCP on the zone's link port so both sides start the engine's link
    at the same moment. brpc marks a peer that was not listening at its first call as down
    and looks again only after 3 s, so a side that starts its link even half a second before
    the other waits those 3 s. The zone listens on its port until the institution calls (or a
    peer that does not know this rendezvous, e.g. a bank on SecretFlow's own library, whose
    first call ends the wait); the institution calls until the zone answers. Timing only: it
    carries nothing of the job, and the ticket is checked on the link as before.

    True once the peer came, False if it did not before `deadline`, None if the zone cannot
    listen before its engine (the engine's own retries then take the whole connect timeout)."""
    host, _, port = link.zone_address.rpartition(":")
    address = (host.strip("[]"), int(port))
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    if rank == 0:
        try:
            listener = socket.create_server(address, family=family)  # SO_REUSEADDR: the engine binds next
        except OSError:
            return None  # not an address of this machine (behind NAT): the engine's own retries do
        with listener:
            listener.settimeout(_RENDEZVOUS_POLL_SECONDS)
            while time.monotonic() < deadline:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(_RENDEZVOUS_READ_SECONDS)
                    with contextlib.suppress(OSError):
                        if _recv_exactly(conn, len(_RENDEZVOUS_HELLO)) == _RENDEZVOUS_HELLO:
                            conn.sendall(_RENDEZVOUS_GO)
                            conn.recv(1)  # the institution closes first: the TIME_WAIT is its, not on our port
                return True
        return False
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(address, timeout=_RENDEZVOUS_READ_SECONDS) as conn:
                conn.sendall(_RENDEZVOUS_HELLO)
                _recv_exactly(conn, len(_RENDEZVOUS_GO))
            return True  # "go", or a zone without the rendezvous: its engine listens already
        except OSError:
            time.sleep(_RENDEZVOUS_POLL_SECONDS)
    return False


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        block = conn.recv(size - len(data))
        if not block:
            break
        data += block
    return data


def connect_link(link: LinkSpec, rank: int) -> Any:
    """Bring the brpc link up, or raise PeerNeverConnected after about connect_timeout_s."""
    from spu.libspu import link as spu_link

    desc = spu_link.Desc()
    desc.id = link.job_id
    desc.add_party("zone", link.zone_address)
    desc.add_party("institution", link.institution_address)
    desc.brpc_channel_protocol = "baidu_std"  # "http" fails with brpc's connection type "single"
    desc.connect_retry_interval_ms = _CONNECT_INTERVAL_MS
    desc.connect_retry_times = max(1, int((link.connect_timeout_s - 0.4) / _ATTEMPT_SECONDS) + 1)
    recv_ms = max(1, int(link.recv_timeout_s * 1000))
    desc.recv_timeout_ms = recv_ms
    desc.http_timeout_ms = recv_ms
    retry = desc.retry_opts
    retry.max_retry = 1  # one retry rides out a transient failure; more only delays noticing a dead peer
    retry.retry_interval_ms = _RPC_RETRY_INTERVAL_MS
    retry.retry_interval_incr_ms = 0
    retry.max_retry_interval_ms = _RPC_RETRY_INTERVAL_MS
    if link.tls is not None:
        # Mutual TLS: each side presents its certificate and verifies the peer's
        # against the peer's self-signed certificate, for the calls it makes
        # (client) and the calls it answers (server).
        desc.enable_ssl = True
        for options in (desc.client_ssl_opts, desc.server_ssl_opts):
            options.cert.certificate_path = str(link.tls.certificate)
            options.cert.private_key_path = str(link.tls.private_key)
            options.verify.ca_file_path = str(link.tls.peer_ca)
            options.verify.verify_depth = 1  # 0 would turn verification off
    peer = "institution" if rank == 0 else "zone"
    peer_address = link.institution_address if rank == 0 else link.zone_address
    own_address = link.zone_address if rank == 0 else link.institution_address
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            if _rendezvous(link, rank, deadline=time.monotonic() + link.connect_timeout_s) is False:
                outcome["never"] = True  # nobody came within the connect timeout
                return
            outcome["context"] = spu_link.create_brpc(desc, rank)
        except Exception as exc:
            outcome["error"] = exc

    # The engine's own retry loop sets the pace; the thread is the backstop if it overruns.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(link.connect_timeout_s + _CONNECT_GRACE_SECONDS)
    never = PeerNeverConnected(
        f"the {peer} did not connect within {link.connect_timeout_s:g} s "
        f"(job {link.job_id}: this side listened on {own_address} and called {peer_address}"
        + (", with TLS: check that each side trusts the other's certificate" if link.tls else "")
        + ")"
    )
    if worker.is_alive() or outcome.get("never"):
        raise never
    error = outcome.get("error")
    if error is not None:
        if "server failed start" in str(error) or "listen" in str(error).lower():
            raise EngineError(
                f"could not listen on {own_address} for job {link.job_id}: the port is taken or the host is not this machine's"
            )
        log_engine_failure(error)
        raise never
    return outcome["context"]


def mark_phase(run_dir: Path, phase: str) -> None:
    """Where the child is, for the parent's message if the engine kills the process."""
    (run_dir / "phase").write_text(phase)


def send_message(context: Any, peer: int, message: str) -> None:
    context.send(peer, message)


def receive_message(context: Any, peer: int, link: LinkSpec, waiting_for: str) -> bytes:
    try:
        return bytes(context.recv(peer))
    except Exception as exc:
        log_engine_failure(exc)
        raise LinkDropped(
            f"no {waiting_for} within {link.recv_timeout_s:g} s on job {link.job_id}: the peer went away or stalled"
        ) from None


def receive_json(context: Any, peer: int, link: LinkSpec, waiting_for: str) -> dict[str, Any]:
    raw = receive_message(context, peer, link, waiting_for)
    try:
        message = json.loads(raw[:_MAX_HELLO_BYTES]) if len(raw) <= _MAX_HELLO_BYTES else None
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise EngineError(f"the peer of job {link.job_id} sent a malformed {waiting_for}")
    return message


def stop_link_quietly(context: Any) -> None:
    """Close the link, but give up after a few seconds: after a failed run stop_link can wait on a peer forever."""

    def stop() -> None:
        with contextlib.suppress(Exception):
            context.stop_link()

    closer = threading.Thread(target=stop, daemon=True)
    closer.start()
    closer.join(_STOP_SECONDS)


def _confirm_stop(context: Any, link: LinkSpec) -> None:
    """Close the link and wait, at most the receive timeout, for the peer to close its end.

    `stop_link()` returns only once the peer has called its own (measured: it waits exactly
    as long as the peer takes), so its return confirms the peer finished; a peer that died
    leaves it waiting forever, hence the thread."""
    outcome: dict[str, BaseException] = {}

    def stop() -> None:
        try:
            context.stop_link()
        except Exception as exc:
            outcome["error"] = exc

    closer = threading.Thread(target=stop, daemon=True)
    closer.start()
    closer.join(link.recv_timeout_s)
    if closer.is_alive() or "error" in outcome:
        if "error" in outcome:
            log_engine_failure(outcome["error"])
        raise ResultUnconfirmed(
            f"the institution did not close the link of job {link.job_id} within {link.recv_timeout_s:g} s "
            "after the PSI: the zone cannot confirm that it received its result"
        )


def _run_engine(link: LinkSpec, peer: str, phase: str, call: Any) -> Any:
    """Run one engine call, turning a dropped link into LinkDropped and anything else into EngineError."""
    try:
        return call()
    except Exception as exc:
        log_engine_failure(exc)
        if is_link_failure(exc):
            raise LinkDropped(
                f"the link to the {peer} dropped during {phase} on job {link.job_id}: "
                f"it went away or was silent for {link.recv_timeout_s:g} s"
            ) from None
        raise EngineError(
            f"the PSI engine failed during {phase} on job {link.job_id}; see {ENGINE_LOG}"
        ) from None


def _psi_config(protocol: Protocol, input_csv: Path, output_csv: Path) -> Any:
    import spu.psi as psi

    kinds = {
        "rr22": psi.PsiProtocol.PROTOCOL_RR22,
        "ecdh": psi.PsiProtocol.PROTOCOL_ECDH,
        "kkrt": psi.PsiProtocol.PROTOCOL_KKRT,
    }
    return psi.PsiExecuteConfig(
        protocol_conf=psi.PsiProtocolConfig(
            protocol=kinds[protocol],
            receiver_rank=1,
            broadcast_result=False,
            ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519),
        ),
        input_params=psi.InputParams(path=str(input_csv), selected_keys=[KEY_COLUMN], keys_unique=True),
        output_params=psi.OutputParams(path=str(output_csv), disable_alignment=True),
        join_conf=psi.ResultJoinConfig(type=psi.ResultJoinType.JOIN_TYPE_INNER_JOIN),
    )


def _ub_config(
    mode: str, *, server: bool, cache_dir: Path, input_csv: Path, output_csv: Path, key: str
) -> Any:
    import spu.psi as psi

    return psi.UbPsiExecuteConfig(
        mode=psi.parse_ub_psi_mode(mode),
        role=psi.UbPsiRole.ROLE_SERVER if server else psi.UbPsiRole.ROLE_CLIENT,
        server_receive_result=False,
        client_receive_result=True,
        cache_path=str(cache_dir),
        input_params=psi.InputParams(path=str(input_csv), selected_keys=[KEY_COLUMN], keys_unique=True),
        output_params=psi.OutputParams(path=str(output_csv), disable_alignment=True),
        # The client's config names no key: the engine only reads it on the server.
        server_params=psi.UbPsiServerParams(secret_key_path=key),
    )


def _items_ready_marker(items_csv: Path) -> Path:
    return items_csv.with_name(items_csv.name + ".ready")


def _wait_for_items(marker: Path, link: LinkSpec) -> None:
    """Wait, at most the receive timeout, for the parent to say the items file is complete."""
    deadline = time.monotonic() + link.recv_timeout_s
    while not marker.exists():
        if time.monotonic() > deadline:
            raise EngineError(f"the zone's items for job {link.job_id} were not ready within {link.recv_timeout_s:g} s")
        time.sleep(_RENDEZVOUS_POLL_SECONDS)


def _staged_input(run_dir: Path, items_csv: Path) -> Path:
    """A link to the items inside the run directory, so the engine's `<input>.meta` lands there too."""
    staged = run_dir / "items.csv"
    staged.symlink_to(items_csv)
    return staged


def _zone_side_here(p: dict[str, Any], links: list[Any]) -> ZoneReport:
    import spu.psi as psi

    link = link_from_params(p["link"])
    protocol = _check_protocol(p["protocol"])
    run_dir = Path(p["run_dir"])
    items = _staged_input(run_dir, Path(p["items_csv"]))
    mark_phase(run_dir, "connecting to the peer")
    context = connect_link(link, rank=0)
    links.append(context)
    started = time.monotonic()
    mark_phase(run_dir, "authenticating the peer")
    accept_ticket(context, link, p["ticket_sha256"], before="any PSI message")
    hello = receive_json(context, 1, link, "job description from the institution")
    if hello.get("protocol") != protocol:
        send_message(context, 1, json.dumps({"error": "protocol", "protocol": protocol}))
        raise ProtocolMismatch(
            f"the institution asked for protocol {str(hello.get('protocol'))[:20]!r} but job {link.job_id} runs {protocol!r}"
        )
    declared = hello.get("items")
    institution_items = declared if isinstance(declared, int) and declared >= 0 else None
    cache_id = p.get("cache_id")
    transfer = protocol == "unbalanced" and hello.get("cache") != cache_id
    send_message(context, 1, json.dumps({"protocol": protocol, "transfer_cache": transfer, "cache": cache_id}))
    if p.get("items_ready"):
        mark_phase(run_dir, "waiting for the zone's items")
        _wait_for_items(Path(p["items_ready"]), link)
    # The engine wants an output path; with receiver rank 1 it leaves it unwritten.
    output = run_dir / "zone-output.csv"
    mark_phase(run_dir, "psi")
    if protocol == "unbalanced":
        cache_dir, key = Path(p["cache_dir"]), p["secret_key_file"]
        modes = (["MODE_OFFLINE_TRANSFER_CACHE"] if transfer else []) + ["MODE_ONLINE"]
        for mode in modes:
            config = _ub_config(
                mode, server=True, cache_dir=cache_dir, input_csv=items, output_csv=output, key=key
            )
            _run_engine(link, "institution", mode, lambda c=config: psi.ub_psi_execute(c, context))
        zone_items = int(p["zone_items"])
    else:
        config = _psi_config(protocol, items, output)
        report = _run_engine(link, "institution", protocol.upper(), lambda: psi.psi_execute(config, context))
        zone_items = int(report.original_count)
    # Stay on the link until the institution has its result: leaving earlier can
    # crash the institution's engine while it finishes, and this way the zone's
    # report means the job is done on both sides. The institution's `stop_link()`
    # is the confirmation (ours blocks until the peer's arrives), so SecretFlow's
    # own library works as it is, with no message of ours after the PSI.
    report = ZoneReport(
        protocol=protocol,
        zone_items=zone_items,
        institution_items=institution_items,
        seconds=round(time.monotonic() - started, 3),
        cache_transferred=transfer,
    )
    # If the institution's process ends the moment its stop_link() returns, ours can abort
    # in brpc while closing (the peer is gone): by then the institution has closed its end
    # after the whole PSI, which is the confirmation. The parent finds this report then.
    (run_dir / _CLOSING_REPORT).write_text(json.dumps(asdict(report)))
    mark_phase(run_dir, _CLOSING_PHASE)
    _confirm_stop(context, link)
    links.remove(context)
    return report


def _institution_side_here(p: dict[str, Any], links: list[Any]) -> InstitutionReport:
    import spu.psi as psi

    link = link_from_params(p["link"])
    protocol = _check_protocol(p["protocol"])
    run_dir = Path(p["run_dir"])
    items = _staged_input(run_dir, Path(p["items_csv"]))
    item_count = _count_items(items)
    mark_phase(run_dir, "connecting to the peer")
    context = connect_link(link, rank=1)
    links.append(context)
    started = time.monotonic()
    mark_phase(run_dir, "authenticating the peer")
    present_ticket(context, link, p["ticket"], job_kind="PSI job")
    cache_dir = None if p["client_cache_dir"] is None else Path(p["client_cache_dir"])
    held = None
    if protocol == "unbalanced" and cache_dir is not None:
        with contextlib.suppress(OSError):
            held = (cache_dir / CLIENT_CACHE_RECORD).read_text().strip() or None
    send_message(context, 0, json.dumps({"protocol": protocol, "items": item_count, "cache": held}))
    plan = receive_json(context, 0, link, "job plan from the zone")
    if "error" in plan or plan.get("protocol") != protocol:
        raise ProtocolMismatch(
            f"the zone runs job {link.job_id} with protocol {str(plan.get('protocol'))[:20]!r}, not {protocol!r}"
        )
    output = run_dir / "intersection.csv"
    mark_phase(run_dir, "psi")
    if protocol == "unbalanced":
        assert cache_dir is not None
        cache_dir.mkdir(parents=True, exist_ok=True)
        if plan.get("transfer_cache"):
            # Forget the old cache first: a transfer cut short must not pass for a complete one.
            (cache_dir / CLIENT_CACHE_RECORD).unlink(missing_ok=True)
            config = _ub_config(
                "MODE_OFFLINE_TRANSFER_CACHE",
                server=False,
                cache_dir=cache_dir,
                input_csv=items,
                output_csv=output,
                key="",
            )
            _run_engine(link, "zone", "the cache transfer", lambda: psi.ub_psi_execute(config, context))
            (cache_dir / CLIENT_CACHE_RECORD).write_text(str(plan.get("cache")))
        config = _ub_config(
            "MODE_ONLINE", server=False, cache_dir=cache_dir, input_csv=items, output_csv=output, key=""
        )
        report = _run_engine(link, "zone", "MODE_ONLINE", lambda: psi.ub_psi_execute(config, context))
    else:
        config = _psi_config(protocol, items, output)
        report = _run_engine(link, "zone", protocol.upper(), lambda: psi.psi_execute(config, context))
    if not output.is_file():
        raise EngineError(f"the PSI engine finished job {link.job_id} without writing the intersection")
    destination = Path(p["output_csv"])
    _write_plain_output(output, destination)
    # No message after the PSI: closing the link (the child does it next) is the confirmation
    # the zone waits for. A message the zone never reads would make its stop_link abort.
    return InstitutionReport(
        protocol=protocol,
        institution_items=int(report.original_count),
        intersection=int(report.intersection_count),
        seconds=round(time.monotonic() - started, 3),
        output=destination,
        cache_transferred=bool(protocol == "unbalanced" and plan.get("transfer_cache")),
    )


def accept_ticket(context: Any, link: LinkSpec, ticket_sha256_hex: str, *, before: str) -> None:
    """The zone's first step on a link: receive the institution's ticket, compare its sha256 with
    the job's in constant time, answer; raise TicketRejected (naming no ticket) if it is not the job's."""
    presented = receive_message(context, 1, link, "ticket from the institution")
    accepted = len(presented) <= _MAX_TICKET_BYTES and hmac.compare_digest(
        hashlib.sha256(presented).digest(), bytes.fromhex(ticket_sha256_hex)
    )
    send_message(context, 1, _ACCEPTED if accepted else _REJECTED)
    if not accepted:
        raise TicketRejected(
            f"the institution presented a wrong or expired ticket for job {link.job_id}; "
            f"the link was closed before {before}"
        )


def present_ticket(context: Any, link: LinkSpec, ticket: str, *, job_kind: str) -> None:
    """The institution's first step on a link: send the ticket, raise TicketRejected if the zone refuses it."""
    send_message(context, 0, ticket)
    answer = receive_message(context, 0, link, "answer to the ticket from the zone")
    if answer == _REJECTED.encode():
        raise TicketRejected(
            f"the zone rejected the ticket of job {link.job_id}: it is wrong, expired or was already used; "
            f"create a new {job_kind} to get a new ticket"
        )
    if answer != _ACCEPTED.encode():
        raise EngineError(f"the zone answered the ticket of job {link.job_id} with something unexpected")


def _write_plain_output(engine_output: Path, destination: Path) -> None:
    """The engine quotes every field; give the caller write_items_csv's plain format (mode 0600)."""
    text = engine_output.read_text(encoding="utf-8")
    if "," in text:  # more than one field a line: unquote each line's ends, as ever
        plain = "".join(line.rstrip("\r\n").strip('"') + "\n" for line in text.splitlines())
    else:
        # one quoted field a line (items hold no quote, comma or line break): unquote at once
        plain = text.replace('"', "").replace("\r", "")
        if plain and not plain.endswith("\n"):
            plain += "\n"
    partial = destination.with_name(destination.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
        out.write(plain)
    partial.replace(destination)
    engine_output.unlink()


def _build_cache_here(p: dict[str, Any]) -> int:
    import spu.psi as psi
    from spu.libspu import link as spu_link

    run_dir = Path(p["run_dir"])
    items = _staged_input(run_dir, Path(p["items_csv"]))
    config = _ub_config(
        "MODE_OFFLINE_GEN_CACHE",
        server=True,
        cache_dir=Path(p["cache_dir"]),
        input_csv=items,
        output_csv=run_dir / "unused.csv",
        key=p["secret_key_file"],
    )
    # The offline build talks to nobody, but the engine wants a two-party context
    # (passing None crashes it): an in-memory one does.
    desc = spu_link.Desc()
    desc.id = "datazone-cache"
    desc.add_party("zone", "mem0")
    desc.add_party("institution", "mem1")
    report = psi.ub_psi_execute(config, spu_link.create_mem(desc, 0))
    return int(report.original_count)
