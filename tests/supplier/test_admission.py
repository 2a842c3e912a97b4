"""Supplier admission and blacklisting through the HTTP API."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi.testclient import TestClient

from datazone.config import Settings
from datazone.dataset import admission as dataset_admission
from datazone.db import Database
from datazone.lifecycle import service as lifecycle_service
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.admission import ingest, new_dataset
from tests.conftest import problem
from tests.factories import bearer, firm_rows, principal_key, write_csv

CERT = {"kind": "qualification_certificate", "reference": "doc://certs/2026-0042"}
ASSESSMENT = {"kind": "security_assessment", "reference": "https://docs.example/sa/17", "sha256": "ab" * 32}


def supplier_id() -> str:
    return f"sup-{secrets.token_hex(4)}"


def history(client: TestClient, headers: dict[str, str], sid: str) -> list[tuple[str | None, str, str]]:
    r = client.get(f"/v1/lifecycle/supplier/{sid}/history", headers=headers)
    assert r.status_code == 200, r.text
    return [(h["from_state"], h["to_state"], h["reason"]) for h in r.json()]


def test_applied_supplier_is_admitted_by_a_reviewer(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    sid = supplier_id()
    r = client.post(
        "/v1/suppliers",
        json={"id": sid, "name": "北京市测试局", "attachments": [CERT]},
        headers=keys["curator"],
    )
    assert r.status_code == 201, r.text
    assert r.json()["admission_status"] == "applied" and r.json()["attachments"] == [CERT]
    # the same id again is a conflict, not a second application
    r = client.post("/v1/suppliers", json={"id": sid, "name": "x"}, headers=keys["curator"])
    assert problem(r)["status"] == 409
    decision = {"reason": "qualification and security assessment verified", "attachments": [ASSESSMENT]}
    assert (
        problem(client.post(f"/v1/suppliers/{sid}/admit", json=decision, headers=keys["curator"]))["status"]
        == 403
    )
    r = client.post(f"/v1/suppliers/{sid}/admit", json=decision, headers=keys["reviewer"])
    assert r.status_code == 200 and r.json()["admission_status"] == "admitted"
    assert r.json()["attachments"] == [CERT, ASSESSMENT]
    # admitting twice is illegal: 409 naming the allowed moves, nothing written
    r = client.post(f"/v1/suppliers/{sid}/admit", json=decision, headers=keys["reviewer"])
    body = problem(r)
    assert r.status_code == 409 and body["allowed"] == ["blacklisted"] and body["state"] == "admitted"
    assert "blacklisted" in body["detail"]
    assert history(client, keys["auditor"], sid) == [
        (None, "applied", "applied for admission"),
        ("applied", "admitted", decision["reason"]),
    ]


def test_bad_application_lists_every_problem_and_writes_nothing(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    sid = supplier_id()
    r = client.post(
        "/v1/suppliers",
        json={"id": sid, "name": "", "attachments": [{"kind": "x", "reference": "r", "sha256": "nothex"}]},
        headers=keys["curator"],
    )
    body = problem(r)
    assert r.status_code == 422
    assert {e["location"] for e in body["errors"]} == {"body.name", "body.attachments.0.sha256"}
    assert problem(client.get(f"/v1/suppliers/{sid}", headers=keys["auditor"]))["status"] == 404
    r = client.post("/v1/suppliers/nobody/admit", json={"reason": "r"}, headers=keys["reviewer"])
    assert problem(r)["status"] == 404
    r = client.post(f"/v1/suppliers/{sid}/admit", json={}, headers=keys["reviewer"])
    assert problem(r)["status"] == 422 and "reason" in r.json()["detail"]


def test_rejected_supplier(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    sid = supplier_id()
    client.post("/v1/suppliers", json={"id": sid, "name": "某公司", "kind": "other"}, headers=keys["curator"])
    r = client.post(
        f"/v1/suppliers/{sid}/reject", json={"reason": "no security assessment"}, headers=keys["reviewer"]
    )
    assert r.json()["admission_status"] == "rejected"
    r = client.post(f"/v1/suppliers/{sid}/blacklist", json={"reason": "r"}, headers=keys["reviewer"])
    assert problem(r)["allowed"] == ["applied"]


def test_blacklisting_stops_its_datasets_and_reinstatement_restores_them(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    sid = supplier_id()
    with db.unit_of_work() as s:
        supplier_service.apply_supplier(s, spec=SupplierSpec(id=sid, name="测试局"))
    ds, other = new_dataset(db, dept=sid), new_dataset(db)
    for d in (ds, other):
        ingest(db, settings, d.id, write_csv(tmp_path / f"{d.id}.csv", firm_rows(3)))
        with db.unit_of_work() as s:
            dataset_admission.review_dataset(s, dataset_id=d.id, decision="admit", by=None, reason="ok")

    def refused(ids: list[str]) -> list[dict[str, object]]:
        with db.unit_of_work() as s:
            try:
                dataset_admission.require_in_use(s, dataset_ids=ids)
            except dataset_admission.DataNotInUse as exc:
                return exc.errors
        return []

    assert refused([ds.id, other.id]) == []
    r = client.post(
        f"/v1/suppliers/{sid}/blacklist", json={"reason": "falsified records"}, headers=keys["reviewer"]
    )
    assert r.json()["admission_status"] == "blacklisted"
    errors = refused([other.id, ds.id])
    assert [(e["dataset_id"], e["supplier_id"], e["supplier_status"]) for e in errors] == [
        (ds.id, sid, "blacklisted")
    ]
    assert "blacklisted" in str(errors[0]["problem"])
    r = client.post(
        f"/v1/suppliers/{sid}/reinstate",
        json={"reason": "corrected and re-audited"},
        headers=keys["reviewer"],
    )
    assert r.json()["admission_status"] == "admitted"
    assert refused([ds.id]) == []
    # reinstating an admitted supplier is refused and names what it may do instead
    r = client.post(f"/v1/suppliers/{sid}/reinstate", json={"reason": "again"}, headers=keys["reviewer"])
    assert problem(r)["status"] == 409 and r.json()["allowed"] == ["blacklisted"]
    assert history(client, keys["auditor"], sid) == [
        (None, "admitted", "registered by operator"),
        ("admitted", "blacklisted", "falsified records"),
        ("blacklisted", "admitted", "corrected and re-audited"),
    ]
    # the department sees its own history; another department and institutions get 404
    own = bearer(principal_key(db, "department", supplier_id=sid))
    assert len(history(client, own, sid)) == 3
    stranger = bearer(principal_key(db, "department", supplier_id="test-dept"))
    assert problem(client.get(f"/v1/lifecycle/supplier/{sid}/history", headers=stranger))["status"] == 404
    bank = bearer(principal_key(db, "institution"))
    assert problem(client.get(f"/v1/lifecycle/supplier/{sid}/history", headers=bank))["status"] == 404
    assert problem(client.get(f"/v1/lifecycle/dataset/{ds.id}/history", headers=stranger))["status"] == 404
    assert client.get(f"/v1/lifecycle/dataset/{ds.id}/history", headers=own).status_code == 200
    assert problem(client.get("/v1/lifecycle/thing/x/history", headers=own))["status"] == 404


def test_registered_supplier_is_admitted_with_a_recorded_transition(db: Database) -> None:
    sid = supplier_id()
    with db.unit_of_work() as s:
        supplier, created = supplier_service.apply_supplier(s, spec=SupplierSpec(id=sid, name="测试局"))
        assert created and supplier.admission_status == "admitted"
        # updating the names keeps the status and records no new transition
        supplier_service.apply_supplier(s, spec=SupplierSpec(id=sid, name="测试局(新)"))
        hist = lifecycle_service.history(s, subject_type="supplier", subject_id=sid)
    assert [(t.from_state, t.to_state, t.reason) for t in hist] == [
        (None, "admitted", "registered by operator")
    ]
