"""The OpenAPI document as the contract: one Problem schema, each operation's real error answers,
the security schemes each operation takes, and descriptions for shared parameters.

Done once, after FastAPI has built its document, from what each route depends on (which
authentication, which parameters, whether it takes a body), so a new route is described by the
same rules without anyone editing this file; a route with an error answer the rules cannot see
declares it with `responses=problem_responses(...)` in its decorator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from datazone.capacity import UNGATED_PATHS

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
OAUTH_ERROR_REF = "#/components/schemas/OAuthError"

# what each status means to a caller, in every operation that can answer it
STATUS_MEANING: dict[int, str] = {
    400: "The request cannot be processed as sent (the detail says what to fix).",
    401: "No credentials, or credentials that are not valid (expired, revoked, unknown, forged).",
    402: "The plan's monthly spend cap is reached.",
    403: "The caller is known but may not do this (scope, contract, grant, consent, role, suspension).",
    404: "Something the request names does not exist, or is not visible to the caller.",
    409: "The request conflicts with the current state of what it names.",
    410: "What the request names is gone (retired, expired, no longer replayable).",
    413: "The request body is larger than this route accepts.",
    422: "The request is not valid: every problem is listed in `errors`, and nothing was written.",
    429: "Rate limit or quota reached; `Retry-After` says when to try again.",
    503: "The zone cannot answer now (a table or key is being prepared, or capacity is full); "
    "`Retry-After` says when to try again.",
}


class ProblemError(BaseModel):
    """One of several problems of a request."""

    model_config = ConfigDict(extra="allow")

    location: str = Field(description="where the problem is: a dotted path into the request, e.g. `body.usccs.3`")
    problem: str = Field(description="what is wrong there and what would be accepted")


class Problem(BaseModel):
    """An RFC 9457 problem: every error the gateway answers, as `application/problem+json`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="the problem type's URI; GET it for what it means and what to do")
    title: str = Field(description="a short summary of the problem type; the same for every occurrence")
    status: int = Field(description="the HTTP status code of this answer")
    detail: str = Field(description="what went wrong in this request and what to fix")
    instance: str | None = Field(default=None, description="the path of the request this answer is about")
    check: str | None = Field(
        default=None, description="the gate of the call pipeline that refused (token, contract, grant, consent...)"
    )
    errors: list[ProblemError] | None = Field(
        default=None, description="each problem of a request with several, with its location"
    )
    scope: str | None = Field(default=None, description="the OAuth scope the refused call needs")
    incident: str | None = Field(
        default=None, description="for a server error: the id under which the failure is logged"
    )


class OAuthError(BaseModel):
    """An OAuth 2.0 error (RFC 6749 section 5.2), as the token, revocation and introspection endpoints answer."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="the OAuth error code: invalid_request, invalid_client, invalid_scope...")
    error_description: str | None = Field(default=None, description="what is wrong, in words")


def problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": STATUS_MEANING.get(status, "An error."),
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before trying again",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route decorator: error answers the document's rules cannot infer."""
    return {status: problem_response(status) for status in statuses}


def content_responses(
    *media_types: str, schema: dict[str, Any] | None = None, status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers other media types than JSON (CSV, protobuf, JSON-LD);
    `schema` describes a JSON-based one, anything else is an opaque string."""
    body = schema if schema is not None else {"type": "string"}
    return {status: {"content": {media: {"schema": body} for media in media_types}}}


def oauth_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the OAuth endpoints, which answer RFC 6749 errors, not problems."""
    return {
        status: {
            "description": STATUS_MEANING.get(status, "An OAuth error."),
            "content": {"application/json": {"schema": {"$ref": OAUTH_ERROR_REF}}},
        }
        for status in statuses
    }


# descriptions of parameters that mean the same on every route that takes them; a route's own
# `Query(description=...)` or `Path(description=...)` wins
SHARED_PARAMETERS: dict[str, str] = {
    "client_id": "the OAuth client's id, as POST /v1/clients returned it",
    "consent_id": "the consent's id",
    "contract_id": "the contract's id",
    "dataset_id": "the dataset's id (its short name, as in its spec)",
    "demand_id": "the data demand's id",
    "entry_id": "the entry's id",
    "grant_id": "the grant's id",
    "job_id": "the job's id, as its creation returned it",
    "model_id": "the scoring model's id",
    "plan_id": "the plan's id",
    "product_id": "the product's id, as listed in the catalog (GET /v1/catalog/products)",
    "run_id": "the ingest run's id",
    "session_id": "the PSI session's id, as its creation returned it",
    "supplier_id": "the supplier's id",
    "index": "the chunk's index, from 0",
    "uscc": "an enterprise's unified social credit code (18 characters, GB 32100-2015)",
    "limit": "at most this many items in the answer",
    "after_id": "only items with an id greater than this (the last id of the previous page)",
    "before_id": "only items with an id smaller than this (the first id of the previous page)",
    "institution_id": "only what concerns this institution (the operator's filter; others see their own)",
    "since": "only what happened at or after this time (ISO 8601)",
    "until": "only what happened before this time (ISO 8601)",
    "department": "only what concerns this department (its principal name)",
    "dataset": "only what concerns this dataset (its id)",
    "product": "only what concerns this product (its id)",
    "state": "only items in this lifecycle state",
    "status": "only items with this status",
    "period": "the billing month, as YYYY-MM",
    "live": "true: only what is in force now; false: only what has ended (revoked or expired); absent: both",
    "category": "only products of this category",
    "tier": "only products of this price tier (free, paid, negotiated)",
    "subject_type": "what kind of thing: supplier, dataset, product or demand",
    "subject_id": "its id",
    "from_height": "the first block height to list (0: from the genesis block)",
    "action": "only entries of this action (e.g. product.rate, psi.job.create)",
    "after": "only events after this event id (the last id of the previous page)",
    "format": "json (default) or csv",
    "Content-Type": "the media type of the body",
    "Idempotency-Key": "makes a retry free and returns the first answer",
}


class Auth:
    """The ways a route authenticates its caller, read from its dependencies."""

    def __init__(self) -> None:
        self.product_token = False  # an OAuth2 access token (client credentials)
        self.kinds: set[str] = set()  # control-plane keys: operator, department, institution
        self.roles: set[str] = set()  # an operator key must hold one of these roles

    @property
    def any(self) -> bool:
        return self.product_token or bool(self.kinds)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _closure(call: Callable[..., Any]) -> list[Any]:
    return [cell.cell_contents for cell in (getattr(call, "__closure__", None) or ())]


def route_auth(route: RouteContext) -> Auth:
    """Which credentials a route takes, from the dependencies in datazone.deps and the resource side."""
    auth = Auth()
    all_kinds = {"operator", "department", "institution"}
    for call in _calls(route.dependant):
        name = getattr(call, "__qualname__", "")
        module = getattr(call, "__module__", "")
        if name == "access_grant":
            auth.product_token = True
        elif name == "caller" and module == "datazone.scoring.api":
            auth.product_token = True
            auth.kinds |= {"operator", "institution"}
        elif name == "require_operator":
            auth.kinds.add("operator")
        elif name == "require_role.<locals>.check":
            auth.kinds.add("operator")
            for cell in _closure(call):
                if isinstance(cell, tuple):
                    auth.roles |= {r for r in cell if isinstance(r, str)}
        elif name == "require_kind.<locals>.check":
            auth.kinds |= {c for c in _closure(call) if isinstance(c, str) and c in all_kinds}
    # a key of any kind, unless a require_* guard above narrowed it
    if not auth.kinds and any(getattr(c, "__qualname__", "") == "current_principal" for c in _calls(route.dependant)):
        auth.kinds = set(all_kinds)
    return auth


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "productToken": {
        "type": "oauth2",
        "description": "An institution's access token (RFC 9068 JWT) from POST /oauth/token with the "
        "client_credentials grant; a product route needs the scope `product:<product id>`.",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
    },
    "operatorKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator staff key (`dzk_...`, from `datazone principal create --kind operator`); "
        "routes that need a role (curator, reviewer, auditor) say so.",
    },
    "departmentKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A department's key (`dzk_...`, from `datazone principal create --kind department`).",
    },
    "institutionKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An institution's control-plane key (`dzk_...`): registers OAuth clients and reads "
        "its own contracts, usage and bills; product calls take an access token instead.",
    },
}
GENERIC_SCOPE = "product:<product id>"


def _has_parameters(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters")) or "requestBody" in operation


def _error_statuses(route: RouteContext, method: str, operation: dict[str, Any], auth: Auth) -> set[int]:
    statuses: set[int] = set()
    has_body = "requestBody" in operation or method in ("post", "put", "patch")
    if auth.any:
        statuses |= {401, 403}
    if _has_parameters(operation):
        statuses.add(404)  # a path, filter or body that names something unknown (or not the caller's)
    if method != "get":
        statuses.add(409)
    if _has_parameters(operation):
        statuses.add(422)
    if has_body and method != "get":
        statuses.add(413)
    if "requestBody" in operation:
        statuses.add(400)  # a body that cannot be parsed at all (not JSON, not UTF-8)
    if auth.product_token:
        # the call pipeline's own refusals: bad input to a channel, spend cap, a channel that does not
        # serve the product, a retired product or expired session, rate and quota, capacity
        statuses |= {400, 402, 409, 410, 429, 503}
    return statuses


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    requirements: list[dict[str, list[str]]] = []
    if auth.product_token:
        requirements.append({"productToken": []})
    for kind in ("operator", "department", "institution"):
        if kind in auth.kinds:
            requirements.append({f"{kind}Key": []})
    return requirements


def describe(app: FastAPI) -> dict[str, Any]:
    """The application's OpenAPI document, rewritten as the contract (see the module's docstring)."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (Problem, ProblemError, OAuthError):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    components["securitySchemes"]["productToken"]["flows"]["clientCredentials"]["scopes"] = {
        GENERIC_SCOPE: "call that product; the scopes of the published products are in "
        "/.well-known/oauth-authorization-server (scopes_supported)"
    }

    # FastAPI keeps included routers as branches; its own iterator yields each route with its
    # effective path and dependencies, as the document was built from them
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        auth = route_auth(route)
        path_item = doc["paths"].get(route.path_format or "", {})
        for method in sorted(route.methods or ()):
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            # the OAuth endpoints answer RFC 6749 errors (declared on their routes), not problems
            oauth_errors = any(
                (r.get("content") or {}).get("application/json", {}).get("schema", {}).get("$ref") == OAUTH_ERROR_REF
                for r in responses.values()
            )
            # the input boundary answers them before Authlib sees the form: a body too large (413), a NUL (422)
            inferred = {413, 422} & _error_statuses(route, method.lower(), operation, auth) if oauth_errors else (
                _error_statuses(route, method.lower(), operation, auth)
            )
            if (route.path_format or "") not in UNGATED_PATHS:
                inferred.add(503)  # the capacity gate sheds load past a process's capacity
            for status in sorted(inferred):
                responses.setdefault(str(status), problem_response(status))
            # FastAPI's own 422 (HTTPValidationError, application/json) is not what the gateway sends
            if "422" in responses:
                responses["422"] = problem_response(422)
            if auth.roles:
                needs = f"Needs an operator key with the role {' or '.join(sorted(auth.roles))}."
                operation["description"] = f"{operation.get('description', '').rstrip()}\n\n{needs}".lstrip()
            security = _security(auth)
            if security:
                operation["security"] = security
            else:
                operation.pop("security", None)
            for parameter in operation.get("parameters", []):
                if not parameter.get("description") and parameter["name"] in SHARED_PARAMETERS:
                    parameter["description"] = SHARED_PARAMETERS[parameter["name"]]
    return doc


def install(app: FastAPI, scopes: Callable[[Session], list[str]]) -> None:
    """Serve `describe(app)` as the app's document, with the OAuth scopes of the products published now
    (read from the database on each request of the document; the rest is built once)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        db = getattr(app.state, "db", None)
        if db is None:
            return app.openapi_schema
        try:
            with db.unit_of_work() as session:
                published = scopes(session)
        except SQLAlchemyError:
            # the document stays readable without its database: the generic scope still says it all
            return app.openapi_schema
        doc = copy.copy(app.openapi_schema)
        doc["components"] = copy.deepcopy(app.openapi_schema["components"])
        flow = doc["components"]["securitySchemes"]["productToken"]["flows"]["clientCredentials"]
        flow["scopes"] = {**flow["scopes"], **{s: f"call the product {s.split(':', 1)[1]}" for s in published}}
        return doc

    app.openapi = document  # type: ignore[method-assign]
