"""The gateway's side of observability: the request middleware (request id, one log line and
the metrics of each request), `/metrics`, and the probes `/livez` and `/readyz`.

The probes answer from the event loop, never from a request thread or a pooled connection, so
they answer while every request thread and pooled connection is busy: `/livez` (and `/healthz`)
with a fixed body, `/readyz` with the last result of a readiness check. A probe that finds that
result older than `READINESS_FRESH_SECONDS` starts a new check in the background, on a thread of
its own (an anyio limiter apart from the request thread pool) through a side engine with short
time-outs, and is answered the last result meanwhile: with a balancer probing every second, no
probe waits. A result is never answered when older than READINESS_FRESH_SECONDS plus the
check's time-out (3 s by default): that probe waits for the new check, as the first one does.
The scrape reads the same side engine on the same threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone import __version__
from datazone.config import Settings
from datazone.db import Database
from datazone.observability import metrics, tracing
from datazone.observability.context import bind_request_id, current_request_id, request_id_for
from datazone.observability.probes import readiness_problems, side_engine
from datazone.openapi import problem_responses

log = logging.getLogger("datazone.request")
readiness_log = logging.getLogger("datazone.readiness")

router = APIRouter(tags=["operations"])

# a probe or a scrape runs on at most this many threads, none of them the request pool's
_OPERATIONS_THREADS = anyio.CapacityLimiter(2)
# seconds a not-ready replica asks the balancer to wait before probing again
_RETRY_AFTER = 5
# a readiness result this young is answered as it is; an older one is answered while a new check
# runs in the background, until it is older than this plus the check's time-out
READINESS_FRESH_SECONDS = 1.0
# what liveness answers: the same bytes every time
_LIVE_BODY = JSONResponse({"status": "ok", "version": __version__}).body
_READY_BODY = JSONResponse({"status": "ready", "version": __version__}).body


class Readiness:
    """The last readiness check of this process, renewed when a probe finds it more than `fresh_for`
    seconds old: that probe is answered from the last result while the check runs in the background,
    so only the first probe (or one after a long quiet) waits for a check."""

    def __init__(self, engine: Engine, settings: Settings, *, fresh_for: float = READINESS_FRESH_SECONDS) -> None:
        self.engine = engine
        self.settings = settings
        self.fresh_for = fresh_for
        # past this age a result is not answered without a new check (which ends within its time-out)
        self.trusted_for = fresh_for + settings.readyz_timeout_seconds
        self.problems: dict[str, str] | None = None
        self.checked_at = -math.inf
        self._checking: asyncio.Task[dict[str, str]] | None = None

    def stop(self) -> None:
        if self._checking is not None:
            self._checking.cancel()

    async def current(self) -> dict[str, str]:
        """What is not ready, by check; empty when ready."""
        age = asyncio.get_running_loop().time() - self.checked_at
        if self.problems is not None and age < self.trusted_for:
            if age >= self.fresh_for:
                self._start_check()
            return self.problems
        # shielded: a probe that gives up does not cancel the check the next probe will use
        return await asyncio.shield(self._start_check())

    def _start_check(self) -> asyncio.Task[dict[str, str]]:
        if self._checking is None:
            self._checking = asyncio.get_running_loop().create_task(self._renew(), name="datazone-readiness")
        return self._checking

    async def _renew(self) -> dict[str, str]:
        try:
            problems = await self._check()
            self.problems, self.checked_at = problems, asyncio.get_running_loop().time()
            return problems
        finally:
            self._checking = None

    async def _check(self) -> dict[str, str]:
        timeout = self.settings.readyz_timeout_seconds
        try:
            with anyio.move_on_after(timeout + 0.5):
                return await anyio.to_thread.run_sync(
                    readiness_problems, self.engine, self.settings,
                    abandon_on_cancel=True, limiter=_OPERATIONS_THREADS,
                )  # fmt: skip
        except Exception as exc:  # a check that fails unexpectedly says so, and the next probe tries again
            readiness_log.exception("readiness check failed")
            return {"readiness": f"the check failed ({type(exc).__name__})"}
        return {"database": f"no answer within {timeout:g} s"}


class RequestObservation:
    """Pure ASGI middleware: binds the request id (echoed in `X-Request-ID`), then counts, times
    and logs the request under its route template once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # one pass over the raw headers, for the two this middleware reads
        x_request_id: str | None = None
        traceparent: str | None = None
        for key, value in scope["headers"]:
            name = key.lower()
            if name == b"x-request-id" and x_request_id is None:
                x_request_id = value.decode("latin-1")
            elif name == b"traceparent" and traceparent is None:
                traceparent = value.decode("latin-1")
        request_id = request_id_for(x_request_id, traceparent)
        # set, never reset: the request's task ends with it, and the 500 handler outside this
        # middleware still names the request
        bind_request_id(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            # the template (/v1/products/{product_id}/...), never the raw path: bounded label values
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.observe_request(method=method, route=template, status=status, seconds=seconds)
            if template not in _QUIET_ROUTES:
                log.info(
                    "%s %s %s %.1f ms", method, scope["path"], status, seconds * 1000,
                    extra={"method": method, "route": template, "status": status,
                           "duration_ms": round(seconds * 1000, 1)},
                )  # fmt: skip


# scraped and probed every few seconds: a line each would drown the requests
_QUIET_ROUTES = frozenset({"/metrics", "/livez", "/readyz", "/healthz"})


class Live(BaseModel):
    status: str
    version: str


@router.get("/livez", summary="Liveness: the process answers (no database)", response_model=Live)
async def livez() -> Response:
    """Liveness: the process's event loop answers. It touches no database and waits behind nothing,
    so an orchestrator restarts only a process that is really stuck."""
    return Response(_LIVE_BODY, media_type="application/json")


@router.get("/healthz", tags=["health"], response_model=Live)
async def healthz() -> Response:
    """Liveness: the process answers (no database check)."""
    return Response(_LIVE_BODY, media_type="application/json")


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema at the migration head, signing key usable",
    response_model=Live,
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Response:
    """Readiness: the database answers within the probe's time-out, its schema is at the migration
    head, and this replica can open the active signing key. Not ready: 503 with `Retry-After`, the
    problem's `checks` naming each failed check; a load balancer stops routing to the replica.
    The answer is the last check's, at most a second old plus one check's time-out (see above)."""
    settings: Settings = request.app.state.settings
    readiness: Readiness = request.app.state.readiness
    problems = await readiness.current()
    if not problems:
        return Response(_READY_BODY, media_type="application/json")
    body = {
        "type": settings.problem_base + "not-ready",
        "title": "Not ready",
        "status": 503,
        "detail": "; ".join(f"{check}: {why}" for check, why in problems.items()),
        "instance": request.url.path,
        "checks": problems,
        "request_id": current_request_id(),
    }
    return JSONResponse(
        body, status_code=503, media_type="application/problem+json", headers={"Retry-After": str(_RETRY_AFTER)}
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body = await anyio.to_thread.run_sync(generate_latest, REGISTRY, limiter=_OPERATIONS_THREADS)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Mount the probes and `/metrics`, and observe every request."""
    app.include_router(router)
    app.add_middleware(RequestObservation)


def start(app: FastAPI, db: Database, settings: Settings) -> None:
    """At start-up: the probes' side engine, what the scrape reports on, the traced engine."""
    app.state.probe_engine = side_engine(db.url, timeout_seconds=settings.readyz_timeout_seconds)
    app.state.readiness = Readiness(app.state.probe_engine, settings)
    metrics.watch_pool("gateway", db.engine)
    metrics.watch_zone_state(app.state.probe_engine)
    if settings.tracing:
        tracing.trace_engine(db.engine, tracing.tracer_provider("datazone-gateway"))


def stop(app: FastAPI, db: Database) -> None:
    if app.state.settings.tracing:
        tracing.untrace_engines()
    app.state.readiness.stop()
    metrics.unwatch(app.state.probe_engine, db.engine)
    app.state.probe_engine.dispose()
