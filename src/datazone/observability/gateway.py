"""The gateway's side of observability: the request middleware (request id, one log line and
the metrics of each request), `/metrics`, and the probes `/livez` and `/readyz`.

The probes and the scrape are `async def` and do their blocking work on threads of their own
(an anyio limiter apart from the request thread pool) through a side engine with short
timeouts, so they answer while every request thread and pooled connection is busy.
"""

from __future__ import annotations

import logging
import time

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone import __version__
from datazone.config import Settings
from datazone.db import Database
from datazone.observability import metrics, tracing
from datazone.observability.context import bind_request_id, current_request_id, request_id_for
from datazone.observability.probes import readiness_problems, side_engine
from datazone.openapi import problem_responses

log = logging.getLogger("datazone.request")

router = APIRouter(tags=["operations"])

# a probe or a scrape runs on at most this many threads, none of them the request pool's
_OPERATIONS_THREADS = anyio.CapacityLimiter(2)
# seconds a not-ready replica asks the balancer to wait before probing again
_RETRY_AFTER = 5


class RequestObservation:
    """Pure ASGI middleware: binds the request id (echoed in `X-Request-ID`), then counts, times
    and logs the request under its route template once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_for(headers.get("x-request-id"), headers.get("traceparent"))
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


@router.get("/livez", include_in_schema=True, summary="Liveness: the process answers (no database)")
async def livez() -> dict[str, str]:
    """Liveness: the process's event loop answers. It touches no database and waits behind nothing,
    so an orchestrator restarts only a process that is really stuck."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema at the migration head, signing key usable",
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Response:
    """Readiness: the database answers within the probe's time-out, its schema is at the migration
    head, and this replica can open the active signing key. Not ready: 503 with `Retry-After`, the
    problem's `checks` naming each failed check; a load balancer stops routing to the replica."""
    settings: Settings = request.app.state.settings
    timeout = settings.readyz_timeout_seconds
    problems: dict[str, str] | None = None
    with anyio.move_on_after(timeout + 0.5):
        problems = await anyio.to_thread.run_sync(
            readiness_problems, request.app.state.probe_engine, settings,
            abandon_on_cancel=True, limiter=_OPERATIONS_THREADS,
        )  # fmt: skip
    if problems is None:
        problems = {"database": f"no answer within {timeout:g} s"}
    if not problems:
        return JSONResponse({"status": "ready", "version": __version__})
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
    metrics.watch_pool("gateway", db.engine)
    metrics.watch_zone_state(app.state.probe_engine)
    if settings.tracing:
        tracing.trace_engine(db.engine, tracing.tracer_provider("datazone-gateway"))


def stop(app: FastAPI, db: Database) -> None:
    if app.state.settings.tracing:
        tracing.untrace_engines()
    metrics.unwatch(app.state.probe_engine, db.engine)
    app.state.probe_engine.dispose()
