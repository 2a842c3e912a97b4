"""Grants through the HTTP API: departments act only on their own data, refusals are problem+json."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from datazone.grant.models import Grant
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


def body(datasets: list[str], **kw: object) -> dict[str, object]:
    return {
        "datasets": datasets,
        "purposes": ["pre_loan"],
        "valid_from": (now() - days(1)).isoformat(),
        "valid_to": (now() + days(30)).isoformat(),
        **kw,
    }


def test_department_grants_lists_and_revokes_its_own(client: TestClient, p: Parties) -> None:
    a = bearer(p.tokens["dept_a_user"])
    r = client.post("/v1/grants", json=body([p.ds_a1], institutions=[p.bank1.id, p.bank2.id]), headers=a)
    assert r.status_code == 201, r.text
    g = r.json()
    assert g["department"] == p.dept_a and g["status"] == "live"
    assert [x["id"] for x in client.get("/v1/grants", headers=a).json()] == [g["id"]]
    # the institution sees that the grant names it, not whom else it names
    seen = client.get(f"/v1/grants/{g['id']}", headers=bearer(p.tokens["bank1"])).json()
    assert seen["institutions"] == [p.bank1.id]
    r = client.post(f"/v1/grants/{g['id']}/revoke", json={"reason": "contract ended"}, headers=a)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert client.get("/v1/grants", params={"live": True}, headers=a).json() == []
    r = client.post(f"/v1/grants/{g['id']}/revoke", json={"reason": "again"}, headers=a)
    assert r.status_code == 409 and "already revoked" in problem(r)["detail"]


def test_a_department_cannot_grant_or_revoke_another_departments_data(client: TestClient, p: Parties) -> None:
    a, b = bearer(p.tokens["dept_a_user"]), bearer(p.tokens["dept_b_user"])
    before = table_count(client.app.state.db, Grant, Grant.department.in_([p.dept_a, p.dept_b]))
    r = client.post("/v1/grants", json=body([p.ds_a1, p.ds_b1]), headers=a)
    assert r.status_code == 403
    prob = problem(r)
    assert f"{p.ds_b1} belongs to {p.dept_b}" in prob["detail"]
    assert prob["datasets"] == [{"dataset": p.ds_b1, "department": p.dept_b}]
    r = client.post("/v1/grants", json=body([p.ds_b1], department=p.dept_b), headers=a)
    assert r.status_code == 403 and f"you act for department {p.dept_a}" in problem(r)["detail"]
    # B's grant: A can neither see nor revoke it (404: its existence does not leak)
    gb = client.post("/v1/grants", json=body([p.ds_b1]), headers=b).json()
    assert client.get(f"/v1/grants/{gb['id']}", headers=a).status_code == 404
    r = client.post(f"/v1/grants/{gb['id']}/revoke", json={"reason": "not mine"}, headers=a)
    assert r.status_code == 404 and problem(r)["detail"] == f"no grant {gb['id']!r}"
    after = table_count(client.app.state.db, Grant, Grant.department.in_([p.dept_a, p.dept_b]))
    assert after == before + 1
    assert table_count(client.app.state.db, Grant, Grant.id == gb["id"], Grant.revoked_at.is_(None)) == 1


def test_institutions_and_operators_cannot_create_or_revoke_grants(client: TestClient, p: Parties) -> None:
    for who in ("bank1", "curator", "auditor"):
        r = client.post("/v1/grants", json=body([p.ds_a1]), headers=bearer(p.tokens[who]))
        assert r.status_code == 403 and "only a department may do this" in problem(r)["detail"]
    assert table_count(client.app.state.db, Grant, Grant.department == p.dept_a) == 0
    assert client.post("/v1/grants", json=body([p.ds_a1])).status_code == 401


def test_bad_grants_get_every_problem_and_nothing_is_written(client: TestClient, p: Parties) -> None:
    a = bearer(p.tokens["dept_a_user"])
    r = client.post(
        "/v1/grants",
        json=body(
            [p.ds_a1, "nope"],
            purposes=["lottery"],
            products=["no-such"],
            valid_to=(now() - days(2)).isoformat(),
        ),
        headers=a,
    )
    assert r.status_code == 422
    prob = problem(r)
    assert prob["type"].endswith("/invalid-grant")
    assert {e["location"] for e in prob["errors"]} == {"datasets", "purposes[0]", "products", "valid_to"}
    r = client.post("/v1/grants", json=body([p.ds_a1], valid_from="2026-01-01T00:00:00"), headers=a)
    assert r.status_code == 422 and problem(r)["type"].endswith("/invalid-request")  # no time zone
    first = client.post("/v1/grants", json=body([p.ds_a1]), headers=a).json()
    r = client.post("/v1/grants", json=body([p.ds_a1, p.ds_a2]), headers=a)
    assert r.status_code == 409
    prob = problem(r)
    assert prob["grant_id"] == first["id"] and prob["overlap"]["datasets"] == [p.ds_a1]
    assert table_count(client.app.state.db, Grant, Grant.department == p.dept_a) == 1
