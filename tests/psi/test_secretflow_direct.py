"""A bank on SecretFlow's own library: its side calls `spu` directly, following docs/psi.md
section 6 and nothing else (tests/psi/secretflow_bank.py), against the real gateway and the
zone's worker on loopback, for RR22 and for unbalanced PSI. It must get the plaintext
intersection, a `succeeded` job, and a `stop_link()` that returns at once."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.psi.conftest import Zone, bank_list
from tests.psi.test_sdk_and_engine import WorkerThread, free_port

BANK = Path(__file__).with_name("secretflow_bank.py")


def test_the_bank_script_uses_nothing_of_datazone() -> None:
    tree = ast.parse(BANK.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "datazone" not in imported and "spu" in imported


@pytest.mark.parametrize("protocol", ["rr22", "unbalanced"])
def test_secretflow_direct_institution_completes_the_job(zone: Zone, tmp_path: Path, protocol: str) -> None:
    codes = bank_list(zone, listed=11, unlisted=200, outsiders=60)
    customers = tmp_path / "customers.csv"
    customers.write_text("uscc\n" + "".join(f"{c}\n" for c in codes))
    token = zone.token["Authorization"].removeprefix("Bearer ")
    with WorkerThread(zone, zone.settings) as w:
        run = subprocess.run(
            [sys.executable, str(BANK), zone.url, token, protocol, str(customers), str(tmp_path), str(free_port())],
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    job = outcome["job"]
    assert job["status"] == "succeeded", job
    assert job["reason"] is None and job["protocol"] == protocol
    assert w.ran == [job["job_id"]]
    assert set(outcome["matched"]) == set(codes) & set(zone.listed)
    # section 5.5: the engine quotes the header
    assert outcome["header"] == '"uscc"'
    # the zone closes its end as soon as the bank does: no wait for an unlisted message
    assert outcome["stop_seconds"] < 10


def test_a_bank_that_never_closes_the_link_leaves_its_result_unconfirmed_and_credited(
    zone: Zone, tmp_path: Path
) -> None:
    codes = bank_list(zone, listed=5, unlisted=200, outsiders=10)
    customers = tmp_path / "customers.csv"
    customers.write_text("uscc\n" + "".join(f"{c}\n" for c in codes))
    token = zone.token["Authorization"].removeprefix("Bearer ")
    # the zone waits max(60 s, the link timeout) for a silent peer
    settings = zone.settings.model_copy(update={"psi_link_timeout_seconds": 30.0})
    with WorkerThread(zone, settings):
        run = subprocess.run(
            [sys.executable, str(BANK), zone.url, token, "rr22", str(customers), str(tmp_path), str(free_port()),
             "keep-link-open"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    job = outcome["job"]
    # the bank has its intersection, but the zone cannot confirm it: failed, and credited
    assert set(outcome["matched"]) == set(codes) & set(zone.listed)
    assert job["status"] == "failed" and "cannot confirm" in job["reason"], job
    with zone.db.engine.connect() as conn:
        credit = conn.execute(
            sa.text("SELECT c.amount_fen, c.memo FROM psi_job j JOIN ledger_entry c ON c.id = j.credit_id WHERE j.id = :j"),
            {"j": job["job_id"]},
        ).one()
    assert credit.amount_fen == job["charged_fen"] > 0 and job["job_id"] in credit.memo
