"""The capacity gate on its own (an ASGI app of a few lines behind it, no server): places, the
queue, the wait, clients that leave while queued, and the body a queued request already sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from datazone.capacity import Capacity, CapacityGate
from datazone.config import Settings


class Route:
    """An app that records what it was given and holds each request until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.started.append(scope["path"])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """One request: its messages to send, a switch to leave, and what came back."""

    def __init__(self, path: str, body: list[bytes] | None = None) -> None:
        self.scope: Scope = {"type": "http", "path": path, "method": "POST" if body else "GET", "headers": []}
        self.to_send: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(body) - 1} for i, chunk in enumerate(body)
        ] if body else [{"type": "http.request", "body": b"", "more_body": False}]
        self.gone = asyncio.Event()
        self.answer: list[Message] = []

    async def receive(self) -> Message:
        if self.to_send:
            return self.to_send.pop(0)
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.answer.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.answer if m["type"] == "http.response.start"), None)

    def header(self, name: bytes) -> bytes | None:
        start = next(m for m in self.answer if m["type"] == "http.response.start")
        return dict(start["headers"]).get(name)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_client_that_leaves_while_queued_is_never_served() -> None:
    async def scenario() -> None:
        route = Route()
        gate = CapacityGate(route, max_requests=1, max_queued=10, wait_seconds=5)
        first, leaver, patient = Client("/first"), Client("/leaver"), Client("/patient", [b"ab", b"cd"])
        tasks = [asyncio.ensure_future(gate(c.scope, c.receive, c.send)) for c in (first, leaver, patient)]
        await settle()
        assert route.started == ["/first"]
        leaver.gone.set()
        await settle()
        route.release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        # the one who left cost nothing and got nothing; the patient one's body arrived whole
        assert route.started == ["/first", "/patient"] and leaver.answer == []
        assert first.status == patient.status == 200 and route.bodies[-1] == b"abcd"

    run(scenario())


def test_past_the_wait_503_with_retry_after_and_the_place_is_not_lost() -> None:
    async def scenario() -> None:
        route = Route()
        gate = CapacityGate(route, max_requests=1, max_queued=10, wait_seconds=0.2)
        first, late = Client("/first"), Client("/late")
        held = asyncio.ensure_future(gate(first.scope, first.receive, first.send))
        await settle()
        await asyncio.wait_for(gate(late.scope, late.receive, late.send), 5)
        assert late.status == 503 and late.header(b"retry-after") == b"1"
        body = json.loads(b"".join(m.get("body", b"") for m in late.answer))
        assert body["type"].endswith("/gateway-busy") and body["status"] == 503 and "0.2 s" in body["detail"]
        route.release.set()
        await asyncio.wait_for(held, 5)
        # the place came back: the next request is served at once
        after = Client("/after")
        await asyncio.wait_for(gate(after.scope, after.receive, after.send), 5)
        assert after.status == 200

    run(scenario())


def test_a_full_queue_refuses_at_once_and_probes_skip_the_gate() -> None:
    async def scenario() -> None:
        route = Route()
        gate = CapacityGate(route, max_requests=1, max_queued=1, wait_seconds=30)
        first, queued, refused = Client("/a"), Client("/b"), Client("/c")
        tasks = [asyncio.ensure_future(gate(c.scope, c.receive, c.send)) for c in (first, queued)]
        await settle()
        await asyncio.wait_for(gate(refused.scope, refused.receive, refused.send), 1)
        assert refused.status == 503 and route.started == ["/a"]
        probe = Client("/healthz")
        probe_task = asyncio.ensure_future(gate(probe.scope, probe.receive, probe.send))
        await settle()
        assert route.started == ["/a", "/healthz"]  # not queued behind /b
        route.release.set()
        await asyncio.wait_for(asyncio.gather(*tasks, probe_task), 5)
        assert [first.status, queued.status, probe.status] == [200, 200, 200]

    run(scenario())


def test_a_route_that_fails_gives_its_place_back() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        gate = CapacityGate(failing, max_requests=1, max_queued=0, wait_seconds=0.1)
        for _ in range(3):
            c = Client("/x")
            with pytest.raises(RuntimeError):
                await gate(c.scope, c.receive, c.send)

    run(scenario())


def test_sizes_come_from_one_setting_each_and_nonsense_is_refused(tmp_path: Any) -> None:
    default = Capacity.of(Settings(home=tmp_path))
    assert (default.db_pool_size, default.max_requests, default.threads) == (10, 10, 18)
    assert default.db_max_overflow >= default.max_requests  # a refusal's audit never waits for a connection
    with pytest.raises(ValueError, match="more than DATAZONE_DB_POOL_SIZE"):
        Capacity.of(Settings(home=tmp_path, db_pool_size=4, max_requests=5))
    with pytest.raises(ValueError, match="must be more than DATAZONE_MAX_REQUESTS"):
        Capacity.of(Settings(home=tmp_path, db_pool_size=8, threads=8))
