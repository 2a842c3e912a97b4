"""A database of the audit tests' own, so tampering and exact counts never touch the shared one.

Created once per test session on the same server as the shared test database,
migrated with Alembic, emptied of audit rows before each test that uses it, dropped
at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datazone.config import Settings
from datazone.db import Database, migrate, sqlalchemy_url


@pytest.fixture(scope="session")
def audit_database_url(database_url: str) -> Iterator[str]:
    name = f"datazone_audit_{secrets.token_hex(4)}"
    admin = sa.create_engine(sqlalchemy_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def audit_db_session_scoped(audit_database_url: str) -> Iterator[Database]:
    database = Database(audit_database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def audit_db(audit_db_session_scoped: Database) -> Database:
    """The audit tests' own database with an empty trail (principals and departments accumulate)."""
    with audit_db_session_scoped.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_entry, audit_block RESTART IDENTITY"))
    return audit_db_session_scoped


@pytest.fixture
def audit_settings(tmp_path: Path, audit_database_url: str) -> Settings:
    # no in-process sealer in apps built from these settings: the tests seal when they mean to
    return Settings(
        home=tmp_path / "home",
        database_url=audit_database_url,
        drop_dir=tmp_path / "drop",
        audit_seal_seconds=0,
    )
