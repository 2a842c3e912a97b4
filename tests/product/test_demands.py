"""Demand requests (需求申请) through the HTTP API."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datazone.config import Settings
from datazone.db import Database
from tests.admission import new_dataset
from tests.conftest import problem
from tests.factories import bearer, ensure_department, principal_key


@pytest.fixture
def bank(db: Database) -> dict[str, str]:
    return bearer(principal_key(db, "institution"))


DEMAND = {
    "title": "企业用电量月度数据",
    "description": "贷后监测需要企业月度用电量",
    "purposes": ["post_loan"],
    "wanted_fields": ["electricity_kwh"],
    "wanted_departments": ["test-dept"],
}


def test_demand_submitted_accepted_fulfilled(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]],
    bank: dict[str, str],
) -> None:  # fmt: skip
    ds = new_dataset(db)
    r = client.post("/v1/demands", json=DEMAND, headers=bank)
    assert r.status_code == 201, r.text
    demand = r.json()
    assert demand["state"] == "submitted" and demand["purposes"] == ["post_loan"]
    url = f"/v1/demands/{demand['id']}"
    # fulfilling before accepting is illegal, and names the moves allowed from submitted
    r = client.post(url + "/fulfil", json={"reason": "r", "dataset_ids": [ds.id]}, headers=keys["curator"])
    assert r.status_code == 409 and problem(r)["allowed"] == ["accepted", "declined", "cancelled"]
    assert problem(client.post(url + "/accept", json={"reason": "r"}, headers=bank))["status"] == 403
    r = client.post(url + "/accept", json={"reason": "utilities feed is planned"}, headers=keys["curator"])
    assert r.json()["state"] == "accepted"
    # bad links are all listed and nothing changes
    r = client.post(
        url + "/fulfil", json={"reason": "r", "dataset_ids": [ds.id, "nope", "nada"]}, headers=keys["curator"]
    )
    body = problem(r)
    assert r.status_code == 422 and [e["location"] for e in body["errors"]] == [
        "dataset_ids.1",
        "dataset_ids.2",
    ]
    r = client.post(url + "/fulfil", json={"reason": "r"}, headers=keys["curator"])
    assert problem(r)["status"] == 422 and "dataset_ids or the product_id" in r.json()["detail"]
    assert client.get(url, headers=bank).json()["state"] == "accepted"
    r = client.post(
        url + "/fulfil", json={"reason": "dataset loaded", "dataset_ids": [ds.id]}, headers=keys["curator"]
    )
    assert r.json()["state"] == "fulfilled" and r.json()["fulfilled_dataset_ids"] == [ds.id]
    hist = client.get(f"/v1/lifecycle/demand/{demand['id']}/history", headers=bank).json()
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in hist] == [
        (None, "submitted", "demand filed"),
        ("submitted", "accepted", "utilities feed is planned"),
        ("accepted", "fulfilled", "dataset loaded"),
    ]
    r = client.post(url + "/cancel", json={"reason": "r"}, headers=bank)
    assert r.status_code == 409 and "final" in problem(r)["detail"]


def test_demands_are_scoped_to_their_institution(
    db: Database, client: TestClient, keys: dict[str, dict[str, str]], bank: dict[str, str]
) -> None:
    mine = client.post("/v1/demands", json=DEMAND, headers=bank).json()
    other_bank = bearer(principal_key(db, "institution"))
    theirs = client.post("/v1/demands", json={"title": "其他需求"}, headers=other_bank).json()
    listed = [d["id"] for d in client.get("/v1/demands", headers=bank).json()]
    assert mine["id"] in listed and theirs["id"] not in listed
    assert problem(client.get(f"/v1/demands/{theirs['id']}", headers=bank))["status"] == 404
    assert (
        problem(client.post(f"/v1/demands/{theirs['id']}/cancel", json={"reason": "r"}, headers=bank))[
            "status"
        ]
        == 404
    )
    assert problem(client.get(f"/v1/lifecycle/demand/{theirs['id']}/history", headers=bank))["status"] == 404
    operator_ids = [d["id"] for d in client.get("/v1/demands", headers=keys["auditor"]).json()]
    assert {mine["id"], theirs["id"]} <= set(operator_ids)
    # the filer may withdraw its own submitted demand
    r = client.post(f"/v1/demands/{mine['id']}/cancel", json={"reason": "no longer needed"}, headers=bank)
    assert r.json()["state"] == "cancelled"
    dept = bearer(principal_key(db, "department", supplier_id="test-dept"))
    assert problem(client.post("/v1/demands", json=DEMAND, headers=dept))["status"] == 403


def test_bad_demand_lists_every_problem(
    db: Database, client: TestClient, bank: dict[str, str], keys: dict[str, dict[str, str]]
) -> None:
    with db.unit_of_work() as s:
        ensure_department(s)
    r = client.post(
        "/v1/demands",
        json={"title": "", "purposes": ["gambling"], "wanted_departments": ["Bad Dept"]},
        headers=bank,
    )
    body = problem(r)
    assert r.status_code == 422
    assert {e["location"] for e in body["errors"]} == {
        "body.title",
        "body.purposes.0",
        "body.wanted_departments.0",
    }
    r = client.post("/v1/demands", json={"title": "t", "wanted_departments": ["no-such-dept"]}, headers=bank)
    assert problem(r)["status"] == 422 and "no supplier 'no-such-dept'" in r.json()["detail"]
    before = client.get("/v1/demands", headers=bank).json()
    assert before == []
    r = client.post("/v1/demands/999999999/decline", json={"reason": "r"}, headers=keys["curator"])
    assert problem(r)["status"] == 404
