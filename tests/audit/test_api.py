"""The audit API on a real database: least-privilege views, proofs, verification, problem+json."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.audit import chain, service
from datazone.config import Settings
from datazone.db import Database
from datazone.principal import service as principal_service
from tests.conftest import problem
from tests.factories import bearer, ensure_department, principal_key


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]  # who -> bearer token
    ids: dict[str, int]  # entry name -> id
    dept_a: str
    dept_b: str
    bank_x: int
    bank_y: int
    bank_x_name: str

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, headers=bearer(self.keys[who]), params=params)


def seal_all(db: Database) -> None:
    while True:
        with db.unit_of_work() as s:
            if service.seal_pending(s, max_entries=5000) is None:
                return


@pytest.fixture
def world(audit_db: Database, audit_settings: Settings) -> Iterator[World]:
    tag = secrets.token_hex(3)
    dept_a, dept_b = f"dept-a-{tag}", f"dept-b-{tag}"
    with audit_db.unit_of_work() as s:
        ensure_department(s, dept_a)
        ensure_department(s, dept_b)
    names = {"x": f"bank-x-{tag}", "y": f"bank-y-{tag}"}
    keys = {
        "auditor": principal_key(audit_db, "operator", roles=["auditor"]),
        "curator": principal_key(audit_db, "operator", roles=["curator", "reviewer"]),
        "a": principal_key(audit_db, "department", supplier_id=dept_a),
        "b": principal_key(audit_db, "department", supplier_id=dept_b),
        "x": principal_key(audit_db, "institution", name=names["x"]),
        "y": principal_key(audit_db, "institution", name=names["y"]),
    }
    ids: dict[str, int] = {}
    with audit_db.unit_of_work() as s:
        x = principal_service.find_principal(s, name=names["x"])
        y = principal_service.find_principal(s, name=names["y"])
        assert x is not None and y is not None

        def rec(name: str, **kw: Any) -> None:
            ids[name] = service.record(s, **kw).id

        rec(
            "grant_a",
            actor=None,
            action="grant.create",
            object_type="grant",
            object_id="g-a",
            supplier_ids=[dept_a],
        )
        rec(
            "grant_b",
            actor=None,
            action="grant.create",
            object_type="grant",
            object_id="g-b",
            supplier_ids=[dept_b],
        )
        rec(
            "use_x",
            actor=x,
            action=service.DATA_ACCESS,
            object_type="product",
            object_id="risk-insight",
            purpose="pre_loan",
            entities=["E1", "E2", "E3"],
            supplier_ids=[dept_a, dept_b],
        )
        rec(
            "use_y",
            actor=y,
            action=service.DATA_ACCESS,
            object_type="product",
            object_id="credit-basic",
            purpose="anti_fraud",
            outcome="refused",
            reason="no grant",
            entity_count=1,
            supplier_ids=[dept_b],
        )
        rec("consent_x", actor=x, action="consent.register", object_type="consent", object_id="c-1")
        bank_x, bank_y = x.id, y.id
    seal_all(audit_db)
    with audit_db.unit_of_work() as s:
        ids["pending"] = service.record(
            s, actor=None, action="grant.revoke", object_type="grant", object_id="g-a", supplier_ids=[dept_a]
        ).id
    with TestClient(create_app(db=audit_db, settings=audit_settings)) as client:
        yield World(client, keys, ids, dept_a, dept_b, bank_x, bank_y, names["x"])


def entry_ids(resp: Any) -> set[int]:
    assert resp.status_code == 200, resp.text
    return {e["id"] for e in resp.json()}


def test_each_principal_sees_only_its_own_part(world: World) -> None:
    i = world.ids
    mine = set(i.values())
    assert mine <= entry_ids(world.get("auditor", "/v1/audit/entries"))
    assert entry_ids(world.get("a", "/v1/audit/entries")) & mine == {i["grant_a"], i["use_x"], i["pending"]}
    assert entry_ids(world.get("b", "/v1/audit/entries")) & mine == {i["grant_b"], i["use_x"], i["use_y"]}
    assert entry_ids(world.get("x", "/v1/audit/entries")) & mine == {i["use_x"], i["consent_x"]}
    assert entry_ids(world.get("y", "/v1/audit/entries")) & mine == {i["use_y"]}
    for e in world.get("x", "/v1/audit/entries").json():
        assert e["institution_id"] == world.bank_x
    # nothing of another department's shows, whatever else the trail holds
    for e in world.get("a", "/v1/audit/entries").json():
        assert world.dept_a in e["supplier_ids"]


def test_filters_and_pagination(world: World) -> None:
    i = world.ids
    grants = entry_ids(world.get("a", "/v1/audit/entries", action="grant.create"))
    assert grants == {i["grant_a"]}
    # other domains may audit the setup too: page through everything B sees and compare
    whole = [e["id"] for e in world.get("b", "/v1/audit/entries", limit=1000).json()]
    assert whole == sorted(whole, reverse=True)  # newest first
    assert [i["use_y"], i["use_x"], i["grant_b"]] == [e for e in whole if e in set(i.values())]
    paged: list[int] = []
    before: int | None = None
    while True:
        page = world.get(
            "b", "/v1/audit/entries", limit=2, **({"before_id": before} if before else {})
        ).json()
        assert len(page) <= 2
        paged += [e["id"] for e in page]
        if len(page) < 2:
            break
        before = paged[-1]  # the next page starts below the last id received
    assert paged == whole
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert entry_ids(world.get("x", "/v1/audit/entries", since=future)) == set()
    sealed = {e["id"]: e for e in world.get("x", "/v1/audit/entries").json()}
    assert sealed[i["use_x"]]["block_height"] is not None and sealed[i["use_x"]]["block_position"] is not None


def test_refused_views_are_problem_json(world: World) -> None:
    for path in ("/v1/audit/entries", "/v1/audit/uses", f"/v1/audit/entries/{world.ids['use_x']}/proof"):
        resp = world.get("curator", path)
        assert resp.status_code == 403
        assert "role auditor" in problem(resp)["detail"]
    anonymous = world.client.get("/v1/audit/blocks")
    assert anonymous.status_code == 401 and problem(anonymous)["type"].endswith("/unauthorized")


def test_bad_query_lists_every_problem(world: World) -> None:
    resp = world.get("a", "/v1/audit/entries", since="2026-11-21T00:00:00", until="2026-11-20T00:00:00")
    body = problem(resp)
    assert resp.status_code == 422 and body["type"].endswith("/invalid-spec")
    locations = {e["location"] for e in body["errors"]}
    assert locations == {"since", "until"}
    assert "timezone offset" in body["detail"]
    backwards = world.get("a", "/v1/audit/uses", since="2026-11-21T00:00:00Z", until="2026-11-20T00:00:00Z")
    assert backwards.status_code == 422 and "must be before until" in problem(backwards)["detail"]
    too_many = world.get("a", "/v1/audit/entries", limit=0)
    assert too_many.status_code == 422 and problem(too_many)["errors"][0]["location"] == "query.limit"


def test_uses_show_who_when_what_how_many_and_why(world: World) -> None:
    uses_a = world.get("a", "/v1/audit/uses").json()
    assert [u["entry_id"] for u in uses_a] == [world.ids["use_x"]]
    (u,) = uses_a
    assert u["institution"] == world.bank_x_name and u["institution_id"] == world.bank_x
    assert (u["product_id"], u["entity_count"], u["purpose"], u["outcome"]) == (
        "risk-insight",
        3,
        "pre_loan",
        "ok",
    )
    # department B sees every use of its data, refused ones included, by both banks
    uses_b = world.get("b", "/v1/audit/uses").json()
    assert [(u["entry_id"], u["outcome"]) for u in uses_b] == [
        (world.ids["use_y"], "refused"),
        (world.ids["use_x"], "ok"),
    ]
    # each bank only its own calls
    assert [u["entry_id"] for u in world.get("x", "/v1/audit/uses").json()] == [world.ids["use_x"]]
    assert [u["entry_id"] for u in world.get("y", "/v1/audit/uses").json()] == [world.ids["use_y"]]
    only = world.get("b", "/v1/audit/uses", product_id="credit-basic").json()
    assert [u["entry_id"] for u in only] == [world.ids["use_y"]]
    old = world.get("b", "/v1/audit/uses", until=(datetime.now(UTC) - timedelta(days=1)).isoformat()).json()
    assert old == []


def test_proofs_are_scoped_and_check_out_against_published_roots(world: World) -> None:
    blocks = world.get("y", "/v1/audit/blocks").json()  # any principal reads the roots
    published = {b["height"]: b["block_hash"] for b in blocks}
    resp = world.get("a", f"/v1/audit/entries/{world.ids['use_x']}/proof")
    assert resp.status_code == 200, resp.text
    proof = resp.json()
    assert proof["entry"]["id"] == world.ids["use_x"]
    assert chain.verify_proof(proof, published_block_hash=published[proof["block"]["height"]])

    hidden = world.get("a", f"/v1/audit/entries/{world.ids['grant_b']}/proof")
    assert hidden.status_code == 404 and problem(hidden)["entry_id"] == world.ids["grant_b"]
    other_bank = world.get("x", f"/v1/audit/entries/{world.ids['use_y']}/proof")
    absent = world.get("x", "/v1/audit/entries/999999999/proof")
    # another's entry looks exactly like one that does not exist
    assert other_bank.status_code == absent.status_code == 404
    assert problem(other_bank)["title"] == problem(absent)["title"]

    waiting = world.get("a", f"/v1/audit/entries/{world.ids['pending']}/proof")
    body = problem(waiting)
    assert waiting.status_code == 409 and body["type"].endswith("/audit-entry-not-sealed")
    assert "ask again shortly" in body["detail"]


def test_verify_is_for_auditors(world: World) -> None:
    resp = world.get("auditor", "/v1/audit/verify")
    assert resp.status_code == 200
    report = resp.json()
    assert report["ok"] is True and report["first_bad_block"] is None
    assert report["entries_checked"] >= 5 and report["unsealed_entries"] >= 1
    for who in ("curator", "a", "x"):
        refused = world.get(who, "/v1/audit/verify")
        assert refused.status_code == 403 and "auditor" in problem(refused)["detail"]


def test_blocks_page_by_height(world: World) -> None:
    everything = world.get("x", "/v1/audit/blocks").json()
    assert [b["height"] for b in everything] == list(range(len(everything)))
    assert everything[0]["prev_hash"] == "00" * 32
    tail = world.get("x", "/v1/audit/blocks", from_height=len(everything) - 1, limit=1).json()
    assert tail == everything[-1:]


def test_verify_against_published_roots_over_http(world: World) -> None:
    roots = world.get("b", "/v1/audit/blocks").json()
    auditor = bearer(world.keys["auditor"])
    ok = world.client.post("/v1/audit/verify", headers=auditor, json=roots)
    assert ok.status_code == 200 and ok.json()["ok"] and ok.json()["roots_checked"] == len(roots)
    forged = [{**roots[0], "block_hash": "ab" * 32}, *roots[1:]]
    caught = world.client.post("/v1/audit/verify", headers=auditor, json=forged).json()
    assert (caught["ok"], caught["first_bad_block"]) == (False, 0)
    assert "differs from the published root" in caught["problem"]
    bad = world.client.post("/v1/audit/verify", headers=auditor, json=[{"height": "x"}, roots[0], roots[0]])
    body = problem(bad)
    assert bad.status_code == 422
    locations = {e["location"] for e in body["errors"]}
    assert {"roots[0].height", "roots[0].block_hash", "roots"} <= locations  # all listed, duplicates too
    refused = world.client.post("/v1/audit/verify", headers=bearer(world.keys["a"]), json=roots)
    assert refused.status_code == 403
