"""The FastAPI application factory: mounts each domain's router, one problem+json handler."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from datazone import __version__
from datazone.access.api import router as access_router
from datazone.anonymous.api import router as anonymous_router
from datazone.audit.api import router as audit_router
from datazone.audit.sealer import AuditSealer
from datazone.billing.api import router as billing_router
from datazone.boundary import InputBoundary, UnhandledErrors
from datazone.capacity import Capacity, CapacityGate, busy_problem, settle_garbage_collector
from datazone.config import Settings, get_settings
from datazone.consent.api import router as consent_router
from datazone.console import pages as console_pages
from datazone.console.api import router as console_router
from datazone.console.department import router as console_department_router
from datazone.console.institution import router as console_institution_router
from datazone.console.ledger import router as console_ledger_router
from datazone.console.onboarding import router as console_onboarding_router
from datazone.console.operator import router as console_operator_router
from datazone.contract.api import router as contract_router
from datazone.dataset import service as dataset_service
from datazone.dataset.api import admission_router as dataset_admission_router
from datazone.dataset.api import router as dataset_router
from datazone.db import Database
from datazone.errors import PROBLEM_BASE, DomainError, InvalidSpec, NotFound
from datazone.grant.api import router as grant_router
from datazone.ingest.api import router as ingest_router
from datazone.joint.api import router as joint_router
from datazone.lifecycle.api import history_router
from datazone.limits import MAX_DETAIL, MAX_INSTANCE, MAX_LISTED_ERRORS, excerpt
from datazone.metering.api import router as metering_router
from datazone.oauth import service as oauth_service
from datazone.oauth.api import router as oauth_router
from datazone.oauth.keys import ensure_signing_keys
from datazone.observability import gateway as observability
from datazone.observability import metrics, tracing
from datazone.observability.context import current_request_id
from datazone.openapi import install as install_openapi
from datazone.problems.api import router as problems_router
from datazone.product import demands as product_demands
from datazone.product.api import demands_router, ratings_router, usage_router
from datazone.product.api import router as product_router
from datazone.psi.api import router as psi_router
from datazone.scoring.api import router as scoring_router
from datazone.supplier import service as supplier_service
from datazone.supplier.api import admission_router as supplier_admission_router
from datazone.supplier.api import router as supplier_router

PROBLEM = "application/problem+json"
log = logging.getLogger(__name__)


def _problem(
    status: int, type_: str, title: str, detail: str, instance: str, *, base: str = PROBLEM_BASE, **extra: Any
) -> JSONResponse:
    body = {
        "type": base + type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": excerpt(instance, MAX_INSTANCE),
        "request_id": current_request_id(),
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _quoted(text: str) -> str:
    """A header-safe quoted-string body: ASCII, no quotes or backslashes."""
    return text.encode("ascii", "replace").decode().replace("\\", "/").replace('"', "'")[:300]


def create_app(db: Database | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    capacity = Capacity.of(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # sync routes run in this pool: more threads than admitted requests, so none waits for one
        anyio.to_thread.current_default_thread_limiter().total_tokens = capacity.threads
        owned = db is None
        app.state.db = db if db is not None else Database.from_settings(settings)
        # the JWKS holds the signing keys before the first token is issued; a database that is not
        # up yet does not stop the process (/readyz says not ready, and keys are made on first use)
        try:
            with app.state.db.unit_of_work() as session:
                ensure_signing_keys(session, settings)
        except sa_exc.OperationalError as exc:
            log.warning("signing keys not checked at start-up: the database does not answer (%s)", type(exc).__name__)
        # every replica runs a sealer; an advisory lock lets one seal at a time
        sealer = AuditSealer(
            app.state.db,
            interval_seconds=settings.audit_seal_seconds,
            max_entries=settings.audit_block_max_entries,
        )
        sealer.start()
        observability.start(app, app.state.db, settings)
        settle_garbage_collector()
        try:
            yield
        finally:
            observability.stop(app, app.state.db)
            sealer.stop()
            if owned:
                app.state.db.dispose()

    # the API pages (/docs, /redoc) with their scripts served by the gateway: the zone's network is closed
    app = FastAPIOffline(
        title="datazone", version=__version__, lifespan=lifespan, static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},  # no badge from the online validator
        telemetry=tracing.fastapi_telemetry(settings),
    )  # fmt: skip
    app.state.settings = settings
    app.state.capacity = capacity
    app.add_middleware(
        CapacityGate,
        max_requests=capacity.max_requests,
        max_queued=capacity.max_queued,
        wait_seconds=capacity.wait_seconds,
        problem_base=settings.problem_base,
    )

    @app.exception_handler(sa_exc.TimeoutError)
    async def pool_exhausted(request: Request, exc: sa_exc.TimeoutError) -> Response:
        # the gate keeps admitted requests within the pool; this is the backstop (a pool shared
        # with a slow background task, say): busy, not broken
        retry_after = max(1, math.ceil(capacity.wait_seconds))
        body = busy_problem(
            retry_after=retry_after,
            detail=f"no database connection freed within {capacity.wait_seconds:g} s; retry after {retry_after} s",
            path=request.url.path,
            base=settings.problem_base,
        )
        return Response(body, status_code=503, media_type=PROBLEM, headers={"Retry-After": str(retry_after)})

    # outermost last: the request's observation (its id, log line and metrics) wraps UnhandledErrors,
    # which wraps InputBoundary (a body too large or with a NUL takes no place), which wraps the
    # capacity gate, which wraps the routes; a refused or shed request has its id and metrics too
    app.add_middleware(InputBoundary, problem_base=settings.problem_base)
    app.add_middleware(console_pages.ConsoleHeaders)
    app.add_middleware(UnhandledErrors, problem_base=settings.problem_base)
    observability.install(app)

    def for_people(request: Request) -> bool:
        """A console page answers a refusal with a page, in words; the API answers problem+json."""
        path = request.url.path
        return path.startswith(console_pages.PREFIX) and not path.startswith(console_pages.PREFIX + "/static/")

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> Response:
        if for_people(request):
            return console_pages.refusal_page(request, exc)
        body = exc.problem(excerpt(request.url.path, MAX_INSTANCE), base=settings.problem_base)
        # bounded: a detail, member or error list built from a client's input never echoes all of it
        for member, value in body.items():
            if isinstance(value, str) and member not in ("type", "title"):
                body[member] = excerpt(value, MAX_DETAIL)
        if len(body.get("errors") or []) > MAX_LISTED_ERRORS:
            body["errors_total"] = len(body["errors"])
            body["errors"] = body["errors"][:MAX_LISTED_ERRORS]
        body["request_id"] = current_request_id()
        metrics.count_refusal(check=exc.extra.get("check"), status=exc.status)
        # a refusal may carry HTTP headers (Retry-After, RateLimit-*): they travel as headers
        headers: dict[str, str] = {str(k): str(v) for k, v in (body.pop("headers", None) or {}).items()}
        oauth_error = body.get("oauth_error")
        if exc.status == 401 or oauth_error:
            # RFC 6750 section 3: the Bearer challenge says what is wrong with the token
            challenge = "Bearer"
            if oauth_error:
                challenge += f' error="{oauth_error}", error_description="{_quoted(exc.detail)}"'
                if body.get("scope"):
                    challenge += f' scope="{body["scope"]}"'
            headers["WWW-Authenticate"] = challenge
        return JSONResponse(body, status_code=exc.status, media_type=PROBLEM, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        found = exc.errors()
        if for_people(request):
            problems = [{"location": ".".join(str(p) for p in e["loc"]), "problem": str(e["msg"])} for e in found[:20]]
            return console_pages.refusal_page(
                request, InvalidSpec("; ".join(f"{p['location']}: {p['problem']}" for p in problems), errors=problems)
            )
        # bounded: at most MAX_LISTED_ERRORS problems, each location and message cut short
        errors = [
            {"location": excerpt(".".join(str(p) for p in e["loc"])), "problem": excerpt(e["msg"], 300)}
            for e in found[:MAX_LISTED_ERRORS]
        ]
        detail = excerpt("; ".join(f"{e['location']}: {e['problem']}" for e in errors), MAX_DETAIL)
        extra: dict[str, Any] = {"errors": errors}
        if len(found) > MAX_LISTED_ERRORS:
            extra["errors_total"] = len(found)
        return _problem(
            422, "invalid-request", "The request is not valid", detail, request.url.path,
            base=settings.problem_base, **extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if for_people(request) and exc.status_code == 404:
            return console_pages.refusal_page(request, NotFound(f"no console page {request.url.path}"))
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        response = _problem(
            exc.status_code,
            slug,
            str(exc.detail),
            f"{request.method} {excerpt(request.url.path, MAX_INSTANCE)}: {exc.detail}",
            request.url.path,
            base=settings.problem_base,
        )
        # a 405's Allow header says which methods the path takes
        response.headers.update(exc.headers or {})
        return response

    app.include_router(supplier_router)
    app.include_router(dataset_router)
    app.include_router(ingest_router)
    app.include_router(product_router)
    app.include_router(access_router)
    # the lifecycle's routes, each domain's beside its service, in their first order
    app.include_router(demands_router)
    app.include_router(supplier_admission_router)
    app.include_router(dataset_admission_router)
    app.include_router(ratings_router)
    app.include_router(
        history_router(
            {
                "supplier": lambda session, subject_id, viewer: supplier_service.require_admission_readable(
                    supplier_id=subject_id, viewer=viewer
                ),
                "dataset": lambda session, subject_id, viewer: dataset_service.require_admission_readable(
                    session, dataset_id=subject_id, viewer=viewer
                ),
                "demand": lambda session, subject_id, viewer: product_demands.require_history_readable(
                    session, demand_id=subject_id, viewer=viewer
                ),
            }
        )
    )
    app.include_router(usage_router)
    app.include_router(grant_router)
    app.include_router(contract_router)
    app.include_router(consent_router)
    app.include_router(audit_router)
    app.include_router(oauth_router)
    app.include_router(metering_router)
    app.include_router(billing_router)
    app.include_router(psi_router)
    app.include_router(anonymous_router)
    app.include_router(scoring_router)
    app.include_router(joint_router)
    app.include_router(problems_router)
    # the console: people in browsers, over the same services (datazone.console)
    app.include_router(console_router)
    app.include_router(console_operator_router)
    app.include_router(console_department_router)
    app.include_router(console_institution_router)
    app.include_router(console_onboarding_router)
    app.include_router(console_ledger_router)
    app.mount(console_pages.PREFIX + "/static", StaticFiles(directory=console_pages.STATIC), name="console-static")
    # the document is the contract: Problem schema, error answers, security schemes (datazone.openapi)
    install_openapi(app, scopes=oauth_service.published_scopes)
    return app
