"""A database of the audit tests' own, so tampering and exact counts never touch the shared one.

Created once per test session on the same server as the shared test database,
migrated with Alembic, emptied of audit rows before each test that uses it, dropped
at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.db import Database, migrate
from tests.conftest import scratch_database


@pytest.fixture(scope="session")
def audit_database_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, prefix="datazone_audit") as url:
        yield url


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
