"""The ingest pipeline: fetch, decode, validate, load, switch.

A run loads the whole file into a temporary staging table with COPY, inside one
transaction, then applies the difference to the dataset's zone table and moves the
dataset's current version in that same transaction. The commit is the switch: all
of the new version or none of it. A killed process, a failed validation or a
reaper's abort rolls everything back and the previous version keeps serving.

Progress (a heartbeat, the counts) and the reject report travel on a second,
autocommit connection, so they are visible while the load is still open and survive
its rollback.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.dataset import zone
from datazone.dataset.schemas import DatasetSpec, Mode, SourceFormat
from datazone.dataset.service import get_dataset, spec_of
from datazone.db import Database, libpq_url
from datazone.ingest import source as sources
from datazone.ingest.formats import SourceError, detect_encoding, read_batches
from datazone.ingest.models import IngestRun
from datazone.ingest.validation import HeaderError, RecordValidator, Reject, ValidBatch
from datazone.observability import metrics

log = logging.getLogger(__name__)

# failures that are the delivered file's fault: the file is moved to rejected/
FILE_FAULTS = {"empty", "encoding", "malformed", "truncated", "unsupported", "header", "rejects", "no_rows"}


class RunFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RunAborted(Exception):
    """The run was marked aborted (by the stall reaper) while it was working."""


@dataclass
class LoadResult:
    version: int | None
    rows_read: int
    rows_loaded: int
    rows_unchanged: int
    rows_deleted: int
    rows_rejected: int
    encoding: str | None
    note: str | None


class RunProgress:
    """Heartbeat, counts and rejects of one run, on an autocommit connection of their own."""

    def __init__(self, conninfo: str, run_id: int, max_reported: int) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True, application_name=f"datazone-progress:{run_id}")
        self.run_id = run_id
        self.max_reported = max_reported
        self.reported = 0

    def beat(self, **counts: int | str | None) -> None:
        assigns: list[sql.Composable] = [sql.SQL("heartbeat_at = now()")]
        assigns += [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in counts]
        stmt = sql.SQL(
            "UPDATE ingest_run SET {} WHERE id = %(id)s AND status = 'running' RETURNING id"
        ).format(sql.SQL(", ").join(assigns))
        if self.conn.execute(stmt, {**counts, "id": self.run_id}).fetchone() is None:
            raise RunAborted(f"run {self.run_id} is no longer running")

    def report(self, rejects: list[Reject]) -> None:
        room = self.max_reported - self.reported
        if room <= 0 or not rejects:
            return
        take = rejects[:room]
        with (
            self.conn.cursor() as cur,
            cur.copy('COPY ingest_reject (run_id, seq, line, "column", reason, value) FROM STDIN') as copy,
        ):
            for i, r in enumerate(take, start=self.reported + 1):
                copy.write_row((self.run_id, i, r.line, r.column, r.reason, r.value))
        self.reported += len(take)

    def restart_report(self) -> None:
        """The run starts over (a first load found duplicate keys): its report does too."""
        self.conn.execute("DELETE FROM ingest_reject WHERE run_id = %s", (self.run_id,))
        self.reported = 0

    def close(self) -> None:
        self.conn.close()


def _finish(conn: psycopg.Connection, run_id: int, status: str, **cols: object) -> None:
    assigns: list[sql.Composable] = [sql.SQL("status = %(status)s"), sql.SQL("finished_at = now()")]
    assigns += [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in cols]
    conn.execute(
        sql.SQL("UPDATE ingest_run SET {} WHERE id = %(id)s AND status = 'running'").format(
            sql.SQL(", ").join(assigns)
        ),
        {**cols, "status": status, "id": run_id},
    )


def execute_run(db: Database, *, run_id: int, settings: Settings) -> IngestRun:
    """Run a claimed ('new') run to its end and return its final record."""
    started = time.perf_counter()
    with db.unit_of_work() as s:
        run = s.get(IngestRun, run_id, with_for_update=True)
        if run is None:
            raise LookupError(f"no ingest run {run_id}")
        if run.status != "new":
            raise RuntimeError(f"run {run_id} is {run.status}, not new")
        spec = spec_of(get_dataset(s, dataset_id=run.dataset_id))
        override = run.source_override
        run.status = "running"
        run.worker = f"{socket.gethostname()}:{os.getpid()}"
        s.execute(
            sa.text("UPDATE ingest_run SET started_at = now(), heartbeat_at = now() WHERE id = :id"),
            {"id": run_id},
        )
    conninfo = libpq_url(db.url)
    progress = RunProgress(conninfo, run_id, settings.ingest_max_reported_rejects)
    fetched: sources.FetchedSource | None = None
    try:
        try:
            fetched = sources.fetch(
                spec,
                drop_dir=settings.drop_path,
                work_dir=settings.home / "tmp",
                override=override,
                on_progress=lambda: progress.beat(),
            )
            progress.beat(source=fetched.display, source_sha256=fetched.sha256)
            load(conninfo, spec, fetched, run_id, progress, settings)
            moved = sources.archive(fetched, succeeded=True)
            if moved is not None:
                progress.conn.execute("UPDATE ingest_run SET source = %s WHERE id = %s", (str(moved), run_id))
        except (RunFailed, sources.SourceUnavailable) as exc:
            code = exc.code
            if fetched is not None and code in FILE_FAULTS:
                moved = sources.archive(fetched, succeeded=False)
                if moved is not None:
                    progress.conn.execute(
                        "UPDATE ingest_run SET source = %s WHERE id = %s", (str(moved), run_id)
                    )
            elif fetched is not None and fetched.cleanup is not None:
                fetched.cleanup.unlink(missing_ok=True)
            _finish(progress.conn, run_id, "failed", error_code=code, error=str(exc))
        except RunAborted:
            log.warning("ingest run %s was aborted while loading; its work was discarded", run_id)
        except Exception as exc:
            log.exception("ingest run %s failed unexpectedly", run_id)
            _finish(
                progress.conn,
                run_id,
                "failed",
                error_code="internal",
                error=f"internal error: {type(exc).__name__}",
            )
    finally:
        progress.close()
    with db.unit_of_work() as s:
        final = s.get(IngestRun, run_id)
        assert final is not None
        # the run's outcome on the audit trail (the loader's own connection is raw psycopg;
        # the version row itself committed with the data, this records who and what for audit)
        audit_service.record(
            s,
            actor=None,
            actor_name=final.requested_by or final.trigger,
            action="ingest.run",
            object_type="dataset",
            object_id=final.dataset_id,
            outcome="ok" if final.status == "succeeded" else "failed",
            reason=final.error_code,
            supplier_ids=[get_dataset(s, dataset_id=final.dataset_id).supplier_id],
            detail={
                "run_id": final.id,
                "status": final.status,
                "version": final.version,
                "rows_loaded": final.rows_loaded,
                "rows_deleted": final.rows_deleted,
                "rows_rejected": final.rows_rejected,
            },
        )
    metrics.ingest_run_finished(
        dataset_id=final.dataset_id, status=final.status, seconds=time.perf_counter() - started
    )
    return final


def _csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


def load(
    conninfo: str,
    spec: DatasetSpec,
    fetched: sources.FetchedSource,
    run_id: int,
    progress: RunProgress,
    settings: Settings,
) -> LoadResult:
    # the server checks the client's socket every second while a statement runs (PostgreSQL 14+): a
    # loader killed mid-statement is rolled back within a second, not when its long statement ends
    with psycopg.connect(
        conninfo,
        application_name=f"datazone-ingest:{run_id}",
        options="-c client_connection_check_interval=1000",
    ) as conn:
        progress.beat(backend_pid=conn.info.backend_pid)
        got = conn.execute(
            "SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"ingest:{spec.id}",)
        ).fetchone()
        if not got or not got[0]:
            raise RunFailed("busy", f"another run of dataset {spec.id} is loading; this one was not started")
        result = _load_version(conn, spec, fetched, run_id, progress, settings)
        _finish(
            conn,
            run_id,
            "succeeded",
            version=result.version,
            rows_read=result.rows_read,
            rows_loaded=result.rows_loaded,
            rows_unchanged=result.rows_unchanged,
            rows_deleted=result.rows_deleted,
            rows_rejected=result.rows_rejected,
            encoding=result.encoding,
            note=result.note,
        )
        # the reaper may have aborted us between the last beat and here: then nothing commits
        still = conn.execute("SELECT status FROM ingest_run WHERE id = %s", (run_id,)).fetchone()
        if not still or still[0] != "succeeded":
            conn.rollback()
            raise RunAborted(f"run {run_id} was aborted before it could commit")
        conn.commit()
        return result


@dataclass
class _Streamed:
    rows_read: int
    rows_rejected: int
    rows_copied: int
    encoding: str | None


def _stream(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    fetched: sources.FetchedSource,
    progress: RunProgress,
    settings: Settings,
    *,
    direct_version: int | None,
) -> _Streamed:
    """Read, validate and COPY the file: into staging, or (direct_version) straight into the zone table."""
    fields = [f.name for f in spec.fields]
    target: sql.Composable
    if direct_version is None:
        target = sql.Identifier("stg")
        names = ["_line", *fields, "_deleted"]
    else:
        target = zone.table_ident(spec.id)
        names = [*fields, "_vfrom"]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in names)
    )
    encoding: str | None = None
    rows_read = rows_rejected = copied = 0
    try:
        if spec.format is not SourceFormat.xlsx:
            encoding = detect_encoding(fetched.path, spec.encoding)
        with conn.cursor() as cur:
            with cur.copy(copy_sql) as cp:
                for vb, chunk in _validated_chunks(spec, fetched, encoding, settings, direct_version):
                    rows_read += vb.rows_read
                    rows_rejected += vb.rows_rejected
                    progress.report(vb.rejects)
                    if chunk:
                        cp.write(chunk)
                    progress.beat(rows_read=rows_read, rows_rejected=rows_rejected, encoding=encoding)
            copied = max(cur.rowcount, 0)
    except HeaderError as exc:
        raise RunFailed(
            "header", "the file's columns do not match the spec: " + "; ".join(exc.problems)
        ) from None
    except SourceError as exc:
        raise RunFailed(exc.code, str(exc)) from None
    return _Streamed(rows_read, rows_rejected, copied, encoding)


_DONE = object()


def _validated_chunks(
    spec: DatasetSpec,
    fetched: sources.FetchedSource,
    encoding: str | None,
    settings: Settings,
    direct_version: int | None,
) -> Iterator[tuple[ValidBatch, bytes]]:
    """Read, validate and encode batches in a thread of their own, two batches ahead.

    While the server digests one COPY chunk, the next is parsed and checked: pyarrow
    and psycopg both release the GIL, so the two cores work at once. The queue is
    bounded, so memory stays a few batches whatever the file size.
    """
    fields = [f.name for f in spec.fields]
    out: queue.Queue[object] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            validator: RecordValidator | None = None
            columns: list[str] | None = None
            for raw in read_batches(
                fetched.path,
                format=spec.format,
                encoding=encoding,
                sheet=spec.sheet,
                batch_rows=settings.ingest_batch_rows,
            ):
                if validator is None or raw.columns != columns:
                    validator, columns = RecordValidator(spec, raw.columns), list(raw.columns)
                vb = validator.validate(raw)
                table = vb.table
                if direct_version is not None:
                    # nothing to delete in an empty table: deletion markers are no-ops
                    table = table.filter(pc.invert(table.column("_deleted"))).select(fields)
                    table = table.append_column(
                        "_vfrom", pa.array(np.full(table.num_rows, direct_version, np.int32))
                    )
                item = (vb, _csv_bytes(table) if table.num_rows else b"")
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            out.put(exc)

    worker = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


def _check_tolerance(spec: DatasetSpec, rows_read: int, rows_rejected: int) -> None:
    ratio = rows_rejected / rows_read
    if rows_rejected and ratio > spec.reject_tolerance:
        raise RunFailed(
            "rejects",
            f"{rows_rejected} of {rows_read} rows rejected ({ratio:.2%}), over the dataset's tolerance of "
            f"{spec.reject_tolerance:.2%}; nothing was applied (see the run's reject report)",
        )


def _load_version(
    conn: psycopg.Connection,
    spec: DatasetSpec,
    fetched: sources.FetchedSource,
    run_id: int,
    progress: RunProgress,
    settings: Settings,
) -> LoadResult:
    cur_row = conn.execute(
        "SELECT current_version, current_rows FROM dataset WHERE id = %s FOR UPDATE", (spec.id,)
    ).fetchone()
    assert cur_row is not None
    current_version, current_rows = cur_row[0], int(cur_row[1])
    v = (current_version or 0) + 1

    streamed: _Streamed | None = None
    loaded = unchanged = deleted = closed = 0
    if current_rows == 0:
        # nothing to compare with: COPY straight into the zone table, the unique index
        # standing guard over duplicate keys. If it finds one, redo the run through
        # staging, which reports every duplicate with its lines.
        try:
            with conn.transaction():
                streamed = _stream(conn, spec, fetched, progress, settings, direct_version=v)
                for stmt in zone.index_sql(spec):
                    conn.execute(stmt)
        except psycopg.errors.UniqueViolation:
            progress.restart_report()
            streamed = None
    if streamed is not None:
        loaded = streamed.rows_copied
        if streamed.rows_read:
            _check_tolerance(spec, streamed.rows_read, streamed.rows_rejected)
    else:
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE stg (_line bigint NOT NULL, {}, _deleted boolean NOT NULL) ON COMMIT DROP"
            ).format(sql.SQL(", ").join(zone.column_def(f) for f in spec.fields))
        )
        streamed = _stream(conn, spec, fetched, progress, settings, direct_version=None)
        if streamed.rows_read:
            streamed.rows_rejected += _reject_duplicate_keys(conn, spec, progress)
            progress.beat(rows_rejected=streamed.rows_rejected)
            _check_tolerance(spec, streamed.rows_read, streamed.rows_rejected)
            conn.execute("ANALYZE stg")
            for stmt in zone.index_sql(spec):
                conn.execute(stmt)
            loaded, unchanged, deleted, closed = _apply(conn, spec, v, current_rows)
    rows_read, rows_rejected, encoding = streamed.rows_read, streamed.rows_rejected, streamed.encoding

    if rows_read == 0:
        if spec.mode is Mode.incremental:
            return LoadResult(
                current_version, 0, 0, 0, 0, 0, encoding, "the delta file has no rows; nothing changed"
            )
        raise RunFailed(
            "no_rows",
            f"the file has a header but no data rows; as a snapshot it would retire all {current_rows} current "
            "records, so nothing was applied",
        )
    if loaded == 0 and closed == 0:
        return LoadResult(
            current_version, rows_read, 0, unchanged, 0, rows_rejected, encoding,
            f"no changes; version {current_version} stays current" if current_version else "no records to load",
        )  # fmt: skip
    total = current_rows - closed + loaded
    conn.execute(
        "INSERT INTO dataset_version (dataset_id, version, run_id, rows_total, rows_loaded, rows_deleted, source,"
        " source_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (spec.id, v, run_id, total, loaded, deleted, fetched.display, fetched.sha256),
    )
    conn.execute(
        "UPDATE dataset SET current_version = %s, current_rows = %s, updated_at = now() WHERE id = %s",
        (v, total, spec.id),
    )
    return LoadResult(v, rows_read, loaded, unchanged, deleted, rows_rejected, encoding, None)


def _reject_duplicate_keys(conn: psycopg.Connection, spec: DatasetSpec, progress: RunProgress) -> int:
    """Every record after the first with the same key is set aside; returns how many."""
    key = spec.record_key()
    show_values = all(spec.field(k).grade <= 2 for k in key)
    keys = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    rows = conn.execute(
        sql.SQL(
            "SELECT {k}, array_agg(_line ORDER BY _line) FROM stg GROUP BY {k} HAVING count(*) > 1 ORDER BY min(_line)"
        ).format(k=keys)
    ).fetchall()
    drop: list[int] = []
    rejects: list[Reject] = []
    for row in rows:
        lines = row[-1]
        shown = (
            ", ".join(f"{k}={v}" for k, v in zip(key, row[:-1], strict=True))
            if show_values
            else ", ".join(key)
        )
        for line in lines[1:]:
            drop.append(line)
            rejects.append(
                Reject(line, None, f"duplicate record key ({shown}): first at line {lines[0]}", None)
            )
    if drop:
        conn.execute("DELETE FROM stg WHERE _line = ANY(%s)", (drop,))
        progress.report(rejects)
    return len(drop)


def _apply(
    conn: psycopg.Connection, spec: DatasetSpec, v: int, current_rows: int
) -> tuple[int, int, int, int]:
    """Apply staging to the zone table as version v: (loaded, unchanged, deleted, closed)."""
    t = zone.table_ident(spec.id)
    cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in spec.fields)
    s_cols = sql.SQL(", ").join(sql.Identifier("s", f.name) for f in spec.fields)
    same = zone.rows_equal(spec, "s", "z")
    match = zone.key_match(spec, "s", "z")
    live = conn.execute("SELECT count(*) FROM stg WHERE NOT _deleted").fetchone()
    assert live is not None
    incoming = int(live[0])
    deleted = closed = 0
    if current_rows > 0:
        if spec.mode is Mode.snapshot:
            # retire every current row the snapshot does not repeat exactly
            stmt = sql.SQL(
                "WITH closed AS (UPDATE {t} z SET _vto = %(v)s WHERE z._vto IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM stg s WHERE {m} AND {same}) "
                "RETURNING EXISTS (SELECT 1 FROM stg s WHERE {m}) AS replaced) "
                "SELECT count(*), count(*) FILTER (WHERE NOT replaced) FROM closed"
            )
        else:
            # retire current rows that the delta deletes or changes
            stmt = sql.SQL(
                "WITH closed AS (UPDATE {t} z SET _vto = %(v)s WHERE z._vto IS NULL AND EXISTS "
                "(SELECT 1 FROM stg s WHERE {m} AND (s._deleted OR NOT {same})) "
                "RETURNING (SELECT bool_or(s._deleted) FROM stg s WHERE {m}) AS removed) "
                "SELECT count(*), count(*) FILTER (WHERE removed) FROM closed"
            )
        row = conn.execute(stmt.format(t=t, m=match, same=same), {"v": v}).fetchone()
        assert row is not None
        closed, deleted = int(row[0]), int(row[1])
    # rows still current with a key in staging are identical to it: skip them
    insert = sql.SQL(
        "INSERT INTO {t} ({c}, _vfrom) SELECT {sc}, %(v)s FROM stg s WHERE NOT s._deleted "
        "AND NOT EXISTS (SELECT 1 FROM {t} z WHERE z._vto IS NULL AND {m})"
    ).format(t=t, c=cols, sc=s_cols, m=match)
    loaded = conn.execute(insert, {"v": v}).rowcount
    return loaded, incoming - loaded, deleted, closed
