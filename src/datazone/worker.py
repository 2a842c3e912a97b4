"""`datazone worker`: the zone's heavy work, out of every request handler.

One pass runs each domain's share in turn: PSI (key rotation, precomputed slices, engine
jobs), anonymous query (sealed bucket tables) and secure scoring (re-randomization factor
pools, batch jobs). Run as many workers as you like: each piece of work is claimed once in
the database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from datazone.anonymous import worker as anonymous_worker
from datazone.config import Settings
from datazone.db import Database
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
    for domain, share in (("anonymous", anonymous_worker), ("scoring", scoring_worker)):
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
    while not stop.is_set():
        try:
            run_once(db, settings, worker_name=name)
        except Exception:
            log.exception("worker pass failed; retrying in %.0f s", interval_seconds)
        stop.wait(interval_seconds)
