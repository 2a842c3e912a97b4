"""Plans through the HTTP API: curators create them, every bad value is listed, an institution
sees public plans and its own private ones, and a contract may not use another's private plan."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.db import Database
from tests.conftest import problem
from tests.factories import bearer, new_principal
from tests.metering.apps import client
from tests.metering.builders import catalog

pytestmark = pytest.mark.usefixtures("catalog")
assert catalog and client


def plan_body(**kw: Any) -> dict[str, Any]:
    return {"id": f"p-{secrets.token_hex(4)}", "name": "Pilot", "rate_per_second": 10, "burst": 20, **kw}


def count(client: TestClient, plan_id: str, token: str) -> int:
    return 1 if client.get(f"/v1/plans/{plan_id}", headers=bearer(token)).status_code == 200 else 0


def test_curator_creates_public_and_private_plans_institutions_see_their_own(
    client: TestClient, db: Database
) -> None:
    _, cur = new_principal(db, roles=["curator"])
    bank_id, bank = new_principal(db, "institution")
    _, other_bank = new_principal(db, "institution")
    public = plan_body(free_units=100, free_period="month", quota_units=5000, quota_period="day")
    r = client.post("/v1/plans", json=public, headers=bearer(cur))
    assert r.status_code == 201, r.text
    assert r.json()["institution_id"] is None and r.json()["quota_units"] == 5000
    private = plan_body(institution_id=bank_id, unit_price_fen=80, monthly_cap_fen=1_000_000)
    assert client.post("/v1/plans", json=private, headers=bearer(cur)).status_code == 201
    # the bank sees both; the other bank the public one only, and 404 (not 403) for the private one
    seen = {p["id"] for p in client.get("/v1/plans", headers=bearer(bank)).json()}
    assert {public["id"], private["id"], "public-standard"} <= seen
    other_seen = {p["id"] for p in client.get("/v1/plans", headers=bearer(other_bank)).json()}
    assert public["id"] in other_seen and private["id"] not in other_seen
    r = client.get(f"/v1/plans/{private['id']}", headers=bearer(other_bank))
    assert r.status_code == 404 and problem(r)["type"].endswith("/not-found")
    assert client.get(f"/v1/plans/{private['id']}", headers=bearer(bank)).json()["unit_price_fen"] == 80
    with db.unit_of_work() as s:
        audited = s.execute(
            sa.text("SELECT institution_id FROM audit_entry WHERE action = 'plan.create' AND object_id = :p"),
            {"p": private["id"]},
        ).scalars()
        assert list(audited) == [bank_id]
    # the default public plan is there, as data, from the migration
    std = client.get("/v1/plans/public-standard", headers=bearer(bank)).json()
    assert std["institution_id"] is None and std["unit_price_fen"] is None


def test_only_a_curator_creates_plans(client: TestClient, db: Database) -> None:
    _, auditor = new_principal(db, roles=["auditor"])
    _, bank = new_principal(db, "institution")
    for token in (auditor, bank):
        body = plan_body()
        r = client.post("/v1/plans", json=body, headers=bearer(token))
        assert r.status_code == 403 and "curator" in problem(r)["detail"]
        assert count(client, body["id"], auditor) == 0


def test_bad_plan_values_are_all_listed_and_nothing_is_written(client: TestClient, db: Database) -> None:
    _, cur = new_principal(db, roles=["curator"])
    body = plan_body(
        id="Bad Id!",
        name=" ",
        unit_price_fen=-5,
        monthly_cap_fen=-1,
        free_units=-1,
        free_period="week",
        quota_units=10,
        rate_per_second=0,
        burst=0,
        institution_id=999_999_999,
    )
    r = client.post("/v1/plans", json=body, headers=bearer(cur))
    assert r.status_code == 422
    p = problem(r)
    assert p["type"].endswith("/invalid-plan") and "nothing was written" in p["detail"]
    where = [e["location"] for e in p["errors"]]
    assert where == [
        "id",
        "name",
        "institution_id",
        "free_units",
        "free_period",
        "unit_price_fen",
        "monthly_cap_fen",
        "quota_period",
        "rate_per_second",
        "burst",
    ]
    assert "not -5" in p["detail"] and "above 0, not 0" in p["detail"]


def test_a_taken_plan_id_conflicts(client: TestClient, db: Database) -> None:
    _, cur = new_principal(db, roles=["curator"])
    body = plan_body()
    assert client.post("/v1/plans", json=body, headers=bearer(cur)).status_code == 201
    r = client.post("/v1/plans", json={**body, "name": "again"}, headers=bearer(cur))
    assert r.status_code == 409 and "exists already" in problem(r)["detail"]


def test_a_private_plan_of_another_institution_cannot_be_a_contracts_plan(
    client: TestClient, db: Database
) -> None:
    _, cur = new_principal(db, roles=["curator"])
    bank_id, bank = new_principal(db, "institution")
    other_id, _ = new_principal(db, "institution")
    theirs = plan_body(institution_id=other_id)
    mine = plan_body(institution_id=bank_id)
    for body in (theirs, mine):
        assert client.post("/v1/plans", json=body, headers=bearer(cur)).status_code == 201

    def contract(**kw: Any) -> dict[str, Any]:
        return {
            "institution_id": bank_id,
            "purposes": ["pre_loan"],
            "products": ["credit-basic"],
            "valid_from": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
            "valid_to": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            **kw,
        }

    r = client.post("/v1/contracts", json=contract(plan_id=theirs["id"]), headers=bearer(cur))
    assert r.status_code == 422
    p = problem(r)
    assert p["errors"] == [
        {
            "location": "plan_id",
            "problem": f"plan {theirs['id']!r} is a private plan of institution {other_id}; a contract may use "
            "a public plan or its own institution's private plan",
        }
    ]
    r = client.post("/v1/contracts", json=contract(plan_id="no-such-plan", clearance=9), headers=bearer(cur))
    assert r.status_code == 422 and [e["location"] for e in problem(r)["errors"]] == ["clearance", "plan_id"]
    assert client.get("/v1/contracts", headers=bearer(bank)).json() == []  # nothing written
    r = client.post("/v1/contracts", json=contract(plan_id=mine["id"]), headers=bearer(cur))
    assert r.status_code == 201 and r.json()["plan_id"] == mine["id"]
    r = client.post("/v1/contracts", json=contract(), headers=bearer(cur))
    assert r.status_code == 201 and r.json()["plan_id"] == "public-standard"


def test_departments_see_no_plans(client: TestClient, db: Database) -> None:
    from tests.factories import ensure_department

    with db.unit_of_work() as s:
        ensure_department(s, "plan-test-dept")
    _, dept = new_principal(db, "department", supplier_id="plan-test-dept")
    r = client.get("/v1/plans", headers=bearer(dept))
    assert r.status_code == 403 and "department" in problem(r)["detail"]
