"""`datazone worker` between passes: a job created meanwhile wakes it at once (PostgreSQL
LISTEN/NOTIFY, sent when the creating transaction commits), so the zone's side of an engine PSI
job comes up in about a second rather than after a whole pass interval."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from datazone import worker
from datazone.db import Database, notify_work


def test_a_committed_job_wakes_the_waiting_worker_and_a_rolled_back_one_does_not(db: Database) -> None:
    stop = threading.Event()
    listener = worker.listen_for_work(db)
    assert listener is not None
    try:
        # nothing created: the worker waits out its interval
        started = time.monotonic()
        listener = worker.wait_for_work(db, listener, 1.5, stop)
        assert time.monotonic() - started >= 1.4

        # a creation that rolls back sends nothing
        with db.engine.connect() as conn, conn.begin() as tx:
            conn.execute(sa.select(sa.func.pg_notify(worker.WORK_CHANNEL, "job_rolled_back")))
            tx.rollback()
        started = time.monotonic()
        listener = worker.wait_for_work(db, listener, 1.5, stop)
        assert time.monotonic() - started >= 1.4

        # a job committed while the worker was busy (before it waits) wakes it at once
        with db.unit_of_work() as s:
            notify_work(s, job_id="job_test_wakeup")
        started = time.monotonic()
        listener = worker.wait_for_work(db, listener, 30, stop)
        assert time.monotonic() - started < 10  # woken, not timed out at 30 s (loose: a busy machine)

        # and one committed while it waits
        timer = threading.Timer(0.5, lambda: _notify(db))
        timer.start()
        started = time.monotonic()
        listener = worker.wait_for_work(db, listener, 30, stop)
        assert 0.4 < time.monotonic() - started < 10
        timer.join()
    finally:
        if listener is not None:
            listener.close()


def _notify(db: Database) -> None:
    with db.unit_of_work() as s:
        notify_work(s, job_id="job_test_wakeup_2")
