"""Consents through the HTTP API: institutions register and see only their own."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.consent.models import Consent
from datazone.db import Database
from tests.conftest import problem
from tests.factories import bad_check, bearer, make_uscc
from tests.grant.builders import Parties, committed_parties, days, now, table_count

pytestmark = pytest.mark.usefixtures("catalog")
EVIDENCE = hashlib.sha256(b"letter").hexdigest()


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(db=db, settings=settings)) as c:
        yield c


@pytest.fixture
def p(db: Database) -> Parties:
    return committed_parties(db)


def consent(n: int, **kw: object) -> dict[str, object]:
    return {
        "uscc": make_uscc(n),
        "purpose": "pre_loan",
        "valid_from": (now() - days(1)).isoformat(),
        "valid_to": (now() + days(90)).isoformat(),
        "evidence_ref": f"oss://letters/{n}.pdf",
        "evidence_sha256": EVIDENCE,
        **kw,
    }


def test_register_one_or_many_and_revoke(client: TestClient, p: Parties) -> None:
    b1 = bearer(p.tokens["bank1"])
    r = client.post("/v1/consents", json=consent(1), headers=b1)
    assert r.status_code == 201 and r.json()["uscc"] == make_uscc(1)  # one object in, one out
    r = client.post("/v1/consents", json=[consent(2), consent(3, products=["risk-insight"])], headers=b1)
    assert r.status_code == 201 and [c["uscc"] for c in r.json()] == [make_uscc(2), make_uscc(3)]
    cid = r.json()[0]["id"]
    r = client.post(f"/v1/consents/{cid}/revoke", json={"reason": "withdrawn"}, headers=b1)
    assert r.status_code == 200 and r.json()["revoke_reason"] == "withdrawn"
    live = client.get("/v1/consents", params={"live": True}, headers=b1).json()
    assert [c["uscc"] for c in live] == [make_uscc(1), make_uscc(3)]


def test_an_invalid_batch_is_refused_whole(client: TestClient, p: Parties) -> None:
    b1 = bearer(p.tokens["bank1"])
    r = client.post(
        "/v1/consents",
        json=[consent(1), consent(2, uscc=bad_check(make_uscc(2))), consent(3, evidence_sha256="0" * 63)],
        headers=b1,
    )
    assert r.status_code == 422
    prob = problem(r)
    assert [(e["index"], e["location"]) for e in prob["errors"]] == [
        (1, "[1].uscc"),
        (2, "[2].evidence_sha256"),
    ]
    assert "check character" in prob["errors"][0]["problem"]
    assert table_count(client.app.state.db, Consent, Consent.institution_id == p.bank1.id) == 0


def test_an_institution_cannot_see_or_revoke_anothers_consents(client: TestClient, p: Parties) -> None:
    db = client.app.state.db
    c2 = client.post("/v1/consents", json=consent(7), headers=bearer(p.tokens["bank2"])).json()
    b1 = bearer(p.tokens["bank1"])
    assert client.get("/v1/consents", headers=b1).json() == []
    assert client.get("/v1/consents", params={"institution_id": p.bank2.id}, headers=b1).json() == []
    r = client.get(f"/v1/consents/{c2['id']}", headers=b1)
    assert r.status_code == 404 and problem(r)["detail"] == f"no consent {c2['id']}"
    r = client.post(f"/v1/consents/{c2['id']}/revoke", json={"reason": "x"}, headers=b1)
    assert r.status_code == 404
    assert table_count(db, Consent, Consent.id == c2["id"], Consent.revoked_at.is_(None)) == 1
    # departments and non-auditor staff see no consents; auditors see all
    for who in ("dept_a_user", "curator"):
        r = client.get("/v1/consents", headers=bearer(p.tokens[who]))
        assert r.status_code == 403 and "auditors" in problem(r)["detail"]
    seen = client.get(
        "/v1/consents", params={"institution_id": p.bank2.id}, headers=bearer(p.tokens["auditor"])
    )
    assert [c["id"] for c in seen.json()] == [c2["id"]]
    # only institutions register
    r = client.post("/v1/consents", json=consent(8), headers=bearer(p.tokens["dept_a_user"]))
    assert r.status_code == 403 and "only an institution may do this" in problem(r)["detail"]
