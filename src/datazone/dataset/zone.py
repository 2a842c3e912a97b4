"""Zone tables: one per dataset in the `zone` schema, created from the dataset's spec.

Each row carries the version that brought it (`_vfrom`) and the version that
retired it (`_vto`, null while current), so a product can answer "as of" any
version: a row is visible in version v when _vfrom <= v and (_vto is null or _vto > v).
`_hash` fingerprints the row's values, so an unchanged row in a new snapshot costs
a comparison, not a write. The enterprise key is in every table, so Citus or
native partitioning can distribute them by enterprise.
"""

from __future__ import annotations

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


def create_table_sql(spec: DatasetSpec) -> list[sql.Composable]:
    cols = sql.SQL(", ").join(column_def(f) for f in spec.fields)
    key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.record_key())
    t = table_ident(spec.id)
    return [
        sql.SQL("CREATE TABLE {} ({}, _vfrom integer NOT NULL, _vto integer, _hash uuid NOT NULL)").format(
            t, cols
        ),
        # one current row per record key: the database enforces what validation promised
        sql.SQL("CREATE UNIQUE INDEX {} ON {} ({}) WHERE _vto IS NULL").format(
            sql.Identifier(f"{spec.id}_current_key"), t, key
        ),
        sql.SQL("CREATE INDEX {} ON {} ({}, _vfrom)").format(
            sql.Identifier(f"{spec.id}_entity"), t, sql.Identifier(spec.entity_key)
        ),
    ]


def row_hash_expr(spec: DatasetSpec, alias: str) -> sql.Composed:
    """md5 over the row's values in spec order; the record's text form is unambiguous (quoted, nulls empty)."""
    cols = sql.SQL(", ").join(sql.Identifier(alias, f.name) for f in spec.fields)
    return sql.SQL("md5(ROW({})::text)::uuid").format(cols)


def key_match(spec: DatasetSpec, left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
        for k in spec.record_key()
    )
