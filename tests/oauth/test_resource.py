"""authenticate_access_token / require_scope: every way a token can be wrong, revocation on every replica."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import keys
from datazone.oauth.resource import (
    InsufficientScope,
    InvalidToken,
    authenticate_access_token,
    require_scope,
)
from datazone.principal import service as principal_service
from tests.oauth.conftest import ISSUER, Institution, OAuthServer, new_client, token_request


def _token(
    api: Any, db: Database, institution: Institution, scope: str | None = None
) -> tuple[str, str, str]:
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    resp = token_request(api, client_id, secret, scope)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"], client_id, secret


def _sign_with_zone_key(session: Session, settings: Settings, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the zone's real current key, for claims a correct issuer never writes."""
    row = keys.current_signing_key(session, settings)
    key = keys.private_key(row, settings)
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": row.kid} | header, claims, key)


def _good_claims(client_id: str, institution_id: int, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": "datazone-products",
        "sub": client_id,
        "client_id": client_id,
        "institution_id": institution_id,
        "scope": "product:credit-basic",
        "jti": f"test-{now}-{id(over)}",
        "iat": now,
        "exp": now + 300,
    } | over


def test_valid_token_and_scope(
    api: Any, db: Database, session: Session, oauth_settings: Settings, institution: Institution
) -> None:
    token, client_id, _ = _token(api, db, institution, "product:credit-basic")
    grant = authenticate_access_token(session, token=token, settings=oauth_settings)
    assert grant.client_id == client_id
    assert grant.institution.id == institution.id
    assert grant.scopes == frozenset({"product:credit-basic"})
    assert grant.expires_at > datetime.now(UTC)
    require_scope(grant, "credit-basic")
    with pytest.raises(InsufficientScope) as exc:
        require_scope(grant, "risk-insight")
    assert exc.value.status == 403
    assert exc.value.type == "insufficient-scope"
    assert exc.value.extra["oauth_error"] == "insufficient_scope"
    assert "product:risk-insight" in exc.value.detail


def test_expiry_with_30_seconds_leeway(
    api: Any, db: Database, session: Session, oauth_settings: Settings, institution: Institution
) -> None:
    token, _, _ = _token(api, db, institution)
    grant = authenticate_access_token(session, token=token, settings=oauth_settings)
    exp = grant.expires_at
    authenticate_access_token(session, token=token, settings=oauth_settings, now=exp + timedelta(seconds=25))
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(
            session, token=token, settings=oauth_settings, now=exp + timedelta(seconds=31)
        )
    assert "expired" in exc.value.detail
    assert exc.value.status == 401 and exc.value.type == "invalid-token"
    assert exc.value.extra["oauth_error"] == "invalid_token"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example"}, "issued by"),
        ({"exp": int(time.time()) - 120}, "expired"),
    ],
)
def test_wrong_claims_under_a_real_signature(
    db: Database,
    session: Session,
    oauth_settings: Settings,
    institution: Institution,
    change: dict[str, Any],
    says: str,
) -> None:
    client_id, _ = new_client(db, institution.id)
    token = _sign_with_zone_key(session, oauth_settings, _good_claims(client_id, institution.id, **change))
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=token, settings=oauth_settings)
    assert says in exc.value.detail


def test_signature_kid_and_type(
    db: Database, session: Session, oauth_settings: Settings, institution: Institution
) -> None:
    client_id, _ = new_client(db, institution.id)
    claims = _good_claims(client_id, institution.id)
    # sanity: the same claims under the zone's key are accepted
    good = _sign_with_zone_key(session, oauth_settings, claims)
    assert authenticate_access_token(session, token=good, settings=oauth_settings).client_id == client_id

    kid = keys.current_signing_key(session, oauth_settings).kid
    stranger = ECKey.generate_key("P-256")
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": kid}, claims, stranger)
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=forged, settings=oauth_settings)
    assert "signature" in exc.value.detail

    unknown = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "no-such-kid"}, claims, stranger)
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=unknown, settings=oauth_settings)
    assert "unknown key" in exc.value.detail

    plain_jwt = _sign_with_zone_key(session, oauth_settings, claims, typ="JWT")
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=plain_jwt, settings=oauth_settings)
    assert "at+jwt" in exc.value.detail

    # an 'alg: none' token with the right kid is refused, not read
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    body = good.split(".")[1]
    with pytest.raises(InvalidToken):
        authenticate_access_token(
            session, token=f"{none_header.rstrip(b'=').decode()}.{body}.", settings=oauth_settings
        )

    for garbage in ("", "not-a-jwt", "a.b.c"):
        with pytest.raises(InvalidToken):
            authenticate_access_token(session, token=garbage, settings=oauth_settings)


def test_suspension_and_client_revocation_after_issuance(
    api: Any, db: Database, session: Session, oauth_settings: Settings, institution: Institution
) -> None:
    token, _, _ = _token(api, db, institution)
    authenticate_access_token(session, token=token, settings=oauth_settings)
    other, other_client, _ = _token(api, db, institution)
    resp = api.post(
        f"/v1/clients/{other_client}/revoke", headers={"Authorization": f"Bearer {institution.key}"}
    )
    assert resp.status_code == 200
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=other, settings=oauth_settings)
    assert "revoked" in exc.value.detail and other_client in exc.value.detail

    with db.unit_of_work() as s:
        principal_service.suspend_principal(s, name=institution.name, reason="test: fraud inquiry")
    with pytest.raises(InvalidToken) as exc:
        authenticate_access_token(session, token=token, settings=oauth_settings)
    assert "suspended" in exc.value.detail and "fraud inquiry" in exc.value.detail


@pytest.mark.e2e
def test_revocation_holds_at_once_on_every_replica(
    zone_server: OAuthServer,
    db: Database,
    session: Session,
    oauth_settings: Settings,
    institution: Institution,
) -> None:
    second = OAuthServer(oauth_settings)
    second.wait_ready()
    try:
        client_id, secret = new_client(db, institution.id)
        assert secret is not None
        token = token_request(httpx.Client(base_url=zone_server.url), client_id, secret).json()[
            "access_token"
        ]
        introspect = {"token": token}
        seen = httpx.post(second.url + "/oauth/introspect", data=introspect, auth=(client_id, secret)).json()
        assert seen["active"] is True

        # revoked through the first replica ...
        resp = httpx.post(zone_server.url + "/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        assert resp.status_code == 200
        # ... refused by the second on the very next request, and by the resource check
        seen = httpx.post(second.url + "/oauth/introspect", data=introspect, auth=(client_id, secret)).json()
        assert seen == {"active": False}
        with pytest.raises(InvalidToken) as exc:
            authenticate_access_token(session, token=token, settings=oauth_settings)
        assert "revoked" in exc.value.detail
        # revoking again, or revoking garbage, answers 200 (RFC 7009 section 2.2)
        again = httpx.post(second.url + "/oauth/revoke", data={"token": token}, auth=(client_id, secret))
        assert again.status_code == 200
        junk = httpx.post(second.url + "/oauth/revoke", data={"token": "junk"}, auth=(client_id, secret))
        assert junk.status_code == 200
        # without client authentication nothing is revoked
        anon = httpx.post(second.url + "/oauth/revoke", data={"token": token})
        assert anon.status_code == 401
    finally:
        second.stop()
