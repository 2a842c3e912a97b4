"""The gateway's outer edge, as pure ASGI middleware (no body buffering by Starlette's
BaseHTTPMiddleware, no task group between the app and the server):

- `InputBoundary` refuses, before any handler runs, a body larger than its route class
  allows (datazone.limits: Content-Length first, then the bytes as they stream in) and a
  NUL character in the path, the query, a JSON body or a form body: PostgreSQL text cannot
  hold NUL, so it is refused once, here, rather than in every schema and query.
- `UnhandledErrors` turns an exception nothing else handled into a 500 problem+json with an
  incident id that the log line with its traceback also carries. Starlette's own
  ServerErrorMiddleware answers too but then re-raises, and uvicorn closes the connection of
  a request whose app raised: the client's next request on that keep-alive connection was
  reset. Here the exception ends with the answer.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone import limits
from datazone.errors import PROBLEM_BASE, BodyTooLarge, DomainError, InternalError, NulCharacter
from datazone.observability.context import current_request_id

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
# a JSON string escape for U+0000: "\u0000" after an even number of backslashes (an odd
# number makes the backslash before "u0000" itself escaped, i.e. plain text)
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TEXT_BODIES = ("application/json", "application/x-www-form-urlencoded", "text/")


async def send_problem(base: str, send: Send, error: DomainError, *, instance: str, **extra: Any) -> None:
    body = error.problem(limits.excerpt(instance, limits.MAX_INSTANCE), base=base) | extra
    body["request_id"] = current_request_id()
    payload = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def nul_in_body(body: bytes, content_type: str) -> str | None:
    """Where a NUL character is in a text body, or None."""
    raw_nul = body.find(b"\x00")
    if raw_nul >= 0:
        return f"byte {raw_nul}"
    if content_type.startswith("application/x-www-form-urlencoded") and b"%00" in body:
        return f"byte {body.index(b'%00')} (%00)"
    if "json" in content_type:
        found = _JSON_NUL.search(body)
        if found:
            return f"byte {found.end() - 6} (\\u0000)"
    return None


class InputBoundary:
    def __init__(self, app: ASGIApp, *, problem_base: str = PROBLEM_BASE) -> None:
        self.app = app
        self.problem_base = problem_base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        query: bytes = scope.get("query_string", b"")
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            where = "the path" if "\x00" in path else "the query string"
            await send_problem(self.problem_base,
                send,
                NulCharacter(f"{where} holds a NUL character (%00); remove it: text in the zone cannot hold NUL"),
                instance=path.replace("\x00", "%00"),
            )
            return

        declared: bytes | None = None
        chunked = False
        # one pass over the headers; the first of a repeated header counts
        content_type: str | None = None
        for key, value in scope.get("headers", ()):
            name = key.lower()
            if name == b"content-length" and declared is None:
                declared = bytes(value)
            elif name == b"content-type" and content_type is None:
                content_type = bytes(value).decode("latin-1").lower()
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:
            # no Content-Length and no Transfer-Encoding: a request without a body (RFC 9112
            # section 6.3), most GETs and every probe; nothing to count or read, so no wrapper
            await self.app(scope, receive, send)
            return

        method: str = scope["method"]
        most = limits.body_limit(method, path)
        if declared is not None and declared.strip().isdigit() and int(declared) > most:
            await send_problem(self.problem_base, send, _too_large(method, most), instance=path)
            return

        if content_type is not None and content_type.startswith(_TEXT_BODIES):
            # a text body is read whole (at most `most` bytes) so a NUL is refused before the app
            # parses it; binary bodies (PSI chunks) stream through, counted
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    await self.app(scope, _replay([message]), send)
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > most:
                    await send_problem(self.problem_base, send, _too_large(method, most), instance=path)
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            nul_at = nul_in_body(body, content_type)
            if nul_at:
                await send_problem(self.problem_base,
                    send,
                    NulCharacter(f"the body holds a NUL character at {nul_at}; remove it: text in the zone cannot hold NUL"),
                    instance=path,
                )
                return
            await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)
            return

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > most:
                    raise _too_large(method, most)
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge as too_large:
            if started:
                raise
            await send_problem(self.problem_base, send, too_large, instance=path)


def _too_large(method: str, most: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"a {method} to this route may send at most {most} bytes; "
        "send fewer items per request (see the README's Limits)",
        limit=most,
    )


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A receive that gives `messages` first, then defers to `then` (a disconnect, say)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


class UnhandledErrors:
    def __init__(self, app: ASGIApp, *, problem_base: str = PROBLEM_BASE) -> None:
        self.app = app
        self.problem_base = problem_base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            incident = secrets.token_hex(8)
            log.error(
                "incident %s: unhandled %s in %s %s",
                incident, type(exc).__name__, scope["method"], scope["path"], exc_info=exc,
            )
            if started:
                raise  # half an answer is out: only closing the connection can tell the client
            await send_problem(self.problem_base,
                send,
                InternalError(
                    f"the zone failed to answer; quote incident {incident} to the operator, who can find it in the log"
                ),
                instance=scope["path"],
                incident=incident,
            )
