"""The SDK's behaviour on the wire: tokens, retries, idempotency keys, batches, errors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from datazone.client import InvalidUSCCs, RetryPolicy, ZoneClient, ZoneError, ZoneUnreachable
from tests.client.codes import bad_check, make_uscc
from tests.client.fake_gateway import CLIENT_ID, SECRET, URL, FakeGateway, problem

FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.01)


def client_for(
    gateway: FakeGateway, retry: RetryPolicy = FAST, **kwargs: Any
) -> tuple[ZoneClient, list[float]]:
    kwargs.setdefault("client_secret", SECRET)
    zone = ZoneClient(url=URL, client_id=CLIENT_ID, retry=retry, transport=gateway.transport(), **kwargs)
    slept: list[float] = []
    zone._sleep = slept.append  # record waits instead of sleeping
    return zone, slept


def test_token_fetched_once_and_reused() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway)
    zone.products()
    zone.lookup("credit-basic", make_uscc(1), purpose="pre_loan")
    token_calls = [s for s in gateway.seen if s.path == "/oauth/token"]
    assert len(token_calls) == 1
    assert token_calls[0].body["grant_type"] == ["client_credentials"]
    assert "scope" not in token_calls[0].body  # none asked: every allowed scope
    assert {s.headers["Authorization"] for s in gateway.product_calls()} == {"Bearer tok-0"}


def test_scope_is_requested_when_given() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway, scope=["product:credit-basic", "product:risk-insight"])
    assert zone.token().scopes == ["product:credit-basic", "product:risk-insight"]
    assert gateway.seen[0].body["scope"] == ["product:credit-basic product:risk-insight"]


def test_token_refreshed_before_it_expires() -> None:
    gateway = FakeGateway(expires_in=1)  # refreshed half-way for so short a life
    zone, _ = client_for(gateway)
    first = zone.token()
    assert zone.token() is first
    time.sleep(0.6)
    second = zone.token()
    assert second.value != first.value
    assert gateway.tokens_issued == ["tok-0", "tok-1"]


def test_invalid_token_answer_gets_one_fresh_token() -> None:
    gateway = FakeGateway()
    zone, slept = client_for(gateway)
    zone.products()
    gateway.revoked.add("tok-0")
    assert zone.products()[0]["id"] == "credit-basic"
    calls = gateway.product_calls()
    assert [c.headers["Authorization"] for c in calls] == ["Bearer tok-0", "Bearer tok-0", "Bearer tok-1"]
    # the retried call kept its idempotency key; no backoff for a token renewal
    assert calls[1].headers["Idempotency-Key"] == calls[2].headers["Idempotency-Key"]
    assert slept == []


def test_invalid_token_twice_is_an_error_not_a_loop() -> None:
    gateway = FakeGateway()
    gateway.script = [lambda r: problem(401, "invalid-token", "expired")] * 2
    zone, _ = client_for(gateway)
    with pytest.raises(ZoneError) as info:
        zone.products()
    assert info.value.status == 401 and info.value.type == "invalid-token"
    assert len(gateway.product_calls()) == 2


def test_other_401_is_not_cured_by_a_new_token() -> None:
    gateway = FakeGateway()
    gateway.script = [lambda r: problem(401, "unauthorized", "no credentials")]
    zone, _ = client_for(gateway)
    with pytest.raises(ZoneError):
        zone.products()
    assert len(gateway.product_calls()) == 1 and len(gateway.tokens_issued) == 1


@pytest.mark.parametrize("status", [502, 503, 504])
def test_transient_failures_retried_with_the_same_idempotency_key(status: int) -> None:
    gateway = FakeGateway()
    gateway.script = [lambda r: httpx.Response(status, text="busy")] * 2
    zone, slept = client_for(gateway)
    results = list(zone.batch("risk-insight", [make_uscc(1), make_uscc(2)], purpose="post_loan"))
    assert [r["uscc"] for r in results] == [make_uscc(1), make_uscc(2)]
    calls = gateway.product_calls()
    assert len(calls) == 3 and len(slept) == 2
    keys = {c.headers["Idempotency-Key"] for c in calls}
    assert len(keys) == 1
    assert all(c.body == calls[0].body for c in calls)  # same body: the gateway's fingerprint matches


def test_rate_limited_call_waits_for_retry_after() -> None:
    gateway = FakeGateway()
    gateway.script = [
        lambda r: httpx.Response(
            429,
            json={"type": "rate-limited", "detail": "slow down"},
            headers={"Retry-After": "2", "RateLimit-Remaining": "0"},
        )
    ]
    zone, slept = client_for(gateway)
    zone.lookup("credit-basic", make_uscc(3), purpose="pre_loan")
    assert len(slept) == 1 and 2.0 <= slept[0] <= 2.01


def test_retries_are_capped_and_the_last_refusal_is_raised() -> None:
    gateway = FakeGateway()
    gateway.script = [lambda r: problem(503, "unavailable", "maintenance")] * 10
    zone, slept = client_for(gateway, retry=RetryPolicy(max_attempts=3, base_delay=0.001))
    with pytest.raises(ZoneError) as info:
        zone.products()
    assert info.value.status == 503 and "maintenance" in str(info.value)
    assert len(gateway.product_calls()) == 3 and len(slept) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_other_client_errors_are_never_retried(status: int) -> None:
    gateway = FakeGateway()
    gateway.script = [lambda r: problem(status, "refused", "fix it", check="contract")]
    zone, slept = client_for(gateway)
    with pytest.raises(ZoneError) as info:
        zone.lookup("credit-basic", make_uscc(4), purpose="pre_loan")
    assert info.value.check == "contract"
    assert len(gateway.product_calls()) == 1 and slept == []


def test_dropped_connections_are_retried_then_reported() -> None:
    gateway = FakeGateway()
    drops = {"left": 2}

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/") and drops["left"] > 0:
            drops["left"] -= 1
            with gateway.lock:
                gateway.seen.append(
                    type(gateway.seen[0])(request.method, request.url.path, request.headers, None)
                )
            raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)
        return gateway.handle(request)

    zone = ZoneClient(
        url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=FAST, transport=httpx.MockTransport(flaky)
    )
    zone._sleep = lambda s: None
    assert zone.lookup("credit-basic", make_uscc(5), purpose="pre_loan")["uscc"] == make_uscc(5)
    keys = [c.headers["Idempotency-Key"] for c in gateway.product_calls()]
    assert len(keys) == 3 and len(set(keys)) == 1

    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    zone = ZoneClient(
        url=URL, client_id=CLIENT_ID, client_secret=SECRET, retry=FAST, transport=httpx.MockTransport(dead)
    )
    zone._sleep = lambda s: None
    with pytest.raises(ZoneUnreachable) as info:
        zone.products()
    assert info.value.problem["attempts"] == 4 and "ConnectError" in str(info.value)
    assert info.value.__cause__ is None  # the chained request would hold the credentials


def test_each_logical_call_has_its_own_key_and_an_explicit_key_is_used() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway)
    zone.lookup("credit-basic", make_uscc(6), purpose="pre_loan")
    zone.lookup("credit-basic", make_uscc(6), purpose="pre_loan")
    zone.lookup("credit-basic", make_uscc(6), purpose="pre_loan", idempotency_key="loan-42")
    keys = [c.headers["Idempotency-Key"] for c in gateway.product_calls()]
    assert keys[0] != keys[1] and keys[2] == "loan-42"


def test_batch_checks_every_code_before_sending_anything() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway)
    codes = [make_uscc(i) for i in range(1500)]
    codes[1200] = bad_check(codes[1200])
    codes[7] = "91110105"
    with pytest.raises(InvalidUSCCs) as info:
        list(zone.batch("risk-insight", codes, purpose="pre_loan"))
    assert [(b.position, b.code) for b in info.value.bad] == [(7, "91110105"), (1200, codes[1200])]
    assert gateway.seen == []  # not even a token was fetched
    with pytest.raises(ValueError, match="unknown purpose 'loans'"):
        list(zone.batch("risk-insight", codes[:3], purpose="loans"))
    with pytest.raises(InvalidUSCCs):
        zone.lookup("credit-basic", "X", purpose="pre_loan")
    assert gateway.seen == []


def test_batch_chunks_order_progress_and_keys() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway)
    codes = [make_uscc(i) for i in range(2300)]
    asked = [*codes, codes[5], codes[6].lower()]  # duplicates are asked once
    progress: list[tuple[int, int]] = []
    results = list(
        zone.batch("risk-insight", asked, purpose="pre_loan", progress=lambda d, t: progress.append((d, t)))
    )
    assert [r["uscc"] for r in results] == codes  # in order, though the fake answers each chunk reversed
    assert [r["found"] for r in results[:11]] == [not c.endswith("0") for c in codes[:11]]
    calls = gateway.product_calls()
    assert [len(c.body["usccs"]) for c in calls] == [1000, 1000, 300]
    assert all(c.body["purpose"] == "pre_loan" for c in calls)
    assert len({c.headers["Idempotency-Key"] for c in calls}) == 3
    assert progress == [(1000, 2300), (2000, 2300), (2300, 2300)]


def test_batch_key_derives_one_key_per_chunk() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway)
    codes = [make_uscc(i) for i in range(25)]
    list(zone.batch("risk-insight", codes, purpose="pre_loan", chunk_size=10, idempotency_key="run-7"))
    assert [c.headers["Idempotency-Key"] for c in gateway.product_calls()] == [
        "run-7:0",
        "run-7:1",
        "run-7:2",
    ]
    with pytest.raises(ValueError, match="between 1 and 1000"):
        list(zone.batch("risk-insight", codes, purpose="pre_loan", chunk_size=1001))


def test_batch_answer_missing_a_code_is_an_error() -> None:
    gateway = FakeGateway()
    gateway.script = [
        lambda r: httpx.Response(200, json={"results": [{"uscc": make_uscc(1), "found": True}]})
    ]
    zone, _ = client_for(gateway)
    with pytest.raises(ZoneError, match="lacks 1 asked USCCs"):
        list(zone.batch("risk-insight", [make_uscc(1), make_uscc(2)], purpose="pre_loan"))


def test_threads_share_one_token() -> None:
    gateway = FakeGateway()
    slow = threading.Event()
    original = gateway.token

    def slow_token(request: httpx.Request, form: dict[str, list[str]]) -> httpx.Response:
        slow.wait(0.2)  # every thread arrives while the first fetch is in flight
        return original(request, form)

    gateway.token = slow_token  # type: ignore[method-assign]
    zone, _ = client_for(gateway)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: zone.lookup("credit-basic", make_uscc(i), purpose="pre_loan"), range(32))
        )
    assert [a["uscc"] for a in answers] == [make_uscc(i) for i in range(32)]
    assert gateway.tokens_issued == ["tok-0"]
    assert len({c.headers["Idempotency-Key"] for c in gateway.product_calls()}) == 32


def test_bad_secret_is_an_oauth_error_without_the_secret() -> None:
    gateway = FakeGateway()
    zone, _ = client_for(gateway, client_secret="wrong-secret-value")
    with pytest.raises(ZoneError) as info:
        zone.products()
    assert info.value.status == 401 and info.value.type == "invalid_client"
    assert "wrong-secret-value" not in str(info.value) and "wrong-secret-value" not in repr(
        info.value.problem
    )
    assert gateway.product_calls() == []


def test_secret_echoed_by_a_server_is_scrubbed() -> None:
    gateway = FakeGateway()
    gateway.token_script = [
        lambda r: httpx.Response(400, json={"error": "invalid_request", "error_description": f"got {SECRET}"})
    ]
    zone, _ = client_for(gateway)
    with pytest.raises(ZoneError) as info:
        zone.token()
    assert SECRET not in str(info.value) and "[redacted]" in str(info.value)
    # an access token as the zone issues them (a JWT); credentials shorter than 8 characters are not
    # scrubbed, so that ordinary words in a message stay as written
    access_token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiYW5rIn0.c2lnbmF0dXJl"
    gateway.token_script = [
        lambda r: httpx.Response(200, json={"access_token": access_token, "token_type": "Bearer", "expires_in": 300})
    ]
    gateway.script = [lambda r: problem(403, "refused", f"token {r.headers['Authorization']} refused")]
    with pytest.raises(ZoneError) as info:
        zone.products()
    assert access_token not in str(info.value) and "[redacted]" in str(info.value)


def test_token_endpoint_outage_is_retried() -> None:
    gateway = FakeGateway()
    gateway.token_script = [lambda r: httpx.Response(503, text="down")]
    zone, slept = client_for(gateway)
    assert zone.token().value == "tok-0" and len(slept) == 1


def test_client_secret_basic_is_form_encoded() -> None:
    gateway = FakeGateway()  # the fake decodes per RFC 6749 2.3.1 and compares
    zone, _ = client_for(gateway)
    assert zone.token().value == "tok-0"
    header = gateway.seen[0].headers["Authorization"]
    assert header.startswith("Basic ") and SECRET not in header


def test_private_key_jwt_assertions_are_fresh_and_verifiable() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = ECKey.import_key(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    claims_seen: list[dict[str, Any]] = []

    def verify(form: dict[str, list[str]], request: httpx.Request) -> httpx.Response | None:
        assert "Authorization" not in request.headers
        assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
        token = jwt.decode(form["client_assertion"][0], public, algorithms=["ES256"])
        claims_seen.append(token.claims)
        if len(claims_seen) == 1:
            return httpx.Response(503, text="retry me")
        return None

    gateway = FakeGateway(check_token_form=verify)
    zone, _ = client_for(gateway, client_secret=None, private_key_pem=pem)
    assert zone.token().value == "tok-0"
    first, second = claims_seen
    assert first["iss"] == first["sub"] == CLIENT_ID
    assert first["aud"] == URL + "/oauth/token"  # from the server's metadata
    assert first["jti"] != second["jti"]  # a retried token request carries a new assertion
    assert 0 < first["exp"] - first["iat"] <= 120
