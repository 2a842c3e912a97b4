"""What the SDK raises: the gateway's refusals, an unreachable gateway, bad local input or settings.

A `ZoneError` carries the gateway's RFC 9457 problem (or the OAuth error of the token
endpoint) as a dict. Its text names the problem type, the detail and the refused check,
so a log line says what to fix; it never holds an access token or a client secret,
because the client scrubs both from the problem before raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

_MAX_BODY_IN_DETAIL = 500


# credentials the zone issues are long; a short one is a typo, and scrubbing it would rewrite
# ordinary words of the message ("the client secret is wrong" for the secret "wrong")
_MIN_SCRUBBED = 8


def _scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if len(secret) >= _MIN_SCRUBBED:
                value = value.replace(secret, "[redacted]")
        return value
    if isinstance(value, Mapping):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


class ZoneError(Exception):
    """The gateway refused a call: `status` is the HTTP status, `problem` its problem+json body."""

    def __init__(self, status: int | None, problem: Mapping[str, Any], *, redact: Iterable[str] = ()) -> None:
        secrets = tuple(s for s in redact if s)
        self.status = status
        self.problem: dict[str, Any] = _scrub(dict(problem), secrets)
        super().__init__(self._text())

    @property
    def type(self) -> str:
        """The problem type's last path segment (`invalid-token`), or the OAuth error code."""
        raw = str(self.problem.get("type") or self.problem.get("error") or "about:blank")
        return raw.rstrip("/").rsplit("/", 1)[-1]

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("error_description") or "")

    @property
    def check(self) -> str | None:
        check = self.problem.get("check")
        return str(check) if check is not None else None

    def _text(self) -> str:
        head = f"{self.status} {self.type}" if self.status is not None else self.type
        title = self.problem.get("title")
        text = f"{head} ({title})" if title and title != self.type else head
        if self.detail:
            text += f": {self.detail}"
        if self.check:
            text += f" [check: {self.check}]"
        errors = self.problem.get("errors")
        if isinstance(errors, list) and errors:
            parts = [
                f"{e.get('location', '?')}: {e.get('problem', e)}" if isinstance(e, Mapping) else str(e)
                for e in errors[:10]
            ]
            more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
            text += " | " + "; ".join(parts) + more
        return text

    @classmethod
    def from_response(cls, resp: httpx.Response, *, redact: Iterable[str] = ()) -> ZoneError:
        """Read the problem from a refused answer: problem+json, an OAuth error, or anything else."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and ("type" in body or "error" in body or "detail" in body):
            problem = dict(body)
        else:
            # e.g. an HTML page from a proxy in front of the gateway
            problem = {
                "type": "about:blank",
                "title": resp.reason_phrase or "HTTP error",
                "status": resp.status_code,
                "detail": resp.text[:_MAX_BODY_IN_DETAIL],
            }
        return cls(resp.status_code, problem, redact=redact)


class ZoneUnreachable(ZoneError):
    """No answer from the gateway after every attempt (connection refused or dropped, timeouts)."""

    def __init__(self, detail: str, *, attempts: int) -> None:
        super().__init__(
            None,
            {"type": "unreachable", "title": "Gateway unreachable", "detail": detail, "attempts": attempts},
        )


class ConfigError(ValueError):
    """Missing or unsafe client settings (URL, credentials, profile file)."""


@dataclass(frozen=True)
class BadUSCC:
    position: int  # 0-based index in the caller's sequence
    code: str
    reason: str


class InvalidUSCCs(ValueError):
    """Some USCCs are malformed; nothing was sent. `bad` lists each one by position."""

    def __init__(self, bad: list[BadUSCC], total: int) -> None:
        self.bad = bad
        shown = "; ".join(f"#{b.position + 1} {b.code!r}: {b.reason}" for b in bad[:20])
        more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
        super().__init__(f"{len(bad)} of {total} USCCs are invalid, nothing was sent: {shown}{more}")
