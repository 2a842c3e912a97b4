"""`datazone worker`: the zone's heavy work, out of every request handler.

One pass runs each domain's share in turn: PSI (key rotation, precomputed slices, engine
jobs), anonymous query (sealed bucket tables), secure scoring (re-randomization factor
pools, batch jobs) and joint statistics and modeling jobs. Run as many workers as you like: each piece of work is claimed once in
the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from datazone.anonymous import worker as anonymous_worker
from datazone.config import Settings
from datazone.db import WORK_CHANNEL, Database, libpq_url
from datazone.joint import worker as joint_worker
from datazone.psi import worker as psi_worker
from datazone.scoring import worker as scoring_worker

log = logging.getLogger("datazone.worker")


@dataclass
class WorkerPass:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_once(db: Database, settings: Settings, *, worker_name: str | None = None) -> WorkerPass:
    name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
    out = WorkerPass()
    psi = psi_worker.run_once(db, settings, run_jobs=True, worker_name=name)
    out.done += [f"psi:{b}" for b in psi.built] + [f"psi-job:{j}" for j in psi.jobs]
    out.failed += [f"psi:{f}" for f in psi.failed]
    for domain, share in (("anonymous", anonymous_worker), ("scoring", scoring_worker), ("joint", joint_worker)):
        try:
            results = share.run_once(db, settings, worker_name=name)
        except Exception:  # one domain's failure must not stop the others
            log.exception("the %s share of the worker pass failed", domain)
            out.failed.append(domain)
            continue
        for result in results:
            if result.startswith("failed:"):
                out.failed.append(f"{domain}:{result.removeprefix('failed:')}")
            else:
                out.done.append(f"{domain}:{result}")
    return out


def run_forever(
    db: Database,
    settings: Settings,
    *,
    interval_seconds: float = 30.0,
    stop: threading.Event | None = None,
    worker_name: str | None = None,
) -> None:
    name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
    stop = stop or threading.Event()
    listener = listen_for_work(db)
    try:
        while not stop.is_set():
            try:
                run_once(db, settings, worker_name=name)
            except Exception:
                log.exception("worker pass failed; retrying in %.0f s", interval_seconds)
            listener = wait_for_work(db, listener, interval_seconds, stop)
    finally:
        if listener is not None:
            listener.close()


def listen_for_work(db: Database) -> psycopg.Connection[Any] | None:
    """A connection LISTENing for new jobs, or None (the worker then waits out its interval)."""
    try:
        conn = psycopg.connect(libpq_url(db.url), autocommit=True)
        conn.execute(f"LISTEN {WORK_CHANNEL}")
    except psycopg.Error as exc:
        log.warning("cannot listen for new jobs (%s): the worker looks for them every pass", type(exc).__name__)
        return None
    return conn


def wait_for_work(
    db: Database, listener: psycopg.Connection[Any] | None, seconds: float, stop: threading.Event
) -> psycopg.Connection[Any] | None:
    """Wait up to `seconds` for a new job's notification (or `stop`); returns the listener to
    keep using (a new one if the old broke). Notifications that came during the pass wake it at once."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if listener is None:
            stop.wait(left)
            return listen_for_work(db)
        try:
            # in slices of a second, so `stop` is seen promptly
            if any(True for _ in listener.notifies(timeout=min(1.0, left), stop_after=1)):
                return listener
        except psycopg.Error:
            listener.close()
            listener = None
    return listener
