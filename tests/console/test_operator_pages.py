"""The operator's console: each page shows real figures, refusals in words, other people's pages as 403,
and each form's effect in the database with its audit entry naming the person."""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from datazone.audit import service as audit_service
from datazone.audit.models import AuditEntry
from datazone.config import Settings
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.ingest.models import IngestRun
from datazone.principal import service as principal_service
from datazone.product import demands as demand_service
from datazone.product import service as product_service
from datazone.scoring.models import ScoringModel
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import unique_id
from tests.console.conftest import PersonLogin, make_person, sign_in
from tests.factories import (
    add_joint_job,
    bearer,
    firm_rows,
    principal_key,
    registered_model,
    retire_model,
    write_csv,
)

PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"
OP = "/console/operator"


def audit_entry(db: Database, *, action: str, object_id: str) -> AuditEntry:
    with db.unit_of_work() as s:
        entry = s.scalar(
            sa.select(AuditEntry)
            .where(AuditEntry.action == action, AuditEntry.object_id == object_id)
            .order_by(AuditEntry.id.desc())
        )
        assert entry is not None, (action, object_id)
        s.expunge(entry)
        return entry


def table(html: str, table_id: str) -> str:
    found = re.search(rf'<table class="data" id="{re.escape(table_id)}">(.*?)</table>', html, re.S)
    assert found, f"no table {table_id!r} on the page"
    return found.group(1)


def operator(db: Database, settings: Settings, client: TestClient, *roles: str) -> tuple[PersonLogin, str]:
    person = make_person(db, settings, kind="operator", roles=list(roles))
    return person, sign_in(client, person)


# --- the dashboard ---------------------------------------------------------------------------------


def test_the_dashboard_shows_each_role_the_figures_it_may_read(
    db: Database, settings: Settings, browser_like: TestClient, tmp_path: Path
) -> None:
    check = unique_id("console-check")
    bank = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
    with db.unit_of_work() as s:
        institution = principal_service.get_principal(s, principal_id=bank.principal_id)
        for _ in range(3):
            audit_service.record(
                s,
                actor=institution,
                action=audit_service.DATA_ACCESS,
                object_type="product",
                object_id="credit-basic",
                outcome="refused",
                purpose="pre_loan",
                detail={"check": check, "status": 403},
            )
        add_joint_job(s, institution_id=institution.id, status="running")
    broken = new_dataset(db, reject_tolerance=0.0)
    failed = ingest(db, settings, broken.id, write_csv(tmp_path / "bad.csv", BAD_BATCH))
    assert failed.status == "failed"

    _, _ = operator(db, settings, browser_like, "auditor", "curator")
    page = browser_like.get(f"{OP}?days=7")
    assert page.status_code == 200, page.text
    assert '<option value="7" selected>' in page.text
    refusals = table(page.text, "refusals")
    assert re.search(rf"<td>{check}</td><td class=\"num\">3</td><td class=\"num\">1</td>", refusals)
    assert f"#{failed.id}" in table(page.text, "failed-runs") and broken.id in table(page.text, "failed-runs")
    for chart in ("chart-calls", "chart-revenue", "chart-refusals", "chart-runs"):
        assert f'id="{chart}-data"' in page.text
    # the workers' queues: the joint jobs' beside PSI's, scoring's and the anonymous tables'
    assert re.search(r"<td>running</td><td class=\"num\">[1-9]\d*</td>", table(page.text, "queue-joint"))

    # a reviewer reads no usage, revenue or refusals: those figures are the auditor's
    browser_like.cookies.clear()
    operator(db, settings, browser_like, "reviewer")
    page = browser_like.get(OP)
    assert page.status_code == 200
    assert 'id="refusals"' not in page.text and "chart-revenue" not in page.text and check not in page.text
    assert 'id="failed-runs"' in page.text


def test_an_institution_s_person_gets_a_403_page_not_the_operator_s_figures(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
    sign_in(browser_like, person)
    for path in (OP, f"{OP}/catalog", f"{OP}/review", f"{OP}/ingest", f"{OP}/audit"):
        r = browser_like.get(path)
        assert r.status_code == 403 and "text/html" in r.headers["content-type"], path
        assert 'id="products"' not in r.text and 'id="entries"' not in r.text


# --- the catalog -----------------------------------------------------------------------------------


def test_a_curator_applies_and_publishes_a_product_that_institutions_then_see(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    product_id = f"console-{secrets.token_hex(3)}"
    spec = {
        **yaml.safe_load((PRODUCTS_DIR / "credit-basic.yaml").read_text(encoding="utf-8")),
        "id": product_id,
    }
    curator, csrf = operator(db, settings, browser_like, "curator")
    r = browser_like.post(
        f"{OP}/catalog/apply", data={"csrf": csrf, "spec": yaml.safe_dump(spec, allow_unicode=True)}
    )
    assert r.status_code == 303 and "op.catalog.applied.created" in r.headers["location"], r.text
    page = browser_like.get(f"{OP}/catalog")
    row = re.search(rf'<tr id="product-{product_id}">(.*?)</tr>', page.text, re.S)
    assert row and 'id="publish-' + product_id in row.group(1) and spec["name"] in row.group(1)

    bank = bearer(principal_key(db, "institution"))
    assert product_id not in browser_like.get("/v1/catalog/products", headers=bank).text
    r = browser_like.post(f"{OP}/catalog/{product_id}/publish", data={"csrf": csrf, "reason": "上线"})
    assert r.status_code == 303, r.text
    listed = browser_like.get("/v1/catalog/products", headers=bank)
    assert product_id in [p["id"] for p in listed.json()]
    with db.unit_of_work() as s:
        assert product_service.get_product(s, product_id=product_id).state == "published"
    entry = audit_entry(db, action="product.published", object_id=product_id)
    assert entry.detail["account"] == curator.login and entry.reason == "上线"

    # deprecated with a successor and a seamless switch, the page shows the switch
    r = browser_like.post(
        f"{OP}/catalog/{product_id}/deprecate",
        data={"csrf": csrf, "reason": "由基础版替代", "successor": "credit-basic", "seamless": "on"},
    )
    assert r.status_code == 303, r.text
    row = re.search(
        rf'<tr id="product-{product_id}">(.*?)</tr>', browser_like.get(f"{OP}/catalog").text, re.S
    )
    assert row and f"{product_id} → credit-basic" in row.group(1)


def test_a_bad_spec_and_an_illegal_move_are_refused_in_words(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    _, csrf = operator(db, settings, browser_like, "curator")
    r = browser_like.post(
        f"{OP}/catalog/apply", data={"csrf": csrf, "spec": "id: Not A Slug\nname: [unclosed"}
    )
    assert r.status_code == 422 and 'class="refusal"' in r.text
    assert "name: [unclosed" in r.text  # the spec is kept to be fixed
    r = browser_like.post(f"{OP}/catalog/no-such-product/publish", data={"csrf": csrf, "reason": "x"})
    assert r.status_code == 404 and 'class="refusal"' in r.text and "no-such-product" in r.text


def test_a_reviewer_may_not_shape_the_catalog(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    _, csrf = operator(db, settings, browser_like, "reviewer")
    assert browser_like.get(f"{OP}/catalog").status_code == 403
    r = browser_like.post(f"{OP}/catalog/credit-basic/retire", data={"csrf": csrf, "reason": "x"})
    assert r.status_code == 403 and "curator" in r.text


# --- dataset admission and the review queue --------------------------------------------------------


def test_a_reviewer_admits_a_dataset_on_the_figures_of_its_sample(
    db: Database, settings: Settings, browser_like: TestClient, tmp_path: Path
) -> None:
    ds = new_dataset(db)
    run = ingest(db, settings, ds.id, write_csv(tmp_path / "ok.csv", firm_rows(7)))
    reviewer, csrf = operator(db, settings, browser_like, "reviewer")
    page = browser_like.get(f"{OP}/datasets")
    assert page.status_code == 200
    card = re.search(rf'<section class="card" id="admission-{ds.id}">(.*?)</section>', page.text, re.S)
    assert card, page.text
    assert '<dd data-figure="rows">7</dd>' in card.group(1)
    assert f'<dd data-figure="run_id">#{run.id}</dd>' in card.group(1)
    assert '<dd data-figure="validity">100.00%</dd>' in card.group(1)
    r = browser_like.post(
        f"{OP}/datasets/{ds.id}/admission", data={"csrf": csrf, "decision": "admit", "reason": "抽检合格"}
    )
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert dataset_service.get_dataset(s, dataset_id=ds.id).admission_state == "admitted"
    assert audit_entry(db, action="dataset.admitted", object_id=ds.id).detail["account"] == reviewer.login
    assert f'id="admission-{ds.id}"' not in browser_like.get(f"{OP}/datasets").text


def test_admitting_a_failed_sample_is_refused_with_the_failed_figures(
    db: Database, settings: Settings, browser_like: TestClient, tmp_path: Path
) -> None:
    ds = new_dataset(db, reject_tolerance=0.2)
    ingest(db, settings, ds.id, write_csv(tmp_path / "bad.csv", BAD_BATCH))
    _, csrf = operator(db, settings, browser_like, "reviewer")
    page = browser_like.get(f"{OP}/datasets")
    failures = re.search(rf'<ul class="refusal" id="failures-{ds.id}">(.*?)</ul>', page.text, re.S)
    assert failures and "1 of 10 rows" in failures.group(1) and "completeness.capital" in failures.group(1)
    r = browser_like.post(
        f"{OP}/datasets/{ds.id}/admission", data={"csrf": csrf, "decision": "admit", "reason": "看着还行"}
    )
    assert r.status_code == 409 and 'role="alert"' in r.text and "cannot be admitted" in r.text
    with db.unit_of_work() as s:
        assert dataset_service.get_dataset(s, dataset_id=ds.id).admission_state == "intake"


def pending_model(db: Database) -> tuple[str, str]:
    """A model the demo bank registered (a real registration, checked by the service), awaiting review."""
    return registered_model(db, institution="demo-bank"), "demo-bank"


def test_a_reviewer_approves_a_registered_scoring_model(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    model_id, bank_name = pending_model(db)
    reviewer, csrf = operator(db, settings, browser_like, "reviewer")
    page = browser_like.get(f"{OP}/review")
    row = re.search(rf'<tr id="model-{model_id}">(.*?)</tr>', page.text, re.S)
    assert row and bank_name in row.group(1) and "secure-credit-score" in row.group(1)
    r = browser_like.post(
        f"{OP}/models/{model_id}/review", data={"csrf": csrf, "decision": "approve", "reason": "评审通过"}
    )
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert s.get_one(ScoringModel, model_id).state == "approved"
    entry = audit_entry(db, action="scoring.model.approve", object_id=model_id)
    assert entry.detail["account"] == reviewer.login and entry.reason == "评审通过"
    # reviewed once: a second decision is refused, in words
    r = browser_like.post(
        f"{OP}/models/{model_id}/review", data={"csrf": csrf, "decision": "reject", "reason": "再议"}
    )
    assert r.status_code == 409 and 'role="alert"' in r.text and "only a model pending review" in r.text
    retire_model(db, model_id)


def test_a_curator_without_the_reviewer_role_cannot_review_models(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    model_id, _ = pending_model(db)
    _, csrf = operator(db, settings, browser_like, "curator")
    assert browser_like.get(f"{OP}/review").status_code == 403
    r = browser_like.post(
        f"{OP}/models/{model_id}/review", data={"csrf": csrf, "decision": "approve", "reason": "x"}
    )
    assert r.status_code == 403
    with db.unit_of_work() as s:
        assert s.get_one(ScoringModel, model_id).state == "pending_review"


def test_a_curator_accepts_a_demand_from_the_review_queue(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    bank = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
    title = f"需要水电数据 {secrets.token_hex(3)}"
    with db.unit_of_work() as s:
        filer = principal_service.get_principal(s, principal_id=bank.principal_id)
        demand_id = demand_service.file_demand(s, by=filer, title=title, purposes=["pre_loan"]).id
    person, csrf = operator(db, settings, browser_like, "reviewer", "curator")
    row = re.search(rf'<tr id="demand-{demand_id}">(.*?)</tr>', browser_like.get(f"{OP}/review").text, re.S)
    assert row and title in row.group(1) and bank.principal_name in row.group(1)
    r = browser_like.post(f"{OP}/demands/{demand_id}/accept", data={"csrf": csrf, "reason": "纳入采集计划"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        viewer = principal_service.get_principal(s, principal_id=person.principal_id)
        assert demand_service.get_demand(s, demand_id=demand_id, viewer=viewer).state == "accepted"
    assert (
        audit_entry(db, action="demand.accepted", object_id=str(demand_id)).detail["account"] == person.login
    )
    # accepted once: declining it now is refused in words
    r = browser_like.post(f"{OP}/demands/{demand_id}/decline", data={"csrf": csrf, "reason": "不做了"})
    assert r.status_code == 409 and 'role="alert"' in r.text


# --- ingest runs -----------------------------------------------------------------------------------


def test_a_failed_run_shows_its_rejects_and_downloads_them_as_csv(
    db: Database, settings: Settings, browser_like: TestClient, tmp_path: Path
) -> None:
    ds = new_dataset(db, reject_tolerance=0.0)
    run = ingest(db, settings, ds.id, write_csv(tmp_path / "bad.csv", BAD_BATCH))
    assert run.status == "failed" and run.rows_rejected == 1
    operator(db, settings, browser_like, "curator")
    listed = browser_like.get(f"{OP}/ingest?status=failed&dataset={ds.id}")
    assert f'<tr id="run-{run.id}">' in table(listed.text, "runs")
    page = browser_like.get(f"{OP}/ingest/{run.id}")
    assert page.status_code == 200
    rejects = table(page.text, "rejects")
    assert '<td class="num">11</td>' in rejects and "91110105BADBADBAD0" in rejects  # line 11 of the file
    download = browser_like.get(f"{OP}/ingest/{run.id}/rejects.csv")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert 'filename="ingest-run-' in download.headers["content-disposition"]
    assert download.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert rows[0] == ["line", "column", "reason", "value"] and rows[1][0] == "11"
    assert rows[1][3] == "91110105BADBADBAD0"


def test_run_now_queues_a_run_with_its_audit_entry_and_unknown_datasets_are_refused(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    ds = new_dataset(db)
    curator, csrf = operator(db, settings, browser_like, "curator")
    r = browser_like.post(f"{OP}/ingest/run", data={"csrf": csrf, "dataset": ds.id})
    assert r.status_code == 303, r.text
    run_id = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    with db.unit_of_work() as s:
        run = s.get_one(IngestRun, run_id)
        assert (run.dataset_id, run.trigger, run.status) == (ds.id, "manual", "new")
    entry = audit_entry(db, action="ingest.request", object_id=ds.id)
    assert entry.detail["run_id"] == run_id and entry.detail["account"] == curator.login
    r = browser_like.post(f"{OP}/ingest/run", data={"csrf": csrf, "dataset": "no-such-dataset"})
    assert r.status_code == 404 and 'role="alert"' in r.text and "no-such-dataset" in r.text


def test_a_department_cannot_open_the_operator_s_run_reports(
    db: Database, settings: Settings, browser_like: TestClient, tmp_path: Path
) -> None:
    ds = new_dataset(db)
    run = ingest(db, settings, ds.id, write_csv(tmp_path / "ok.csv", firm_rows(2)))
    officer = make_person(db, settings, kind="department", roles=["officer"])
    sign_in(browser_like, officer)
    for path in (f"{OP}/ingest/{run.id}", f"{OP}/ingest/{run.id}/rejects.csv"):
        r = browser_like.get(path)
        assert r.status_code == 403 and "text/html" in r.headers["content-type"]


# --- the audit trail -------------------------------------------------------------------------------


def test_an_auditor_searches_the_trail_verifies_the_chain_and_exports_the_roots(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    with db.unit_of_work() as s:
        audit_service.seal_pending(s, max_entries=100_000)
    auditor, csrf = operator(db, settings, browser_like, "auditor")
    page = browser_like.get(
        f"{OP}/audit", params={"actor": auditor.principal_name, "action": "console.sign-in"}
    )
    entries = table(page.text, "entries")
    assert auditor.login in entries and "console.sign-in" in entries
    assert entries.count("<tr id=") == 1  # this person signed in once
    r = browser_like.post(f"{OP}/audit/verify", data={"csrf": csrf, "roots": ""})
    assert r.status_code == 200
    report = re.search(r'id="chain-report"(.*?)</div>', r.text, re.S)
    assert report and 'class="notice"' in r.text
    blocks = int(re.search(r'data-figure="blocks_checked">(\d+)<', report.group(1)).group(1))  # type: ignore[union-attr]
    assert blocks >= 1
    roots = browser_like.get(f"{OP}/audit/roots.json")
    assert roots.status_code == 200 and "attachment" in roots.headers["content-disposition"]
    exported = roots.json()
    assert len(exported) >= blocks and {"height", "merkle_root"} <= exported[0].keys()
    # verified against the roots just exported: each block is the one published
    r = browser_like.post(f"{OP}/audit/verify", data={"csrf": csrf, "roots": json.dumps(exported)})
    assert r.status_code == 200
    checked = re.search(r'data-figure="roots_checked">(\d+)<', r.text)
    assert checked and int(checked.group(1)) >= blocks
    # roots that are not JSON are refused in words
    r = browser_like.post(f"{OP}/audit/verify", data={"csrf": csrf, "roots": "not json"})
    assert r.status_code == 422 and 'role="alert"' in r.text and "not JSON" in r.text


def test_the_audit_trail_is_the_auditor_s(db: Database, settings: Settings, browser_like: TestClient) -> None:
    _, csrf = operator(db, settings, browser_like, "curator", "reviewer")
    assert browser_like.get(f"{OP}/audit").status_code == 403
    assert browser_like.get(f"{OP}/audit/roots.json").status_code == 403
    assert browser_like.post(f"{OP}/audit/verify", data={"csrf": csrf}).status_code == 403


# --- suppliers and institutions --------------------------------------------------------------------


def test_a_reviewer_blacklists_and_reinstates_a_supplier(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    supplier_id = unique_id("sup").replace("_", "-")
    with db.unit_of_work() as s:
        supplier_service.apply_supplier(
            s, spec=SupplierSpec(id=supplier_id, name="测试供给方", name_en="Test")
        )
    reviewer, csrf = operator(db, settings, browser_like, "reviewer")
    page = browser_like.get(f"{OP}/suppliers")
    assert f'<tr id="supplier-{supplier_id}">' in table(page.text, "suppliers")
    r = browser_like.post(
        f"{OP}/suppliers/{supplier_id}/blacklist", data={"csrf": csrf, "reason": "数据造假"}
    )
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert supplier_service.get_supplier(s, supplier_id=supplier_id).admission_status == "blacklisted"
    assert (
        audit_entry(db, action="supplier.blacklisted", object_id=supplier_id).detail["account"]
        == reviewer.login
    )
    # reinstating twice: the second is refused in words
    assert (
        browser_like.post(
            f"{OP}/suppliers/{supplier_id}/reinstate", data={"csrf": csrf, "reason": "整改完成"}
        ).status_code
        == 303
    )
    r = browser_like.post(f"{OP}/suppliers/{supplier_id}/reinstate", data={"csrf": csrf, "reason": "再次"})
    assert r.status_code == 409 and "nothing to reinstate" in r.text


def test_a_curator_signs_a_contract_for_an_institution_with_its_plan(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    curator, csrf = operator(db, settings, browser_like, "curator")
    with db.unit_of_work() as s:
        bank = principal_service.create_principal(s, kind="institution", name=unique_id("bank"))
        bank_id = bank.id
    page = browser_like.get(f"{OP}/institutions")
    assert f'id="sign-contract-{bank_id}"' in page.text
    form = {
        "csrf": csrf,
        "plan": "public-standard",
        "products": ["credit-basic", "risk-insight"],
        "purposes": ["pre_loan"],
        "clearance": "2",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
    }
    # without a purpose the contract is refused in words, and the form comes back as filled
    r = browser_like.post(f"{OP}/institutions/{bank_id}/contracts", data={**form, "purposes": []})
    assert r.status_code == 422 and 'role="alert"' in r.text and "purpose" in r.text
    assert 'value="risk-insight" checked' in r.text
    with db.unit_of_work() as s:
        viewer = principal_service.get_principal(s, principal_id=curator.principal_id)
        assert contract_service.list_contracts(s, viewer=viewer, institution_id=bank_id) == []
    r = browser_like.post(f"{OP}/institutions/{bank_id}/contracts", data=form)
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        [contract] = contract_service.list_contracts(s, viewer=viewer, institution_id=bank_id)
        assert (contract.plan_id, sorted(contract.products), contract.purposes) == (
            "public-standard",
            ["credit-basic", "risk-insight"],
            ["pre_loan"],
        )
        assert contract.valid_from == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # midnight in Shanghai
        contract_id = contract.id
    entry = audit_entry(db, action="contract.create", object_id=str(contract_id))
    assert entry.detail["account"] == curator.login


def test_a_curator_suspends_and_resumes_an_institution_s_contract(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    curator, csrf = operator(db, settings, browser_like, "curator")
    now = datetime.now(UTC)
    with db.unit_of_work() as s:
        signer = principal_service.get_principal(s, principal_id=curator.principal_id)
        bank = principal_service.create_principal(s, kind="institution", name=unique_id("bank"))
        contract_id = contract_service.create_contract(
            s,
            institution_id=bank.id,
            purposes=["pre_loan"],
            products=["credit-basic"],
            valid_from=now - timedelta(days=1),
            valid_to=now + timedelta(days=30),
            by=signer,
        ).id
    page = browser_like.get(f"{OP}/institutions")
    row = re.search(rf'<tr id="contract-{contract_id}">(.*?)</tr>', page.text, re.S)
    assert row and "credit-basic" in row.group(1) and f'id="suspend-contract-{contract_id}"' in row.group(1)
    r = browser_like.post(f"{OP}/contracts/{contract_id}/suspend", data={"csrf": csrf, "reason": "欠费"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert contract_service.get_contract(s, contract_id=contract_id, viewer=signer).status == "suspended"
    entry = audit_entry(db, action="contract.suspend", object_id=str(contract_id))
    assert entry.detail["account"] == curator.login and entry.reason == "欠费"
    # a reason is required, as by the API
    r = browser_like.post(f"{OP}/contracts/{contract_id}/resume", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and 'role="alert"' in r.text
    r = browser_like.post(f"{OP}/contracts/{contract_id}/resume", data={"csrf": csrf, "reason": "已缴费"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert contract_service.get_contract(s, contract_id=contract_id, viewer=signer).status == "active"
    # terminated for good: the page offers no move after it, and a second termination is refused in words
    r = browser_like.post(f"{OP}/contracts/{contract_id}/terminate", data={"csrf": csrf, "reason": "合作结束"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert contract_service.get_contract(s, contract_id=contract_id, viewer=signer).status == "terminated"
    assert audit_entry(db, action="contract.terminate", object_id=str(contract_id)).detail["account"] == curator.login
    r = browser_like.post(f"{OP}/contracts/{contract_id}/terminate", data={"csrf": csrf, "reason": "again"})
    assert r.status_code == 409 and 'role="alert"' in r.text


def test_a_curator_suspends_an_institution_whose_keys_are_then_refused(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    curator, csrf = operator(db, settings, browser_like, "curator")
    name = unique_id("bank")
    key = bearer(principal_key(db, "institution", name=name))
    with db.unit_of_work() as s:
        found = principal_service.find_principal(s, name=name)
        assert found is not None
        bank_id = found.id
    assert browser_like.get("/v1/catalog/products", headers=key).status_code == 200
    assert f'id="suspend-institution-{bank_id}"' in browser_like.get(f"{OP}/institutions").text
    r = browser_like.post(f"{OP}/institutions/{bank_id}/suspend", data={"csrf": csrf, "reason": "合同纠纷"})
    assert r.status_code == 303, r.text
    assert browser_like.get("/v1/catalog/products", headers=key).status_code in (401, 403)
    entry = audit_entry(db, action="principal.suspend", object_id=name)
    assert entry.detail["account"] == curator.login and entry.reason == "合同纠纷"
    page = browser_like.get(f"{OP}/institutions")
    assert f'id="suspended-{bank_id}"' in page.text and "合同纠纷" in page.text
    # suspended already: a second suspension is refused in words
    r = browser_like.post(f"{OP}/institutions/{bank_id}/suspend", data={"csrf": csrf, "reason": "再次"})
    assert r.status_code == 409 and 'role="alert"' in r.text and "already suspended" in r.text
    r = browser_like.post(f"{OP}/institutions/{bank_id}/reinstate", data={"csrf": csrf, "reason": "纠纷解决"})
    assert r.status_code == 303, r.text
    assert browser_like.get("/v1/catalog/products", headers=key).status_code == 200
    assert audit_entry(db, action="principal.reinstate", object_id=name).reason == "纠纷解决"
    # a department is no institution to suspend here
    officer = make_person(db, settings, kind="department", roles=["officer"])
    r = browser_like.post(
        f"{OP}/institutions/{officer.principal_id}/suspend", data={"csrf": csrf, "reason": "x"}
    )
    assert r.status_code == 404
