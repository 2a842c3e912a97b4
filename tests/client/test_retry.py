"""Backoff arithmetic and which answers are worth a second attempt."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from datazone.client.retry import RetryPolicy, backoff_delay, retry_after_seconds, wait_before_retry


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_backoff_bound_doubles_then_caps() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        draws = [backoff_delay(attempt, policy, rng) for _ in range(400)]
        assert all(0.0 <= d <= bound for d in draws)
        # full jitter spreads over the whole interval, not a fixed step
        assert max(draws) > 0.9 * bound and min(draws) < 0.1 * bound
    assert backoff_delay(1000, policy, rng) <= 4.0  # no overflow for silly attempt numbers
    with pytest.raises(ValueError):
        backoff_delay(0, policy)


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay=-1)


def test_retry_after_forms() -> None:
    now = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(answer(429, **{"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(answer(429, **{"Retry-After": " 1.5 "})) == 1.5
    assert retry_after_seconds(answer(429, **{"Retry-After": "-3"})) == 0.0
    date = format_datetime(now + timedelta(seconds=12), usegmt=True)
    assert retry_after_seconds(answer(429, **{"Retry-After": date}), now=now) == pytest.approx(12.0)
    past = format_datetime(now - timedelta(seconds=12), usegmt=True)
    assert retry_after_seconds(answer(429, **{"Retry-After": past}), now=now) == 0.0
    assert retry_after_seconds(answer(429, **{"Retry-After": "soon"})) is None
    assert retry_after_seconds(answer(429)) is None


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_answers_are_retried(status: int) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.1)
    assert wait_before_retry(answer(status), 1, policy) is not None
    assert wait_before_retry(answer(status), 2, policy) is not None
    assert wait_before_retry(answer(status), 3, policy) is None  # attempts used up


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 422, 500])
def test_other_errors_are_not_retried(status: int) -> None:
    assert wait_before_retry(answer(status), 1, RetryPolicy()) is None


def test_transport_failures_are_retried_within_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, base_delay=0.2)
    delay = wait_before_retry(None, 1, policy)
    assert delay is not None and 0 <= delay <= 0.2
    assert wait_before_retry(None, 2, policy) is None


def test_retry_after_is_a_floor_and_a_long_one_gives_up() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_retry_after=60)
    for _ in range(50):
        delay = wait_before_retry(answer(429, **{"Retry-After": "3"}), 1, policy)
        assert delay is not None and 3.0 <= delay <= 3.01
    assert wait_before_retry(answer(429, **{"Retry-After": "3600"}), 1, policy) is None
