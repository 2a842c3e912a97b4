"""Alembic environment: owns the platform schema (public); zone.* tables are made by the dataset service."""

from __future__ import annotations

from alembic import context

from datazone.db import make_engine, resolve_database_url

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, include_schemas=False)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(resolve_database_url())
    with engine.begin() as conn:
        context.configure(connection=conn, include_schemas=False)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
