"""The SDK and `datazone-client` against the real gateway, on the synthetic zone's demo bank.

Each test registers OAuth clients of its own for the demo bank (which holds a contract
for the four products, department grants, and consents for `consented_usccs`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from datazone.client import InvalidUSCCs, RetryPolicy, ZoneClient, ZoneError
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from tests.client.relay import Relay
from tests.conftest import SIGNING_KEY_SECRET, Server
from tests.factories import bad_check

pytestmark = pytest.mark.e2e

PRODUCTS = {"credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"}


def zone_settings(home: Path, database_url: str) -> Settings:
    return Settings(
        home=home, database_url=database_url, drop_dir=home / "drop", signing_key_secret=SIGNING_KEY_SECRET
    )


def start(settings: Settings) -> Server:
    server = Server(settings)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def gateway(
    synthetic_zone: dict[str, Any], database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start(zone_settings(tmp_path_factory.mktemp("client-e2e"), database_url))
    yield server
    server.stop()


def register_client(db: Database, *, name: str, jwks: dict[str, Any] | None = None) -> tuple[str, str | None]:
    with db.unit_of_work() as s:
        bank = principal_service.find_principal(s, name="demo-bank")
        assert bank is not None
        client, secret = oauth_service.create_client(
            s,
            institution_id=bank.id,
            name=name,
            auth_method="private_key_jwt" if jwks else "client_secret_basic",
            jwks=jwks,
            by_name="sdk tests",
        )
        return client.client_id, secret


@pytest.fixture(scope="module")
def credentials(db: Database, synthetic_zone: dict[str, Any]) -> tuple[str, str]:
    client_id, secret = register_client(db, name="sdk-e2e")
    assert secret is not None
    return client_id, secret


@pytest.fixture(scope="module")
def listed_codes(db: Database, synthetic_zone: dict[str, Any]) -> list[str]:
    """50 enterprises of the zone: the 20 with consent first, then others, in a stable order."""
    consented: list[str] = list(synthetic_zone["consented_usccs"])
    with db.unit_of_work() as s:
        others = [
            c
            for c in dataset_service.current_entities(s, dataset_id="mr_registration", limit=200)
            if c not in consented
        ]
    return consented + others[: 50 - len(consented)]


def client(gateway: Server | Relay, credentials: tuple[str, str], **kwargs: Any) -> ZoneClient:
    return ZoneClient(url=gateway.url, client_id=credentials[0], client_secret=credentials[1], **kwargs)


def usage_events(db: Database, key: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM usage_event WHERE idempotency_key = :k"), {"k": key}
            ).scalar_one()
        )


def test_products_and_lookup(
    gateway: Server, credentials: tuple[str, str], synthetic_zone: dict[str, Any]
) -> None:
    code = synthetic_zone["consented_usccs"][0]
    with client(gateway, credentials) as zone:
        assert {p["id"] for p in zone.products()} >= PRODUCTS
        basic = zone.lookup("credit-basic", code, purpose="pre_loan")
        assert basic["uscc"] == code and basic["product"]["id"] == "credit-basic"
        assert basic["data_versions"] and "clearance" in basic["masking"]
        assert basic["answer"]
        risk = zone.lookup("risk-insight", code, purpose="post_loan")
        assert risk["uscc"] == code and risk["answer"]
        assert set(zone.token().scopes) >= {f"product:{p}" for p in PRODUCTS}


def test_refusals_come_back_as_problems(
    gateway: Server, credentials: tuple[str, str], listed_codes: list[str]
) -> None:
    unconsented = listed_codes[-1]
    with client(gateway, credentials) as zone:
        with pytest.raises(ZoneError) as info:
            zone.lookup("risk-insight", unconsented, purpose="pre_loan")  # paid, needs the subject's consent
        assert info.value.status == 403 and info.value.check
        assert credentials[1] not in str(info.value)
        with pytest.raises(ZoneError) as info:
            zone.lookup("no-such-product", unconsented, purpose="pre_loan")
        assert info.value.status in (403, 404)
        with pytest.raises(InvalidUSCCs):
            zone.lookup("credit-basic", bad_check(unconsented), purpose="pre_loan")
    with ZoneClient(url=gateway.url, client_id=credentials[0], client_secret="not-the-secret") as wrong:
        with pytest.raises(ZoneError) as info:
            wrong.products()
        assert (info.value.status, info.value.type) == (401, "invalid_client")
        assert "not-the-secret" not in str(info.value)


def test_batch_of_50_in_order(gateway: Server, credentials: tuple[str, str], listed_codes: list[str]) -> None:
    codes = listed_codes[::-1]  # not the order the zone keeps them in
    progress: list[tuple[int, int]] = []
    with client(gateway, credentials) as zone:
        results = list(
            zone.batch(
                "credit-basic",
                codes,
                purpose="pre_loan",
                chunk_size=20,
                progress=lambda d, t: progress.append((d, t)),
            )
        )
        assert [r["uscc"] for r in results] == codes
        assert all(r["found"] and r["answer"] for r in results)
        assert progress == [(20, 50), (40, 50), (50, 50)]
        consented = listed_codes[:20]
        paid = list(zone.batch("risk-insight", consented, purpose="post_loan"))
        assert [r["uscc"] for r in paid] == consented


def test_private_key_jwt_client(gateway: Server, db: Database, listed_codes: list[str]) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = ECKey.import_key(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    client_id, secret = register_client(
        db, name="sdk-e2e-jwt", jwks={"keys": [public.as_dict(private=False)]}
    )
    assert secret is None
    with ZoneClient(url=gateway.url, client_id=client_id, private_key_pem=pem) as zone:
        assert zone.lookup("credit-basic", listed_codes[0], purpose="pre_loan")["uscc"] == listed_codes[0]
        first = zone.token()
        # a second token needs a second assertion: the gateway refuses a replayed jti
        zone._tokens.invalidate(first)
        assert zone.token().value != first.value


def test_revoked_token_is_replaced_once(
    gateway: Server, credentials: tuple[str, str], listed_codes: list[str]
) -> None:
    with client(gateway, credentials) as zone:
        zone.lookup("credit-basic", listed_codes[1], purpose="pre_loan")
        old = zone.token()
        revoked = httpx.post(
            gateway.url + "/oauth/revoke",
            data={"token": old.value, "token_type_hint": "access_token"},
            auth=(credentials[0], credentials[1]),
            timeout=10,
        )
        assert revoked.status_code == 200
        # the gateway answers 401 invalid-token; the SDK fetches one new token and repeats the call
        assert zone.lookup("credit-basic", listed_codes[1], purpose="pre_loan")["uscc"] == listed_codes[1]
        assert zone.token().value != old.value


def test_token_refreshed_after_expiry(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    credentials: tuple[str, str],
    listed_codes: list[str],
    gateway: Server,
) -> None:
    # the test server's environment is copied from ours (tests.conftest.cli_env)
    monkeypatch.setenv("DATAZONE_OAUTH_TOKEN_SECONDS", "5")
    short = start(zone_settings(tmp_path / "short", database_url))
    try:
        with client(short, credentials) as zone:
            zone.lookup("credit-basic", listed_codes[2], purpose="pre_loan")
            first = zone.token()
            assert first.expires_in == 5
            time.sleep(5.5)  # the first token has expired
            assert zone.lookup("credit-basic", listed_codes[2], purpose="pre_loan")["uscc"] == listed_codes[2]
            assert zone.token().value != first.value
    finally:
        short.stop()


def test_dropped_answer_is_retried_under_the_same_key_and_billed_once(
    gateway: Server, credentials: tuple[str, str], db: Database, listed_codes: list[str]
) -> None:
    code = listed_codes[3]  # consented: risk-insight is paid
    path = f"/v1/products/risk-insight/enterprises/{code}"
    retry = RetryPolicy(max_attempts=3, base_delay=0.05)
    with (
        Relay(gateway.url, drop=lambda m, p, n: p.startswith(path) and n == 1) as relay,
        client(relay, credentials, retry=retry) as zone,
    ):
        answer = zone.lookup("risk-insight", code, purpose="pre_loan")
    assert answer["uscc"] == code
    assert relay.dropped == [("GET", relay.dropped[0][1], 200)]  # the gateway had answered the first one
    calls = [h for m, p, h in relay.seen if p.startswith(path)]
    assert len(calls) == 2
    keys = {h["Idempotency-Key"] for h in calls}
    assert len(keys) == 1
    assert usage_events(db, keys.pop()) == 1  # answered twice, billed once


def test_dropped_batch_answer_is_billed_once(
    gateway: Server, credentials: tuple[str, str], db: Database, listed_codes: list[str]
) -> None:
    consented = listed_codes[:20]
    path = "/v1/products/risk-insight/enterprises"
    retry = RetryPolicy(max_attempts=3, base_delay=0.05)
    with (
        Relay(gateway.url, drop=lambda m, p, n: m == "POST" and p == path and n == 1) as relay,
        client(relay, credentials, retry=retry) as zone,
    ):
        results = list(zone.batch("risk-insight", consented, purpose="pre_loan", chunk_size=10))
    assert [r["uscc"] for r in results] == consented
    keys = [h["Idempotency-Key"] for m, p, h in relay.seen if m == "POST" and p == path]
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]  # the first chunk twice, then the second
    assert usage_events(db, keys[0]) == 10 and usage_events(db, keys[2]) == 10


# -- the CLI as a bank would run it ---------------------------------------------------------


def cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATAZONE_")}
    return subprocess.run(
        [sys.executable, "-m", "datazone.client.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def env_for(gateway: Server, credentials: tuple[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        "DATAZONE_URL": gateway.url,
        "DATAZONE_CLIENT_ID": credentials[0],
        "DATAZONE_CLIENT_SECRET": credentials[1],
        "DATAZONE_PROFILE": str(tmp_path / "none.toml"),
    }


def test_cli_lookup(
    gateway: Server, credentials: tuple[str, str], listed_codes: list[str], tmp_path: Path
) -> None:
    env = env_for(gateway, credentials, tmp_path)
    done = cli("lookup", "credit-basic", listed_codes[4], "--purpose", "pre_loan", "--json", env=env)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["uscc"] == listed_codes[4] and body["purpose"] == "pre_loan"
    refused = cli("lookup", "risk-insight", listed_codes[-1], "--purpose", "pre_loan", env=env)
    assert refused.returncode == 1 and "403" in refused.stderr
    bad = cli("lookup", "credit-basic", bad_check(listed_codes[4]), "--purpose", "pre_loan", env=env)
    assert bad.returncode == 2 and "check character" in bad.stderr
    for out in (done, refused, bad):
        assert credentials[1] not in out.stdout + out.stderr


def test_cli_batch(
    gateway: Server, credentials: tuple[str, str], listed_codes: list[str], tmp_path: Path
) -> None:
    env = env_for(gateway, credentials, tmp_path)
    source = tmp_path / "客户名单.csv"
    with source.open("w", encoding="gb18030", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["序号", "统一社会信用代码"])
        writer.writerows([i, code] for i, code in enumerate(listed_codes))
    out = tmp_path / "out" / "answers.csv"
    done = cli(
        "batch",
        "credit-basic",
        str(source),
        "--purpose",
        "pre_loan",
        "--output",
        str(out),
        "--chunk-size",
        "20",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["uscc"] for r in rows] == listed_codes
    assert all(r["found"] == "true" for r in rows)
    assert len(rows[0]) > 3  # the answer's fields, one column each
    assert "50 enterprises (50 found)" in done.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("uscc\n" + listed_codes[0] + "\n" + bad_check(listed_codes[1]) + "\n", encoding="utf-8")
    refused = cli(
        "batch",
        "credit-basic",
        str(bad),
        "--purpose",
        "pre_loan",
        "--output",
        str(tmp_path / "x.csv"),
        env=env,
    )
    assert refused.returncode == 2 and "line 3:" in refused.stderr
    assert not (tmp_path / "x.csv").exists()


def test_cli_profile_permissions(gateway: Server, credentials: tuple[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "client.toml"
    profile.write_text(
        f'[bank]\nurl = "{gateway.url}"\nclient_id = "{credentials[0]}"\nclient_secret = "{credentials[1]}"\n'
    )
    profile.chmod(0o644)
    env = {"DATAZONE_PROFILE": str(profile)}
    refused = cli("--profile", "bank", "token", env=env)
    assert refused.returncode == 2
    assert "readable by other users" in refused.stderr and "chmod 600" in refused.stderr
    assert credentials[1] not in refused.stdout + refused.stderr
    profile.chmod(0o600)
    done = cli("--profile", "bank", "token", env=env)
    assert done.returncode == 0, done.stderr
    assert "product:credit-basic" in done.stdout and "Asia/Shanghai" in done.stdout
    raw = cli("--profile", "bank", "token", "--raw", env=env)
    assert raw.returncode == 0 and raw.stdout.count(".") == 2  # a JWT, only when asked for
    assert raw.stdout.strip() not in done.stdout
