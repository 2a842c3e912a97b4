"""An in-memory stand-in for the gateway's HTTP surface, for the SDK's own behaviour.

It speaks the wire protocol only (token endpoint, product routes, problem+json) through
httpx's MockTransport, so retries, token caching and idempotency keys can be driven
exactly; the end-to-end tests run the same SDK against the real gateway.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx

URL = "https://zone.test"
CLIENT_ID = "dzc_test"
SECRET = "s3cret+/=value"  # characters that RFC 6749's form-encoding changes


def problem(status: int, slug: str, detail: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"https://datazone.example/problems/{slug}",
        "title": slug,
        "status": status,
        "detail": detail,
    }
    return httpx.Response(
        status, json={**body, **extra}, headers={"content-type": "application/problem+json"}
    )


@dataclass
class Seen:
    method: str
    path: str
    headers: httpx.Headers
    body: Any


@dataclass
class FakeGateway:
    expires_in: int = 300
    # scripted answers for product calls, used first-in first-out before the normal answer
    script: list[Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    token_script: list[Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    check_token_form: Callable[[dict[str, list[str]], httpx.Request], httpx.Response | None] | None = None
    seen: list[Seen] = field(default_factory=list)
    tokens_issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def product_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v1/")]

    def handle(self, request: httpx.Request) -> httpx.Response:
        body: Any = None
        if request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = parse_qs(request.content.decode())
        with self.lock:
            self.seen.append(Seen(request.method, request.url.path, request.headers, body))
        if request.url.path == "/oauth/token":
            return self.token(request, body)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": URL, "token_endpoint": URL + "/oauth/token"})
        with self.lock:
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if token not in self.tokens_issued or token in self.revoked:
            return problem(401, "invalid-token", "the access token was revoked")
        return self.answer(request, body)

    def token(self, request: httpx.Request, form: dict[str, list[str]]) -> httpx.Response:
        with self.lock:
            scripted = self.token_script.pop(0) if self.token_script else None
        if scripted is not None:
            return scripted(request)
        if self.check_token_form is not None:
            refusal = self.check_token_form(form, request)
            if refusal is not None:
                return refusal
        else:
            auth = request.headers.get("Authorization", "")
            user, _, password = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
            if (unquote(user), unquote(password)) != (CLIENT_ID, SECRET):
                return httpx.Response(
                    401, json={"error": "invalid_client", "error_description": "bad secret"}
                )
        with self.lock:
            value = f"tok-{next(self.counter)}"
            self.tokens_issued.append(value)
        scope = form.get("scope", ["product:credit-basic product:risk-insight"])[0]
        return httpx.Response(
            200,
            json={
                "access_token": value,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "scope": scope,
            },
        )

    def answer(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = request.url.path
        if path == "/v1/products":
            return httpx.Response(200, json=[{"id": "credit-basic", "name": "信用信息查询", "price_fen": 0}])
        parts = path.split("/")
        if request.method == "GET" and len(parts) == 6:
            return httpx.Response(
                200,
                json={
                    "product": {"id": parts[3]},
                    "uscc": parts[5],
                    "purpose": request.url.params["purpose"],
                    "answer": {"name": f"企业{parts[5][-4:]}"},
                },
            )
        if request.method == "POST":
            # answer in reverse order: the SDK must put results back in the order asked
            results = [
                {"uscc": u, "found": not u.endswith("0"), "answer": {"n": u}} for u in reversed(body["usccs"])
            ]
            return httpx.Response(200, json={"results": results, "data_versions": {"registration": 1}})
        return problem(404, "not-found", path)
