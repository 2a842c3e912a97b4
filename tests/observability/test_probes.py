"""/livez and /readyz: fast, honest about what is not ready, and never stuck behind busy request
threads, a drained database pool or a full capacity gate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import keys
from datazone.observability.gateway import Readiness
from datazone.observability.probes import side_engine
from tests.conftest import free_port, fresh_database, problem


def _settings(tmp_path: Path, url: str, secret: str = "secret-a") -> Settings:
    return Settings(home=tmp_path / "home", database_url=url, signing_key_secret=secret, readyz_timeout_seconds=1.0)


def test_ready_and_live_on_a_migrated_database(db: Database, settings: Settings) -> None:
    with TestClient(create_app(db=db, settings=settings)) as client:
        live = client.get("/livez")
        assert live.status_code == 200 and live.json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        assert client.get("/healthz").status_code == 200  # the old liveness path still answers


def test_not_ready_when_the_schema_is_behind_the_code(database_url: str, tmp_path: Path) -> None:
    with fresh_database(database_url) as behind:
        with behind.engine.begin() as conn:
            head = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older_revision'"))
        with TestClient(create_app(db=behind, settings=_settings(tmp_path, behind.url))) as client:
            resp = client.get("/readyz", headers={"X-Request-ID": "probe-1"})
            body = problem(resp)
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "5"
            assert set(body["checks"]) == {"schema"}
            assert "older_revision" in body["checks"]["schema"] and head in body["checks"]["schema"]
            assert "datazone migrate" in body["detail"]
            assert body["request_id"] == "probe-1"
            assert client.get("/livez").status_code == 200  # alive all the same


def test_not_ready_when_the_signing_key_does_not_open_with_this_secret(database_url: str, tmp_path: Path) -> None:
    with fresh_database(database_url) as zone:
        with zone.unit_of_work() as s:
            kid = keys.current_signing_key(s, _settings(tmp_path, zone.url, "secret-a")).kid
        with TestClient(create_app(db=zone, settings=_settings(tmp_path, zone.url, "secret-a"))) as client:
            assert client.get("/readyz").status_code == 200
        with TestClient(create_app(db=zone, settings=_settings(tmp_path, zone.url, "secret-b"))) as client:
            resp = client.get("/readyz")
            assert resp.status_code == 503
            checks = problem(resp)["checks"]
            assert set(checks) == {"signing_key"} and kid in checks["signing_key"]
            assert "secret-b" not in resp.text and "secret-a" not in resp.text


def test_not_ready_fast_when_the_database_is_away(tmp_path: Path) -> None:
    away = Database(f"postgresql://datazone@127.0.0.1:{free_port()}/datazone")
    try:
        with TestClient(create_app(db=away, settings=_settings(tmp_path, away.url))) as client:
            started = time.monotonic()
            resp = client.get("/readyz")
            assert time.monotonic() - started < 3
            assert resp.status_code == 503
            assert set(problem(resp)["checks"]) == {"database"}
            assert client.get("/livez").status_code == 200
    finally:
        away.dispose()


def test_probes_answer_while_request_threads_and_pooled_connections_are_all_taken(
    db: Database, settings: Settings
) -> None:
    app = create_app(db=db, settings=settings.model_copy(update={"readyz_timeout_seconds": 1.0}))
    release = threading.Event()
    entered = threading.Event()

    @app.get("/test-hold")
    def hold() -> dict[str, str]:  # a sync handler: it takes a request thread until released
        entered.set()
        release.wait(30)
        return {}

    with TestClient(app) as client:

        async def one_request_thread() -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = 1

        client.portal.call(one_request_thread)
        holder = threading.Thread(target=client.get, args=("/test-hold",))
        holder.start()
        assert entered.wait(10)
        pool = db.engine.pool
        held = [db.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            metrics = client.get("/metrics").text
            assert 'datazone_db_pool_in_use{pool="gateway"} ' + f"{len(held)}.0" in metrics
            for path in ("/livez", "/readyz"):
                started = time.monotonic()
                resp = client.get(path)
                assert resp.status_code == 200, resp.text
                # not behind the held pool (its time-out is 30 s); loose for a busy machine
                assert time.monotonic() - started < 5, path
        finally:
            for conn in held:
                conn.close()
            release.set()
            holder.join(10)


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_probes_are_in_the_api_document(db: Database, settings: Settings, path: str) -> None:
    with TestClient(create_app(db=db, settings=settings)) as client:
        assert path in client.get("/openapi.json").json()["paths"]


def test_probes_answer_while_the_gate_is_full_and_the_pool_is_held(db: Database, settings: Settings) -> None:
    """One place, no queue: the place taken by a held request, the pool drained. A product call is
    shed at once (503 gateway-busy); the probes still answer, each from the event loop."""
    app = create_app(db=db, settings=settings.model_copy(update={"max_requests": 1, "max_queued_requests": 0}))
    release = threading.Event()
    entered = threading.Event()

    @app.get("/test-hold")
    def hold() -> dict[str, str]:
        entered.set()
        release.wait(30)
        return {}

    with TestClient(app) as client:
        holder = threading.Thread(target=client.get, args=("/test-hold",))
        holder.start()
        assert entered.wait(10)
        pool = db.engine.pool
        held = [db.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            shed = client.get("/v1/catalog/dcat")
            assert shed.status_code == 503 and problem(shed)["type"].endswith("/gateway-busy")
            for path in ("/livez", "/healthz", "/readyz", "/readyz", "/livez"):
                resp = client.get(path)
                assert resp.status_code == 200, (path, resp.text)
                assert resp.json()["status"] in ("ok", "ready")
        finally:
            for conn in held:
                conn.close()
            release.set()
            holder.join(10)


def test_readiness_is_answered_from_its_last_check_and_renewed_within_its_bound(
    database_url: str, tmp_path: Path
) -> None:
    """A result younger than `fresh_for` is answered as it is; an older one starts a new check, so a
    change (here the schema falling behind) shows within about `fresh_for` plus one check."""
    with fresh_database(database_url) as zone:
        settings = _settings(tmp_path, zone.url)
        engine = side_engine(zone.url, timeout_seconds=1.0)
        readiness = Readiness(engine, settings, fresh_for=0.2)
        try:

            async def scenario() -> None:
                assert await readiness.current() == {}
                first_check = readiness.checked_at
                assert await readiness.current() == {} and readiness.checked_at == first_check  # from the last check
                with zone.engine.begin() as conn:
                    conn.execute(sa.text("UPDATE alembic_version SET version_num = 'older_revision'"))
                # hang detector only: the bound is 0.2 s plus one check; 30 s leaves room for a busy machine
                with anyio.fail_after(30):
                    while "schema" not in await readiness.current():
                        await anyio.sleep(0.05)
                readiness.stop()

            anyio.run(scenario)
        finally:
            engine.dispose()
