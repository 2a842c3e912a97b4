"""Readiness: is this process able to serve? The database answers within a short timeout, its
schema is at the migration head this code was written for, and the token-signing key opens
with this process's deployment secret.

The checks run on a side engine of their own (one or two connections, a connect and a
statement timeout), so a probe never waits behind requests for a pooled connection.
"""

from __future__ import annotations

import math
from functools import cache

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from cryptography.fernet import InvalidToken
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.config import Settings
from datazone.db import MIGRATIONS_DIR, sqlalchemy_url
from datazone.oauth import keys
from datazone.oauth.models import SigningKey


def side_engine(url: str, *, timeout_seconds: float, name: str = "datazone-probe") -> Engine:
    """A tiny engine for probes and scrape-time queries, bounded in every wait."""
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=1,
        max_overflow=1,
        pool_timeout=timeout_seconds,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": max(1, math.ceil(timeout_seconds)),
            "options": f"-c statement_timeout={int(timeout_seconds * 1000)}",
            "application_name": name,
        },
    )


@cache
def migration_heads() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this code (read once)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def readiness_problems(engine: Engine, settings: Settings) -> dict[str, str]:
    """What is not ready, by check (database, schema, signing_key); empty when ready."""
    problems: dict[str, str] = {}
    try:
        with Session(engine) as session:
            applied = set(session.scalars(sa.text("SELECT version_num FROM alembic_version")))
            heads = migration_heads()
            if applied != heads:
                problems["schema"] = (
                    f"the database is at migration {', '.join(sorted(applied)) or 'none'}, this code needs "
                    f"{', '.join(sorted(heads))}: run `datazone migrate`"
                )
                return problems
            active = session.scalar(sa.select(SigningKey).where(SigningKey.retires_at.is_(None)))
            if active is not None:
                try:
                    keys.private_key(active, settings)
                except InvalidToken:
                    problems["signing_key"] = (
                        f"the active signing key {active.kid} does not open with this process's"
                        " DATAZONE_SIGNING_KEY_SECRET: every replica needs the same secret"
                    )
    except sa.exc.SQLAlchemyError as exc:
        problems["database"] = f"the database did not answer ({type(exc).__name__})"
        return problems
    if active is None:
        # no key yet: the first token makes one; the secret that will seal it must be at hand
        try:
            keyring.deployment_secret(settings)
        except OSError as exc:
            problems["signing_key"] = f"no deployment secret to seal a signing key with ({exc.strerror})"
    return problems
