"""The id of the request being served, carried by a context variable so that every log line
and every problem body of that request names it (sync handlers run in a copied context)."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

# what an incoming X-Request-ID may be: bounded, and only characters safe in a log line or a header
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# W3C trace context: version-traceid-parentid-flags, lowercase hex, the trace id not all zeros
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

_request_id: ContextVar[str | None] = ContextVar("datazone_request_id", default=None)


def request_id_for(x_request_id: str | None, traceparent: str | None) -> str:
    """The caller's X-Request-ID when it is safe, else the trace id of its traceparent, else a new id."""
    if x_request_id is not None and _SAFE_ID.match(x_request_id.strip()):
        return x_request_id.strip()
    if traceparent is not None:
        match = _TRACEPARENT.match(traceparent.strip())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    return secrets.token_hex(16)


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str | None) -> None:
    """Set the id for the rest of this context (a request's task, or a worker's job)."""
    _request_id.set(request_id)
