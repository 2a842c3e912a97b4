"""Revision 0005 on a database of its own: datasets already serving become admitted, new ones
start in intake, and the downgrade removes what the upgrade added."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from datazone.db import sqlalchemy_url
from tests.conftest import alembic, scratch_database


@pytest.fixture
def scratch(database_url: str) -> Iterator[Engine]:
    with scratch_database(database_url, prefix="datazone_mig") as url:
        engine = sa.create_engine(sqlalchemy_url(url))
        yield engine
        engine.dispose()


def test_existing_datasets_are_admitted_new_ones_start_in_intake(scratch: Engine) -> None:
    alembic(scratch, "upgrade", "2026_11_21_0004")
    with scratch.begin() as c:
        c.execute(sa.text("INSERT INTO supplier (id, name) VALUES ('dept', '局')"))
        c.execute(
            sa.text(
                "INSERT INTO dataset (id, supplier_id, spec, spec_sha256) VALUES ('old', 'dept', '{}', 'x')"
            )
        )
    alembic(scratch, "upgrade", "2026_11_21_0005")
    with scratch.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO dataset (id, supplier_id, spec, spec_sha256) VALUES ('new', 'dept', '{}', 'x')"
            )
        )
        states: dict[str, str] = dict(c.execute(sa.text("SELECT id, admission_state FROM dataset")).all())
        assert states == {"old": "admitted", "new": "intake"}
        with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
            c.execute(sa.text("UPDATE supplier SET admission_status = 'maybe'"))
    alembic(scratch, "downgrade", "2026_11_21_0004")
    with scratch.connect() as c:
        tables = set(sa.inspect(c).get_table_names())
        cols = {col["name"] for col in sa.inspect(c).get_columns("dataset")}
    assert not tables & {"demand_request", "dataset_review", "dataset_quality", "product_rating"}
    assert "admission_state" not in cols and "successor_id" not in cols
    alembic(scratch, "upgrade", "head")
