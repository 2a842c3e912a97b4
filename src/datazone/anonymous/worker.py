"""The anonymous domain's share of a worker pass: seal the bucket tables the live key epoch
and the current data call for, and drop tables superseded long enough ago.

Each table is built in a transaction of its own under a per-product advisory lock, so two
workers never seal the same table and one product's failure leaves the others standing.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from datazone.anonymous import service
from datazone.config import Settings
from datazone.db import Database
from datazone.errors import DomainError
from datazone.observability import metrics
from datazone.privacy.anonymous_query import BucketTooSmall

log = logging.getLogger("datazone.anonymous.worker")


def run_once(db: Database, settings: Settings, *, worker_name: str = "worker") -> list[str]:
    """One pass; returns what it built ("<product>@table <id>"), each failure as 'failed:<product>'."""
    done: list[str] = []
    with db.unit_of_work() as s:
        needed = service.needed_tables(s, settings=settings)
    for product_id in needed:
        started = time.perf_counter()
        try:
            with db.unit_of_work() as s:
                table = service.build_table(s, settings=settings, product_id=product_id)
                log.info(
                    "%s sealed table %s of %s: %s buckets (prefix_bits %s, smallest %s, k %s), %s bytes in %.1f s",
                    worker_name, table.id, product_id, 1 << (table.prefix_bits or 0), table.prefix_bits,
                    table.smallest_bucket, table.k, table.size_bytes, time.perf_counter() - started,
                )
                done.append(f"{product_id}@table {table.id}")
            metrics.worker_job_finished(kind="anonymous_table", outcome="built", started=started)
        except BucketTooSmall as exc:
            # the data no longer gives every bucket k candidates: kept, so queries are refused with why
            log.error("the buckets of %s fall below k: %s", product_id, exc)
            with db.unit_of_work() as s:
                service.record_refusal(s, settings=settings, product_id=product_id, error=str(exc))
            done.append(f"failed:{product_id}")
            metrics.worker_job_finished(kind="anonymous_table", outcome="below_k", started=started)
        except Exception as exc:  # one product's failure must not stop the others; tried again next pass
            why = str(exc) if isinstance(exc, DomainError | service.DataChanged) else type(exc).__name__
            log.error("sealing the buckets of %s failed: %s", product_id, why)
            done.append(f"failed:{product_id}")
            metrics.worker_job_finished(kind="anonymous_table", outcome="failed", started=started)
    with db.unit_of_work() as s:
        dropped = service.drop_superseded(s, older_than=timedelta(hours=settings.idempotency_hours))
    if dropped:
        log.info("dropped %s superseded anonymous-query tables", dropped)
    return done
