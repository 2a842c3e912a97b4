"""The institution's SDK against the real gateway: the HTTP-native path (plain and labeled)
and SecretFlow's engine jobs run by the zone's worker, each against the plaintext
intersection from the zone tables; a job whose peer never connects, and one whose grant is
revoked while it runs, end with the reason and free the worker."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.client import ZoneClient
from datazone.client.psi import PsiJobFailed
from datazone.config import Settings
from datazone.psi import worker
from tests.conftest import problem
from tests.factories import grants_revoked
from tests.psi.conftest import Zone, bank_list


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_list(path: Path, codes: list[str]) -> Path:
    path.write_text("客户名称,uscc\n" + "".join(f"客户{i},{c}\n" for i, c in enumerate(codes)), encoding="utf-8")
    return path


@pytest.fixture
def sdk(zone: Zone, synthetic_zone: dict[str, str]) -> Iterator[ZoneClient]:
    with ZoneClient(zone.url, synthetic_zone["client_id"], synthetic_zone["client_secret"]) as client:
        yield client


class WorkerThread:
    """The zone's PSI worker, running queued engine jobs while a test's institution side runs."""

    def __init__(self, zone: Zone, settings: Settings) -> None:
        self.zone, self.settings = zone, settings
        self.stop = threading.Event()
        self.ran: list[str] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.ran += worker.run_queued_jobs(self.zone.db, self.settings, worker_name="test-worker")
            self.stop.wait(0.2)

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the worker did not come back"


def test_sdk_oprf_path_gets_the_plaintext_intersection(zone: Zone, sdk: ZoneClient, tmp_path: Path) -> None:
    codes = bank_list(zone, listed=12, unlisted=150, outsiders=40)
    source = write_list(tmp_path / "customers.csv", codes)
    out = tmp_path / "matches.csv"
    result = sdk.psi("dishonest-debtor-psi", source, purpose="pre_loan", mode="oprf", output=out)
    assert {m.uscc for m in result.matched} == set(codes) & set(zone.listed)
    assert result.size == len(set(codes) & set(zone.listed)) and result.items == len(codes)
    # line numbers are the file's own (header = 1)
    assert all(codes[m.line - 2] == m.uscc for m in result.matched)
    receipt = out.with_name(out.name + ".psi-state.json")
    assert out.exists() and json.loads(receipt.read_text())["client_key"] is None
    # the same run again, against the real gateway: the receipt's result, no new session, no charge
    again = sdk.psi("dishonest-debtor-psi", source, purpose="pre_loan", mode="oprf", output=out)
    assert again.from_receipt and again.charged_fen == 0 and again.session_id == result.session_id
    assert [m.uscc for m in again.matched] == [m.uscc for m in result.matched]


def test_sdk_labeled_path_gets_fields_for_matches_only(zone: Zone, sdk: ZoneClient, tmp_path: Path) -> None:
    codes = bank_list(zone, listed=10, unlisted=120, outsiders=20)
    result = sdk.psi(
        "dishonest-debtor-labeled", codes, purpose="pre_loan", mode="oprf", labeled=True, output=tmp_path / "l.csv"
    )
    assert {m.uscc for m in result.matched} == set(codes) & set(zone.listed)
    with zone.db.engine.connect() as conn:
        cases = dict(
            conn.execute(
                sa.text("SELECT uscc, count(*) FROM zone.court_dishonest WHERE _vto IS NULL GROUP BY uscc")
            ).all()
        )
    for m in result.matched:
        assert m.labels is not None and m.labels["listed_cases"] == cases[m.uscc]


@pytest.mark.parametrize("protocol", ["rr22", "unbalanced"])
def test_engine_job_through_the_gateway_and_worker(
    zone: Zone, sdk: ZoneClient, tmp_path: Path, protocol: str
) -> None:
    codes = bank_list(zone, listed=14, unlisted=300, outsiders=100)
    cache = tmp_path / "cache"
    with WorkerThread(zone, zone.settings) as w:
        for round_ in range(2 if protocol == "unbalanced" else 1):
            result = sdk.psi(
                "dishonest-debtor-psi",
                codes,
                purpose="pre_loan",
                mode="engine",
                protocol=protocol,
                peer_address=f"127.0.0.1:{free_port()}",
                output=tmp_path / f"engine-{round_}.csv",
                cache_dir=cache,
            )
            assert result.mode == "engine" and result.protocol == protocol
            assert {m.uscc for m in result.matched} == set(codes) & set(zone.listed)
    assert len(w.ran) == (2 if protocol == "unbalanced" else 1)
    with zone.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, reason, have_cache FROM psi_job WHERE id = ANY(:ids) ORDER BY created_at"),
            {"ids": w.ran},
        ).all()
    assert [r.status for r in rows] == ["succeeded"] * len(w.ran)
    if protocol == "unbalanced":
        # the second job found the client cache of the first: no transfer asked
        assert [r.have_cache for r in rows] == [False, True]


def _job(zone: Zone, sdk_token: dict[str, str], **body: object) -> dict[str, object]:
    r = httpx.post(f"{zone.url}/v1/psi/jobs", json=body, headers=sdk_token, timeout=30)
    assert r.status_code == 201, r.text
    out: dict[str, object] = r.json()
    return out


def _wait_status(zone: Zone, job_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, object] = httpx.get(f"{zone.url}/v1/psi/jobs/{job_id}", headers=zone.token, timeout=30).json()
        if body["status"] in ("succeeded", "failed", "expired"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


def test_a_peer_that_never_connects_expires_the_job_and_frees_the_worker(zone: Zone, tmp_path: Path) -> None:
    short = zone.settings.model_copy(update={"psi_link_timeout_seconds": 4.0})
    job = _job(
        zone, zone.token, product="dishonest-debtor-psi", purpose="pre_loan", set_size=200,
        peer_address=f"127.0.0.1:{free_port()}", protocol="rr22",
    )
    assert isinstance(job["ticket"], str) and len(job["ticket"]) >= 32
    started = time.monotonic()
    ran = worker.run_queued_jobs(zone.db, short, worker_name="test-worker")
    assert ran == [job["job_id"]] and time.monotonic() - started < 60
    body = _wait_status(zone, str(job["job_id"]))
    assert body["status"] == "expired" and "connect" in str(body["reason"])
    assert job["ticket"] not in str(body)  # the ticket is shown once, at creation
    # the institution never joined: the job stays charged (docs/psi.md section 7)
    with zone.db.engine.connect() as conn:
        credit_id = conn.execute(sa.text("SELECT credit_id FROM psi_job WHERE id = :j"), {"j": job["job_id"]}).scalar()
    assert credit_id is None


def test_a_grant_revoked_while_the_job_waits_stops_it_and_says_why(zone: Zone) -> None:
    job = _job(
        zone, zone.token, product="dishonest-debtor-psi", purpose="pre_loan", set_size=200,
        peer_address=f"127.0.0.1:{free_port()}", protocol="rr22",
    )
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: (worker.run_queued_jobs(zone.db, zone.settings, worker_name="test-worker"), done.set()),
        daemon=True,
    )
    thread.start()
    time.sleep(2.0)  # the zone's side is up and waiting for the institution
    with grants_revoked(zone.db, department="courts", reason="test: revoked while the job runs"):
        assert done.wait(30), "the worker did not stop the job"
        body = _wait_status(zone, str(job["job_id"]))
        assert body["status"] == "failed"
        assert "grant" in str(body["reason"]) and "courts" in str(body["reason"])
        # stopped on the zone's side: its charge is credited back, naming the job
        with zone.db.engine.connect() as conn:
            credit = conn.execute(
                sa.text(
                    "SELECT c.amount_fen, c.memo FROM psi_job j JOIN ledger_entry c ON c.id = j.credit_id"
                    " WHERE j.id = :j"
                ),
                {"j": job["job_id"]},
            ).one()
        assert credit.amount_fen == job["charged_fen"] and str(job["job_id"]) in credit.memo
        # and a new job is refused at once, naming the check
        r = httpx.post(
            f"{zone.url}/v1/psi/jobs",
            json={
                "product": "dishonest-debtor-psi", "purpose": "pre_loan", "set_size": 200,
                "peer_address": "127.0.0.1:1", "protocol": "rr22",
            },
            headers=zone.token,
            timeout=30,
        )
        assert r.status_code == 403 and problem(r)["check"] == "grant"


def test_engine_refuses_size_only_products_and_bad_requests(zone: Zone) -> None:
    def post(**body: object) -> httpx.Response:
        base: dict[str, object] = {
            "product": "dishonest-debtor-psi", "purpose": "pre_loan", "set_size": 200, "peer_address": "127.0.0.1:9",
        }
        return httpx.post(f"{zone.url}/v1/psi/jobs", json={**base, **body}, headers=zone.token, timeout=30)

    size_only = post(product="registered-enterprises-count")
    assert size_only.status_code == 409 and "/v1/psi/sessions" in problem(size_only)["detail"]
    bad_peer = post(peer_address="nowhere")
    assert bad_peer.status_code == 422 and "host:port" in problem(bad_peer)["detail"]
    small = post(set_size=5)
    assert small.status_code == 422 and problem(small)["type"].endswith("/psi-set-below-floor")
    unknown_protocol = post(protocol="psi-magic")
    assert unknown_protocol.status_code == 422


@pytest.mark.parametrize("protocol", ["rr22", "unbalanced"])
def test_rerunning_a_finished_engine_psi_finds_its_job_and_charges_nothing_more(
    zone: Zone, sdk: ZoneClient, tmp_path: Path, protocol: str
) -> None:
    codes = bank_list(zone, listed=9, unlisted=250, outsiders=50)
    source = write_list(tmp_path / "customers.csv", codes)
    out, peer = tmp_path / "matches.csv", f"127.0.0.1:{free_port()}"

    def run() -> Any:
        return sdk.psi(
            # unbalanced: the rerun holds the cache the first run received, and still sends the same request
            "dishonest-debtor-psi", source, purpose="pre_loan", mode="engine", protocol=protocol,
            peer_address=peer, output=out, cache_dir=tmp_path / "cache",
        )

    def counts() -> tuple[int, int, int]:
        with zone.db.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM psi_job), (SELECT count(*) FROM usage_event),"
                    " (SELECT count(*) FROM ledger_entry WHERE kind = 'debit')"
                )
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    with WorkerThread(zone, zone.settings) as w:
        first = run()
    assert w.ran == [first.job_id]
    after_first = counts()
    # the same command again, no worker needed: the same job, its result read back, nothing billed
    again = run()
    assert again.job_id == first.job_id and counts() == after_first
    assert {m.uscc for m in again.matched} == {m.uscc for m in first.matched} == set(codes) & set(zone.listed)
    # the result is the bank's own file: without it the rerun says so rather than paying again
    out.unlink()
    with pytest.raises(PsiJobFailed, match="charged once"):
        run()
    assert counts() == after_first
