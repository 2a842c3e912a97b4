"""Datasets: apply specs, keep their zone tables in step, list and read them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import sqlalchemy as sa
from psycopg import sql
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.dataset import zone
from datazone.dataset.models import Dataset, DatasetVersion
from datazone.dataset.schemas import DatasetSpec
from datazone.db import hold
from datazone.errors import Conflict, InvalidSpec, NotFound
from datazone.lifecycle import service as lifecycle_service
from datazone.principal.models import Principal
from datazone.supplier import service as supplier_service


def parse_spec(raw: Any, *, origin: str = "spec") -> DatasetSpec:
    """Validate a spec document, listing every problem at once."""
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"location": ".".join(str(p) for p in e["loc"]) or "(document)", "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        summary = "; ".join(f"{e['location']}: {e['problem']}" for e in errors)
        raise InvalidSpec(f"{origin} is not a valid dataset spec: {summary}", errors=errors) from None


# parsed specs by content hash: cannot go stale (a changed spec has a new hash)
_PARSED: dict[tuple[str, str], DatasetSpec] = {}


def spec_of(dataset: Dataset) -> DatasetSpec:
    """The dataset's spec (shared: do not mutate; use model_copy)."""
    parsed = _PARSED.get((dataset.id, dataset.spec_sha256))
    if parsed is None:
        parsed = DatasetSpec.model_validate(dataset.spec)
        if len(_PARSED) > 512:
            _PARSED.clear()
        _PARSED[(dataset.id, dataset.spec_sha256)] = parsed
    return parsed


def suppliers_of(session: Session, *, dataset_ids: list[str] | None = None) -> dict[str, str]:
    """{dataset id: supplier id} for the given datasets, or all (unknown ids are left out)."""
    q = sa.select(Dataset.id, Dataset.supplier_id)
    if dataset_ids is not None:
        q = q.where(Dataset.id.in_(dataset_ids))
    return {ds_id: supplier for ds_id, supplier in session.execute(q)}


def _sha(spec: DatasetSpec) -> str:
    # unset optional sections stay out of the hash, so adding one to the schema does not
    # make every stored spec look changed
    dumped = spec.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()


def apply_dataset(
    session: Session, *, spec: DatasetSpec, by: Principal | None = None, by_name: str | None = None
) -> tuple[Dataset, str]:
    """Create or update a dataset and its zone table. Returns (dataset, 'created'|'updated'|'unchanged').

    Changes that would reinterpret stored rows (a field's type, the record key) are
    refused once the dataset holds data; adding fields is allowed (old rows get null).
    """
    supplier_service.get_supplier(session, supplier_id=spec.department)
    sha = _sha(spec)
    existing = session.get(Dataset, spec.id, with_for_update=True)
    conn = session.connection().connection.driver_connection
    assert conn is not None
    if existing is None:
        for stmt in zone.create_table_sql(spec):
            conn.execute(stmt)
        ds = Dataset(
            id=spec.id,
            supplier_id=spec.department,
            spec=spec.model_dump(mode="json"),
            spec_sha256=sha,
            current_rows=0,
        )
        session.add(ds)
        session.flush()
        # a new dataset enters the lifecycle at intake; it serves products once admitted
        lifecycle_service.transition(
            session,
            subject_type="dataset",
            subject_id=spec.id,
            from_state=None,
            to_state="intake",
            by=by,
            by_name=by_name or "operator",
            reason="spec applied",
            supplier_ids=[spec.department],
        )
        return ds, "created"
    if existing.spec_sha256 == sha:
        return existing, "unchanged"
    old = spec_of(existing)
    problems: list[str] = []
    if old.department != spec.department:
        problems.append(f"department cannot change ({old.department} -> {spec.department})")
    if existing.current_version is not None:
        if old.record_key() != spec.record_key():
            problems.append(
                f"record key cannot change once data is loaded ({old.record_key()} -> {spec.record_key()})"
            )
        old_types = {f.name: f.type for f in old.fields}
        for f in spec.fields:
            if f.name in old_types and old_types[f.name] != f.type:
                problems.append(
                    f"field {f.name!r} cannot change type once data is loaded ({old_types[f.name]} -> {f.type})"
                )
    if problems:
        raise Conflict(
            f"dataset {spec.id!r}: " + "; ".join(problems), errors=[{"problem": p} for p in problems]
        )
    if existing.current_version is None:
        # no data yet: rebuild the table from the new spec, partitioned as the operator left it
        partitions = zone.hash_partitions(conn, spec.id)
        conn.execute(sql.SQL("DROP TABLE {}").format(zone.table_ident(spec.id)))
        for stmt in zone.create_table_sql(spec, partitions=partitions):
            conn.execute(stmt)
    else:
        old_names = {f.name for f in old.fields}
        for f in spec.fields:
            if f.name not in old_names:
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {}").format(
                        zone.table_ident(spec.id), zone.column_def(f)
                    )
                )
    existing.spec = spec.model_dump(mode="json")
    existing.spec_sha256 = sha
    session.flush()
    return existing, "updated"


def get_dataset(session: Session, *, dataset_id: str, for_update: bool = False) -> Dataset:
    ds = session.get(Dataset, dataset_id, with_for_update=for_update)
    if ds is None:
        raise NotFound(f"no dataset {dataset_id!r}; apply its spec with `datazone dataset apply`")
    return ds


def list_datasets(session: Session, *, department: str | None = None) -> list[Dataset]:
    q = sa.select(Dataset).order_by(Dataset.id)
    if department:
        q = q.where(Dataset.supplier_id == department)
    return list(session.scalars(q))


def ids_supplied_by(*, department: str | None) -> sa.Select[str]:
    """The ids of a department's datasets, as a subquery for other domains' readable-by clauses."""
    return sa.select(Dataset.id).where(Dataset.supplier_id == department)


def list_versions(session: Session, *, dataset_id: str) -> list[DatasetVersion]:
    get_dataset(session, dataset_id=dataset_id)
    q = (
        sa.select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version.desc())
    )
    return list(session.scalars(q))


def read_records(
    session: Session, *, dataset_id: str, uscc: str, as_of: int | None = None, limit: int = 1000
) -> tuple[int | None, list[dict[str, Any]]]:
    """An enterprise's records in a dataset, current or as of a version: (version, rows)."""
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    version = ds.current_version if as_of is None else as_of
    if version is None:
        return None, []
    if ds.current_version is None or version < 1 or version > ds.current_version:
        raise NotFound(f"dataset {dataset_id!r} has no version {version} (current: {ds.current_version})")
    cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in spec.fields)
    stmt = sql.SQL(
        "SELECT {} FROM {} WHERE {} = %s AND _vfrom <= %s AND (_vto IS NULL OR _vto > %s) LIMIT %s"
    ).format(cols, zone.table_ident(dataset_id), sql.Identifier(spec.entity_key))
    conn = session.connection().connection.driver_connection
    assert conn is not None
    cur = conn.execute(stmt, (uscc, version, version, limit))
    names = [f.name for f in spec.fields]
    return version, [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def read_current_records(
    session: Session, *, dataset_id: str, usccs: list[str], fields: list[str] | None = None
) -> tuple[int | None, dict[str, list[dict[str, Any]]]]:
    """Current records of many enterprises in one query: (version, {uscc: rows}).

    Served by the unique current index led by the entity key, so a 1,000-enterprise
    batch is one index scan per dataset rather than 1,000 round trips.
    """
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    known = [f.name for f in spec.fields]
    names = known if fields is None else list(dict.fromkeys([spec.entity_key, *fields]))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise NotFound(f"dataset {dataset_id!r} has no field {', '.join(map(repr, unknown))}")
    by_entity: dict[str, list[dict[str, Any]]] = {u: [] for u in usccs}
    if ds.current_version is None or not usccs:
        return ds.current_version, by_entity
    stmt = sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s) AND _vto IS NULL").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names),
        zone.table_ident(dataset_id),
        sql.Identifier(spec.entity_key),
    )
    conn = session.connection().connection.driver_connection
    assert conn is not None
    key_at = names.index(spec.entity_key)
    for row in conn.execute(stmt, (list(usccs),)).fetchall():
        by_entity.setdefault(row[key_at], []).append(dict(zip(names, row, strict=True)))
    return ds.current_version, by_entity


# --- admission state, and the figures its quality checks read (moves: admission.py) ---------


@dataclass(frozen=True)
class AdmissionState:
    dataset_id: str
    supplier_id: str
    state: str
    successor_id: str | None


def admission_states(session: Session, *, dataset_ids: list[str]) -> dict[str, AdmissionState]:
    """Admission state of each named dataset that exists, in one query (the use gate runs it per call)."""
    if not dataset_ids:
        return {}
    # whole rows, held by the session: the product engine reads the same datasets next, from the session
    datasets = list(
        session.scalars(
            sa.select(Dataset).where(Dataset.id.in_(set(dataset_ids))).execution_options(populate_existing=True)
        )
    )
    hold(session, datasets)
    return {d.id: AdmissionState(d.id, d.supplier_id, d.admission_state, d.successor_id) for d in datasets}


def admission_readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The datasets whose admission records (reviews, quality figures, history) the viewer may
    read, as a WHERE clause: the operator all, a department its own, anyone else none. (The
    list of datasets itself is open to every principal.)"""
    if viewer.kind == "operator":
        return sa.true()
    if viewer.kind == "department":
        return Dataset.supplier_id == viewer.supplier_id
    return sa.false()


def admission_readable_ids(viewer: Principal) -> sa.Select[str]:
    """The ids of those datasets, as a subquery for the records kept beside them."""
    return sa.select(Dataset.id).where(admission_readable_by(viewer))


def require_admission_readable(session: Session, *, dataset_id: str, viewer: Principal) -> None:
    """404 unless the viewer may read the dataset's admission records, so existence does not leak
    (the operator's request for a missing dataset gets the 404 of the service it calls next)."""
    if viewer.kind == "operator":
        return
    if session.scalar(sa.select(Dataset.id).where(Dataset.id == dataset_id, admission_readable_by(viewer))) is None:
        raise NotFound(f"no dataset {dataset_id!r}")


def set_admission_state(
    session: Session, *, dataset_id: str, state: str, successor_id: str | None = None
) -> Dataset:
    """Store a state `admission` has already checked and recorded; nothing else calls this."""
    ds = get_dataset(session, dataset_id=dataset_id, for_update=True)
    ds.admission_state = state
    ds.successor_id = successor_id
    session.flush()
    return ds


def get_version(session: Session, *, dataset_id: str, version: int) -> DatasetVersion:
    v = session.get(DatasetVersion, (dataset_id, version))
    if v is None:
        raise NotFound(f"dataset {dataset_id!r} has no version {version}")
    return v


@dataclass(frozen=True)
class VersionProfile:
    """What a version holds, counted in the zone table: the raw material of quality figures."""

    dataset_id: str
    version: int
    rows: int
    non_null: dict[str, int]
    duplicate_keys: int  # rows beyond the first of each record key
    enum_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # null counted as ""


def profile_version(session: Session, *, dataset_id: str, version: int) -> VersionProfile:
    """Count rows, non-null values per field, repeated record keys and enum values of one version."""
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    get_version(session, dataset_id=dataset_id, version=version)
    t = zone.table_ident(dataset_id)
    visible = sql.SQL("_vfrom <= %(v)s AND (_vto IS NULL OR _vto > %(v)s)")
    conn = session.connection().connection.driver_connection
    assert conn is not None
    counts = sql.SQL(", ").join(
        [sql.SQL("count(*)")] + [sql.SQL("count({})").format(sql.Identifier(f.name)) for f in spec.fields]
    )
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE {}").format(counts, t, visible), {"v": version}
    ).fetchone()
    assert row is not None
    rows = int(row[0])
    non_null = {f.name: int(n) for f, n in zip(spec.fields, row[1:], strict=True)}
    key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.record_key())
    distinct = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT DISTINCT {} FROM {} WHERE {}) k").format(key, t, visible),
        {"v": version},
    ).fetchone()
    assert distinct is not None
    enum_counts: dict[str, dict[str, int]] = {}
    for f in spec.fields:
        if f.values is None:
            continue
        col = sql.Identifier(f.name)
        cur = conn.execute(
            sql.SQL("SELECT coalesce({}, ''), count(*) FROM {} WHERE {} GROUP BY 1 ORDER BY 1").format(
                col, t, visible
            ),
            {"v": version},
        )
        enum_counts[f.name] = {str(value): int(n) for value, n in cur.fetchall()}
    return VersionProfile(dataset_id, version, rows, non_null, rows - int(distinct[0]), enum_counts)


def current_entities(session: Session, *, dataset_id: str, limit: int = 100) -> list[str]:
    """Entity keys with current records, in key order (for samples and tours)."""
    spec = spec_of(get_dataset(session, dataset_id=dataset_id))
    stmt = sql.SQL("SELECT DISTINCT {k} FROM {t} WHERE _vto IS NULL ORDER BY {k} LIMIT %s").format(
        k=sql.Identifier(spec.entity_key), t=zone.table_ident(dataset_id)
    )
    conn = session.connection().connection.driver_connection
    assert conn is not None
    return [row[0] for row in conn.execute(stmt, (limit,)).fetchall()]


def population(
    session: Session, *, dataset_id: str, where: dict[str, str] | None = None
) -> tuple[int | None, list[str]]:
    """(current version, the distinct entity keys with current records, sorted), optionally only
    those whose fields equal the given values: a PSI product's zone slice."""
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    names = {f.name for f in spec.fields}
    where = where or {}
    unknown = sorted(set(where) - names)
    if unknown:
        raise NotFound(f"dataset {dataset_id!r} has no field {', '.join(map(repr, unknown))}")
    if ds.current_version is None:
        return None, []
    conds = [sql.SQL("_vto IS NULL")] + [
        sql.SQL("{}::text = %s").format(sql.Identifier(name)) for name in sorted(where)
    ]
    stmt = sql.SQL("SELECT DISTINCT {k} FROM {t} WHERE {c} ORDER BY {k}").format(
        k=sql.Identifier(spec.entity_key), t=zone.table_ident(dataset_id), c=sql.SQL(" AND ").join(conds)
    )
    conn = session.connection().connection.driver_connection
    assert conn is not None
    rows = conn.execute(stmt, [where[name] for name in sorted(where)]).fetchall()
    return ds.current_version, [row[0] for row in rows]


def copy_population(
    session: Session, *, dataset_id: str, out: BinaryIO, where: dict[str, str] | None = None
) -> tuple[int | None, int]:
    """`population`'s enterprises written to `out`, one a line, by COPY (in no particular order):
    (current version, how many). A PSI engine job's slice goes to its input file this way, without
    a Python object per enterprise."""
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    where = where or {}
    unknown = sorted(set(where) - {f.name for f in spec.fields})
    if unknown:
        raise NotFound(f"dataset {dataset_id!r} has no field {', '.join(map(repr, unknown))}")
    if ds.current_version is None:
        return None, 0
    conds = [sql.SQL("_vto IS NULL")] + [
        sql.SQL("{}::text = {}").format(sql.Identifier(name), sql.Literal(where[name])) for name in sorted(where)
    ]
    stmt = sql.SQL("COPY (SELECT DISTINCT {k} FROM {t} WHERE {c}) TO STDOUT").format(
        k=sql.Identifier(spec.entity_key), t=zone.table_ident(dataset_id), c=sql.SQL(" AND ").join(conds)
    )
    conn = session.connection().connection.driver_connection
    assert conn is not None
    lines = 0
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for block in copy:
            out.write(block)
            lines += bytes(block).count(b"\n")
    return ds.current_version, lines


def population_size(session: Session, *, dataset_id: str, where: dict[str, str] | None = None) -> int:
    """How many distinct enterprises `population` would list, counted in the database."""
    ds = get_dataset(session, dataset_id=dataset_id)
    spec = spec_of(ds)
    where = where or {}
    unknown = sorted(set(where) - {f.name for f in spec.fields})
    if unknown:
        raise NotFound(f"dataset {dataset_id!r} has no field {', '.join(map(repr, unknown))}")
    if ds.current_version is None:
        return 0
    conds = [sql.SQL("_vto IS NULL")] + [
        sql.SQL("{}::text = %s").format(sql.Identifier(name)) for name in sorted(where)
    ]
    stmt = sql.SQL("SELECT count(DISTINCT {k}) FROM {t} WHERE {c}").format(
        k=sql.Identifier(spec.entity_key), t=zone.table_ident(dataset_id), c=sql.SQL(" AND ").join(conds)
    )
    conn = session.connection().connection.driver_connection
    assert conn is not None
    row = conn.execute(stmt, [where[name] for name in sorted(where)]).fetchone()
    return int(row[0]) if row else 0
