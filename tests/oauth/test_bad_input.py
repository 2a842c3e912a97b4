"""The token endpoint and the product routes under input that used to answer 500 (issue 12):
a refusal reason in Chinese, Basic credentials that are not UTF-8, a NUL in a batch."""

from __future__ import annotations

import base64
import json

import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.access import gates
from datazone.contract import service as contract_service
from datazone.contract.models import Contract
from datazone.db import Database
from datazone.demo.setup import DEMO_OPERATOR
from datazone.errors import InvalidUscc
from datazone.principal import service as principal_service
from tests.conftest import problem
from tests.oauth.conftest import Institution, new_client, token_request

REASON = "欠费未结清，暂停服务"  # "fees unpaid, service suspended": how an operator here writes it
RFC6749_ERROR_TEXT = {chr(c) for c in (0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F))}


def _suspend_contract(db: Database, institution: Institution, reason: str) -> None:
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name=DEMO_OPERATOR)
        assert operator is not None
        contract_id = s.scalars(sa.select(Contract.id).where(Contract.institution_id == institution.id)).one()
        contract_service.suspend_contract(s, contract_id=contract_id, by=operator, reason=reason)


def test_a_chinese_refusal_reason_is_invalid_scope_not_500(
    api: TestClient, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    _suspend_contract(db, institution, REASON)
    for scope in ("product:credit-basic", None):
        resp = token_request(api, client_id, secret, scope)
        assert resp.status_code == 400, resp.text
        body = resp.json()
        assert body["error"] == "invalid_scope"
        # RFC 6749 section 5.2: the description is restricted ASCII; the reason as written rides along
        assert set(body["error_description"]) <= RFC6749_ERROR_TEXT, body["error_description"]
        assert "suspended" in body["error_description"]
        assert REASON in body["error_detail"]


def test_basic_credentials_that_are_not_utf8_are_invalid_client(api: TestClient) -> None:
    for raw in (b"\xff\xfe:\xff", b"dzc_\x80abc:secret"):
        header = "Basic " + base64.b64encode(raw).decode()
        resp = api.post("/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": header})
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"] == "invalid_client"
    # bytes that are not even base64 (latin-1 in the header) are refused the same way
    resp = api.post(
        "/oauth/token",
        content=b"grant_type=client_credentials",
        headers={"Authorization": b"Basic \xe9t\xe9", "content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    # an unknown client id quoting characters the description may not hold
    odd = "Basic " + base64.b64encode('客户"端\\:x'.encode()).decode()
    resp = api.post("/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": odd})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert set(resp.json()["error_description"]) <= RFC6749_ERROR_TEXT


def test_a_nul_in_a_batch_is_refused_and_nothing_breaks(
    api: TestClient, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    token = token_request(api, client_id, secret, "product:credit-basic").json()["access_token"]
    resp = api.post(
        "/v1/products/credit-basic/enterprises",
        content=json.dumps({"purpose": "pre_loan", "usccs": ["9111010102678485\u0000X"]}).encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    assert resp.status_code == 422 and problem(resp)["type"].endswith("/nul-character")
    # the same request without the NUL is answered: the token and connection are fine
    ok = api.post(
        "/v1/products/credit-basic/enterprises",
        json={"purpose": "pre_loan", "usccs": ["9111010102678485X"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 422 and problem(ok)["title"] == "Not a valid unified social credit code"


def test_a_refusal_quoting_a_nul_is_still_audited(db: Database, institution: Institution) -> None:
    # what reached refusal auditing with a NUL used to fail inside it, so the refusal went unrecorded
    with db.unit_of_work() as s:
        caller = principal_service.find_principal(s, name=institution.name)
        gates.record_refusal(
            s,
            caller=caller,
            product_id="credit-basic",
            usccs=["9111010102678485\u0000X"],
            purpose="pre_loan",
            error=InvalidUscc("not a valid unified social credit code: '9111010102678485\u0000X'"),
        )
    with db.engine.connect() as conn:
        entities, detail = conn.execute(
            sa.text(
                "SELECT entities, detail FROM audit_entry WHERE institution_id = :i AND outcome = 'refused'"
                " ORDER BY id DESC LIMIT 1"
            ),
            {"i": institution.id},
        ).one()
    assert entities == ["9111010102678485\ufffdX"]
    assert "9111010102678485\ufffdX" in detail["detail"]
