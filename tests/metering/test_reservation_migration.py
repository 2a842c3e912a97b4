"""Migration 0016: admission as `meter_admit` in a transaction of its own; the meter tables lose their
foreign keys and the lock row `meter`. It goes down (orphaned counters dropped, keys and the lock rows
back) and up again, and the function decides as the gateway expects."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import alembic, fresh_database

ADMIT = sa.text(
    "SELECT outcome, used, free_taken, spent FROM meter_admit(:i, :c, :interval, :window, '2026-12-07', '2026-12',"
    " :units, 100, :quota, 'day', 1, 'day', NULL)"
)


def admit(conn: sa.Connection, institution: int, contract: int, units: int, quota: int | None) -> tuple[Any, ...]:
    params = {"i": institution, "c": contract, "interval": timedelta(milliseconds=1),
              "window": timedelta(seconds=1), "units": units, "quota": quota}
    return tuple(conn.execute(ADMIT, params).one())


def foreign_keys(conn: sa.Connection, table: str) -> list[str]:
    return sorted(fk["referred_table"] for fk in sa.inspect(conn).get_foreign_keys(table))


def test_meter_admit_counts_and_refuses_then_the_migration_goes_down_and_up(database_url: str) -> None:
    with fresh_database(database_url) as db:
        with db.engine.begin() as conn:
            bank = conn.execute(
                sa.text("INSERT INTO principal (kind, name, roles) VALUES ('institution', 'b', '{}') RETURNING id")
            ).scalar_one()
            # no keys: a reservation may name a contract the caller's transaction has not committed
            assert foreign_keys(conn, "meter_count") == [] and foreign_keys(conn, "meter_rate") == []
            assert "meter" not in sa.inspect(conn).get_table_names()
            # one free unit a day, then 100 fen a unit; a quota of 3 a day
            assert admit(conn, bank, 7, 2, 3) == ("admitted", 0, 1, 0)
            assert admit(conn, bank, 7, 2, 3) == ("quota", 2, 0, 100)
            assert admit(conn, bank, 7, 1, 3) == ("admitted", 2, 0, 100)
            counts = conn.execute(
                sa.text("SELECT period, units, free_units, charged_fen FROM meter_count ORDER BY period")
            ).all()
            assert [tuple(r) for r in counts] == [("2026-12", 3, 1, 200), ("2026-12-07", 3, 1, 200)]
            # counters of an institution that is not (or no longer) there: dropped on the way down
            conn.execute(sa.text("INSERT INTO meter_count (institution_id, period) VALUES (999999, '2026-12')"))
        alembic(db.engine, "downgrade", "2026_12_07_0015")
        with db.engine.begin() as conn:
            assert foreign_keys(conn, "meter_count") == ["principal"]
            assert foreign_keys(conn, "meter_rate") == ["contract"]
            assert conn.execute(sa.text("SELECT institution_id FROM meter")).scalars().all() == [bank]
            assert conn.execute(sa.text("SELECT count(*) FROM meter_rate")).scalar_one() == 0  # no contract 7
            with pytest.raises(sa.exc.ProgrammingError, match="meter_admit"):
                admit(conn, bank, 7, 1, None)
        alembic(db.engine, "upgrade", "head")
        with db.engine.begin() as conn:
            assert admit(conn, bank, 7, 1, None)[0] == "admitted"
