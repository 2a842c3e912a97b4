"""The zone's Prometheus series: the one module that touches prometheus_client.

Each process counts what happens in it (a gateway replica its requests, product calls,
refusals and meter decisions; the worker its jobs; the scheduler its ingest runs) and serves
them itself: a replica at `/metrics`, the worker and scheduler on `DATAZONE_METRICS_PORT`.
What is the zone's state rather than one process's events (job queues, ingest runs and rows
by dataset) is read from the database when scraped, so every replica reports the same figures
and none has to have seen the work happen. Database pool figures are read from the engine at
scrape time too.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from datazone.errors import DomainError

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# request latencies: a lookup answers in milliseconds, a batch or a PSI chunk in seconds
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# worker jobs run from a second (a pool top-up) to hours (a PSI over millions of rows)
_JOB_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)

HTTP_REQUESTS = Counter(
    "datazone_http_requests_total", "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "datazone_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
    ["method", "route"], buckets=_LATENCY_BUCKETS,
)  # fmt: skip
PRODUCT_CALLS = Counter(
    "datazone_product_calls_total",
    "Calls of data products, by product, channel (lookup, psi, anonymous, scoring) and outcome",
    ["product", "channel", "outcome"],
)
REFUSALS = Counter(
    "datazone_refusals_total",
    "Requests refused with a problem answer, by the check that refused them and the HTTP status",
    ["check", "status"],
)
METER_DECISIONS = Counter(
    "datazone_meter_decisions_total",
    "Meter admissions of billable calls: admitted, or the limit that refused them",
    ["outcome"],
)
METER_UNITS = Counter("datazone_meter_admitted_units_total", "Billable units the meter admitted")
INGEST_RUN_SECONDS = Histogram(
    "datazone_ingest_run_duration_seconds", "Time an ingest run took in this process, by dataset and status",
    ["dataset", "status"], buckets=_JOB_BUCKETS,
)  # fmt: skip
WORKER_JOB_SECONDS = Histogram(
    "datazone_worker_job_duration_seconds",
    "Time a piece of worker work took, by kind (psi_artifact, psi_job, anonymous_table, scoring_job) and outcome",
    ["kind", "outcome"],
    buckets=_JOB_BUCKETS,
)

# the product and channel of the call being served, noted by the call pipeline's first gate
_current_call: ContextVar[tuple[str, str] | None] = ContextVar("datazone_product_call", default=None)


# the series of each (method, route template, status) seen, looked up once: `labels()` takes a
# lock and checks its arguments on every call; the keys are bounded as the labels are
_request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(*, method: str, route: str, status: int, seconds: float) -> None:
    series = _request_series.get((method, route, status))
    if series is None:
        series = (HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(method, route))
        _request_series[(method, route, status)] = series
    series[0].inc()
    series[1].observe(seconds)


def count_refusal(*, check: str | None, status: int) -> None:
    REFUSALS.labels(check or "none", str(status)).inc()


def note_product_call(*, product_id: str, channel: str) -> None:
    """Called by the call pipeline once it knows what is called and through which channel."""
    _current_call.set((product_id, channel))


@contextmanager
def product_call(product_id: str | None) -> Iterator[None]:
    """Count the product call made in the block as served, or refused when a DomainError leaves it."""
    token = _current_call.set(None)
    try:
        yield
    except DomainError:
        _count_call("refused", product_id)
        raise
    else:
        _count_call("served", product_id)
    finally:
        _current_call.reset(token)


def _count_call(outcome: str, product_id: str | None) -> None:
    noted = _current_call.get()
    # a call refused before the pipeline knew its product (a bad token, a wrong scope) keeps what
    # the caller named
    product, channel = noted if noted is not None else (product_id or "-", "unknown")
    PRODUCT_CALLS.labels(product, channel, outcome).inc()


def counts_meter_decisions(admit: Callable[P, R]) -> Callable[P, R]:
    """Wrap the meter's admission: count each admission (and its units) or the refusal's type."""

    @functools.wraps(admit)
    def counted(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            admission = admit(*args, **kwargs)
        except DomainError as exc:
            METER_DECISIONS.labels(exc.type).inc()
            raise
        METER_DECISIONS.labels("admitted").inc()
        METER_UNITS.inc(getattr(admission, "units", 0))
        return admission

    return counted


def ingest_run_finished(*, dataset_id: str, status: str, seconds: float) -> None:
    INGEST_RUN_SECONDS.labels(dataset_id, status).observe(seconds)


def worker_job_finished(*, kind: str, outcome: str, started: float) -> None:
    """A piece of worker work ended with `outcome`; `started` is its time.perf_counter() at start."""
    WORKER_JOB_SECONDS.labels(kind, outcome).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- read at scrape time

# the zone's work queues: (queue, table, the statuses that are waiting or in progress)
_QUEUES = (
    ("ingest", "ingest_run", ("new", "running")),
    ("psi_job", "psi_job", ("queued", "running")),
    ("scoring_job", "scoring_job", ("queued", "running")),
)


class _Watched:
    """The engines this process reports on: its request pool(s), and the small side engine
    the zone-state queries use (so a scrape never waits for a request's pool)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[str, Engine] = {}
        self.zone_state: Engine | None = None


_watched = _Watched()


def watch_pool(name: str, engine: Engine) -> None:
    with _watched.lock:
        _watched.pools[name] = engine


def watch_zone_state(engine: Engine) -> None:
    """Report the zone's queues and ingest runs, read through `engine`."""
    with _watched.lock:
        _watched.zone_state = engine


def unwatch(*engines: Engine) -> None:
    """Stop reporting on these engines (an app shutting down; another may have taken over)."""
    with _watched.lock:
        _watched.pools = {name: e for name, e in _watched.pools.items() if e not in engines}
        if _watched.zone_state in engines:
            _watched.zone_state = None


def _pool_waiting(pool: QueuePool) -> int:
    # SQLAlchemy counts connections in use and overflow but not the threads blocked in checkout;
    # those wait on its queue's condition variable, whose waiter list is the only place they show
    queue = getattr(pool, "_pool", None)
    condition = getattr(queue, "not_empty", None)
    waiters = getattr(condition, "_waiters", None)
    return len(waiters) if waiters is not None else 0


class ZoneCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        with _watched.lock:
            pools = dict(_watched.pools)
            zone_state = _watched.zone_state
        yield from self._pools(pools)
        if zone_state is not None:
            try:
                yield from self._zone_state(zone_state)
            except sa.exc.SQLAlchemyError as exc:
                # a scrape still reports the process's own series when the database is away
                log.warning("zone-state metrics not read: %s", type(exc).__name__)

    @staticmethod
    def _pools(pools: dict[str, Engine]) -> Iterator[Metric]:
        in_use = GaugeMetricFamily("datazone_db_pool_in_use", "Database connections checked out", labels=["pool"])
        idle = GaugeMetricFamily("datazone_db_pool_idle", "Database connections idle in the pool", labels=["pool"])
        size = GaugeMetricFamily("datazone_db_pool_size", "Configured size of the database pool", labels=["pool"])
        waiting = GaugeMetricFamily(
            "datazone_db_pool_waiting", "Threads waiting for a database connection", labels=["pool"]
        )
        for name, engine in pools.items():
            pool = engine.pool
            if not isinstance(pool, QueuePool):
                continue
            in_use.add_metric([name], pool.checkedout())
            idle.add_metric([name], pool.checkedin())
            size.add_metric([name], pool.size())
            waiting.add_metric([name], _pool_waiting(pool))
        yield from (in_use, idle, size, waiting)

    @staticmethod
    def _zone_state(engine: Engine) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "datazone_worker_queue_depth", "Work waiting or in progress, by queue and status",
            labels=["queue", "status"],
        )  # fmt: skip
        runs = CounterMetricFamily(
            "datazone_ingest_runs", "Ingest runs recorded in the zone, by dataset and status",
            labels=["dataset", "status"],
        )  # fmt: skip
        rows = CounterMetricFamily(
            "datazone_ingest_rows",
            "Rows of ingest runs, by dataset, the run's status and what became of them (read, loaded, rejected)",
            labels=["dataset", "status", "kind"],
        )
        with engine.connect() as conn:
            for queue, table, statuses in _QUEUES:
                counts = dict.fromkeys(statuses, 0)
                for status, n in conn.execute(
                    sa.text(f"SELECT status, count(*) FROM {table} WHERE status = ANY(:s) GROUP BY status"),
                    {"s": list(statuses)},
                ):
                    counts[status] = n
                for status, n in counts.items():
                    depth.add_metric([queue, status], n)
            for dataset, status, n, read, loaded, rejected in conn.execute(
                sa.text(
                    "SELECT dataset_id, status, count(*), coalesce(sum(rows_read), 0),"
                    " coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)"
                    " FROM ingest_run GROUP BY dataset_id, status"
                )
            ):
                runs.add_metric([dataset, status], n)
                for kind, value in (("read", read), ("loaded", loaded), ("rejected", rejected)):
                    rows.add_metric([dataset, status, kind], value)
        yield from (depth, runs, rows)


REGISTRY.register(ZoneCollector())


def serve_on_port(port: int, host: str) -> None:
    """Serve this process's series over HTTP on their own port (the worker and the scheduler)."""
    start_http_server(port, addr=host, registry=REGISTRY)
    log.info("metrics served on http://%s:%s/metrics", host, port)
