"""An httpx transport between the SDK and the real gateway that records every request, and can
answer some itself (`before`) or rewrite the gateway's answer (`after`) to inject a fault."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Sent:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Wire(httpx.BaseTransport):
    before: Callable[[httpx.Request], httpx.Response | None] | None = None
    after: Callable[[httpx.Request, httpx.Response], httpx.Response] | None = None
    sent: list[Sent] = field(default_factory=list)
    inner: httpx.HTTPTransport = field(default_factory=httpx.HTTPTransport)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.sent.append(Sent(request.method, request.url.path, body, dict(request.headers)))
        if self.before is not None and (answer := self.before(request)) is not None:
            return answer
        response = self.inner.handle_request(request)
        if self.after is None:
            return response
        response.read()
        return self.after(request, response)

    def paths(self) -> list[tuple[str, str]]:
        """(method, path) of every request but the token's."""
        return [(s.method, s.path) for s in self.sent if s.path != "/oauth/token"]
