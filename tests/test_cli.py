"""The `datazone` command as an operator uses it."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.product import service as product_service
from tests.conftest import Server, run_cli, synthetic_zone_settings, unique_id
from tests.factories import bad_check, bearer, ensure_department, firm_rows, firm_spec, write_csv


def test_apply_spec_and_run_ingest_with_json_report(db: Database, settings: Settings, tmp_path: Path) -> None:
    with db.unit_of_work() as s:
        ensure_department(s)
    spec = firm_spec(unique_id("cli"), reject_tolerance=0.2)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    applied = run_cli(settings, "dataset", "apply", str(path))
    assert applied.returncode == 0, applied.stderr
    assert f"dataset {spec.id}: created" in applied.stdout
    again = run_cli(settings, "dataset", "apply", str(path))
    assert f"dataset {spec.id}: unchanged" in again.stdout

    rows = firm_rows(8)
    rows[6][0] = bad_check(rows[6][0])
    data = write_csv(tmp_path / "delivery.csv", rows)
    done = run_cli(settings, "ingest", "run", spec.id, "--file", str(data), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["run"]["status"] == "succeeded"
    assert (report["run"]["rows_read"], report["run"]["rows_loaded"], report["run"]["rows_rejected"]) == (
        8,
        7,
        1,
    )
    assert report["rejects"][0]["line"] == 8
    assert data.exists(), "a file given with --file is not moved"

    listed = json.loads(run_cli(settings, "dataset", "list", "--json").stdout)
    assert next(d for d in listed if d["id"] == spec.id)["rows"] == 7


def test_failed_run_exits_non_zero_and_says_why(db: Database, settings: Settings, tmp_path: Path) -> None:
    with db.unit_of_work() as s:
        ensure_department(s)
    spec = firm_spec(unique_id("clifail"))
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    assert run_cli(settings, "dataset", "apply", str(path)).returncode == 0
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    done = run_cli(settings, "ingest", "run", spec.id, "--file", str(empty))
    assert done.returncode == 1
    assert "failed" in done.stdout and "empty" in done.stdout


def test_invalid_specs_are_refused_with_every_problem(settings: Settings, tmp_path: Path) -> None:
    bad = {
        "id": "Bad-Id",
        "name": "x",
        "department": "test-dept",
        "entity_key": "code",
        "fields": [{"name": "code", "type": "text"}],
        "source": {"kind": "directory", "path": "x/*.csv"},
        "schedule": "every day",
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad), encoding="utf-8")
    done = run_cli(settings, "dataset", "apply", str(path))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    for part in ("id", "fields.0.type", "schedule"):
        assert part in message, message

    unknown_dept = firm_spec("orphan_ds").model_dump(mode="json")
    unknown_dept["department"] = "no-such-dept"
    path.write_text(yaml.safe_dump(unknown_dept, allow_unicode=True), encoding="utf-8")
    done = run_cli(settings, "dataset", "apply", str(path))
    assert done.returncode == 2 and "no-such-dept" in done.stderr


def test_principals_keys_issue_and_revoke(db: Database, settings: Settings) -> None:
    from datazone.errors import Unauthorized
    from datazone.principal import service as principal_service

    name = unique_id("ops")
    no_role = run_cli(settings, "principal", "create", name)
    assert no_role.returncode == 2 and "curator, reviewer, auditor" in no_role.stderr
    bad_role = run_cli(settings, "principal", "create", name, "--role", "admin")
    assert bad_role.returncode == 2 and "unknown: admin" in bad_role.stderr
    created = run_cli(settings, "principal", "create", name, "--role", "auditor")
    assert created.returncode == 0, created.stderr
    first = created.stdout.split("key ")[1].strip()
    issued = run_cli(settings, "principal", "issue-key", name)
    second = issued.stdout.split("key ")[1].strip()
    assert issued.returncode == 0 and second != first
    listed = run_cli(settings, "principal", "list", "--kind", "operator", "--json")
    first_id, second_id = first.split("_")[1], second.split("_")[1]
    mine = next(p for p in json.loads(listed.stdout) if p["name"] == name)
    assert (mine["roles"], mine["live_keys"], mine["revoked_keys"]) == (["auditor"], [first_id, second_id], [])
    assert first not in listed.stdout  # ids only, never a key

    revoked = run_cli(settings, "principal", "revoke-key", first_id)
    assert revoked.returncode == 0, revoked.stderr
    again = run_cli(settings, "principal", "revoke-key", first_id)
    assert again.returncode == 2 and "was revoked at" in again.stderr
    with db.unit_of_work() as s:
        try:
            principal_service.authenticate(s, token=first)
            raise AssertionError("a revoked key still authenticates")
        except Unauthorized:
            pass
        assert principal_service.authenticate(s, token=second).name == name
    with db.engine.connect() as conn:
        import sqlalchemy as sa

        actions = conn.execute(
            sa.text("SELECT action FROM audit_entry WHERE object_type = 'principal' AND object_id = :n ORDER BY id"),
            {"n": name},
        ).scalars().all()
    assert actions == ["principal.create", "principal.key_issue", "principal.key_revoke"]

    # a suspended principal's live key is refused from the next request, and works again once reinstated
    assert run_cli(settings, "principal", "suspend", name, "--reason", "").returncode == 2
    assert run_cli(settings, "principal", "suspend", name, "--reason", "audit finding").returncode == 0
    with db.unit_of_work() as s:
        try:
            principal_service.authenticate(s, token=second)
            raise AssertionError("a suspended principal still authenticates")
        except principal_service.Suspended as exc:
            assert "audit finding" in exc.detail
    assert run_cli(settings, "principal", "reinstate", name).returncode == 0
    with db.unit_of_work() as s:
        assert principal_service.authenticate(s, token=second).name == name


def test_a_new_institution_set_up_from_the_shell_calls_a_paid_product_and_is_billed(
    db: Database,
    database_url: str,
    synthetic_zone: dict[str, Any],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The README's control-plane walk-through, every step a `datazone` command: an institution,
    its private plan, its contract, each department's grant, its consents from a CSV file and an
    OAuth client; then the bank's call of a paid product answers and is billed at the plan's price."""
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "cli-tour")
    tag = secrets.token_hex(3)
    operator, bank, plan = f"tour-operator-{tag}", f"tour-bank-{tag}", f"tour-plan-{tag}"
    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id="risk-insight"))
        by_department: dict[str, list[str]] = {}
        for dataset_id in spec.sources:
            owner = dataset_service.get_dataset(s, dataset_id=dataset_id).supplier_id
            by_department.setdefault(owner, []).append(dataset_id)
        uscc = dataset_service.current_entities(s, dataset_id="mr_registration", limit=1)[0]

    def ok(*args: str) -> str:
        done = run_cli(settings, *args)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    ok("principal", "create", operator, "--kind", "operator", "--role", "curator", "--role", "reviewer")
    for department in by_department:
        ok("principal", "create", f"{department}-officer-{tag}", "--kind", "department", "--department", department)
    ok("principal", "create", bank, "--kind", "institution")
    ok("plan", "create", plan, "--as", operator, "--name", "tour plan", "--institution", bank,
       "--unit-price-fen", "420", "--rate", "50", "--burst", "50")  # fmt: skip
    ok("contract", "create", "--as", operator, "--institution", bank, "--product", "risk-insight",
       "--purpose", "pre_loan", "--plan", plan, "--to", "2099-01-01")  # fmt: skip
    for department, datasets in sorted(by_department.items()):
        ok("grant", "create", "--as", f"{department}-officer-{tag}", "--institution", bank,
           "--product", "risk-insight", "--purpose", "pre_loan", *(a for d in datasets for a in ("--dataset", d)),
           "--to", "2099-01-01")  # fmt: skip
    consents = tmp_path / "consents.csv"
    consents.write_text(
        "uscc,purpose,products,valid_from,valid_to,evidence_ref,evidence_sha256\n"
        f"{uscc},pre_loan,risk-insight,2026-01-01,2099-01-01,archive://letters/{uscc}.pdf,{'ab' * 32}\n",
        encoding="utf-8",
    )
    ok("consent", "register", str(consents), "--as", bank)
    credentials = dict(line.split("=", 1) for line in ok("client", "create", "--institution", bank).split())

    server = Server(settings)
    try:
        server.wait_ready()
        r = httpx.post(
            f"{server.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(credentials["client_id"], credentials["client_secret"]),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        answer = httpx.get(
            f"{server.url}/v1/products/risk-insight/enterprises/{uscc}",
            params={"purpose": "pre_loan"},
            headers=bearer(r.json()["access_token"]),
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
    ledger = json.loads(ok("billing", "ledger", "--institution", bank, "--json"))
    assert [(e["kind"], e["amount_fen"], e["product_id"]) for e in ledger] == [("debit", 420, "risk-insight")]
