"""RFC 7662 introspection: a client sees its own institution's live tokens, nothing else."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from datazone.config import Settings
from datazone.db import Database
from datazone.principal import service as principal_service
from tests.oauth.conftest import ISSUER, Institution, new_client, oauth_app, token_request


def test_introspection(
    api: TestClient, db: Database, institution: Institution, synthetic_zone: dict[str, Any]
) -> None:
    client_id, secret = new_client(db, institution.id)
    sibling_id, sibling_secret = new_client(db, institution.id)
    assert secret is not None and sibling_secret is not None
    token = token_request(api, client_id, secret, "product:credit-basic").json()["access_token"]

    # a sibling client of the same institution may introspect it
    seen = api.post("/oauth/introspect", data={"token": token}, auth=(sibling_id, sibling_secret)).json()
    assert seen["active"] is True
    assert seen["client_id"] == client_id
    assert seen["scope"] == "product:credit-basic"
    assert seen["institution_id"] == institution.id
    assert seen["iss"] == ISSUER and seen["aud"] == "datazone-products"
    assert seen["exp"] - seen["iat"] == 300

    # another institution's client learns nothing about it
    with db.unit_of_work() as s:
        bank = principal_service.find_principal(s, name=synthetic_zone["institution"])
        assert bank is not None
        bank_id = bank.id
    other_id, other_secret = new_client(db, bank_id)
    assert other_secret is not None
    foreign = api.post("/oauth/introspect", data={"token": token}, auth=(other_id, other_secret))
    assert foreign.status_code == 200 and foreign.json() == {"active": False}
    # nor can it revoke it: 200 per RFC 7009, and the token stays active
    assert api.post("/oauth/revoke", data={"token": token}, auth=(other_id, other_secret)).status_code == 200
    assert (
        api.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret)).json()["active"]
        is True
    )

    for junk in ("not-a-token", token[:-4] + "AAAA"):
        assert api.post("/oauth/introspect", data={"token": junk}, auth=(client_id, secret)).json() == {
            "active": False
        }
    missing = api.post("/oauth/introspect", data={}, auth=(client_id, secret))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    unauthenticated = api.post("/oauth/introspect", data={"token": token})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "invalid_client"

    assert api.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret)).status_code == 200
    assert api.post("/oauth/introspect", data={"token": token}, auth=(sibling_id, sibling_secret)).json() == {
        "active": False
    }


def test_expired_token_is_inactive(db: Database, oauth_settings: Settings, institution: Institution) -> None:
    # 4 s: long enough for the first introspection on a loaded machine, short enough to wait out
    short = oauth_settings.model_copy(update={"oauth_token_seconds": 4})
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    with TestClient(oauth_app(db, short)) as c:
        token = token_request(c, client_id, secret).json()["access_token"]
        first = c.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret)).json()
        assert first["active"]
        time.sleep(max(0.0, first["exp"] - time.time()) + 1.1)
        # the issuer answers without the resource check's clock-skew leeway
        resp = c.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret))
        assert resp.json() == {"active": False}
