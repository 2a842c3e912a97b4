"""A gateway far past its capacity still answers every call: 200, 429, or 503 with Retry-After;
never a 500, never a wait on a pool that cannot drain; and the liveness probe stays quick.

The gateway here has a pool of 3 connections and admits 3 requests at once; 150 calls arrive
together, 50 times its pool (before the capacity gate, 70 calls against a pool of 10 locked the
gateway for 30 s and ended in 500s)."""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.db import Database
from tests.access.test_gateway import Gateway, _institution, gateway_of
from tests.conftest import Server

CALLS = 150
POOL = 3


@pytest.fixture(scope="module")
def small_gateway(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("saturation")
    settings = Settings(home=root / "gw", database_url=database_url, drop_dir=root / "drop")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATAZONE_DB_POOL_SIZE", str(POOL))
        env.setenv("DATAZONE_MAX_QUEUED_REQUESTS", "40")
        env.setenv("DATAZONE_QUEUE_WAIT_SECONDS", "2")
        server = Server(settings)
    server.wait_ready()
    try:
        yield gateway_of(db, server.url, server.url)
    finally:
        server.stop()


def test_far_past_capacity_every_call_is_answered_and_billed_once(small_gateway: Gateway) -> None:
    gw = small_gateway
    inst_id, _key, token, _ = _institution(gw, ["credit-basic"])
    keys = [secrets.token_hex(8) for _ in range(CALLS)]
    start = threading.Barrier(CALLS + 1)
    probe_seconds: list[float] = []
    stop_probing = threading.Event()

    def call(i: int) -> httpx.Response:
        start.wait()
        return httpx.get(
            f"{gw.url}/v1/products/credit-basic/enterprises/{gw.usccs[i % len(gw.usccs)]}",
            params={"purpose": "pre_loan"},
            headers={**token, "Idempotency-Key": keys[i]},
            timeout=120,
        )

    def probe() -> None:
        start.wait()
        while not stop_probing.is_set():
            t0 = time.monotonic()
            r = httpx.get(f"{gw.url}/healthz", timeout=60)
            probe_seconds.append(time.monotonic() - t0)
            assert r.status_code == 200
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    with ThreadPoolExecutor(CALLS) as pool:
        answers = list(pool.map(call, range(CALLS)))
    stop_probing.set()
    prober.join()

    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429, 503}, sorted(set(statuses))
    assert statuses.count(200) > 0
    for r in answers:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            body = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert body["type"].endswith("/gateway-busy") and "retry after" in body["detail"]
    # the probe never waited behind the product calls (a locked-up gateway took 30 s); the bound is
    # loose because this client's own 150 threads share two cores with the server (the benchmark
    # measures the probe's p99 properly)
    assert probe_seconds and statistics.median(probe_seconds) < 1.0 and max(probe_seconds) < 10.0, probe_seconds

    # nothing lost, nothing billed twice: one usage event for each key answered 200, none for the rest
    answered = {k for k, r in zip(keys, answers, strict=True) if r.status_code == 200}
    with gw.db.engine.connect() as conn:
        billed = conn.execute(
            sa.text("SELECT idempotency_key, count(*) FROM usage_event WHERE institution_id = :i GROUP BY 1"),
            {"i": inst_id},
        ).all()
    assert {k for k, _ in billed} == answered and all(n == 1 for _, n in billed)

    # and the shed calls go through once the load is gone, under the same keys
    shed = [i for i, r in enumerate(answers) if r.status_code == 503][:5]
    for i in shed:
        r = httpx.get(
            f"{gw.url}/v1/products/credit-basic/enterprises/{gw.usccs[i % len(gw.usccs)]}",
            params={"purpose": "pre_loan"},
            headers={**token, "Idempotency-Key": keys[i]},
            timeout=30,
        )
        assert r.status_code == 200, r.text
