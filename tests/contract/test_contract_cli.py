"""`datazone contract ...` in a subprocess against the test database: the contract service the
API calls, as a named operator, with its checks and audit entries."""

from __future__ import annotations

import json
from typing import Any

from datazone.config import Settings
from datazone.contract import service
from datazone.contract.models import Contract
from datazone.db import Database
from tests.conftest import run_cli
from tests.grant.builders import committed_parties, table_count
from tests.shell import audited


def test_create_and_list_a_contract_as_a_curator(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any]
) -> None:
    p = committed_parties(db)
    done = run_cli(
        settings, "contract", "create", "--as", p.curator.name, "--institution", p.bank1.name,
        "--product", "credit-basic", "--product", "risk-insight", "--purpose", "pre_loan",
        "--from", "2026-01-01", "--to", "2099-01-01", "--clearance", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with db.unit_of_work() as s:
        (contract,) = service.list_contracts(s, viewer=p.curator, institution_id=p.bank1.id)
        assert (contract.products, contract.purposes, contract.clearance, contract.status) == (
            ["credit-basic", "risk-insight"], ["pre_loan"], 3, "active",
        )  # fmt: skip
        assert contract.created_by == p.curator.id and contract.plan_id == "public-standard"
        assert contract.valid_from.isoformat() == "2025-12-31T16:00:00+00:00"  # midnight in Shanghai
    assert f"contract {contract.id} with {p.bank1.name}: active" in done.stdout
    assert audited(db, object_type="contract", object_id=str(contract.id)) == [
        ("contract.create", "operator", p.curator.name)
    ]
    listed = run_cli(settings, "contract", "list", "--institution", p.bank1.name, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(c["id"], c["status"]) for c in json.loads(listed.stdout)] == [(contract.id, "active")]
    table = run_cli(settings, "contract", "list", "--institution", p.bank1.name, COLUMNS="250")
    assert table.returncode == 0 and p.bank1.name in table.stdout and "public-standard" in table.stdout


def test_create_is_refused_with_every_problem_and_writes_nothing(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any]
) -> None:
    p = committed_parties(db)
    common = ["--institution", p.bank2.name, "--product", "credit-basic", "--purpose", "pre_loan", "--to", "2099-01-01"]
    done = run_cli(settings, "contract", "create", "--as", p.auditor.name, *common)
    assert done.returncode == 2
    assert "only an operator with the curator role may sign contracts" in done.stderr
    done = run_cli(
        settings, "contract", "create", "--as", p.curator.name, "--institution", p.bank2.name,
        "--product", "no-such-product", "--purpose", "astrology", "--to", "2099-01-01", "--clearance", "5",
    )  # fmt: skip
    assert done.returncode == 2
    assert "no product 'no-such-product' in the catalog" in done.stderr
    assert "'astrology' is not a purpose" in done.stderr and "clearance is 1..4" in done.stderr
    done = run_cli(settings, "contract", "create", "--as", "nobody-at-all", *common)
    assert done.returncode == 2 and "no principal named 'nobody-at-all'" in done.stderr
    assert table_count(db, Contract, Contract.institution_id == p.bank2.id) == 0


def test_suspend_resume_terminate_and_the_refusals(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any]
) -> None:
    p = committed_parties(db)
    created = run_cli(
        settings, "contract", "create", "--as", p.curator.name, "--institution", p.bank1.name,
        "--product", "credit-basic", "--purpose", "post_loan", "--to", "2099-01-01",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    with db.unit_of_work() as s:
        (contract,) = service.list_contracts(s, viewer=p.curator, institution_id=p.bank1.id)
    cid = str(contract.id)

    done = run_cli(settings, "contract", "suspend", cid, "--as", p.reviewer.name, "--reason", "unpaid")
    assert done.returncode == 2 and "only an operator with the curator role may suspend contracts" in done.stderr
    for move, reason, status in (
        ("suspend", "unpaid invoices", "suspended"),
        ("resume", "paid", "active"),
        ("terminate", "the bank closed its account", "terminated"),
    ):
        done = run_cli(settings, "contract", move, cid, "--as", p.curator.name, "--reason", reason)
        assert done.returncode == 0, done.stderr
        assert f"contract {cid}: {status}" in done.stdout
        with db.unit_of_work() as s:
            row = s.get(Contract, contract.id)
            assert row is not None and (row.status, row.status_reason) == (status, reason)
    done = run_cli(settings, "contract", "resume", cid, "--as", p.curator.name, "--reason", "back")
    assert done.returncode == 2
    assert f"contract {cid} is terminated; it cannot be active (terminated is final)" in done.stderr
    assert [a for a, _, _ in audited(db, object_type="contract", object_id=cid)] == [
        "contract.create", "contract.suspend", "contract.resume", "contract.terminate",
    ]  # fmt: skip
