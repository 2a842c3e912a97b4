"""When to try a call again, and how long to wait first.

Only answers that say "not now" are retried: connection errors and timeouts, 502/503/504
from the gateway or a proxy in front of it, and 429. Every other 4xx is the caller's to
fix, and retrying it would only repeat the refusal. Waits grow exponentially up to a cap,
with full jitter (a uniform draw below the exponential bound) so that many clients
refused together do not come back together; a 429's `Retry-After` is honoured as a floor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import httpx

UTC = timezone.utc  # datetime.UTC is Python 3.11+
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # attempts in all, the first included
    base_delay: float = 0.5  # seconds; the bound doubles each attempt
    max_delay: float = 30.0  # cap of the exponential bound
    # a Retry-After longer than this is not waited for: the error goes back to the caller
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry delays cannot be negative")


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter below min(cap, base*2^(n-1))."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    bound = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 62))
    return (rng or random).uniform(0.0, bound)


def retry_after_seconds(resp: httpx.Response, now: datetime | None = None) -> float | None:
    """The answer's Retry-After (RFC 9110: delay-seconds or an HTTP-date) in seconds, or None."""
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def wait_before_retry(
    resp: httpx.Response | None, attempt: int, policy: RetryPolicy, rng: random.Random | None = None
) -> float | None:
    """How long to wait before the next attempt, or None when the call must not be retried."""
    if attempt >= policy.max_attempts:
        return None
    if resp is None:  # transport failure: no answer at all
        return backoff_delay(attempt, policy, rng)
    if resp.status_code not in RETRY_STATUSES:
        return None
    delay = backoff_delay(attempt, policy, rng)
    after = retry_after_seconds(resp)
    if after is not None:
        if after > policy.max_retry_after:
            return None
        # the server knows when capacity returns; a little jitter above it spreads the herd
        delay = after + min(delay, 1.0)
    return delay
