"""Revision 0007 on a database of its own: the tables match the models, the constraints hold,
and the downgrade removes what the upgrade added."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from datazone.db import sqlalchemy_url
from datazone.oauth.models import OAuthClient, RevokedToken, SigningKey, UsedAssertion
from tests.conftest import alembic, scratch_database

TABLES = {"oauth_client", "oauth_signing_key", "oauth_revoked_token", "oauth_used_assertion"}


@pytest.fixture
def scratch(database_url: str) -> Iterator[Engine]:
    with scratch_database(database_url, prefix="datazone_mig") as url:
        engine = sa.create_engine(sqlalchemy_url(url))
        yield engine
        engine.dispose()


def test_upgrade_matches_models_and_downgrade_removes_it(scratch: Engine) -> None:
    alembic(scratch, "upgrade", "2026_11_21_0007")
    inspector = sa.inspect(scratch)
    assert set(inspector.get_table_names()) >= TABLES
    for model in (OAuthClient, SigningKey, RevokedToken, UsedAssertion):
        columns = {c["name"] for c in inspector.get_columns(model.__tablename__)}
        assert columns == {c.name for c in model.__table__.columns}, model.__tablename__
    with scratch.begin() as c:
        c.execute(sa.text("INSERT INTO principal (kind, name, roles) VALUES ('institution', 'bank', '{}')"))
        # a secret-basic client without a secret hash is refused by the table itself
        with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
            c.execute(
                sa.text(
                    "INSERT INTO oauth_client (client_id, institution_id, name, token_endpoint_auth_method,"
                    " created_by) SELECT 'dzc_x', id, 'x', 'client_secret_basic', 't' FROM principal"
                )
            )
        # and so is a second active signing key
        c.execute(
            sa.text(
                "INSERT INTO oauth_signing_key (kid, alg, public_jwk, private_key_encrypted, created_at)"
                " VALUES ('a', 'ES256', '{}', 'x', now())"
            )
        )
        with pytest.raises(sa.exc.IntegrityError), c.begin_nested():
            c.execute(
                sa.text(
                    "INSERT INTO oauth_signing_key (kid, alg, public_jwk, private_key_encrypted, created_at)"
                    " VALUES ('b', 'ES256', '{}', 'x', now())"
                )
            )
    alembic(scratch, "downgrade", "2026_11_21_0006")
    assert not TABLES & set(sa.inspect(scratch).get_table_names())
    alembic(scratch, "upgrade", "2026_11_21_0007")
    assert set(sa.inspect(scratch).get_table_names()) >= TABLES
