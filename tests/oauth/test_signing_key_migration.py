"""Revision 2026_12_07_0015 on a database of its own: one active signing key per algorithm (ES256
and RS256 side by side), never two of one; the downgrade goes back to one active key in all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from datazone.db import sqlalchemy_url
from tests.conftest import alembic, scratch_database

REVISION = "2026_12_07_0015"


@pytest.fixture
def scratch(database_url: str) -> Iterator[Engine]:
    with scratch_database(database_url, prefix="datazone_mig") as url:
        engine = sa.create_engine(sqlalchemy_url(url))
        yield engine
        engine.dispose()


def _add_key(c: Connection, kid: str, alg: str, age_minutes: int = 0) -> None:
    c.execute(
        sa.text(
            "INSERT INTO oauth_signing_key (kid, alg, public_jwk, private_key_encrypted, created_at)"
            " VALUES (:kid, :alg, '{}', 'x', now() - make_interval(mins => :age))"
        ),
        {"kid": kid, "alg": alg, "age": age_minutes},
    )


def _active(engine: Engine) -> list[str]:
    with engine.connect() as c:
        return list(c.execute(sa.text("SELECT kid FROM oauth_signing_key WHERE retires_at IS NULL ORDER BY kid")).scalars())


def test_one_active_key_per_algorithm_and_back(scratch: Engine) -> None:
    alembic(scratch, "upgrade", REVISION)
    with scratch.begin() as c:
        _add_key(c, "es-1", "ES256", age_minutes=5)
        _add_key(c, "rs-1", "RS256")
        # a second active key of one algorithm is refused by the table itself
        with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
            _add_key(c, "es-2", "ES256")
    assert _active(scratch) == ["es-1", "rs-1"]
    # down: the newest stays active, the other is retired (still published until its tokens expire)
    alembic(scratch, "downgrade", "2026_11_21_0011")
    assert _active(scratch) == ["rs-1"]
    with scratch.begin() as c, pytest.raises(sa.exc.IntegrityError):
        _add_key(c, "es-3", "ES256")
    alembic(scratch, "upgrade", REVISION)
    with scratch.begin() as c:
        _add_key(c, "es-3", "ES256")
    assert _active(scratch) == ["es-3", "rs-1"]
