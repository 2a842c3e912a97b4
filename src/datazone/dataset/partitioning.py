"""Native partitioning of zone tables: an operator's choice, made and undone per dataset.

A zone table is plain by default. `partition()` rebuilds it as N hash partitions on its
enterprise key, or back into a plain table, in one transaction: the new table is filled from
the old one by column name, the old one dropped, the new one renamed into its place and given
the same indexes. Nothing that reads or loads the table changes: products, "as of" reads and
ingest see the same rows through the same name. While a table is rebuilt, its dataset row is
locked (an ingest of it waits) and so is the table (its readers wait): rebuild in a quiet hour.

Hash partitioning keeps every version of an enterprise's rows in one partition, and the
current-row unique index, which leads with the enterprise key, stays enforceable on the
partitioned table. Tables Citus distributes are refused: Citus owns their layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset import service as dataset_service
from datazone.dataset import zone
from datazone.db import ZONE_SCHEMA
from datazone.errors import Conflict, InvalidSpec

METHODS = ("hash",)
MIN_PARTITIONS = 2
# past a few hundred partitions, planning costs more than the split saves on one server
MAX_PARTITIONS = 256


@dataclass(frozen=True)
class ZoneTableLayout:
    dataset_id: str
    entity_key: str
    partitions: int | None  # hash partitions on entity_key; None: a plain table
    rows: int


@dataclass(frozen=True)
class Rebuilt:
    layout: ZoneTableLayout
    outcome: Literal["partitioned", "repartitioned", "unpartitioned", "unchanged"]


def _driver(session: Session) -> psycopg.Connection[Any]:
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return conn  # type: ignore[no-any-return]


def _rows(conn: psycopg.Connection[Any], dataset_id: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(zone.table_ident(dataset_id))).fetchone()
    assert row is not None
    return int(row[0])


def layout(session: Session, *, dataset_id: str) -> ZoneTableLayout:
    spec = dataset_service.spec_of(dataset_service.get_dataset(session, dataset_id=dataset_id))
    conn = _driver(session)
    return ZoneTableLayout(
        dataset_id=dataset_id,
        entity_key=spec.entity_key,
        partitions=zone.hash_partitions(conn, dataset_id),
        rows=_rows(conn, dataset_id),
    )


def layouts(session: Session) -> list[ZoneTableLayout]:
    return [layout(session, dataset_id=d.id) for d in dataset_service.list_datasets(session)]


def check_choice(*, method: str, partitions: int | None) -> None:
    """The operator's choice, refused with every reason before anything is touched."""
    problems = []
    if method not in METHODS:
        problems.append(
            {
                "location": "by",
                "problem": f"{method!r} is not a partitioning method here: 'hash' (on the enterprise key) "
                "spreads enterprises evenly; ranges or lists of credit codes would not",
            }
        )
    if partitions is not None and not MIN_PARTITIONS <= partitions <= MAX_PARTITIONS:
        problems.append(
            {
                "location": "partitions",
                "problem": f"from {MIN_PARTITIONS} to {MAX_PARTITIONS}, not {partitions}"
                " (to make a table plain again, unpartition it)",
            }
        )
    if problems:
        raise InvalidSpec(
            "the partitioning is not valid, nothing was changed: "
            + "; ".join(f"{p['location']}: {p['problem']}" for p in problems),
            errors=problems,
        )


def _distributed_by_citus(conn: psycopg.Connection[Any], dataset_id: str) -> bool:
    row = conn.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return False
    found = conn.execute(
        "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(%s)",
        (f"{ZONE_SCHEMA}.{dataset_id}",),
    ).fetchone()
    return found is not None


def _has_indexes(conn: psycopg.Connection[Any], dataset_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_indexes WHERE schemaname = %s AND tablename = %s AND indexname = %s",
        (ZONE_SCHEMA, dataset_id, f"{dataset_id}_current"),
    ).fetchone()
    return row is not None


def partition(
    session: Session,
    *,
    dataset_id: str,
    partitions: int | None,
    method: str = "hash",
    by_name: str,
) -> Rebuilt:
    """Rebuild the dataset's zone table as `partitions` hash partitions on its enterprise key,
    or as a plain table (None). The same layout again changes nothing."""
    check_choice(method=method, partitions=partitions)
    # the dataset row first: an ingest of this dataset holds it for its whole load
    dataset = dataset_service.get_dataset(session, dataset_id=dataset_id, for_update=True)
    spec = dataset_service.spec_of(dataset)
    conn = _driver(session)
    table = zone.table_ident(dataset_id)
    if _distributed_by_citus(conn, dataset_id):
        raise Conflict(
            f"zone table {dataset_id!r} is distributed by Citus, which owns its layout; "
            "undistribute it first (undistribute_table) to partition it natively"
        )
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
    before = zone.hash_partitions(conn, dataset_id)
    rows = _rows(conn, dataset_id)
    if before == partitions:
        return Rebuilt(ZoneTableLayout(dataset_id, spec.entity_key, before, rows), "unchanged")

    indexed = _has_indexes(conn, dataset_id)
    # the new table under a name no dataset can have (dataset ids start with a letter)
    staging = f"_rebuild_{dataset_id}"[:63]
    for stmt in zone.create_table_sql(spec, partitions=partitions, table=staging):
        conn.execute(stmt)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in zone.column_names(spec))
    conn.execute(
        sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {}").format(
            sql.Identifier(ZONE_SCHEMA), sql.Identifier(staging), columns, columns, table
        )
    )
    # no CASCADE: an object someone built on the table (a view) stops the rebuild instead of vanishing
    conn.execute(sql.SQL("DROP TABLE {}").format(table))
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
            sql.Identifier(ZONE_SCHEMA), sql.Identifier(staging), sql.Identifier(dataset_id)
        )
    )
    if indexed:  # a table not loaded yet gets its indexes with its first load, as before
        for stmt in zone.index_sql(spec):
            conn.execute(stmt)
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    after = _rows(conn, dataset_id)
    if after != rows:  # cannot happen under the locks; checked because the old table is gone
        raise RuntimeError(f"zone table {dataset_id}: {rows} rows before the rebuild, {after} after")

    outcome: Literal["partitioned", "repartitioned", "unpartitioned"] = (
        "unpartitioned" if partitions is None else "partitioned" if before is None else "repartitioned"
    )
    audit_service.record(
        session,
        actor=None,
        actor_name=by_name,
        action=f"zone.{outcome}",
        object_type="dataset",
        object_id=dataset_id,
        detail={
            "method": method,
            "key": spec.entity_key,
            "partitions": partitions,
            "before": before,
            "rows": rows,
        },
        supplier_ids=[spec.department],
    )
    return Rebuilt(ZoneTableLayout(dataset_id, spec.entity_key, partitions, rows), outcome)
