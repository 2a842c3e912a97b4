"""POST /oauth/token with a real OAuth2 client library against the real gateway (RFC 6749, 7523, 8414, 9068)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.principal import service as principal_service
from tests.oauth.conftest import (
    CONTRACTED,
    ISSUER,
    TOKEN_URL,
    Institution,
    OAuthServer,
    new_client,
    token_request,
)

pytestmark = pytest.mark.e2e
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _scopes(token: dict[str, Any]) -> set[str]:
    return set(token["scope"].split())


def _verify_with_published_keys(srv: OAuthServer, access_token: str) -> jwt.Token:
    published = httpx.get(srv.url + "/oauth/jwks.json").json()
    return jwt.decode(access_token, KeySet.import_key_set(published), algorithms=["ES256"])


def test_metadata_per_rfc_8414(zone_server: OAuthServer, synthetic_zone: dict[str, Any]) -> None:
    doc = httpx.get(zone_server.url + "/.well-known/oauth-authorization-server").json()
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == TOKEN_URL
    assert doc["revocation_endpoint"] == ISSUER + "/oauth/revoke"
    assert doc["introspection_endpoint"] == ISSUER + "/oauth/introspect"
    assert doc["jwks_uri"] == ISSUER + "/oauth/jwks.json"
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "private_key_jwt"}
    assert "ES256" in doc["token_endpoint_auth_signing_alg_values_supported"]
    assert {f"product:{p}" for p in CONTRACTED} <= set(doc["scopes_supported"])


def test_client_secret_basic_gets_rfc_9068_token(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    with OAuth2Client(client_id, secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        token = oauth.fetch_token(zone_server.url + "/oauth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    # no scope asked: every product the contract and the live grants open
    assert _scopes(token) == {f"product:{p}" for p in CONTRACTED}
    decoded = _verify_with_published_keys(zone_server, token["access_token"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["alg"] == "ES256"
    assert decoded.header["kid"] in {
        k["kid"] for k in httpx.get(zone_server.url + "/oauth/jwks.json").json()["keys"]
    }
    c = decoded.claims
    assert c["iss"] == ISSUER
    assert c["aud"] == "datazone-products"
    assert c["sub"] == client_id and c["client_id"] == client_id
    assert c["institution_id"] == institution.id
    assert c["exp"] - c["iat"] == 300
    assert abs(c["iat"] - time.time()) < 30
    assert set(c["scope"].split()) == _scopes(token)
    assert len(c["jti"]) >= 16


def test_private_key_jwt_with_client_library(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "bank-key-1"})
    client_id, secret = new_client(
        db, institution.id, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    assert secret is None
    auth = PrivateKeyJWT(TOKEN_URL, alg="ES256", headers={"kid": "bank-key-1"})
    with OAuth2Client(client_id, key, token_endpoint_auth_method=auth) as oauth:
        token = oauth.fetch_token(
            zone_server.url + "/oauth/token", grant_type="client_credentials", scope="product:credit-basic"
        )
    assert _scopes(token) == {"product:credit-basic"}
    claims = _verify_with_published_keys(zone_server, token["access_token"]).claims
    assert claims["client_id"] == client_id and claims["institution_id"] == institution.id


def _assertion_post(srv: OAuthServer, assertion: str, **extra: str) -> httpx.Response:
    return httpx.post(
        srv.url + "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            **extra,
        },
    )


def test_private_key_jwt_replay_expiry_audience_and_foreign_key(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    key = ECKey.generate_key("P-256")
    client_id, _ = new_client(
        db, institution.id, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )

    assertion = private_key_jwt_sign(key, client_id, TOKEN_URL, alg="ES256", claims={"jti": "once-only-1"})
    first = _assertion_post(zone_server, assertion)
    assert first.status_code == 200, first.text
    replay = _assertion_post(zone_server, assertion)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"
    assert "already used" in replay.json()["error_description"]

    # the issuer itself is an accepted audience too
    by_issuer = private_key_jwt_sign(key, client_id, ISSUER, alg="ES256")
    assert _assertion_post(zone_server, by_issuer).status_code == 200

    now = int(time.time())
    expired = private_key_jwt_sign(
        key, client_id, TOKEN_URL, alg="ES256", claims={"iat": now - 600, "exp": now - 300}
    )
    resp = _assertion_post(zone_server, expired)
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert "expired" in resp.json()["error_description"]

    elsewhere = private_key_jwt_sign(key, client_id, "https://other.example/token", alg="ES256")
    resp = _assertion_post(zone_server, elsewhere)
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"

    stranger = ECKey.generate_key("P-256")
    forged = private_key_jwt_sign(stranger, client_id, TOKEN_URL, alg="ES256")
    resp = _assertion_post(zone_server, forged)
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"

    too_long = private_key_jwt_sign(key, client_id, TOKEN_URL, alg="ES256", claims={"exp": now + 86_400})
    resp = _assertion_post(zone_server, too_long)
    assert resp.status_code == 401 and "too long" in resp.json()["error_description"]


def test_scopes_follow_contract_and_live_grants(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    with httpx.Client(base_url=zone_server.url) as http:
        one = token_request(http, client_id, secret, "product:credit-basic")
        assert one.status_code == 200 and one.json()["scope"] == "product:credit-basic"

        outside = token_request(http, client_id, secret, "product:credit-basic product:admission-analysis")
        assert outside.status_code == 400
        body = outside.json()
        assert body["error"] == "invalid_scope"
        assert "product:admission-analysis" in body["error_description"]
        assert "contract" in body["error_description"]
        assert "product:credit-basic refused" not in body["error_description"]

        for bad in ("product:no-such-product", "admin", "product:"):
            resp = token_request(http, client_id, secret, bad)
            assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope", bad
            assert bad in resp.json()["error_description"]

        # a department withdraws its grant: the product that needs its data is no longer obtainable
        court = next(
            d
            for d in institution.departments_of["risk-insight"]
            if d not in institution.departments_of["credit-basic"]
        )
        with db.unit_of_work() as s:
            dept = principal_service.find_principal(s, name=f"demo-{court}")
            assert dept is not None
            grant_service.revoke_grant(
                s, grant_id=institution.grants[court], by=dept, reason="test: withdrawn"
            )
        refused = token_request(http, client_id, secret, "product:risk-insight")
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
        assert "revoked" in refused.json()["error_description"]
        everything = token_request(http, client_id, secret)
        assert everything.status_code == 200
        assert "product:risk-insight" not in everything.json()["scope"].split()
        assert "product:credit-basic" in everything.json()["scope"].split()


def test_wrong_secret_unknown_client_and_no_credentials(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    with httpx.Client(base_url=zone_server.url) as http:
        wrong = token_request(http, client_id, secret[:-2] + "xx")
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        unknown = token_request(http, "dzc_nobody", secret)
        assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
        bare = http.post("/oauth/token", data={"grant_type": "client_credentials"})
        assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"
        other_grant = http.post("/oauth/token", data={"grant_type": "password"}, auth=(client_id, secret))
        assert other_grant.status_code == 400 and other_grant.json()["error"] == "unsupported_grant_type"
        as_json = http.post(
            "/oauth/token", json={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
        assert "x-www-form-urlencoded" in as_json.json()["error_description"]


def test_suspended_institution_and_revoked_client_are_invalid_clients(
    zone_server: OAuthServer, db: Database, institution: Institution
) -> None:
    client_id, secret = new_client(db, institution.id)
    other_id, other_secret = new_client(db, institution.id)
    assert secret is not None and other_secret is not None
    with httpx.Client(base_url=zone_server.url) as http:
        assert token_request(http, client_id, secret).status_code == 200
        revoked = http.post(
            f"/v1/clients/{client_id}/revoke",
            json={"reason": "app retired"},
            headers={"Authorization": f"Bearer {institution.key}"},
        )
        assert revoked.status_code == 200, revoked.text
        resp = token_request(http, client_id, secret)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
        assert "revoked" in resp.json()["error_description"]

        with db.unit_of_work() as s:
            principal_service.suspend_principal(s, name=institution.name, reason="test: licence review")
        resp = token_request(http, other_id, other_secret)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
        assert "suspended" in resp.json()["error_description"]
