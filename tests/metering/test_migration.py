"""Migration 0008: down and up again; contracts signed before it get the public default plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import alembic, fresh_database


def test_downgrade_and_upgrade_keep_contracts_with_the_default_plan(database_url: str) -> None:
    with fresh_database(database_url) as db:
        alembic(db.engine, "downgrade", "2026_11_21_0007")
        with db.engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert (
                not {"plan", "meter", "meter_count", "usage_event", "ledger_entry", "idempotent_answer"}
                & tables
            )
            assert "plan_id" not in {c["name"] for c in sa.inspect(conn).get_columns("contract")}
            bank = conn.execute(
                sa.text(
                    "INSERT INTO principal (kind, name, roles) VALUES ('institution', 'old-bank', '{}') RETURNING id"
                )
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO contract (institution_id, purposes, products, clearance, valid_from, valid_to,"
                    " status, max_batch, created_by) VALUES (:b, '{pre_loan}', '{credit-basic}', 2, :f, :t,"
                    " 'active', 1000, :b)"
                ),
                {"b": bank, "f": datetime.now(UTC), "t": datetime.now(UTC) + timedelta(days=9)},
            )
        alembic(db.engine, "upgrade", "head")
        with db.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT plan_id FROM contract")).scalars().all() == [
                "public-standard"
            ]
            plan = conn.execute(
                sa.text("SELECT institution_id, unit_price_fen, rate_per_second, burst FROM plan")
            ).all()
            assert [tuple(p) for p in plan] == [(None, None, 1000.0, 2000)]
            # the contract cannot lose its plan
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(sa.text("UPDATE contract SET plan_id = NULL"))
