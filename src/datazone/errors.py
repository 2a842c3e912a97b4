"""Domain errors. Services raise these; one handler in app.py turns them into
RFC 9457 problem+json, and the CLI prints them. `type` is stable: clients key on it.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://datazone.example/problems/"


class DomainError(Exception):
    status: int = 400
    type: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
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
