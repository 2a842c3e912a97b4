"""Killing the loading process mid-load leaves no partial version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from datazone.config import Settings
from datazone.db import Database
from datazone.ingest import service as ingest_service
from tests.conftest import cli_env, unique_id
from tests.factories import apply_spec, firm_rows, firm_spec, write_csv
from tests.ingest.test_pipeline import current, ingest, load_v1


def test_kill_minus_9_mid_load_discards_the_partial_version(db: Database, settings: Settings) -> None:
    spec = firm_spec(unique_id("kill"))
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    load_v1(db, settings, spec, n=10)
    big = write_csv(settings.home / "big.csv", firm_rows(400_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "datazone", "ingest", "run", spec.id, "--file", str(big)],
        env=cli_env(settings, DATAZONE_INGEST_BATCH_ROWS="2000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_id = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with db.unit_of_work() as s:
            runs = ingest_service.list_runs(s, dataset_id=spec.id, limit=1)
            if runs and runs[0].status == "running" and runs[0].rows_read >= 20_000:
                run_id = runs[0].id
                break
        assert proc.poll() is None, "the load finished before it could be killed; make the file bigger"
        time.sleep(0.05)
    assert run_id is not None, "the run never made progress"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)

    # the server rolls the load back once it sees the client gone. Over TCP the dead client's kernel
    # still delivers the megabytes of COPY data it had buffered before the FIN, and the server digests
    # them first: instant here, but about 30 s once on a loaded CI machine, hence the long deadline
    killed = time.monotonic()
    deadline = killed + 120
    with db.engine.connect() as c:
        while True:
            backend = c.execute(
                sa.text(
                    "SELECT state, wait_event_type, wait_event, left(query, 120) AS query"
                    " FROM pg_stat_activity WHERE application_name = :a"
                ),
                {"a": f"datazone-ingest:{run_id}"},
            ).first()
            if backend is None:
                break
            assert time.monotonic() < deadline, (
                f"the killed loader's backend is still there: {dict(backend._mapping)}"
            )
            time.sleep(0.1)
        print(f"backend gone {time.monotonic() - killed:.2f} s after the kill")
        assert c.execute(sa.text(f'SELECT count(*) FROM zone."{spec.id}" WHERE _vfrom > 1')).scalar() == 0
        assert (
            c.execute(sa.text(f'SELECT count(*) FROM zone."{spec.id}" WHERE _vto IS NOT NULL')).scalar() == 0
        )
    assert current(db, spec) == (1, 10)

    # nobody beats for the dead run: the reaper aborts it
    with db.unit_of_work() as s:
        assert ingest_service.get_run(s, run_id=run_id).status == "running"
        assert run_id in ingest_service.reap_stalled_runs(s, stall_seconds=0)
    with db.unit_of_work() as s:
        assert ingest_service.get_run(s, run_id=run_id).status == "aborted"

    # and the dataset is free to load again
    again = ingest(db, settings, spec, file=big)
    assert again.status == "succeeded", again.error
    assert (again.version, again.rows_loaded) == (2, 400_000 - 10)
