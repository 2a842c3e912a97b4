"""Migration 2026_12_07_0014: the jobs' call and credit columns go down and come up again."""

from __future__ import annotations

import sqlalchemy as sa

from tests.conftest import alembic, fresh_database


def _columns(db_engine: sa.Engine, table: str) -> set[str]:
    with db_engine.begin() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_job_charge_columns_downgrade_and_upgrade(database_url: str) -> None:
    with fresh_database(database_url) as db:
        for table in ("psi_job", "scoring_job"):
            assert {"call_id", "credit_id"} <= _columns(db.engine, table)
        alembic(db.engine, "downgrade", "2026_11_21_0011")
        for table in ("psi_job", "scoring_job"):
            assert not {"call_id", "credit_id"} & _columns(db.engine, table)
        alembic(db.engine, "upgrade", "head")
        for table in ("psi_job", "scoring_job"):
            assert {"call_id", "credit_id"} <= _columns(db.engine, table)
