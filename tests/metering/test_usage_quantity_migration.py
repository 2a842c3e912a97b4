"""Migrations 0012 and 0013: rate-limit state per contract, and usage events with a quantity; both go
down and up again, and going down turns an event of N units back into N one-unit events."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import alembic, fresh_database


def test_quantity_goes_down_to_one_row_per_unit_and_back(database_url: str) -> None:
    with fresh_database(database_url) as db:
        with db.engine.begin() as conn:
            bank = conn.execute(
                sa.text("INSERT INTO principal (kind, name, roles) VALUES ('institution', 'b', '{}') RETURNING id")
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO plan (id, name, free_units, free_period, rate_per_second, burst)"
                    " VALUES ('p', 'p', 0, 'day', 1, 1)"
                )
            )
            insert = sa.text(
                "INSERT INTO usage_event (id, call_id, at, institution_id, client_id, contract_id, plan_id,"
                " product_id, purpose, uscc, price_fen, free, quantity)"
                " VALUES (gen_random_uuid(), gen_random_uuid(), now(), :b, 'c', 1, 'p', 'x', 'pre_loan', :u, 2,"
                " false, :q)"
            )
            conn.execute(insert, {"b": bank, "u": None, "q": 1000})
            conn.execute(insert, {"b": bank, "u": "91110000100003962T", "q": 1})
            # a named enterprise is one unit; a quantity is at least one
            for bad in ({"u": "91110000100003962T", "q": 2}, {"u": None, "q": 0}):
                with pytest.raises(sa.exc.IntegrityError, match="ck_usage_event"), conn.begin_nested():
                    conn.execute(insert, {"b": bank, **bad})
        alembic(db.engine, "downgrade", "2026_11_21_0011")
        with db.engine.begin() as conn:
            rows, fen = conn.execute(sa.text("SELECT count(*), sum(price_fen) FROM usage_event")).one()
            assert (rows, fen) == (1001, 2002)
            assert "tat" in {c["name"] for c in sa.inspect(conn).get_columns("meter")}
            assert "meter_rate" not in sa.inspect(conn).get_table_names()
        alembic(db.engine, "upgrade", "head")
        with db.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT sum(quantity) FROM usage_event")).scalar_one() == 1001
            assert "meter_rate" in sa.inspect(conn).get_table_names()
