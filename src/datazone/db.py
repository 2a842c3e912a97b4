"""Engine and sessions. One code path for PostgreSQL: embedded (pgserver) or a server URL."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, sessionmaker

from datazone.capacity import Capacity
from datazone.config import Settings, get_settings

log = logging.getLogger(__name__)

ZONE_SCHEMA = "zone"
EMBEDDED_DB = "datazone"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class Base(DeclarativeBase):
    pass


def embedded_url(home: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under home/pgdata and return its URL.

    The server is left running after this process exits (cleanup_mode=None) so the
    gateway, the scheduler and the CLI share one instance, as they would a server.
    """
    datadir = home / "pgdata"
    datadir.mkdir(parents=True, exist_ok=True)
    server = _pgserver().get_server(datadir, cleanup_mode=None)
    uri = server.get_uri()
    url = make_url(uri)
    # a database of our own rather than 'postgres', like a real deployment
    admin = sa.create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": EMBEDDED_DB}
        ).first()
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DB}"'))
    admin.dispose()
    return url.set(database=EMBEDDED_DB).render_as_string(hide_password=False)


def _pgserver() -> Any:
    # imported lazily: only the embedded mode needs it. On import it asks platformdirs for a
    # runtime directory, which warns (RuntimeDirWarning) wherever XDG_RUNTIME_DIR is unset and
    # then uses /tmp/runtime-<uid>: a fine place for its lock file, so the warning is noise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
        import pgserver
    return pgserver


def stop_embedded(home: Path) -> None:
    """Stop the embedded PostgreSQL under home/pgdata that this process started or joined,
    unless another process still holds it (pgserver keeps the list of holders)."""
    server = _pgserver().get_server(home / "pgdata", cleanup_mode="stop")
    server.cleanup_mode = "stop"
    server.cleanup()


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return embedded_url(settings.home)


def sqlalchemy_url(url: str) -> URL:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def libpq_url(url: str | URL) -> str:
    """The same URL for psycopg/libpq (used by the COPY loader)."""
    u = make_url(url) if isinstance(url, str) else url
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0) -> Engine:
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"application_name": "datazone"},
    )


def migrate(engine: Engine) -> None:
    """Apply Alembic migrations up to head; safe when several processes start at once."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        # serialize concurrent starters (gateway replicas, scheduler) on one lock
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7410001)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed once at the end, rolled back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


HELD_ROWS = "datazone.held_rows"


def hold(session: Session, objects: Iterable[Any]) -> None:
    """Keep `objects` referenced for the session's life. Its identity map holds rows weakly, so a row
    read once and then dropped is selected again by the next `session.get`; a row the call path reads
    again (a dataset checked by the data gate, then read by the product engine) is held instead."""
    session.info.setdefault(HELD_ROWS, []).extend(objects)


def shanghai_date(instant: sa.ColumnElement[datetime] | InstrumentedAttribute[datetime]) -> sa.ColumnElement[date]:
    """The Asia/Shanghai calendar day of a timestamptz column, computed by PostgreSQL (so a
    GROUP BY day happens in the database, whatever the session's time zone)."""
    return sa.cast(sa.func.timezone("Asia/Shanghai", instant), sa.Date)


# Workers LISTEN on this channel and job creation NOTIFYs it (PostgreSQL delivers the
# notification when the creating transaction commits), so an idle worker starts a new job at
# once instead of at its next pass.
WORK_CHANNEL = "datazone_work"


def notify_work(session: Session, *, job_id: str) -> None:
    """Wake the workers for a job created in this transaction (nothing is sent if it rolls back)."""
    session.execute(sa.select(sa.func.pg_notify(WORK_CHANNEL, job_id)))


# An autonomous transaction: a short one of its own, outside the caller's, on a small pool of its own
# (so it never waits for a connection the caller's own pool may be out of), in autocommit, with commits
# that do not wait for the WAL flush. The meter's reservations use it: the caller's transaction commits
# after its reservation, synchronously, and PostgreSQL flushes the WAL in order, so every committed
# answer's reservation is durable too; a crash can lose only reservations of calls that never
# committed (so the counters err high, never low). A lock held by a caller's open transaction cannot
# make it hang: it gives up after AUTONOMOUS_LOCK_TIMEOUT_MS.
AUTONOMOUS_LOCK_TIMEOUT_MS = 10_000
_autonomous_engines: WeakKeyDictionary[Engine, Engine] = WeakKeyDictionary()
_autonomous_guard = threading.Lock()


def autonomous_engine(engine: Engine) -> Engine:
    """The autonomous-transaction engine beside `engine` (same database), created on first use."""
    with _autonomous_guard:
        side = _autonomous_engines.get(engine)
        if side is None:
            size = engine.pool.size() if isinstance(engine.pool, sa.QueuePool) else 10
            side = sa.create_engine(
                engine.url,
                pool_pre_ping=True,
                pool_size=max(2, size // 4),
                max_overflow=max(2, size // 2),
                isolation_level="AUTOCOMMIT",
                connect_args={
                    "application_name": "datazone-meter",
                    "options": f"-c synchronous_commit=off -c lock_timeout={AUTONOMOUS_LOCK_TIMEOUT_MS}",
                },
            )
            _autonomous_engines[engine] = side
        return side


@contextmanager
def autonomous(session: Session) -> Iterator[sa.Connection]:
    """A connection in autocommit outside `session`'s transaction (see autonomous_engine)."""
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    with autonomous_engine(engine).connect() as conn:
        yield conn


def dispose_autonomous(engine: Engine) -> None:
    with _autonomous_guard:
        side = _autonomous_engines.pop(engine, None)
    if side is not None:
        side.dispose()


class Database:
    """The process's database: URL, engine and session factory, created once."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
        self.sessions = session_factory(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate_schema: bool = True) -> Database:
        settings = settings or get_settings()
        capacity = Capacity.of(settings)
        # the pool answers within the queue's wait rather than after SQLAlchemy's default 30 s
        db = cls(
            resolve_database_url(settings),
            pool_size=capacity.db_pool_size,
            max_overflow=capacity.db_max_overflow,
            pool_timeout=capacity.wait_seconds,
        )
        if migrate_schema:
            migrate(db.engine)
        return db

    def session(self) -> Session:
        return self.sessions()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        with session_scope(self.sessions) as s:
            yield s

    def dispose(self) -> None:
        dispose_autonomous(self.engine)
        self.engine.dispose()
