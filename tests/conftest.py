"""Test fixtures: a real PostgreSQL for the whole session, migrated once with Alembic.

With DATAZONE_DATABASE_URL set (CI runs the suite once against Debian's server) a
fresh database is created on that server for the session and dropped afterwards;
otherwise an embedded server (pgserver) is started in a temporary directory.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import MIGRATIONS_DIR, Database, _pgserver, migrate, sqlalchemy_url
from tests.factories import bearer, principal_key


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server_url = os.environ.get("DATAZONE_DATABASE_URL")
    server = None
    if not server_url:
        # through datazone.db, which imports pgserver without its XDG_RUNTIME_DIR warning
        server = _pgserver().get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
        server_url = server.get_uri()
    with scratch_database(server_url) as url:
        yield url
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


# replicas and CLI processes of one test session share the token-signing key secret, as a
# real deployment's replicas do (each test gets its own home)
SIGNING_KEY_SECRET = secrets.token_urlsafe(32)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        drop_dir=tmp_path / "drop",
        ingest_batch_rows=1000,
        signing_key_secret=SIGNING_KEY_SECRET,
    )


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    """An in-process gateway on the real database."""
    with TestClient(create_app(db=db, settings=settings)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(db: Database) -> dict[str, dict[str, str]]:
    """Bearer headers of operator staff by role."""
    return {
        "curator": bearer(principal_key(db, roles=["curator"])),
        "reviewer": bearer(principal_key(db, roles=["reviewer"])),
        "auditor": bearer(principal_key(db, roles=["auditor"])),
        "operator": bearer(principal_key(db)),
    }


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test."""
    conn = db.engine.connect()
    trans = conn.begin()
    s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield s
    finally:
        s.close()
        trans.rollback()
        conn.close()


@contextmanager
def scratch_database(server_url: str, prefix: str = "datazone_test") -> Iterator[str]:
    """An empty database of its own on the same server (its URL), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def fresh_database(server_url: str) -> Iterator[Database]:
    """A migrated database of its own on the same server."""
    with scratch_database(server_url) as url:
        db = Database(url)
        try:
            migrate(db.engine)
            yield db
        finally:
            db.dispose()


def alembic(engine: Engine, verb: str, revision: str) -> None:
    """`alembic <verb> <revision>` (upgrade or downgrade) on the engine's database, in one transaction."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def unique_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATAZONE_HOME": str(settings.home),
            "DATAZONE_DATABASE_URL": str(settings.database_url),
            "DATAZONE_DROP_DIR": str(settings.drop_path),
            "DATAZONE_SIGNING_KEY_SECRET": settings.signing_key_secret or SIGNING_KEY_SECRET,
        }
    )
    if settings.oauth_issuer:
        env["DATAZONE_OAUTH_ISSUER"] = settings.oauth_issuer
    env.update(extra)
    return env


def run_cli(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datazone", *args],
        env=cli_env(settings, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


class Server:
    """The real gateway in a subprocess on loopback."""

    def __init__(self, settings: Settings, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = settings.home / f"server-{self.port}.log"
        settings.home.mkdir(parents=True, exist_ok=True)
        self._log = self.log.open("w")
        cmd = args or ("serve",)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "datazone", *cmd, "--port", str(self.port), "--host", "127.0.0.1"],
            env=cli_env(settings, **(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    srv = Server(settings)
    srv.wait_ready()
    yield srv
    srv.stop()


# the synthetic zone shared by product, gateway and demo tests: generated and ingested
# through the real pipeline once per test session (same parameters everywhere, so a
# second load of the same files would be a no-op)
SYNTHETIC_ENTITIES = 2000


@pytest.fixture(scope="session")
def synthetic_zone(db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo zone (departments, 13 datasets, products, demo bank) on the test database.

    Returns demo.json's content plus `drop_dir` (where the department files are)."""
    from datazone.demo.setup import prepare_demo

    root = tmp_path_factory.mktemp("synthetic")
    zone_settings = Settings(
        home=root / "home",
        database_url=database_url,
        drop_dir=root / "drop",
        ingest_batch_rows=50_000,
        signing_key_secret=SIGNING_KEY_SECRET,  # what every test server of the zone shares
    )
    zone = prepare_demo(db, zone_settings, entities=SYNTHETIC_ENTITIES)
    return {**zone.info, "drop_dir": zone_settings.drop_path}


def synthetic_zone_settings(
    synthetic_zone: dict[str, Any], database_url: str, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Settings:
    """Settings of a gateway or worker of its own (its own home) over the shared synthetic zone."""
    return Settings(
        home=tmp_path_factory.mktemp(name) / "home",
        database_url=database_url,
        drop_dir=synthetic_zone["drop_dir"],
        signing_key_secret=SIGNING_KEY_SECRET,
    )


def column(db: Database, query: str) -> list[str]:
    """One column of a query's rows (the plaintext truth tests compare answers with)."""
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(query)).scalars())


def problem(resp: httpx.Response) -> dict[str, Any]:
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    body: dict[str, Any] = resp.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body
