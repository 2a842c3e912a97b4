"""The scheduler and the worker: one JSON line per event in the zone's time zone (no
APScheduler line per tick), and their own /metrics on DATAZONE_METRICS_PORT."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from datazone.config import Settings
from tests.conftest import cli_env, free_port

pytestmark = pytest.mark.e2e


def _start(settings: Settings, command: str, **extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "datazone", command],
        env=cli_env(settings, DATAZONE_METRICS_PORT=str(port), DATAZONE_SCHEDULER_POLL_SECONDS="1", **extra),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return proc, port


def _scrape(port: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            if resp.status_code == 200:
                return resp.text
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError("no /metrics")


def test_scheduler_logs_events_not_ticks_and_serves_metrics(settings: Settings) -> None:
    proc, port = _start(settings, "scheduler")
    try:
        metrics = _scrape(port, time.monotonic() + 90)
        assert 'datazone_db_pool_size{pool="process"}' in metrics
        assert 'datazone_worker_queue_depth{queue="ingest",status="new"}' in metrics
        time.sleep(4)  # a few ticks of the 1 s queue poll
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    lines = [json.loads(line) for line in output.splitlines()]
    messages = [line["message"] for line in lines]
    assert "scheduler started" in messages
    assert not [m for m in messages if m.startswith(("Running job", "Job ")) or "executed successfully" in m]
    assert all(line["timestamp"].endswith("+08:00") for line in lines)


def test_worker_serves_its_metrics(settings: Settings) -> None:
    proc, port = _start(settings, "worker")
    try:
        metrics = _scrape(port, time.monotonic() + 90)
        assert 'datazone_worker_queue_depth{queue="psi_job",status="queued"}' in metrics
        assert "datazone_worker_job_duration_seconds" in metrics
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert all(json.loads(line)["timestamp"].endswith("+08:00") for line in output.splitlines())
