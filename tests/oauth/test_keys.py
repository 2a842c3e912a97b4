"""Signing keys: rotation, concurrent rotation, JWKS publication, encryption at rest, no secrets in logs."""

from __future__ import annotations

import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import InvalidToken as FernetInvalidToken
from fastapi.testclient import TestClient
from joserfc import jws
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import keys
from datazone.oauth import service as oauth_service
from datazone.oauth.resource import authenticate_access_token
from tests.oauth.conftest import Institution, OAuthServer, new_client, oauth_app, token_request


def _kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).headers()["kid"])


def _published(c: Any) -> set[str]:
    return {k["kid"] for k in c.get("/oauth/jwks.json").json()["keys"]}


def test_rotation_publishes_old_key_until_its_tokens_expire(
    db: Database, oauth_settings: Settings, institution: Institution
) -> None:
    fast = oauth_settings.model_copy(update={"oauth_key_rotation_hours": 2 / 3600})
    client_id, secret = new_client(db, institution.id)
    assert secret is not None
    with TestClient(oauth_app(db, fast)) as c:
        old = token_request(c, client_id, secret).json()["access_token"]
        time.sleep(2.2)
        new = token_request(c, client_id, secret).json()["access_token"]
        assert _kid(new) != _kid(old)
        assert {_kid(old), _kid(new)} <= _published(c)
    with db.unit_of_work() as s:
        # the old token still verifies after the rotation
        assert authenticate_access_token(s, token=old, settings=oauth_settings).client_id == client_id
        retired = s.get(keys.SigningKey, _kid(old))
        assert retired is not None and retired.retires_at is not None
        active = keys.current_signing_key(s, oauth_settings)
        assert active.kid == _kid(new) and active.retires_at is None
        # published until the old key's last possible token has expired (plus a margin), then gone
        lifetime = retired.retires_at - active.created_at
        assert lifetime.total_seconds() == pytest.approx(oauth_settings.oauth_token_seconds + 60, abs=3)
        assert _kid(old) in {
            k.kid for k in keys.published_keys(s, at=retired.retires_at - keys.PUBLISH_MARGIN)
        }
        later = retired.retires_at + keys.PUBLISH_MARGIN
        assert _kid(old) not in {k.kid for k in keys.published_keys(s, at=later)}
        s.rollback()


def test_two_concurrent_rotations_make_one_key(db: Database, oauth_settings: Settings) -> None:
    period = 3.0
    fast = oauth_settings.model_copy(update={"oauth_key_rotation_hours": period / 3600})
    with db.unit_of_work() as s:
        before = keys.current_signing_key(s, oauth_settings).kid
    time.sleep(period + 0.2)  # the active key is now stale under `fast`
    with db.unit_of_work() as s:
        started = s.scalar(sa.select(sa.func.now()))
    barrier = threading.Barrier(2)
    got: list[str] = []
    errors: list[BaseException] = []

    def rotate() -> None:
        try:
            with db.unit_of_work() as s:
                barrier.wait()
                got.append(keys.current_signing_key(s, fast).kid)
                time.sleep(0.3)  # hold the transaction open, as a slow request would
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(got) == 2 and got[0] == got[1] != before
    with db.unit_of_work() as s:
        made = s.scalars(sa.select(keys.SigningKey.kid).where(keys.SigningKey.created_at >= started)).all()
        active = s.scalars(sa.select(keys.SigningKey.kid).where(keys.SigningKey.retires_at.is_(None))).all()
    assert made == [got[0]]
    assert active == [got[0]]


def test_secrets_are_not_stored_in_clear(
    api: TestClient, db: Database, oauth_settings: Settings, institution: Institution
) -> None:
    resp = api.post(
        "/v1/clients", json={"name": "scoring"}, headers={"Authorization": f"Bearer {institution.key}"}
    )
    assert resp.status_code == 201, resp.text
    secret = resp.json()["client_secret"]
    client_id = resp.json()["client_id"]
    assert token_request(api, client_id, secret).status_code == 200
    with db.unit_of_work() as s:
        client_rows = " ".join(s.scalars(sa.text("SELECT row_to_json(c)::text FROM oauth_client c")).all())
        key_rows = " ".join(s.scalars(sa.text("SELECT row_to_json(k)::text FROM oauth_signing_key k")).all())
        blobs = s.scalars(sa.text("SELECT private_key_encrypted FROM oauth_signing_key")).all()
        private_d = [
            keys.private_key(k, oauth_settings).as_dict(private=True)["d"]
            for k in s.scalars(sa.select(keys.SigningKey))
        ]
    assert client_id in client_rows and secret not in client_rows
    assert private_d
    for d in private_d:
        assert d not in key_rows
        assert not any(d.encode() in bytes(b) for b in blobs)
    # the encryption key is the configured secret: another secret cannot open the keys
    with db.unit_of_work() as s:
        row = keys.current_signing_key(s, oauth_settings)
        with pytest.raises(FernetInvalidToken):
            keys.private_key(row, oauth_settings.model_copy(update={"signing_key_secret": "another-secret"}))
    # and the answer to a listing never shows the secret again
    listed = api.get("/v1/clients", headers={"Authorization": f"Bearer {institution.key}"}).json()
    assert "client_secret" not in next(c for c in listed if c["client_id"] == client_id)


def test_generated_signing_secret_file(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url="postgresql://unused", signing_key_secret=None)
    first = keys._fernet(settings)
    path = settings.home / "signing.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = first.encrypt(b"payload")
    # a restart (or a second process) reads the same secret
    assert keys._fernet(settings).decrypt(sealed) == b"payload"


@pytest.mark.e2e
def test_no_secret_in_server_log(
    zone_server: OAuthServer, db: Database, oauth_settings: Settings, institution: Institution
) -> None:
    with httpx.Client(base_url=zone_server.url) as http:
        created = http.post(
            "/v1/clients", json={"name": "logs"}, headers={"Authorization": f"Bearer {institution.key}"}
        ).json()
        client_id, secret = created["client_id"], created["client_secret"]
        token = token_request(http, client_id, secret).json()["access_token"]
        assert token_request(http, client_id, secret + "x").status_code == 401
        http.post("/oauth/introspect", data={"token": token}, auth=(client_id, secret))
        http.post("/oauth/revoke", data={"token": token}, auth=(client_id, secret))
    with db.unit_of_work() as s:
        private_d = [
            keys.private_key(k, oauth_settings).as_dict(private=True)["d"]
            for k in s.scalars(sa.select(keys.SigningKey))
        ]
    time.sleep(0.3)
    log = zone_server.log.read_text()
    assert "/oauth/token" in log  # the log is the server's access log indeed
    assert secret not in log
    assert token not in log
    assert oauth_settings.signing_key_secret and oauth_settings.signing_key_secret not in log
    assert not any(d in log for d in private_d)


def test_purge_expired_drops_only_what_has_expired(session: Session) -> None:
    now = datetime.now(UTC)
    past, future = now - timedelta(minutes=1), now + timedelta(minutes=5)
    assert oauth_service.use_assertion(session, client_id="dzc_purge", jti="old", expires_at=past)
    assert oauth_service.use_assertion(session, client_id="dzc_purge", jti="new", expires_at=future)
    assert not oauth_service.use_assertion(session, client_id="dzc_purge", jti="new", expires_at=future)
    oauth_service.revoke_token(
        session, jti="purge-old", institution_id=1, client_id="dzc_purge", expires_at=past, by_name="test"
    )
    oauth_service.revoke_token(
        session, jti="purge-new", institution_id=1, client_id="dzc_purge", expires_at=future, by_name="test"
    )
    assert oauth_service.purge_expired(session, now) >= 2
    assert oauth_service.is_token_revoked(session, jti="purge-new")
    assert not oauth_service.is_token_revoked(session, jti="purge-old")
    # the expired assertion's jti is gone, the live one still blocks a replay
    assert oauth_service.use_assertion(session, client_id="dzc_purge", jti="old", expires_at=future)
    assert not oauth_service.use_assertion(session, client_id="dzc_purge", jti="new", expires_at=future)
