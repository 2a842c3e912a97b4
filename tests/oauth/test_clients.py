"""The client registry: the institution's API, the operator's CLI, validation, scoping, audit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.db import Database
from datazone.errors import InvalidSpec
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from tests.conftest import cli_env, problem
from tests.factories import bearer, principal_key
from tests.oauth.conftest import Institution, token_request


def _count_clients(db: Database) -> int:
    with db.unit_of_work() as s:
        return int(s.scalar(sa.text("SELECT count(*) FROM oauth_client")) or 0)


def test_institution_registers_lists_and_revokes_its_clients(
    api: TestClient, db: Database, institution: Institution, synthetic_zone: dict[str, Any]
) -> None:
    auth = bearer(institution.key)
    created = api.post("/v1/clients", json={"name": "loan-origination"}, headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["client_id"].startswith("dzc_")
    assert body["institution_id"] == institution.id
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert len(body["client_secret"]) >= 40
    assert token_request(api, body["client_id"], body["client_secret"]).status_code == 200

    key = ECKey.generate_key("P-256")
    jwt_client = api.post(
        "/v1/clients",
        json={
            "name": "batch",
            "auth_method": "private_key_jwt",
            "jwks": {"keys": [key.as_dict(private=False)]},
        },
        headers=auth,
    )
    assert jwt_client.status_code == 201 and jwt_client.json()["client_secret"] is None

    listed = api.get("/v1/clients", headers=auth).json()
    assert {c["client_id"] for c in listed} == {body["client_id"], jwt_client.json()["client_id"]}
    assert all("client_secret" not in c for c in listed)

    # the demo bank sees none of them, and cannot revoke them (404: existence does not leak)
    other = bearer(synthetic_zone["institution_token"])
    assert body["client_id"] not in {c["client_id"] for c in api.get("/v1/clients", headers=other).json()}
    stranger = api.post(f"/v1/clients/{body['client_id']}/revoke", headers=other)
    assert stranger.status_code == 404
    assert "no client" in problem(stranger)["detail"]

    revoked = api.post(f"/v1/clients/{body['client_id']}/revoke", json={"reason": "replaced"}, headers=auth)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = api.post(f"/v1/clients/{body['client_id']}/revoke", headers=auth)
    assert again.status_code == 409 and "revoked at" in problem(again)["detail"]

    with db.unit_of_work() as s:
        viewer = principal_service.get_principal(s, principal_id=institution.id)
        actions = [(e.action, e.object_id) for e in audit_service.list_entries(s, viewer=viewer, limit=50)]
        entries = [
            e
            for e in audit_service.list_entries(s, viewer=viewer, limit=50)
            if e.object_type == "oauth_client"
        ]
        assert all(body["client_secret"] not in json.dumps(e.detail) for e in entries)
    assert ("client.create", body["client_id"]) in actions
    assert ("client.create", jwt_client.json()["client_id"]) in actions
    assert ("client.revoke", body["client_id"]) in actions


def test_only_institutions_hold_clients(api: TestClient, db: Database) -> None:
    operator = principal_key(db, "operator")
    resp = api.post("/v1/clients", json={"name": "x"}, headers=bearer(operator))
    assert resp.status_code == 403
    assert api.post("/v1/clients", json={"name": "x"}).status_code == 401


def test_bad_registrations_list_every_problem_and_write_nothing(
    api: TestClient, db: Database, institution: Institution
) -> None:
    auth = bearer(institution.key)
    before = _count_clients(db)
    resp = api.post("/v1/clients", json={"name": " ", "auth_method": "private_key_jwt"}, headers=auth)
    assert resp.status_code == 422
    body = problem(resp)
    assert {e["location"] for e in body["errors"]} == {"name", "jwks"}
    private = ECKey.generate_key("P-256").as_dict(private=True)
    resp = api.post(
        "/v1/clients",
        json={"name": "x", "auth_method": "private_key_jwt", "jwks": {"keys": [private]}},
        headers=auth,
    )
    assert resp.status_code == 422 and "PUBLIC" in problem(resp)["detail"]
    resp = api.post(
        "/v1/clients",
        json={"name": "x", "auth_method": "private_key_jwt", "jwks": {"keys": []}},
        headers=auth,
    )
    assert resp.status_code == 422 and "JWK Set" in problem(resp)["detail"]
    resp = api.post(
        "/v1/clients",
        json={"name": "x", "jwks": {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]}},
        headers=auth,
    )
    assert resp.status_code == 422 and "private_key_jwt" in problem(resp)["detail"]
    resp = api.post("/v1/clients", json={"name": "x", "auth_method": "client_secret_post"}, headers=auth)
    assert resp.status_code == 422
    assert _count_clients(db) == before


def test_service_refuses_a_non_institution(session: Session) -> None:
    operator = principal_service.create_principal(
        session, kind="operator", name="op_no_clients", roles=["curator"]
    )
    with pytest.raises(InvalidSpec) as exc:
        oauth_service.create_client(
            session, institution_id=operator.id, name="x", auth_method="client_secret_basic", by_name="test"
        )
    assert "not an institution" in exc.value.detail
    with pytest.raises(InvalidSpec) as exc:
        oauth_service.create_client(
            session, institution_id=10**12, name="x", auth_method="client_secret_basic", by_name="test"
        )
    assert "no principal" in exc.value.detail


def _client_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    # the command tree is `datazone client ...` once mounted; this calls the same Typer app directly
    return subprocess.run(
        [sys.executable, "-c", "from datazone.oauth.cli import app; app()", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_create_list_revoke(
    settings: Settings, db: Database, institution: Institution, tmp_path: Path, api: TestClient
) -> None:
    out = _client_cli(settings, "create", "--institution", institution.name, "--name", "scoring")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split("=", 1) for line in out.stdout.split())
    client_id, secret = fields["client_id"], fields["client_secret"]
    assert token_request(api, client_id, secret).status_code == 200

    key = ECKey.generate_key("P-256")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    out = _client_cli(
        settings,
        "create",
        "--institution",
        institution.name,
        "--auth",
        "private_key_jwt",
        "--jwks",
        str(jwks_file),
    )
    assert out.returncode == 0, out.stderr
    assert "client_secret" not in out.stdout

    listed = json.loads(_client_cli(settings, "list", "--institution", institution.name, "--json").stdout)
    assert {c["client_id"] for c in listed} >= {client_id}
    assert secret not in json.dumps(listed)

    out = _client_cli(settings, "revoke", client_id, "--reason", "rotated")
    assert out.returncode == 0, out.stderr
    assert token_request(api, client_id, secret).status_code == 401

    bad = _client_cli(settings, "create", "--institution", "no-such-bank")
    assert bad.returncode == 2 and "no principal named" in bad.stderr
    bad = _client_cli(settings, "create", "--institution", institution.name, "--auth", "private_key_jwt")
    assert bad.returncode == 2 and "jwks" in bad.stderr
    assert _client_cli(settings, "revoke", client_id).returncode == 2


def test_rotating_a_secret_shows_the_new_one_once_and_refuses_the_old(
    api: TestClient, db: Database, institution: Institution, synthetic_zone: dict[str, Any]
) -> None:
    auth = bearer(institution.key)
    created = api.post("/v1/clients", json={"name": "rotated-app"}, headers=auth).json()
    client_id, old = created["client_id"], created["client_secret"]

    stranger = api.post(f"/v1/clients/{client_id}/rotate-secret", headers=bearer(synthetic_zone["institution_token"]))
    assert stranger.status_code == 404
    rotated = api.post(f"/v1/clients/{client_id}/rotate-secret", headers=auth)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["client_secret"]
    assert new and new != old
    assert token_request(api, client_id, old).status_code == 401
    assert token_request(api, client_id, new).status_code == 200
    assert all("client_secret" not in c for c in api.get("/v1/clients", headers=auth).json())

    key = ECKey.generate_key("P-256")
    jwt_client = api.post(
        "/v1/clients",
        json={"name": "jwt", "auth_method": "private_key_jwt", "jwks": {"keys": [key.as_dict(private=False)]}},
        headers=auth,
    ).json()
    no_secret = api.post(f"/v1/clients/{jwt_client['client_id']}/rotate-secret", headers=auth)
    assert no_secret.status_code == 409 and "private_key_jwt" in problem(no_secret)["detail"]
    api.post(f"/v1/clients/{client_id}/revoke", headers=auth)
    assert api.post(f"/v1/clients/{client_id}/rotate-secret", headers=auth).status_code == 409

    with db.unit_of_work() as s:
        viewer = principal_service.get_principal(s, principal_id=institution.id)
        entries = [e for e in audit_service.list_entries(s, viewer=viewer, limit=50) if e.object_id == client_id]
        assert "client.rotate-secret" in [e.action for e in entries]
        assert all(new not in json.dumps(e.detail) for e in entries)
