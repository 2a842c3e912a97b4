"""The capacity of one gateway process: how many requests it works on at once, and what the rest get.

A sync route runs its dependencies and its handler in a thread pool, and holds a database
connection while it runs. With more requests at work than connections (or threads), the requests
holding connections can wait for threads that the requests waiting for connections hold: the
gateway locks up until the pool's time-out answers 500. So each process admits at most
`max_requests` requests at once (no more than its pool has connections, fewer than it has threads),
lets `max_queued` more wait up to `wait_seconds` for a place, and answers the rest at once with
503 and `Retry-After`: a client always gets an answer, and a saturated gateway sheds load instead
of queueing it without bound. Probes and metrics skip the gate, so an orchestrator can tell a busy
process from a dead one.

Starlette's middleware has no admission control of this shape (uvicorn's `--limit-concurrency`
refuses without a queue and without Retry-After), hence this small ASGI middleware.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone.config import Settings
from datazone.errors import PROBLEM_BASE
from datazone.observability.context import current_request_id

# paths that never wait behind product calls: liveness, readiness and metrics
UNGATED_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Capacity:
    """One process's sizes, derived from the settings (README: "Capacity")."""

    db_pool_size: int
    db_max_overflow: int
    max_requests: int
    max_queued: int
    wait_seconds: float
    threads: int

    @classmethod
    def of(cls, settings: Settings) -> Capacity:
        pool = settings.db_pool_size
        admitted = settings.max_requests or pool
        if admitted > pool:
            raise ValueError(
                f"DATAZONE_MAX_REQUESTS={admitted} is more than DATAZONE_DB_POOL_SIZE={pool}: an admitted "
                "request could wait for a connection that never frees; raise the pool or lower the limit"
            )
        threads = settings.threads or admitted + 8
        if threads <= admitted:
            raise ValueError(
                f"DATAZONE_THREADS={threads} must be more than DATAZONE_MAX_REQUESTS={admitted}: each admitted "
                "request needs a thread at a time, and the sealer and probes need a few more"
            )
        return cls(
            db_pool_size=pool,
            # a refused call is audited in a second, short transaction while its own still holds a
            # connection; the audit sealer holds one more
            db_max_overflow=admitted + 2,
            max_requests=admitted,
            max_queued=settings.max_queued_requests,
            wait_seconds=settings.queue_wait_seconds,
            threads=threads,
        )


# full collections (generation 2) after this many generation-1 collections instead of CPython's 10
FULL_COLLECTION_EVERY = 100
_collector_settled = False


def settle_garbage_collector() -> None:
    """Keep the garbage collector's full collections out of the answers.

    A full collection stops every thread of the process for as long as it takes to scan the
    long-lived objects: about 150 ms for the 200,000 made at start-up (modules, routes, schemas),
    and 50 to 90 ms for what a loaded gateway holds besides (a thousand queued connections).
    Under load they ran every few seconds and set /healthz's p99 (140 to 200 ms). So, once the
    process is ready to serve: the start-up objects are frozen (never scanned again, see
    gc.freeze), and a full collection waits for ten times as many younger collections as
    CPython's default. Cyclic garbage that outlives the young generations is freed later;
    garbage without cycles is freed at once as before.

    Once per process: a second app in the same process (the tests start many) would freeze the
    objects of the first for good."""
    global _collector_settled
    if _collector_settled:
        return
    _collector_settled = True
    gc.collect()  # what start-up left as garbage is dropped, not frozen
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def _replayed(read: list[Message], receive: Receive) -> Receive:
    """The client's messages already read while it waited, then the rest as they come."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


class Places:
    """`total` places and a first-come queue for them, each step O(1).

    Unlike asyncio.Semaphore, a waiter is a plain future, not a task of its own, and one that gives
    up is not removed from the middle of the queue: it stays there, cancelled, until a release
    skips it or a clean-up drops it. A freed place goes straight to the first waiter still waiting.
    """

    def __init__(self, total: int) -> None:
        self.free = total
        self.queue: deque[asyncio.Future[None]] = deque()
        self.waiting = 0  # waiters in the queue that have not given up

    def take(self) -> bool:
        """Take a place at once if one is free (none is while anyone waits: a release hands it on)."""
        if self.free:
            self.free -= 1
            return True
        return False

    def wait(self) -> asyncio.Future[None]:
        """Join the queue: the future is done when a place is handed to it."""
        place = asyncio.get_running_loop().create_future()
        self.queue.append(place)
        self.waiting += 1
        return place

    def give_up(self, place: asyncio.Future[None]) -> None:
        """Leave the queue (timed out, or the client left); a place handed over meanwhile goes on."""
        self.waiting -= 1
        if place.done():
            self.release()
            return
        place.cancel()
        if len(self.queue) > 2 * self.waiting + 64:
            # many gave up while no place freed: drop them, amortized O(1) per waiter
            self.queue = deque(w for w in self.queue if not w.cancelled())

    def admitted(self) -> None:
        """A waiter whose future is done now holds its place."""
        self.waiting -= 1

    def release(self) -> None:
        while self.queue:
            place = self.queue.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.free += 1


def busy_problem(*, retry_after: int, detail: str, path: str, base: str = PROBLEM_BASE) -> bytes:
    return json.dumps(
        {
            "type": base + "gateway-busy",
            "title": "The gateway is busy",
            "status": 503,
            "detail": detail,
            "instance": path,
            "request_id": current_request_id(),
            "retry_after": retry_after,
        }
    ).encode()


class CapacityGate:
    """ASGI middleware: at most `max_requests` requests inside, `max_queued` waiting, 503 beyond."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_requests: int,
        max_queued: int,
        wait_seconds: float,
        problem_base: str = PROBLEM_BASE,
        ungated: Collection[str] = UNGATED_PATHS,
    ) -> None:
        self.app = app
        self.problem_base = problem_base
        self.max_requests = max_requests
        self.max_queued = max_queued
        self.wait_seconds = wait_seconds
        self.ungated = frozenset(ungated)
        self.places = Places(max_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.ungated:
            await self.app(scope, receive, send)
            return
        if self.places.take():
            # the common case: a place is free, so nothing to wait for and no client to watch
            try:
                await self.app(scope, receive, send)
            finally:
                self.places.release()
            return
        if self.places.waiting >= self.max_queued:
            await self._refuse(scope, send, f"{self.max_requests} requests at work and {self.places.waiting} waiting")
            return
        outcome, read = await self._wait_for_place(receive)
        if outcome == "gone":
            return  # the client left while queued: no work is done for it and nothing is billed
        if outcome == "timeout":
            await self._refuse(
                scope, send, f"no place freed within {self.wait_seconds:g} s ({self.max_requests} at work)"
            )
            return
        try:
            await self.app(scope, _replayed(read, receive), send)
        finally:
            self.places.release()

    async def _wait_for_place(self, receive: Receive) -> tuple[str, list[Message]]:
        """Wait in the queue for a place, watching the client meanwhile: "admitted" (holding a place),
        "timeout" or "gone" (it disconnected), and the messages read from it while watching."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        place = self.places.wait()
        watch: asyncio.Future[Message] | None = asyncio.ensure_future(receive())
        read: list[Message] = []
        outcome = "timeout"
        try:
            while outcome == "timeout":
                left = deadline - loop.time()
                if left <= 0:
                    break
                waiting: set[asyncio.Future[Any]] = {place} if watch is None else {place, watch}
                await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and watch.done():
                    message = watch.result()
                    if message["type"] == "http.disconnect":
                        outcome = "gone"
                        break
                    read.append(message)
                    # a body still streaming is left to the route (its size limit applies there);
                    # after the whole request, the next message can only be the client leaving
                    watch = None if message.get("more_body") else asyncio.ensure_future(receive())
                if place.done():
                    outcome = "admitted"
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
            if outcome == "admitted":
                self.places.admitted()
            else:
                self.places.give_up(place)  # a place that came as we gave up is handed on
        return outcome, read

    async def _refuse(self, scope: Scope, send: Send, why: str) -> None:
        retry_after = max(1, math.ceil(self.wait_seconds))
        body = busy_problem(
            retry_after=retry_after,
            detail=f"this gateway process is at capacity ({why}); retry after {retry_after} s",
            path=scope["path"],
            base=self.problem_base,
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
