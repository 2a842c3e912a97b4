"""Inputs that used to break the gateway: integers past 64 bits, NUL bytes, date bounds,
oversized bodies, strings and pages, and unexpected exceptions (issue 12).

Every one of them must get a 4xx problem+json that names what to fix, with a short
detail, never a 500; and an unexpected exception must leave the keep-alive connection
usable."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from datazone import limits
from datazone.app import create_app
from datazone.boundary import InputBoundary
from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import service as oauth_service
from tests.conftest import free_port, problem
from tests.factories import bearer, new_principal, principal_key

BIG = "9223372036854775808"  # 2**63: one past PostgreSQL's bigint


@pytest.fixture
def app(db: Database, settings: Settings) -> FastAPI:
    return create_app(db=db, settings=settings)


@pytest.fixture
def api(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def operator(db: Database) -> dict[str, str]:
    return bearer(principal_key(db, "operator", roles=["curator", "reviewer", "auditor"]))


@pytest.fixture
def bank(db: Database) -> dict[str, str]:
    return bearer(principal_key(db, "institution"))


def _refused(resp: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    return problem(resp)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        (f"/v1/ledger/{BIG}", "entry_id"),
        (f"/v1/contracts/{BIG}", "contract_id"),
        (f"/v1/consents/{BIG}", "consent_id"),
        (f"/v1/ingest/runs/{BIG}", "run_id"),
        (f"/v1/ingest/runs/{BIG}/rejects.csv", "run_id"),
        (f"/v1/demands/{BIG}", "demand_id"),
        (f"/v1/audit/entries/{BIG}/proof", "entry_id"),
        (f"/v1/consents?after_id={BIG}", "after_id"),
        (f"/v1/consents?institution_id={BIG}", "institution_id"),
        (f"/v1/audit/entries?before_id={BIG}", "before_id"),
        (f"/v1/audit/uses?before_id={BIG}", "before_id"),
        (f"/v1/ledger?institution_id={BIG}", "institution_id"),
        (f"/v1/contracts?institution_id={BIG}", "institution_id"),
        (f"/v1/plans?institution_id={BIG}", "institution_id"),
        (f"/v1/usage?institution_id={BIG}", "institution_id"),
        (f"/v1/usage/events?institution_id={BIG}", "institution_id"),
        (f"/v1/statements/2026-11?institution_id={BIG}", "institution_id"),
    ],
)
def test_integers_past_64_bits_are_refused_naming_the_parameter(
    api: TestClient, operator: dict[str, str], path: str, parameter: str
) -> None:
    body = _refused(api.get(path, headers=operator))
    assert parameter in body["detail"] and str(limits.MAX_DB_ID) in body["detail"], body


@pytest.mark.parametrize("height", [BIG, str(2**31), str(2**31 - 2)])
def test_block_heights_past_an_integer_are_refused(api: TestClient, operator: dict[str, str], height: str) -> None:
    # heights are PostgreSQL integers: from_height near the top used to overflow with the page size
    resp = api.get("/v1/audit/blocks", params={"from_height": height, "limit": "10000"}, headers=operator)
    if int(height) <= limits.MAX_DB_INT4:
        assert resp.status_code == 200 and resp.json() == []
    else:
        body = _refused(resp)
        assert "from_height" in body["detail"] and str(limits.MAX_DB_INT4) in body["detail"]


def test_integers_past_64_bits_in_a_body_are_refused(api: TestClient, operator: dict[str, str]) -> None:
    body = _refused(api.post("/v1/ledger/1/credits", headers=operator, json={"amount_fen": 2**70, "reason": "x"}))
    assert "amount_fen" in body["detail"]


def test_integers_past_an_integer_column_are_refused(api: TestClient, db: Database, operator: dict[str, str]) -> None:
    institution_id, _ = new_principal(db, "institution")
    contract = {
        "institution_id": institution_id,
        "purposes": ["pre_loan"],
        "products": ["credit-basic"],
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_to": "2027-01-01T00:00:00Z",
    }
    for field in ("max_batch", "psi_max_set", "scoring_max_batch"):
        body = _refused(api.post("/v1/contracts", headers=operator, json={**contract, field: 2**32}))
        assert field in body["detail"] and str(limits.MAX_DB_INT4) in body["detail"]
    plan = {"id": "plan-too-big", "name": "x", "rate_per_second": 1, "burst": 2**32}
    body = _refused(api.post("/v1/plans", headers=operator, json=plan))
    assert "burst" in body["detail"]
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from contract where institution_id = :i"), {"i": institution_id}).scalar() == 0


def test_a_number_that_is_not_finite_is_refused(api: TestClient, operator: dict[str, str]) -> None:
    plan = b'{"id": "plan-infinite", "name": "x", "rate_per_second": 1e400, "burst": 5}'
    body = _refused(api.post("/v1/plans", headers={**operator, "content-type": "application/json"}, content=plan))
    assert "rate_per_second" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/consents", "/v1/ledger", "/v1/usage/events", "/v1/ingest/runs"])
@pytest.mark.parametrize("limit", ["-1", "0", "100000000"])
def test_page_sizes_out_of_range_are_refused(
    api: TestClient, operator: dict[str, str], path: str, limit: str
) -> None:
    body = _refused(api.get(path, params={"limit": limit}, headers=operator))
    assert "limit" in body["detail"]


def test_nul_in_a_query_or_path_is_refused(api: TestClient, operator: dict[str, str]) -> None:
    for path in ("/v1/catalog/products?department=A%00", "/v1/datasets?department=A%00", "/v1/grants/g%00x"):
        body = _refused(api.get(path, headers=operator))
        assert "NUL" in body["detail"], body


def test_nul_in_a_body_is_refused_and_nothing_is_stored(
    api: TestClient, db: Database, bank: dict[str, str]
) -> None:
    before = _count(db, "oauth_client")
    body = _refused(api.post("/v1/clients", headers=bank, json={"name": "loan\u0000app"}))
    assert "NUL" in body["detail"]
    consent = {
        "uscc": "91110000100003962T",
        "purpose": "pre_loan",
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_to": "2027-01-01T00:00:00Z",
        "evidence_ref": "vault://a\u0000b",
        "evidence_sha256": "0" * 64,
    }
    body = _refused(api.post("/v1/consents", headers=bank, json=[consent]))
    assert "NUL" in body["detail"]
    # a form body (the token endpoint) is held to the same rule
    body = _refused(
        api.post(
            "/oauth/token",
            content=b"grant_type=client_credentials&client_id=a%00b",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    )
    assert "NUL" in body["detail"]
    assert _count(db, "oauth_client") == before


def test_escaped_backslash_before_u0000_is_text_not_nul(api: TestClient, bank: dict[str, str]) -> None:
    # '\\u0000' in JSON is a backslash followed by "u0000": six printable characters
    resp = api.post(
        "/v1/clients", headers={**bank, "content-type": "application/json"}, content=b'{"name": "a\\\\u0000b"}'
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "a\\u0000b"


def test_a_long_client_name_is_refused_with_a_short_answer(
    api: TestClient, db: Database, bank: dict[str, str]
) -> None:
    before = _count(db, "oauth_client")
    resp = api.post("/v1/clients", headers=bank, json={"name": "x" * (limits.MAX_NAME + 1)})
    body = _refused(resp)
    assert "name" in body["detail"] and str(limits.MAX_NAME) in body["detail"]
    assert len(resp.content) < 4096
    assert _count(db, "oauth_client") == before


def test_an_oversized_body_is_refused_before_it_is_read(api: TestClient, bank: dict[str, str]) -> None:
    payload = json.dumps({"name": "x" * 12_000_000}).encode()
    body = _refused(api.post("/v1/clients", headers={**bank, "content-type": "application/json"},
                             content=payload), 413)
    assert body["type"].endswith("/body-too-large") and str(limits.MAX_BODY) in body["detail"]

    # a streamed body without Content-Length is counted as it arrives
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 1_000_000

    streamed = api.post("/v1/clients", headers={**bank, "content-type": "application/json"}, content=chunks())
    _refused(streamed, 413)


def test_body_classes() -> None:
    assert limits.body_limit("PUT", "/v1/psi/sessions/psi_abcdefgh/chunks/3") == limits.MAX_CHUNK_BODY
    assert limits.body_limit("POST", "/v1/scoring/jobs") == limits.MAX_BULK_BODY
    assert limits.body_limit("POST", "/v1/clients") == limits.MAX_BODY
    assert limits.body_limit("GET", "/v1/psi/sessions/psi_abcdefgh/chunks/3") == limits.MAX_BODY


def test_a_streamed_binary_body_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A binary body (a PSI chunk) streams through unread by the edge; past its limit the read fails as 413."""
    monkeypatch.setattr(limits, "body_limit", lambda method, path: 1000)
    seen: list[int] = []

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        body = await Request(scope, receive).body()
        seen.append(len(body))
        await PlainTextResponse("read")(scope, receive, send)

    c = TestClient(InputBoundary(reader))  # no lifespan: the dummy app speaks http only
    binary = {"content-type": "application/x-protobuf"}
    small = c.put("/chunk", content=iter([b"x" * 400, b"x" * 400]), headers=binary)
    assert small.status_code == 200 and seen == [800]
    large = c.put("/chunk", content=iter([b"x" * 600] * 3), headers=binary)
    assert large.status_code == 413 and problem(large)["limit"] == 1000
    assert seen == [800]  # the handler never got the oversized body


def test_a_large_invalid_body_gets_a_bounded_error(api: TestClient, bank: dict[str, str]) -> None:
    consent = {"uscc": "x" * 100, "purpose": 7, "valid_from": "nope", "valid_to": [], "evidence_ref": 1}
    resp = api.post("/v1/consents", headers=bank, json=[consent] * 5000)
    body = _refused(resp)
    assert len(resp.content) < 20_000, len(resp.content)
    assert len(body["errors"]) <= limits.MAX_LISTED_ERRORS
    assert body["errors_total"] > limits.MAX_LISTED_ERRORS


def test_a_huge_scope_is_not_echoed(api: TestClient, db: Database) -> None:
    institution_id, _ = new_principal(db, "institution")
    with db.unit_of_work() as s:
        client, secret = oauth_service.create_client(s, institution_id=institution_id, name="app", by_name="test")
        client_id = client.client_id
    assert secret is not None
    scope = " ".join(f"product:p{i}-" + "x" * 100 for i in range(4000))  # 450 KB, under the body limit
    resp = api.post("/oauth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=(client_id, secret))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"
    assert len(resp.content) < 8192, len(resp.content)


def test_a_long_path_is_not_echoed(api: TestClient, operator: dict[str, str], bank: dict[str, str]) -> None:
    for path, headers in (
        ("/v1/datasets/" + "x" * 10_000, operator),  # a domain 404 quoting the id
        ("/v1/no-such-route/" + "x" * 10_000, operator),  # the router's 404
        ("/v1/consents/" + "x" * 10_000, operator),  # a validation 422
    ):
        resp = api.get(path, headers=headers)
        assert resp.status_code in (404, 422) and len(resp.content) < 4096, (path[:30], len(resp.content))
    resp = api.post("/v1/demands", headers=bank, json={"title": "t", "wanted_fields": ["a"] * (limits.MAX_LIST + 1)})
    assert "wanted_fields" in _refused(resp)["detail"]


def test_date_only_bound_is_the_start_of_that_shanghai_day(api: TestClient, operator: dict[str, str]) -> None:
    resp = api.get("/v1/usage", params={"since": "2026-12-01", "until": "2026-12-03"}, headers=operator)
    assert resp.status_code == 200, resp.text
    window = resp.json()
    assert datetime.fromisoformat(window["since"]) == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert datetime.fromisoformat(window["until"]) == datetime(2026, 12, 2, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/usage?until=0374-04-17T18:26:13.1Z",
        "/v1/usage?since=0001-01-01T00:00:00Z",
        "/v1/usage/volume?until=0001-01-01T00:00:00Z",
        "/v1/audit/uses?until=0001-01-01",
        "/v1/audit/entries?since=9999-12-31T23:59:59Z",
        "/v1/usage/events?since=0374-04-17T18:26:13Z",
        "/v1/suppliers/tax/scorecard?since=0002-01-01",
        "/v1/statements/0000-01",
        "/v1/ledger?period=0000-01",
    ],
)
def test_dates_out_of_range_are_refused_naming_the_bound(
    api: TestClient, operator: dict[str, str], path: str
) -> None:
    body = _refused(api.get(path, headers=operator))
    assert str(limits.EARLIEST.year) in body["detail"], body


# -- unexpected exceptions --------------------------------------------------------------


def _failing_app(db: Database, settings: Settings) -> FastAPI:
    app = create_app(db=db, settings=settings)

    @app.get("/test/boom")
    def boom() -> None:
        raise RuntimeError("secret internals must not leak")

    return app


def test_an_unexpected_exception_is_problem_json_with_an_incident_in_the_log(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(_failing_app(db, settings), raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        resp = c.get("/test/boom")
    body = _refused(resp, 500)
    assert body["type"].endswith("/internal-error") and body["incident"]
    assert "secret internals" not in resp.text
    logged = [r for r in caplog.records if body["incident"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None


@pytest.fixture
def live_failing_server(db: Database, settings: Settings) -> Iterator[str]:
    """The gateway with a failing route, served by uvicorn on loopback in this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_failing_app(db, settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _exchange(sock: socket.socket, path: str, key: str) -> tuple[int, bytes]:
    """One HTTP/1.1 request on an open keep-alive socket, and its status and body."""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert "close" not in headers.get("connection", ""), headers
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def test_keep_alive_survives_a_500_and_a_4xx(live_failing_server: str, db: Database) -> None:
    key = principal_key(db, "operator", roles=["curator"])
    host, port = live_failing_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert _exchange(sock, "/healthz", key)[0] == 200
        status, body = _exchange(sock, "/test/boom", key)
        assert status == 500 and json.loads(body)["incident"]
        assert _exchange(sock, "/healthz", key)[0] == 200  # the same socket, not reset
        assert _exchange(sock, f"/v1/ledger/{BIG}", key)[0] == 422
        assert _exchange(sock, "/v1/catalog/products?department=A%00", key)[0] == 422
        assert _exchange(sock, "/healthz", key)[0] == 200


def _count(db: Database, table: str) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(sa.text(f"select count(*) from {table}")).scalar_one())
