"""The FastAPI application factory: mounts each domain's router, one problem+json handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from datazone import __version__
from datazone.access.api import router as access_router
from datazone.anonymous.api import router as anonymous_router
from datazone.audit.api import router as audit_router
from datazone.audit.sealer import AuditSealer
from datazone.billing.api import router as billing_router
from datazone.boundary import InputBoundary, UnhandledErrors
from datazone.config import Settings, get_settings
from datazone.consent.api import router as consent_router
from datazone.contract.api import router as contract_router
from datazone.dataset.api import router as dataset_router
from datazone.db import Database
from datazone.errors import PROBLEM_BASE, DomainError
from datazone.grant.api import router as grant_router
from datazone.ingest.api import router as ingest_router
from datazone.lifecycle.api import router as lifecycle_router
from datazone.limits import MAX_DETAIL, MAX_INSTANCE, MAX_LISTED_ERRORS, excerpt
from datazone.metering.api import router as metering_router
from datazone.oauth.api import router as oauth_router
from datazone.product.api import router as product_router
from datazone.psi.api import router as psi_router
from datazone.scoring.api import router as scoring_router
from datazone.supplier.api import router as supplier_router

PROBLEM = "application/problem+json"


def _problem(status: int, type_: str, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": excerpt(instance, MAX_INSTANCE),
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _quoted(text: str) -> str:
    """A header-safe quoted-string body: ASCII, no quotes or backslashes."""
    return text.encode("ascii", "replace").decode().replace("\\", "/").replace('"', "'")[:300]


def create_app(db: Database | None = None, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = db is None
        app.state.db = db if db is not None else Database.from_settings(settings)
        # every replica runs a sealer; an advisory lock lets one seal at a time
        sealer = AuditSealer(
            app.state.db,
            interval_seconds=settings.audit_seal_seconds,
            max_entries=settings.audit_block_max_entries,
        )
        sealer.start()
        try:
            yield
        finally:
            sealer.stop()
            if owned:
                app.state.db.dispose()

    app = FastAPI(title="datazone", version=__version__, lifespan=lifespan)
    app.state.settings = settings

    # outermost last: UnhandledErrors wraps InputBoundary wraps the routes
    app.add_middleware(InputBoundary)
    app.add_middleware(UnhandledErrors)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        body = exc.problem(excerpt(request.url.path, MAX_INSTANCE))
        # bounded: a detail, member or error list built from a client's input never echoes all of it
        for member, value in body.items():
            if isinstance(value, str) and member not in ("type", "title"):
                body[member] = excerpt(value, MAX_DETAIL)
        if len(body.get("errors") or []) > MAX_LISTED_ERRORS:
            body["errors_total"] = len(body["errors"])
            body["errors"] = body["errors"][:MAX_LISTED_ERRORS]
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
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        # bounded: at most MAX_LISTED_ERRORS problems, each location and message cut short
        errors = [
            {"location": excerpt(".".join(str(p) for p in e["loc"])), "problem": excerpt(e["msg"], 300)}
            for e in found[:MAX_LISTED_ERRORS]
        ]
        detail = excerpt("; ".join(f"{e['location']}: {e['problem']}" for e in errors), MAX_DETAIL)
        extra: dict[str, Any] = {"errors": errors}
        if len(found) > MAX_LISTED_ERRORS:
            extra["errors_total"] = len(found)
        return _problem(422, "invalid-request", "The request is not valid", detail, request.url.path, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return _problem(
            exc.status_code,
            slug,
            str(exc.detail),
            f"{request.method} {excerpt(request.url.path, MAX_INSTANCE)}: {exc.detail}",
            request.url.path,
        )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    app.include_router(supplier_router)
    app.include_router(dataset_router)
    app.include_router(ingest_router)
    app.include_router(product_router)
    app.include_router(access_router)
    app.include_router(lifecycle_router)
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
    return app
