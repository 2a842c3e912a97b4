"""The capacity gate on its own (an ASGI app of a few lines behind it, no server): places, the
queue, the wait, clients that leave while queued, and the body a queued request already sent."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from datazone import capacity
from datazone.capacity import Capacity, CapacityGate, Places
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


def test_under_concurrency_never_more_than_the_places_inside_and_every_place_comes_back() -> None:
    """Many requests at once, some taking a free place at once and some queued, some leaving and
    some timing out: never more inside than the places, and all of them free at the end."""

    async def scenario() -> None:
        inside = 0
        most_inside = 0

        async def route(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal inside, most_inside
            inside += 1
            most_inside = max(most_inside, inside)
            for _ in range(int(scope["path"][1:]) % 4):
                await asyncio.sleep(0)
            inside -= 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        gate = CapacityGate(route, max_requests=3, max_queued=50, wait_seconds=5)
        clients = [Client(f"/{i}") for i in range(200)]
        tasks = [asyncio.ensure_future(gate(c.scope, c.receive, c.send)) for c in clients]
        for c in clients[::7]:
            c.gone.set()  # some leave, whether queued or not
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert most_inside == 3
        statuses = {c.status for c in clients}
        assert statuses <= {200, 503, None} and 200 in statuses and 503 in statuses  # 200 came, 150 past the queue
        assert gate.places.free == 3 and gate.places.waiting == 0
        # and the gate works as new afterwards: three at once without queueing
        late = [Client(f"/{1000 + i}") for i in range(3)]
        await asyncio.wait_for(asyncio.gather(*(gate(c.scope, c.receive, c.send) for c in late)), 5)
        assert [c.status for c in late] == [200, 200, 200]

    run(scenario())


def test_a_queued_request_that_times_out_leaves_no_trace_in_the_queue() -> None:
    async def scenario() -> None:
        route = Route()
        gate = CapacityGate(route, max_requests=1, max_queued=1000, wait_seconds=0.05)
        first = Client("/first")
        held = asyncio.ensure_future(gate(first.scope, first.receive, first.send))
        await settle()
        late = [Client(f"/late{i}") for i in range(300)]
        await asyncio.wait_for(asyncio.gather(*(gate(c.scope, c.receive, c.send) for c in late)), 10)
        assert {c.status for c in late} == {503}
        # those who gave up do not pile up in the queue while no place frees
        assert gate.places.waiting == 0 and len(gate.places.queue) <= 64
        route.release.set()
        await asyncio.wait_for(held, 5)
        assert gate.places.free == 1

    run(scenario())


def test_a_place_handed_over_as_its_waiter_gives_up_goes_to_the_next() -> None:
    async def scenario() -> None:
        places = Places(1)
        assert places.take() and not places.take()
        first, second = places.wait(), places.wait()
        places.release()  # handed to `first`...
        assert first.done() and not second.done()
        places.give_up(first)  # ...which left meanwhile: the place goes on to `second`
        assert second.done() and places.free == 0
        places.admitted()
        places.release()
        assert places.free == 1 and places.waiting == 0

    run(scenario())


def test_the_collector_is_settled_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "_collector_settled", False)
    threshold = gc.get_threshold()
    try:
        capacity.settle_garbage_collector()
        frozen = gc.get_freeze_count()
        assert frozen > 0 and gc.get_threshold()[2] == capacity.FULL_COLLECTION_EVERY
        capacity.settle_garbage_collector()  # a second app in the same process freezes nothing more
        assert gc.get_freeze_count() == frozen
    finally:
        gc.set_threshold(*threshold)
