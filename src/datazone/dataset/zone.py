"""Zone tables: one per dataset in the `zone` schema, created from the dataset's spec.

Each row carries the version that brought it (`_vfrom`) and the version that
retired it (`_vto`, null while current), so a product can answer "as of" any
version: a row is visible in version v when _vfrom <= v and (_vto is null or _vto > v).
An unchanged row in a new snapshot costs a comparison, not a write. The enterprise
key is in every table, so Citus or native partitioning can distribute them by
enterprise: an operator may turn a table into N hash partitions on that key
(dataset/partitioning.py, `datazone zone partition`), and everything that reads or
loads it works unchanged.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql

from datazone.dataset.schemas import DatasetSpec, FieldSpec, FieldType
from datazone.db import ZONE_SCHEMA

PG_TYPES: dict[FieldType, str] = {
    FieldType.string: "text",
    FieldType.uscc: "text",
    FieldType.integer: "bigint",
    FieldType.decimal: "numeric",
    FieldType.date: "date",
    FieldType.boolean: "boolean",
    FieldType.enum: "text",
}


def table_ident(dataset_id: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(ZONE_SCHEMA), sql.Identifier(dataset_id))


def column_def(field: FieldSpec) -> sql.Composed:
    return sql.SQL("{} {}").format(sql.Identifier(field.name), sql.SQL(PG_TYPES[field.type]))


def column_names(spec: DatasetSpec) -> list[str]:
    """Every column of the zone table, by name (a field added later sits at the table's end,
    wherever the spec lists it: copy rows by name, never by position)."""
    return [*(f.name for f in spec.fields), "_vfrom", "_vto"]


def partition_name(dataset_id: str, remainder: int, modulus: int) -> str:
    """A hash partition's table name. The leading underscore keeps it out of the dataset ids'
    namespace (they start with a letter); the modulus in the name lets a table be rebuilt
    with another count while the old partitions still exist."""
    suffix = f"_h{remainder}_of_{modulus}"
    base = f"_{dataset_id}"
    if len(base) + len(suffix) > 63:  # PostgreSQL would truncate, and two names could meet
        digest = hashlib.sha256(dataset_id.encode()).hexdigest()[:8]
        base = f"{base[: 63 - len(suffix) - 9]}_{digest}"
    return base + suffix


def create_table_sql(
    spec: DatasetSpec, *, partitions: int | None = None, table: str | None = None
) -> list[sql.Composed]:
    """The table alone: its indexes come with the first load (index_sql), built once over
    the loaded rows, which costs a third of maintaining them row by row during COPY.

    `partitions`: hash-partitioned on the enterprise key into that many partitions;
    `table`: another name in the zone schema (a table being rebuilt)."""
    cols = sql.SQL(", ").join(column_def(f) for f in spec.fields)
    t = sql.SQL("{}.{}").format(sql.Identifier(ZONE_SCHEMA), sql.Identifier(table or spec.id))
    if partitions is None:
        return [sql.SQL("CREATE TABLE {} ({}, _vfrom integer NOT NULL, _vto integer)").format(t, cols)]
    statements = [
        sql.SQL("CREATE TABLE {} ({}, _vfrom integer NOT NULL, _vto integer) PARTITION BY HASH ({})").format(
            t, cols, sql.Identifier(spec.entity_key)
        )
    ]
    for remainder in range(partitions):
        statements.append(
            sql.SQL("CREATE TABLE {}.{} PARTITION OF {} FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
                sql.Identifier(ZONE_SCHEMA),
                sql.Identifier(partition_name(spec.id, remainder, partitions)),
                t,
                sql.Literal(partitions),
                sql.Literal(remainder),
            )
        )
    return statements


def hash_partitions(conn: psycopg.Connection[Any], dataset_id: str) -> int | None:
    """How many hash partitions the dataset's zone table has; None for a plain table."""
    row = conn.execute(
        "SELECT c.relkind, (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (ZONE_SCHEMA, dataset_id),
    ).fetchone()
    if row is None or row[0] != "p":
        return None
    return int(row[1])


def index_sql(spec: DatasetSpec) -> list[sql.Composed]:
    # the enterprise key leads, so the current-row index also serves lookups by enterprise
    key_cols = [spec.entity_key, *[k for k in spec.record_key() if k != spec.entity_key]]
    key = sql.SQL(", ").join(sql.Identifier(k) for k in key_cols)
    t = table_ident(spec.id)
    return [
        # one current row per record key: the database enforces what validation promised
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({}) WHERE _vto IS NULL").format(
            sql.Identifier(f"{spec.id}_current"), t, key
        ),
        # retired rows, for "as of" reads; empty until something changes, so a first load pays one index
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, _vfrom) WHERE _vto IS NOT NULL").format(
            sql.Identifier(f"{spec.id}_history"), t, sql.Identifier(spec.entity_key)
        ),
    ]


def rows_equal(spec: DatasetSpec, left: str, right: str) -> sql.Composed:
    """Null-safe equality of all field values of two rows."""

    def row(alias: str) -> sql.Composed:
        return sql.SQL("ROW({})").format(
            sql.SQL(", ").join(sql.Identifier(alias, f.name) for f in spec.fields)
        )

    return sql.SQL("{} IS NOT DISTINCT FROM {}").format(row(left), row(right))


def key_match(spec: DatasetSpec, left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
        for k in spec.record_key()
    )
