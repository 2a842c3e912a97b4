"""`datazone demo` stops what it started: on SIGTERM or Ctrl-C (SIGINT) the gateway shuts down
and the embedded PostgreSQL it started is stopped, not left orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e


def _postmaster_pid(home: Path) -> int | None:
    pid_file = home / "pgdata" / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def _postmaster_gone(pid: int, within: float = 15.0) -> bool:
    """The postmaster exited: no such process, or a zombie waiting for an init that reaps slowly
    (the exit is what matters; reaping is the parent's business, not the demo's)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-stop") / "home"


# SIGTERM first (it builds the zone), then Ctrl-C on the reused zone
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_demo_stops_its_embedded_postgres(demo_home: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAZONE_")}
    env.update({"DATAZONE_HOME": str(demo_home), "DATAZONE_SIGNING_KEY_SECRET": "demo-stop-test"})
    log = (demo_home.parent / f"demo-{stop_signal.name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "datazone", "demo", "--entities", "1000", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, (demo_home.parent / f"demo-{stop_signal.name}.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the demo did not come up")
        postmaster = _postmaster_pid(demo_home)
        assert postmaster is not None and psutil.pid_exists(postmaster)

        proc.send_signal(stop_signal)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (demo_home.parent / f"demo-{stop_signal.name}.log").read_text()
    assert "Shutting down" in output and "Traceback" not in output, output[-3000:]
    assert "stopped the embedded PostgreSQL" in output, output[-3000:]
    if stop_signal == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM  # the conventional status of a process ended by SIGTERM
    assert _postmaster_gone(postmaster)
    assert _postmaster_pid(demo_home) is None
