"""Contracts through the HTTP API: only curators sign, institutions see only their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.contract.models import Contract
from datazone.db import Database
from tests.conftest import problem
from tests.factories import bearer
from tests.grant.builders import Parties, committed_parties, days, now, table_count

pytestmark = pytest.mark.usefixtures("catalog")


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(db=db, settings=settings)) as c:
        yield c


@pytest.fixture
def p(db: Database) -> Parties:
    return committed_parties(db)


def body(institution_id: int, **kw: object) -> dict[str, object]:
    return {
        "institution_id": institution_id,
        "purposes": ["pre_loan"],
        "products": ["credit-basic"],
        "valid_from": (now() - days(1)).isoformat(),
        "valid_to": (now() + days(365)).isoformat(),
        **kw,
    }


def test_curator_signs_suspends_and_terminates(client: TestClient, p: Parties) -> None:
    cur = bearer(p.tokens["curator"])
    r = client.post("/v1/contracts", json=body(p.bank1.id, clearance=3), headers=cur)
    assert r.status_code == 201, r.text
    c = r.json()
    assert (c["status"], c["clearance"], c["max_batch"]) == ("active", 3, 1000)
    r = client.post(f"/v1/contracts/{c['id']}/suspend", json={"reason": "unpaid"}, headers=cur)
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    r = client.post(f"/v1/contracts/{c['id']}/terminate", json={"reason": "ended"}, headers=cur)
    assert r.json()["status"] == "terminated"
    r = client.post(f"/v1/contracts/{c['id']}/suspend", json={"reason": "x"}, headers=cur)
    assert r.status_code == 409 and "terminated is final" in problem(r)["detail"]
    r = client.post(f"/v1/contracts/{c['id']}/suspend", json={"reason": ""}, headers=cur)
    assert r.status_code == 422


def test_only_a_curator_signs_contracts(client: TestClient, p: Parties) -> None:
    db = client.app.state.db
    for who, detail in (
        ("reviewer", "this needs an operator with the role curator; you are reviewer"),
        ("auditor", "this needs an operator with the role curator; you are auditor"),
        ("bank1", "this needs an operator with the role curator; you are institution"),
        ("dept_a_user", "this needs an operator with the role curator; you are department"),
    ):
        r = client.post("/v1/contracts", json=body(p.bank1.id), headers=bearer(p.tokens[who]))
        assert r.status_code == 403 and problem(r)["detail"] == detail
    assert table_count(db, Contract, Contract.institution_id == p.bank1.id) == 0


def test_bad_contracts_list_every_problem(client: TestClient, p: Parties) -> None:
    r = client.post(
        "/v1/contracts",
        json=body(p.dept_a_user.id, purposes=["lottery"], products=["no-such"], clearance=0),
        headers=bearer(p.tokens["curator"]),
    )
    assert r.status_code == 422
    assert {e["location"] for e in problem(r)["errors"]} == {
        "institution_id",
        "purposes[0]",
        "products",
        "clearance",
    }
    assert table_count(client.app.state.db, Contract, Contract.institution_id == p.dept_a_user.id) == 0


def test_an_institution_sees_only_its_own_contracts(client: TestClient, p: Parties) -> None:
    cur = bearer(p.tokens["curator"])
    c1 = client.post("/v1/contracts", json=body(p.bank1.id), headers=cur).json()
    c2 = client.post("/v1/contracts", json=body(p.bank2.id), headers=cur).json()
    b1 = bearer(p.tokens["bank1"])
    assert [c["id"] for c in client.get("/v1/contracts", headers=b1).json()] == [c1["id"]]
    # asking for another institution's contracts does not widen the view
    assert [
        c["id"] for c in client.get("/v1/contracts", params={"institution_id": p.bank2.id}, headers=b1).json()
    ] == [c1["id"]]
    r = client.get(f"/v1/contracts/{c2['id']}", headers=b1)
    assert r.status_code == 404 and problem(r)["detail"] == f"no contract {c2['id']}"
    assert client.get(f"/v1/contracts/{c1['id']}", headers=b1).status_code == 200
    r = client.post(f"/v1/contracts/{c1['id']}/suspend", json={"reason": "x"}, headers=b1)
    assert r.status_code == 403
    r = client.get("/v1/contracts", headers=bearer(p.tokens["dept_a_user"]))
    assert r.status_code == 403 and "a department sees none" in problem(r)["detail"]
    auditor_view = {c["id"] for c in client.get("/v1/contracts", headers=bearer(p.tokens["auditor"])).json()}
    assert {c1["id"], c2["id"]} <= auditor_view
