"""RFC 8414 metadata passes Authlib's own validator; the JWKS holds the signing keys from start-up;
RS256 can be enabled beside ES256 and a client verifies such a token against the published keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from fastapi.testclient import TestClient
from joserfc import jws, jwt
from joserfc.jwk import KeySet
from pydantic import ValidationError

from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import keys
from tests.conftest import fresh_database
from tests.oauth.conftest import CONTRACTED, ISSUER, Institution, new_client, oauth_app, token_request


def test_metadata_passes_authlibs_rfc_8414_validation(api: TestClient, synthetic_zone: dict[str, Any]) -> None:
    doc = api.get("/.well-known/oauth-authorization-server").json()
    AuthorizationServerMetadata(doc).validate()  # raises ValueError naming the first bad member
    # a client-credentials-only server: no authorization endpoint, so its response types are "none"
    assert doc["response_types_supported"] == ["none"]
    assert "authorization_endpoint" not in doc
    for endpoint in ("token", "revocation", "introspection"):
        assert "private_key_jwt" in doc[f"{endpoint}_endpoint_auth_methods_supported"]
        assert doc[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert doc["issuer"] == ISSUER


def test_jwks_holds_the_signing_key_before_any_token(database_url: str, oauth_settings: Settings) -> None:
    # a zone of its own: no key has ever been made in it
    with fresh_database(database_url) as fresh:
        with TestClient(oauth_app(fresh, oauth_settings)) as api:
            published = api.get("/oauth/jwks.json").json()["keys"]
            assert [(k["alg"], k["kty"], k["use"]) for k in published] == [("ES256", "EC", "sig")]
            assert "d" not in published[0]  # the public half only
        # a second start finds the key and makes no other
        with TestClient(oauth_app(fresh, oauth_settings)) as api:
            assert api.get("/oauth/jwks.json").json()["keys"] == published


def test_rs256_beside_es256(db: Database, oauth_settings: Settings, institution: Institution) -> None:
    both = oauth_settings.model_copy(update={"oauth_signing_algs": "RS256,ES256"})
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    with TestClient(oauth_app(db, both)) as api:
        published = api.get("/oauth/jwks.json").json()
        assert {"RS256", "ES256"} <= {k["alg"] for k in published["keys"]}
        answer = token_request(api, client_id, secret)
        assert answer.status_code == 200, answer.text
        access_token = answer.json()["access_token"]
        header = jws.extract_compact(access_token.encode()).headers()
        assert header["alg"] == "RS256" and header["typ"] == "at+jwt"
        # a client verifies it with the published keys alone, RS256 only
        claims = jwt.decode(access_token, KeySet.import_key_set(published), algorithms=["RS256"]).claims
        assert claims["iss"] == ISSUER and claims["client_id"] == client_id
        # and the gateway takes it for a product call
        listed = api.get("/v1/products", headers={"Authorization": f"Bearer {access_token}"})
        assert listed.status_code == 200, listed.text
        assert {p["id"] for p in listed.json()} == set(CONTRACTED)
    # back on ES256 only: tokens are ES256, the RS256 key is retired, and its token still verifies
    # until it expires (the key stays published that long)
    with TestClient(oauth_app(db, oauth_settings)) as api:
        es = token_request(api, client_id, secret).json()["access_token"]
        assert jws.extract_compact(es.encode()).headers()["alg"] == "ES256"
        still = api.get("/v1/products", headers={"Authorization": f"Bearer {access_token}"})
        assert still.status_code == 200
        assert header["kid"] in {k["kid"] for k in api.get("/oauth/jwks.json").json()["keys"]}
    with db.unit_of_work() as s:
        rs_key = s.get(keys.SigningKey, header["kid"])
        assert rs_key is not None and rs_key.retires_at is not None
        later = keys.published_keys(s, at=rs_key.retires_at + timedelta(seconds=1))
        assert later and {k.alg for k in later} == {"ES256"}


def test_signing_algs_setting_is_checked(oauth_settings: Settings) -> None:
    assert Settings(oauth_signing_algs=" ES256 , RS256").signing_algs == ["ES256", "RS256"]
    for bad in ("HS256", "", "ES256,none"):
        with pytest.raises(ValidationError, match="ES256 and/or RS256"):
            Settings(oauth_signing_algs=bad)
