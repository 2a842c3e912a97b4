"""The deployment's topology as plain processes on loopback (deploy/loopback.py), under load.

Not in the default run (`-m "not topology"` in pytest's addopts): `make topology` and `.ci/run`
run it. It needs Debian's PostgreSQL server (postgresql-15) and HAProxy.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "loopback.py"
# the replicas' readiness probe HAProxy checks, as deploy/ configures it
HEALTH_PATH = "/readyz"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_loopback", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.topology
@pytest.mark.timeout(600)
def test_failover_loses_nothing_and_bills_nothing_twice(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    script = subprocess.Popen(
        [
            sys.executable, str(SCRIPT), "--health-path", HEALTH_PATH, "--seconds", "20",
            "--concurrency", "16", "--kill-after", "5", "--down-seconds", "3", "--summary", str(summary_file),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = script.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        script.terminate()  # the script stops what it started on SIGTERM
        stdout, stderr = script.communicate(timeout=120)
        pytest.fail(f"the topology run took over 540 s\n{stderr[-4000:]}\n{stdout[-4000:]}")
    assert script.returncode == 0, f"exit {script.returncode}\n{stderr[-4000:]}\n{stdout[-6000:]}"
    summary = json.loads(summary_file.read_text())
    print(json.dumps(summary, indent=2))  # the figures, in the test's output with -s or on failure

    # failover: every call answered, and answered while gw1 was dead
    assert summary["violations"] == []
    assert summary["failed"] == 0
    assert summary["answered_200"] >= 50
    assert summary["answered_during_outage"] > 0
    assert summary["marked_down_after_s"] is not None
    # nothing lost, nothing billed twice, the ledger agrees with what clients were told
    assert summary["usage_events"] == summary["keys_with_usage"] == summary["answered_200"]
    assert summary["lost"] == summary["billed_twice"] == summary["billed_unanswered"] == 0
    assert summary["ledger_net_fen"] == summary["charged_fen_answered"] == summary["usage_price_fen"] > 0
    # the killed replica rejoined and got calls again
    assert summary["rejoined_at_s"] is not None
    assert summary["served_after_rejoin"].get("gw1", 0) > 0
    assert summary["haproxy"]["gw1"]["status"] == "UP"
    assert summary["haproxy"]["gw2"]["status"] == "UP"
    # the scheduler sealed what the replicas (sealing off) recorded
    assert summary["audit_all_sealed"] is True
    assert summary["audit_blocks"] > 0


def test_billing_check_names_each_violation() -> None:
    """The script's verdict catches what a broken gateway would do: lose a billed call, bill one
    twice, bill one never answered, or post a ledger that disagrees with the answers."""
    loopback = load_script()
    answered = {
        key: loopback.Outcome(key=key, status=200, charged_fen=500) for key in ("topology-a", "topology-b")
    }
    figures, violations = loopback.billing_check(
        answered, {"topology-a": (1, 500), "topology-b": (1, 500)}, 1000
    )
    assert violations == []
    assert figures["usage_events"] == 2 and figures["ledger_net_fen"] == 1000

    _, violations = loopback.billing_check(answered, {"topology-a": (1, 500)}, 500)
    assert any(v.startswith("lost: 1 keys") and "topology-b" in v for v in violations)

    _, violations = loopback.billing_check(answered, {"topology-a": (2, 1000), "topology-b": (1, 500)}, 1500)
    assert any(v.startswith("twice: 1 keys have more than one") for v in violations)
    assert any("ledger:" in v for v in violations)

    _, violations = loopback.billing_check(
        answered, {"topology-a": (1, 500), "topology-b": (1, 500), "topology-c": (1, 500)}, 1500
    )
    assert any("billed but never answered" in v and "topology-c" in v for v in violations)

    _, violations = loopback.billing_check(answered, {"topology-a": (1, 500), "topology-b": (1, 500)}, 1500)
    assert violations == ["ledger: net debits 1500 fen, answered charges 1000 fen, usage 1000 fen"]
