"""SecretFlow's PSI engine driven for both sides, each in its own process on loopback.

Every intersection is checked against Python's set intersection of the same
inputs; the failure cases check the error class on both sides, that nothing is
written, that the engine's child processes are gone and that their temporary
files (which hold items) are deleted.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import secrets
import socket
import stat
import threading
import time
from base64 import b32encode, b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from datazone import uscc
from datazone.privacy import engine

TOKEN = re.compile(r"[0-9A-Z]{18}")


_VALUE = {c: i for i, c in enumerate(uscc.ALPHABET)}
_WEIGHTS = [int(w) for w in uscc.WEIGHTS]


def codes(n: int, seed: int) -> list[str]:
    """n distinct valid USCCs, reproducible from the seed (uscc.check_character's rule, inlined for speed)."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < n:
        body = "91" + "".join(rng.choices("0123456789", k=6)) + "".join(rng.choices(uscc.ALPHABET, k=9))
        total = sum(_VALUE[c] * w for c, w in zip(body, _WEIGHTS, strict=True))
        found.add(body + uscc.ALPHABET[(31 - total % 31) % 31])
    return sorted(found)


def test_generated_codes_are_valid_usccs() -> None:
    assert all(uscc.explain_invalid(code) is None for code in codes(200, seed=1))


def bulk_tokens(n: int, seed: int) -> list[str]:
    """n distinct 18-character USCC-shaped tokens, fast (the engine does not check check digits)."""
    rng = random.Random(seed)
    return list(dict.fromkeys("91" + b32encode(rng.randbytes(10)).decode() for _ in range(n)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_link(*, connect_timeout_s: float = 15.0, recv_timeout_s: float = 15.0) -> engine.LinkSpec:
    return engine.LinkSpec(
        job_id=f"job-{secrets.token_hex(4)}",
        zone_address=f"127.0.0.1:{free_port()}",
        institution_address=f"127.0.0.1:{free_port()}",
        connect_timeout_s=connect_timeout_s,
        recv_timeout_s=recv_timeout_s,
    )


def read_codes(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    assert lines[0] == "uscc"
    return set(lines[1:])


def engine_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "datazone.privacy.engine" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def assert_clean(workdir: Path) -> None:
    """Only the engine's log is left: the run directory (staged input, engine temp files) is gone."""
    assert sorted(p.name for p in workdir.iterdir()) == [engine.ENGINE_LOG]


def assert_log_holds_no_item(log: Path, items: set[str]) -> None:
    text = log.read_text()
    assert "[info]" in text  # the engine did log here, so the check below means something
    assert "<redacted>" not in text  # the engine itself logged no USCC-shaped token (nothing was scrubbed)
    assert not set(TOKEN.findall(text)) & items
    for trace in re.findall(r"Trace has been written to (\S+)\.", text):
        assert not Path(trace).exists()  # the engine's Perfetto trace of this run is removed


@dataclass(frozen=True)
class Sets:
    zone: set[str]
    institution: set[str]
    zone_csv: Path
    institution_csv: Path

    @property
    def expected(self) -> set[str]:
        return self.zone & self.institution


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> Sets:
    """A zone slice of 20,000 and an institution list of 5,000 of which 2,000 are in the slice."""
    zone = codes(20_000, seed=11)
    outside = [c for c in codes(3_100, seed=12) if c not in set(zone)][:3_000]
    institution = random.Random(13).sample(zone, 2_000) + outside
    random.Random(14).shuffle(institution)
    directory = tmp_path_factory.mktemp("sets")
    zone_csv, institution_csv = directory / "zone.csv", directory / "institution.csv"
    assert engine.write_items_csv(zone_csv, zone) == 20_000
    assert engine.write_items_csv(institution_csv, institution) == 5_000
    return Sets(set(zone), set(institution), zone_csv, institution_csv)


@pytest.fixture(autouse=True)
def no_engine_process_survives() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while engine_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engine_children() == []


def run_job(
    tmp_path: Path,
    link: engine.LinkSpec,
    protocol: engine.Protocol,
    zone_csv: Path,
    institution_csv: Path,
    *,
    zone_ticket: str = "ticket-of-the-job",
    institution_ticket: str = "ticket-of-the-job",
    institution_protocol: engine.Protocol | None = None,
    unbalanced_cache: Path | None = None,
    secret_key_file: Path | None = None,
    client_cache_dir: Path | None = None,
) -> tuple[engine.ZoneReport, engine.InstitutionReport]:
    """One job: the zone's side in the background, the institution's side blocking, as in production."""
    with engine.ZoneSideProcess(
        link=link,
        ticket_sha256=hashlib.sha256(zone_ticket.encode()).digest(),
        protocol=protocol,
        items_csv=zone_csv,
        workdir=tmp_path / "zone",
        unbalanced_cache=unbalanced_cache,
        secret_key_file=secret_key_file,
    ) as zone:
        zone.start()
        institution = engine.run_institution_side(
            link=link,
            ticket=institution_ticket,
            protocol=institution_protocol or protocol,
            items_csv=institution_csv,
            output_csv=tmp_path / "intersection.csv",
            workdir=tmp_path / "institution",
            client_cache_dir=client_cache_dir,
        )
        zone_report = zone.wait(30)
    assert zone_report is not None
    return zone_report, institution


# --- jobs that succeed ---------------------------------------------------------------------


def test_rr22_gives_the_institution_the_plaintext_intersection_and_the_zone_only_its_size(
    tmp_path: Path, sets: Sets
) -> None:
    started = time.monotonic()
    zone, institution = run_job(tmp_path, new_link(), "rr22", sets.zone_csv, sets.institution_csv)
    wall = time.monotonic() - started
    print(f"\nRR22 20,000 vs 5,000: PSI {institution.seconds:.2f} s, both processes end to end {wall:.2f} s")

    assert read_codes(tmp_path / "intersection.csv") == sets.expected
    assert institution.output == tmp_path / "intersection.csv"
    assert (institution.protocol, institution.institution_items, institution.intersection) == (
        "rr22",
        5_000,
        2_000,
    )
    # The zone learns the institution's set size and nothing else: no intersection, no output file.
    assert (zone.protocol, zone.zone_items, zone.institution_items) == ("rr22", 20_000, 5_000)
    assert not hasattr(zone, "intersection")
    assert_clean(tmp_path / "zone")
    assert_clean(tmp_path / "institution")
    items = sets.zone | sets.institution
    assert_log_holds_no_item(tmp_path / "zone" / engine.ENGINE_LOG, items)
    assert_log_holds_no_item(tmp_path / "institution" / engine.ENGINE_LOG, items)


def test_a_zone_side_started_before_its_items_runs_once_they_are_written(tmp_path: Path, sets: Sets) -> None:
    """The zone's worker starts the engine (and the link) first and copies its slice meanwhile."""
    link = new_link()
    items = tmp_path / "slice" / "zone.csv"
    items.parent.mkdir()
    with engine.ZoneSideProcess(
        link=link,
        ticket_sha256=hashlib.sha256(b"ticket-of-the-job").digest(),
        protocol="rr22",
        items_csv=items,
        workdir=tmp_path / "zone",
        items_pending=True,
    ) as zone:
        zone.start()
        outcome: dict[str, engine.InstitutionReport] = {}
        institution = threading.Thread(
            target=lambda: outcome.setdefault(
                "report",
                engine.run_institution_side(
                    link=link,
                    ticket="ticket-of-the-job",
                    protocol="rr22",
                    items_csv=sets.institution_csv,
                    output_csv=tmp_path / "intersection.csv",
                    workdir=tmp_path / "institution",
                ),
            )
        )
        institution.start()
        assert zone.wait(timeout=1.0) is None  # the link is up or coming; the PSI waits for the items
        assert not (tmp_path / "intersection.csv").exists()
        engine.write_items_csv(items, sorted(sets.zone))
        zone.items_written()
        institution.join(60)
        report = zone.wait(30)
    assert report is not None and report.zone_items == len(sets.zone)
    assert outcome["report"].intersection == len(sets.expected)
    assert read_codes(tmp_path / "intersection.csv") == sets.expected
    assert_clean(tmp_path / "zone")


def test_a_zone_side_whose_items_are_empty_is_refused_when_they_are_written(tmp_path: Path) -> None:
    items = tmp_path / "zone.csv"
    with engine.ZoneSideProcess(
        link=new_link(),
        ticket_sha256=hashlib.sha256(b"t").digest(),
        protocol="rr22",
        items_csv=items,
        workdir=tmp_path / "zone",
        items_pending=True,
    ) as zone:
        zone.start()
        engine.write_items_csv(items, [])
        with pytest.raises(ValueError, match="holds no items"):
            zone.items_written()
    assert_clean(tmp_path / "zone")
    with pytest.raises(ValueError, match="unbalanced"):
        engine.ZoneSideProcess(
            link=new_link(), ticket_sha256=bytes(32), protocol="unbalanced", items_csv=items,
            workdir=tmp_path / "zone", items_pending=True,
        )


@pytest.mark.parametrize("protocol", ["ecdh", "kkrt"])
def test_ecdh_and_kkrt_give_the_plaintext_intersection(
    tmp_path: Path, sets: Sets, protocol: engine.Protocol
) -> None:
    zone, institution = run_job(tmp_path, new_link(), protocol, sets.zone_csv, sets.institution_csv)
    assert read_codes(tmp_path / "intersection.csv") == sets.expected
    assert institution.intersection == 2_000
    assert (zone.protocol, zone.zone_items, zone.institution_items) == (protocol, 20_000, 5_000)
    assert_clean(tmp_path / "zone")


def test_unbalanced_transfers_the_cache_once_reuses_it_and_notices_a_new_one(
    tmp_path: Path, sets: Sets
) -> None:
    key = engine.new_unbalanced_key(tmp_path / "keys" / "epoch-1.key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cache = tmp_path / "zone-cache" / "slice-v1-epoch-1"
    started = time.monotonic()
    assert (
        engine.build_unbalanced_cache(items_csv=sets.zone_csv, cache_dir=cache, secret_key_file=key) == 20_000
    )
    built = time.monotonic() - started
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # the engine keeps the key in the cache's metadata
    client_cache = tmp_path / "bank-cache" / "slice-v1-epoch-1"

    zone, first = run_job(
        tmp_path / "job1",
        new_link(),
        "unbalanced",
        sets.zone_csv,
        sets.institution_csv,
        unbalanced_cache=cache,
        secret_key_file=key,
        client_cache_dir=client_cache,
    )
    assert read_codes(tmp_path / "job1" / "intersection.csv") == sets.expected
    assert first.cache_transferred and zone.cache_transferred
    assert (zone.zone_items, zone.institution_items, first.intersection) == (20_000, 5_000, 2_000)
    transferred = (client_cache / "server_cache").stat()

    # A second job on the same cache with another list: no transfer, same cache file, right answer.
    other = sorted(sets.zone)[:700] + codes(300, seed=21)
    other_csv = tmp_path / "other.csv"
    engine.write_items_csv(other_csv, other)
    zone2, second = run_job(
        tmp_path / "job2",
        new_link(),
        "unbalanced",
        sets.zone_csv,
        other_csv,
        unbalanced_cache=cache,
        secret_key_file=key,
        client_cache_dir=client_cache,
    )
    assert not second.cache_transferred and not zone2.cache_transferred
    assert read_codes(tmp_path / "job2" / "intersection.csv") == sets.zone & set(other)
    again = (client_cache / "server_cache").stat()
    assert (again.st_ino, again.st_mtime_ns) == (transferred.st_ino, transferred.st_mtime_ns)
    print(
        f"\nunbalanced 20,000 vs 5,000: cache built in {built:.2f} s; "
        f"job with transfer {first.seconds:.2f} s; job reusing the cache {second.seconds:.2f} s"
    )

    # Key rotation: a cache built under a new key has a new id, so the bank's stale copy is replaced.
    new_key = engine.new_unbalanced_key(tmp_path / "keys" / "epoch-2.key")
    new_cache = tmp_path / "zone-cache" / "slice-v1-epoch-2"
    engine.build_unbalanced_cache(
        items_csv=sets.zone_csv, cache_dir=new_cache, secret_key_file=new_key, cache_id="debtors-v1-epoch-2"
    )
    with pytest.raises(ValueError, match="is not the key that built the cache"):
        engine.ZoneSideProcess(
            link=new_link(),
            ticket_sha256=bytes(32),
            protocol="unbalanced",
            items_csv=sets.zone_csv,
            workdir=tmp_path,
            unbalanced_cache=new_cache,
            secret_key_file=key,
        )
    _, third = run_job(
        tmp_path / "job3",
        new_link(),
        "unbalanced",
        sets.zone_csv,
        sets.institution_csv,
        unbalanced_cache=new_cache,
        secret_key_file=new_key,
        client_cache_dir=client_cache,
    )
    assert third.cache_transferred
    assert (client_cache / engine.CLIENT_CACHE_RECORD).read_text() == "debtors-v1-epoch-2"
    assert read_codes(tmp_path / "job3" / "intersection.csv") == sets.expected
    for job in ("job1", "job2", "job3"):
        assert_clean(tmp_path / job / "zone")
        assert_clean(tmp_path / job / "institution")
    assert_log_holds_no_item(tmp_path / "job1" / "zone" / engine.ENGINE_LOG, sets.zone | sets.institution)
    assert_log_holds_no_item(
        tmp_path / "job1" / "institution" / engine.ENGINE_LOG, sets.zone | sets.institution
    )
    # The cache key stays in the zone: in no log, and not in what the bank received.
    logs = [tmp_path / "zone-cache" / engine.ENGINE_LOG] + [
        tmp_path / job / side / engine.ENGINE_LOG
        for job in ("job1", "job2", "job3")
        for side in ("zone", "institution")
    ]
    for secret in (key.read_bytes(), new_key.read_bytes()):
        for log in logs:
            text = log.read_text()
            assert secret.hex() not in text.lower() and b64encode(secret).decode() not in text
        for received in client_cache.iterdir():
            assert secret not in received.read_bytes()


def test_tls_link_runs_with_trusted_certificates_and_refuses_an_untrusted_one(
    tmp_path: Path, sets: Sets
) -> None:
    zone_cert, zone_key = engine.new_link_certificate(tmp_path / "zone-tls", common_name="zone.example")
    bank_cert, bank_key = engine.new_link_certificate(tmp_path / "bank-tls", common_name="127.0.0.1")
    intruder_cert, intruder_key = engine.new_link_certificate(tmp_path / "intruder", common_name="bank")
    assert stat.S_IMODE(zone_key.stat().st_mode) == 0o600
    assert zone_cert.read_text().startswith("-----BEGIN CERTIFICATE-----")

    base = new_link()
    zone_link = engine.LinkSpec(
        job_id=base.job_id,
        zone_address=base.zone_address,
        institution_address=base.institution_address,
        tls=engine.TlsFiles(certificate=zone_cert, private_key=zone_key, peer_ca=bank_cert),
    )
    bank_link = engine.LinkSpec(
        job_id=base.job_id,
        zone_address=base.zone_address,
        institution_address=base.institution_address,
        tls=engine.TlsFiles(certificate=bank_cert, private_key=bank_key, peer_ca=zone_cert),
    )
    with engine.ZoneSideProcess(
        link=zone_link,
        ticket_sha256=hashlib.sha256(b"t").digest(),
        protocol="rr22",
        items_csv=sets.zone_csv,
        workdir=tmp_path / "zone",
    ) as zone:
        zone.start()
        report = engine.run_institution_side(
            link=bank_link,
            ticket="t",
            protocol="rr22",
            items_csv=sets.institution_csv,
            output_csv=tmp_path / "out.csv",
            workdir=tmp_path / "institution",
        )
        assert zone.wait(30) is not None
    assert report.intersection == 2_000
    assert read_codes(tmp_path / "out.csv") == sets.expected

    # A peer whose certificate the zone does not trust never gets a link, on either side.
    base = new_link()
    zone_link = engine.LinkSpec(
        job_id=base.job_id,
        zone_address=base.zone_address,
        institution_address=base.institution_address,
        connect_timeout_s=3,
        tls=engine.TlsFiles(certificate=zone_cert, private_key=zone_key, peer_ca=bank_cert),
    )
    intruder_link = engine.LinkSpec(
        job_id=base.job_id,
        zone_address=base.zone_address,
        institution_address=base.institution_address,
        connect_timeout_s=3,
        tls=engine.TlsFiles(certificate=intruder_cert, private_key=intruder_key, peer_ca=zone_cert),
    )
    with engine.ZoneSideProcess(
        link=zone_link,
        ticket_sha256=hashlib.sha256(b"t").digest(),
        protocol="rr22",
        items_csv=sets.zone_csv,
        workdir=tmp_path / "zone2",
    ) as zone:
        zone.start()
        with pytest.raises(engine.PeerNeverConnected, match="TLS"):
            engine.run_institution_side(
                link=intruder_link,
                ticket="t",
                protocol="rr22",
                items_csv=sets.institution_csv,
                output_csv=tmp_path / "intruder.csv",
                workdir=tmp_path / "intruder-run",
            )
        with pytest.raises(engine.PeerNeverConnected, match="the institution did not connect within 3 s"):
            zone.wait(15)
    assert not (tmp_path / "intruder.csv").exists()


# --- jobs that fail --------------------------------------------------------------------------


def test_wrong_ticket_is_rejected_on_both_sides_and_nothing_is_computed(tmp_path: Path, sets: Sets) -> None:
    with pytest.raises(engine.TicketRejected) as rejected:
        run_job(
            tmp_path,
            new_link(),
            "rr22",
            sets.zone_csv,
            sets.institution_csv,
            zone_ticket="the-right-ticket",
            institution_ticket="a-guessed-ticket",
        )
    # The institution's side raises first; its message says what to do and holds no ticket.
    message = str(rejected.value)
    assert "create a new PSI job" in message
    assert "ticket" in message and "a-guessed-ticket" not in message and "the-right-ticket" not in message
    assert not (tmp_path / "intersection.csv").exists()

    # The zone's side, on its own, raises TicketRejected too, and the engine never started.
    link = new_link()
    with engine.ZoneSideProcess(
        link=link,
        ticket_sha256=hashlib.sha256(b"the-right-ticket").digest(),
        protocol="rr22",
        items_csv=sets.zone_csv,
        workdir=tmp_path / "zone2",
    ) as zone:
        zone.start()
        with pytest.raises(engine.TicketRejected):
            engine.run_institution_side(
                link=link,
                ticket="a-guessed-ticket",
                protocol="rr22",
                items_csv=sets.institution_csv,
                output_csv=tmp_path / "out2.csv",
                workdir=tmp_path / "institution2",
            )
        with pytest.raises(engine.TicketRejected, match="wrong or expired ticket") as zone_error:
            zone.wait(15)
    assert "the-right-ticket" not in str(zone_error.value)
    assert "PSI config" not in (tmp_path / "zone2" / engine.ENGINE_LOG).read_text()
    assert not (tmp_path / "out2.csv").exists()
    assert_clean(tmp_path / "zone2")
    assert_clean(tmp_path / "institution2")


def test_sides_told_different_protocols_stop_before_the_engine_runs(tmp_path: Path, sets: Sets) -> None:
    with pytest.raises(engine.ProtocolMismatch, match="'rr22', not 'ecdh'"):
        run_job(
            tmp_path,
            new_link(),
            "rr22",
            sets.zone_csv,
            sets.institution_csv,
            institution_protocol="ecdh",
        )
    assert not (tmp_path / "intersection.csv").exists()


def test_a_peer_that_never_connects_fails_within_the_connect_timeout(tmp_path: Path, sets: Sets) -> None:
    # Each side alone, at once: the zone waits for an institution, a bank for a zone.
    zone = engine.ZoneSideProcess(
        link=new_link(connect_timeout_s=3),
        ticket_sha256=bytes(32),
        protocol="rr22",
        items_csv=sets.zone_csv,
        workdir=tmp_path / "zone",
    )
    bank = engine.InstitutionSideProcess(
        link=new_link(connect_timeout_s=3),
        ticket="t",
        protocol="rr22",
        items_csv=sets.institution_csv,
        output_csv=tmp_path / "out.csv",
        workdir=tmp_path / "bank",
    )
    started = time.monotonic()
    zone.start()
    bank.start()
    with pytest.raises(engine.PeerNeverConnected, match="the institution did not connect within 3 s"):
        zone.wait(20)
    with pytest.raises(engine.PeerNeverConnected, match="the zone did not connect within 3 s"):
        bank.wait(20)
    elapsed = time.monotonic() - started
    assert 2.0 < elapsed < 6.0, elapsed  # the configured 3 s, plus starting the processes
    assert not zone.running and not bank.running
    assert_clean(tmp_path / "zone")
    assert_clean(tmp_path / "bank")
    # The outcome is kept: asking again gives the same answer at once.
    with pytest.raises(engine.PeerNeverConnected):
        zone.wait(0)


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """400,000 against 400,000: long enough (about a second of RR22) to stop a side mid-job."""
    directory = tmp_path_factory.mktemp("big")
    zone_items = bulk_tokens(400_000, seed=31)
    engine.write_items_csv(directory / "zone.csv", zone_items)
    engine.write_items_csv(directory / "bank.csv", zone_items[:200_000] + bulk_tokens(200_000, seed=32))
    return directory / "zone.csv", directory / "bank.csv"


def start_big_job(
    tmp_path: Path, big_inputs: tuple[Path, Path]
) -> tuple[engine.ZoneSideProcess, engine.InstitutionSideProcess]:
    """Both sides started and past the handshake, each engine in its pre-processing."""
    link = new_link(recv_timeout_s=5)
    zone = engine.ZoneSideProcess(
        link=link,
        ticket_sha256=hashlib.sha256(b"t").digest(),
        protocol="rr22",
        items_csv=big_inputs[0],
        workdir=tmp_path / "zone",
    )
    bank = engine.InstitutionSideProcess(
        link=link,
        ticket="t",
        protocol="rr22",
        items_csv=big_inputs[1],
        output_csv=tmp_path / "out.csv",
        workdir=tmp_path / "bank",
    )
    zone.start()
    bank.start()
    deadline = time.monotonic() + 30
    for side in ("zone", "bank"):
        log = tmp_path / side / engine.ENGINE_LOG
        while "PreProcess] start" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert zone.running and bank.running  # mid-job: the engine has started on both sides
    return zone, bank


def test_an_institution_killed_mid_job_gives_the_zone_link_dropped(
    tmp_path: Path, big_inputs: tuple[Path, Path]
) -> None:
    zone, bank = start_big_job(tmp_path, big_inputs)
    with zone, bank:
        [bank_engine] = [p for p in engine_children() if p.cwd().startswith(str(tmp_path / "bank"))]
        bank_engine.kill()  # SIGKILL: the bank's process vanishes without a word
        killed = time.monotonic()
        with pytest.raises(engine.LinkDropped, match="dropped"):
            zone.wait(20)
        assert time.monotonic() - killed < 5 + 4  # about the receive timeout
        assert not zone.running
        with pytest.raises(engine.EngineError):
            bank.wait(10)
    assert not (tmp_path / "out.csv").exists()
    assert_clean(tmp_path / "zone")
    assert_clean(tmp_path / "bank")  # the killed side's engine files (which hold items) are gone too


def test_cancel_stops_a_running_zone_job_promptly_and_the_institution_sees_the_link_drop(
    tmp_path: Path, big_inputs: tuple[Path, Path]
) -> None:
    zone, bank = start_big_job(tmp_path, big_inputs)
    with zone, bank:
        # The worker may block in wait() in one thread while a revocation cancels from another.
        caught: list[BaseException] = []

        def wait_for_zone() -> None:
            try:
                zone.wait()
            except BaseException as error:
                caught.append(error)

        waiter = threading.Thread(target=wait_for_zone)
        waiter.start()
        started = time.monotonic()
        assert zone.cancel("grant 42 was revoked")
        assert time.monotonic() - started < 4
        waiter.join(5)
        assert not waiter.is_alive()
        assert len(caught) == 1 and isinstance(caught[0], engine.Cancelled)
        assert str(caught[0]) == "the PSI job was cancelled: grant 42 was revoked"
        assert not zone.running
        assert not zone.cancel("again")  # nothing left to stop
        with pytest.raises(engine.LinkDropped, match="the link to the zone dropped"):
            bank.wait(20)
    assert not (tmp_path / "out.csv").exists()
    assert_clean(tmp_path / "zone")
    assert_clean(tmp_path / "bank")


def test_cancel_stops_a_zone_job_still_waiting_for_its_institution(tmp_path: Path, sets: Sets) -> None:
    zone = engine.ZoneSideProcess(
        link=new_link(connect_timeout_s=60),
        ticket_sha256=bytes(32),
        protocol="rr22",
        items_csv=sets.zone_csv,
        workdir=tmp_path / "zone",
    )
    with pytest.raises(RuntimeError, match="start"):
        zone.wait(0)
    zone.start()
    assert zone.wait(timeout=1.0) is None  # still waiting for its institution
    assert zone.running and len(engine_children()) == 1
    started = time.monotonic()
    assert zone.cancel("grant 42 was revoked")
    assert time.monotonic() - started < 4
    assert not zone.running and engine_children() == []
    with pytest.raises(engine.Cancelled, match="grant 42 was revoked"):
        zone.wait()
    assert_clean(tmp_path / "zone")


# --- arguments refused before any process starts ----------------------------------------------


@pytest.mark.parametrize(
    ("zone_items", "institution_items", "protocol"),
    [
        (2_600_000, 100_000, "unbalanced"),
        (20_000, 1_000, "unbalanced"),  # exactly 20 x
        (19_999, 1_000, "rr22"),
        (1_000_000, 1_000_000, "rr22"),
        (100_000_000, 1_000_001, "rr22"),  # large lists go to RR22 whatever the slice
        (2_600_000, 0, "unbalanced"),
    ],
)
def test_choose_protocol_by_sizes(zone_items: int, institution_items: int, protocol: str) -> None:
    assert engine.choose_protocol(zone_items=zone_items, institution_items=institution_items) == protocol


def test_choose_protocol_refuses_negative_sizes() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        engine.choose_protocol(zone_items=-1, institution_items=5)


def test_write_items_csv_writes_distinct_codes_privately_and_refuses_bad_items_by_position(
    tmp_path: Path,
) -> None:
    a, b = codes(2, seed=3)
    path = tmp_path / "items.csv"
    assert engine.write_items_csv(path, [a, b, a]) == 2
    assert path.read_text() == f"uscc\n{a}\n{b}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="item 2 ") as bad:
        engine.write_items_csv(tmp_path / "bad.csv", [a, f"{b},x"])
    assert b not in str(bad.value)
    assert not (tmp_path / "bad.csv").exists()


def test_link_spec_lists_every_problem() -> None:
    with pytest.raises(ValueError) as bad:
        engine.LinkSpec(
            job_id="job 1; rm",
            zone_address="127.0.0.1",
            institution_address="127.0.0.1:70000",
            connect_timeout_s=0,
            recv_timeout_s=1,
        )
    message = str(bad.value)
    for problem in (
        "job_id",
        "zone_address",
        "institution_address",
        "connect_timeout_s",
        "recv_timeout_s must be at least 5",
    ):
        assert problem in message
    with pytest.raises(ValueError, match="must differ"):
        engine.LinkSpec(job_id="j", zone_address="127.0.0.1:9000", institution_address="127.0.0.1:9000")


def test_bad_job_arguments_are_refused_before_a_process_starts(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    engine.write_items_csv(items, codes(3, seed=4))
    empty = tmp_path / "empty.csv"
    engine.write_items_csv(empty, [])
    link = new_link()
    zone_args: dict[str, Any] = {
        "link": link,
        "ticket_sha256": bytes(32),
        "protocol": "rr22",
        "items_csv": items,
        "workdir": tmp_path / "w",
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ticket_sha256": b"short"}, "32-byte SHA-256"),
        ({"protocol": "psi3"}, "protocol must be one of"),
        ({"items_csv": tmp_path / "missing.csv"}, "write it with write_items_csv"),
        ({"items_csv": empty}, "holds no items"),
        ({"protocol": "unbalanced"}, "needs unbalanced_cache"),
        (
            {"protocol": "unbalanced", "unbalanced_cache": tmp_path, "secret_key_file": items},
            "no complete unbalanced cache",
        ),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            engine.ZoneSideProcess(**{**zone_args, **change})
    bank_args: dict[str, Any] = {
        "link": link,
        "ticket": "t",
        "protocol": "rr22",
        "items_csv": items,
        "output_csv": tmp_path / "out.csv",
        "workdir": tmp_path / "w",
    }
    bank_cases: list[tuple[dict[str, Any], str]] = [
        ({"ticket": ""}, "ticket must be"),
        ({"output_csv": tmp_path / "no" / "out.csv"}, "does not exist"),
        ({"protocol": "unbalanced"}, "needs client_cache_dir"),
        ({"items_csv": empty}, "holds no items"),
        (
            {
                "link": engine.LinkSpec(
                    job_id="j",
                    zone_address="127.0.0.1:1",
                    institution_address="127.0.0.1:2",
                    tls=engine.TlsFiles(tmp_path / "a.crt", tmp_path / "a.key", tmp_path / "b.crt"),
                )
            },
            "TLS files missing: certificate, private_key, peer_ca",
        ),
    ]
    for change, message in bank_cases:
        with pytest.raises(ValueError, match=message):
            engine.InstitutionSideProcess(**{**bank_args, **change})
    assert not (tmp_path / "w").exists()  # nothing was started or written


def test_build_unbalanced_cache_refuses_a_bad_key_and_a_used_directory(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    engine.write_items_csv(items, codes(3, seed=5))
    short_key = tmp_path / "short.key"
    short_key.write_bytes(os.urandom(16))
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        engine.build_unbalanced_cache(items_csv=items, cache_dir=tmp_path / "c1", secret_key_file=short_key)
    used = tmp_path / "c2"
    used.mkdir()
    (used / "old").write_text("x")
    key = engine.new_unbalanced_key(tmp_path / "k")
    with pytest.raises(ValueError, match="is not empty"):
        engine.build_unbalanced_cache(items_csv=items, cache_dir=used, secret_key_file=key)
    with pytest.raises(ValueError, match="cache_id must be"):
        engine.build_unbalanced_cache(
            items_csv=items, cache_dir=tmp_path / "c3", secret_key_file=key, cache_id="../escape"
        )
    assert not (tmp_path / "c3").exists()
    assert not (tmp_path / "c1").exists()
