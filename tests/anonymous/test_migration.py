"""Migration 0010: the bucket tables go down and come up again, with the database's own k check."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import alembic, fresh_database


def test_downgrade_and_upgrade_and_the_k_constraint(database_url: str) -> None:
    with fresh_database(database_url) as db:
        alembic(db.engine, "downgrade", "2026_11_21_0009")
        with db.engine.begin() as conn:
            assert not {"anonymous_table", "anonymous_bucket"} & set(sa.inspect(conn).get_table_names())
        alembic(db.engine, "upgrade", "head")
        with db.engine.begin() as conn:
            assert {"anonymous_table", "anonymous_bucket"} <= set(sa.inspect(conn).get_table_names())
            epoch = conn.execute(
                sa.text("INSERT INTO psi_key_epoch (key_encrypted) VALUES ('\\x00') RETURNING id")
            ).scalar_one()
        row = {"e": epoch, "bits": 3, "smallest": 999}
        insert = sa.text(
            "INSERT INTO anonymous_table (product_id, sealed_sha256, epoch, data_key, data_versions, as_of, answer,"
            " k, prefix_bits, clearance, state, smallest_bucket) VALUES ('p', 's', :e, 'd', '{}', '2026-11-21',"
            " 'existence', 1000, :bits, 1, 'ready', :smallest)"
        )
        # a ready table whose smallest bucket is below k, or without a prefix length, cannot exist
        for values in (row, {**row, "bits": None, "smallest": 1000}):
            with db.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="ck_anonymous_table_k"):
                conn.execute(insert, values)
        with db.engine.begin() as conn:
            conn.execute(insert, {**row, "smallest": 1000})
