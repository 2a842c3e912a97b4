"""Domain errors. Services raise these; one handler in app.py turns them into
RFC 9457 problem+json, and the CLI prints them. `type` is stable: clients key on it.
"""

from __future__ import annotations

from typing import Any

# where problem types live when no base URI is configured: the gateway's own pages, as a URI
# reference relative to the gateway (the app makes it absolute with the issuer or
# DATAZONE_PROBLEM_BASE_URI; see Settings.problem_base)
PROBLEM_BASE = "/problems/"


class ProblemType:
    """A problem type the HTTP layer itself answers (not raised by a service): the same page as a
    DomainError's. `meaning` and `remedy` are what its page says."""

    def __init__(self, status: int, type: str, title: str, meaning: str, remedy: str) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.meaning = meaning
        self.remedy = remedy


# the problem+json handlers' own types (app.py); a DomainError subclass needs no entry here
HANDLER_PROBLEMS = (
    ProblemType(
        422,
        "invalid-request",
        "The request is not valid",
        "A parameter or the body does not match the operation's schema in the OpenAPI document.",
        "Fix every problem listed in `errors` (each names its location) and send the request again.",
    ),
    ProblemType(
        404,
        "not-found",
        "Not found",
        "No operation of the gateway has this path.",
        "Check the path against the OpenAPI document at /openapi.json.",
    ),
    ProblemType(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        "The path exists but does not take this HTTP method.",
        "Use one of the methods the `Allow` header lists.",
    ),
    ProblemType(
        400,
        "http-error",
        "The request cannot be served",
        "The HTTP layer refused the request before any operation ran.",
        "Read the detail; it names what the gateway could not accept.",
    ),
    ProblemType(
        503,
        "not-ready",
        "Not ready",
        "This gateway replica cannot serve yet: its database does not answer, its schema is not at "
        "the migration head, or it cannot open the active signing key (`checks` says which).",
        "A load balancer routes to another replica; an operator fixes what `checks` names (start the "
        "database, run `datazone migrate`, give every replica the same DATAZONE_SIGNING_KEY_SECRET).",
    ),
    ProblemType(
        503,
        "gateway-busy",
        "The gateway is busy",
        "This gateway process is working on as many requests as it may at once, and the request "
        "waited its longest for a place (or for a database connection) without getting one.",
        "Wait the seconds `Retry-After` gives and send the request again (with the same "
        "Idempotency-Key, if it had one: a retry is never billed twice).",
    ),
)


# the members every problem has, in the meaning RFC 9457 gives them
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class DomainError(Exception):
    status: int = 400
    type: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra

    def problem(self, instance: str | None = None, *, base: str = PROBLEM_BASE) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": base + self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        # RFC 9457's own members keep their meaning: an extra never overwrites one
        body.update({k: v for k, v in self.extra.items() if k not in RESERVED_MEMBERS})
        return body


class NotFound(DomainError):
    status = 404
    type = "not-found"
    title = "Not found"


class InvalidSpec(DomainError):
    status = 422
    type = "invalid-spec"
    title = "The spec is not valid"


class InvalidUscc(InvalidSpec):
    type = "invalid-uscc"
    title = "Not a valid unified social credit code"


class Conflict(DomainError):
    status = 409
    type = "conflict"
    title = "Conflict with the current state"


class Unauthorized(DomainError):
    status = 401
    type = "unauthorized"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    type = "forbidden"
    title = "Not allowed"


class BodyTooLarge(DomainError):
    status = 413
    type = "body-too-large"
    title = "The request body is too large"


class NulCharacter(DomainError):
    status = 422
    type = "nul-character"
    title = "Text may not hold a NUL character"


class InternalError(DomainError):
    status = 500
    type = "internal-error"
    title = "Internal error"
