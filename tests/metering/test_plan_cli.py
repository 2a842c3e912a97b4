"""`datazone plan ...` in a subprocess against the test database: the metering service the API
calls, as a named operator, with its checks and audit entries."""

from __future__ import annotations

import json
import secrets

from datazone.config import Settings
from datazone.db import Database
from datazone.metering.models import Plan
from tests.conftest import run_cli
from tests.grant.builders import committed_parties, table_count
from tests.shell import audited


def test_create_a_private_plan_and_list_it(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    plan_id = f"bank-plan-{secrets.token_hex(3)}"
    done = run_cli(
        settings, "plan", "create", plan_id, "--as", p.curator.name, "--name", "银行专享",
        "--institution", p.bank1.name, "--rate", "20", "--burst", "40", "--unit-price-fen", "300",
        "--free-units", "100", "--free-period", "month", "--quota-units", "10000", "--quota-period", "month",
        "--monthly-cap-fen", "500000",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"plan {plan_id}: created (private to {p.bank1.name})" in done.stdout
    with db.unit_of_work() as s:
        plan = s.get(Plan, plan_id)
        assert plan is not None and plan.created_by == p.curator.id
        assert (plan.institution_id, plan.unit_price_fen, plan.free_units, plan.quota_units, plan.burst) == (
            p.bank1.id, 300, 100, 10000, 40,
        )  # fmt: skip
    assert audited(db, object_type="plan", object_id=plan_id) == [("plan.create", "operator", p.curator.name)]
    listed = run_cli(settings, "plan", "list", "--institution", p.bank1.name, "--json")
    assert listed.returncode == 0, listed.stderr
    ids = [r["id"] for r in json.loads(listed.stdout)]
    assert plan_id in ids and "public-standard" in ids
    other = json.loads(run_cli(settings, "plan", "list", "--institution", p.bank2.name, "--json").stdout)
    assert plan_id not in [r["id"] for r in other]
    table = run_cli(settings, "plan", "list", "--institution", p.bank1.name, COLUMNS="250")
    assert table.returncode == 0 and plan_id in table.stdout and "100/month" in table.stdout


def test_create_is_refused_and_writes_nothing(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    plan_id = f"bad-plan-{secrets.token_hex(3)}"
    done = run_cli(
        settings, "plan", "create", plan_id, "--as", p.curator.name, "--name", "x",
        "--rate", "0", "--burst", "1", "--quota-units", "5",
    )  # fmt: skip
    assert done.returncode == 2
    assert "rate_per_second must be a number above 0" in done.stderr
    assert "a quota needs its period: day or month" in done.stderr
    done = run_cli(
        settings, "plan", "create", plan_id, "--as", p.bank1.name, "--name", "x", "--rate", "1", "--burst", "1"
    )
    assert done.returncode == 2 and "only an operator with the curator role may create plans" in done.stderr
    done = run_cli(
        settings, "plan", "create", "public-standard", "--as", p.curator.name, "--name", "x",
        "--rate", "1", "--burst", "1",
    )  # fmt: skip
    assert done.returncode == 2 and "a plan 'public-standard' exists already" in done.stderr
    assert table_count(db, Plan, Plan.id == plan_id) == 0
