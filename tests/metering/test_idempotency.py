"""Idempotency keys: a retried call is answered the same, free; a key reused for another request
is refused; two concurrent calls with one key bill once and get one answer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from datazone.db import Database
from datazone.errors import InvalidSpec
from datazone.metering import service as metering
from datazone.metering.service import IdempotencyKeyReused
from tests.metering.builders import CallResult, call, catalog, committed_bank, totals

pytestmark = pytest.mark.usefixtures("catalog")
assert catalog


def test_fingerprint_is_the_request_not_its_spelling() -> None:
    fp = metering.fingerprint("post", "/v1/x", "b=2&a=1", b'{"u": 1}')
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == metering.fingerprint("POST", "/v1/x", "a=1&b=2", b'{"u": 1}')  # parameter order
    assert fp != metering.fingerprint("POST", "/v1/x", "a=1&b=2", b'{"u": 2}')
    assert fp != metering.fingerprint("POST", "/v1/y", "a=1&b=2", b'{"u": 1}')
    assert fp != metering.fingerprint("GET", "/v1/x", "a=1&b=2", b'{"u": 1}')
    assert fp != metering.fingerprint("POST", "/v1/x", "a=1&b=3", b'{"u": 1}')
    # parts cannot run together: path "/v1/xa" + query "" is not path "/v1/x" + query "a"
    assert metering.fingerprint("GET", "/v1/xa", "", b"") != metering.fingerprint("GET", "/v1/x", "a", b"")


def test_a_retry_replays_the_answer_free(db: Database) -> None:
    bank = committed_bank(db)
    first = call(db, bank, units=3, key="order-42", body=b"[1,2,3]")
    assert first.error is None and first.admission is not None
    assert totals(db, bank.institution.id) == (3, 1500, 0)
    again = call(db, bank, units=3, key="order-42", body=b"[1,2,3]")
    assert again.replayed is not None and again.admission is None
    assert again.replayed.status == 200
    assert again.replayed.headers == first.admission.headers
    assert again.replayed.body["answers"] == [e.uscc for e in first.events]
    assert totals(db, bank.institution.id) == (3, 1500, 0)  # nothing billed twice
    with db.unit_of_work() as s:
        keys = s.execute(
            sa.text("SELECT DISTINCT idempotency_key FROM usage_event WHERE institution_id = :i"),
            {"i": bank.institution.id},
        ).scalars()
        assert list(keys) == ["order-42"]


def test_a_key_is_per_institution(db: Database) -> None:
    a, b = committed_bank(db), committed_bank(db)
    assert call(db, a, key="same", body=b"x").admission is not None
    # another institution's identical key is its own: billed, not replayed, not refused
    r = call(db, b, key="same", body=b"y")
    assert r.admission is not None and r.replayed is None


def test_the_same_key_for_another_request_is_refused(db: Database) -> None:
    bank = committed_bank(db)
    assert call(db, bank, units=1, key="k-1", body=b'{"uscc": "A"}').error is None
    r = call(db, bank, units=1, key="k-1", body=b'{"uscc": "B"}')
    assert isinstance(r.error, IdempotencyKeyReused)
    assert r.error.status == 422 and r.error.type == "idempotency-key-reused"
    assert "k-1" in r.error.detail and "new key" in r.error.detail
    assert totals(db, bank.institution.id) == (1, 500, 0)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("a" * 256, "256 characters"),
        ("has space", "spaces"),
        ("ключ", "non-ASCII"),
        ("t\tab", "control"),
    ],
)
def test_a_malformed_key_is_refused_before_anything(db: Database, key: str, why: str) -> None:
    bank = committed_bank(db)
    r = call(db, bank, key=key)
    assert isinstance(r.error, InvalidSpec) and not isinstance(r.error, IdempotencyKeyReused)
    assert why in r.error.detail and r.error.errors[0]["location"] == "header Idempotency-Key"
    assert totals(db, bank.institution.id) == (0, 0, 0)


def test_longest_key_and_visible_punctuation_are_fine(db: Database) -> None:
    bank = committed_bank(db)
    assert call(db, bank, key="~" + "a" * 254).error is None
    assert call(db, bank, key="!#$%&'()*+,-./:;<=>?@[]^_`{|}").error is None


def test_two_concurrent_calls_with_one_key_bill_once_and_answer_alike(db: Database) -> None:
    bank = committed_bank(db)
    barrier = threading.Barrier(2)
    results: list[CallResult] = []

    def one() -> None:
        barrier.wait()
        results.append(call(db, bank, units=2, key="race-1", body=b"same"))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    answered = [r for r in results if r.admission is not None]
    replayed = [r for r in results if r.replayed is not None]
    assert len(answered) == 1 and len(replayed) == 1
    assert replayed[0].replayed is not None
    assert replayed[0].replayed.body["answers"] == [e.uscc for e in answered[0].events]
    assert totals(db, bank.institution.id) == (2, 1000, 0)


def test_a_rolled_back_call_leaves_its_key_free(db: Database) -> None:
    bank = committed_bank(db)
    fp = metering.fingerprint("GET", "/x", "", b"")
    with db.unit_of_work() as s:
        assert (
            metering.begin_idempotent(s, institution_id=bank.institution.id, key="retry-me", fingerprint=fp)
            is None
        )
        s.rollback()  # the answer failed
    r = call(db, bank, key="retry-me", body=b"a different body is fine: nothing was answered")
    assert r.admission is not None


def test_a_committed_call_without_an_answer_does_not_block_its_key(db: Database) -> None:
    """E.g. a refused call whose transaction committed an audit entry: its key was never answered."""
    bank = committed_bank(db)
    fp = metering.fingerprint("GET", "/x", "", b"")
    with db.unit_of_work() as s:
        metering.begin_idempotent(s, institution_id=bank.institution.id, key="refused", fingerprint=fp)
    assert call(db, bank, key="refused").admission is not None


def test_an_expired_answer_is_forgotten(db: Database) -> None:
    bank = committed_bank(db)
    assert call(db, bank, key="old", body=b"1").admission is not None
    with db.unit_of_work() as s:
        s.execute(
            sa.text("UPDATE idempotent_answer SET created_at = :t WHERE institution_id = :i"),
            {"t": datetime.now(UTC) - timedelta(hours=25), "i": bank.institution.id},
        )
    fp = metering.fingerprint("POST", "/v1/products/risk-insight/enterprises", "", b"2")
    with db.unit_of_work() as s:
        assert (
            metering.begin_idempotent(
                s, institution_id=bank.institution.id, key="old", fingerprint=fp, keep_hours=24
            )
            is None
        )
    assert call(db, bank, key="ancient").admission is not None
    with db.unit_of_work() as s:
        s.execute(
            sa.text(
                "UPDATE idempotent_answer SET created_at = :t WHERE institution_id = :i AND key = 'ancient'"
            ),
            {"t": datetime.now(UTC) - timedelta(hours=30), "i": bank.institution.id},
        )
    with db.unit_of_work() as s:
        assert metering.purge_idempotent(s, before=datetime.now(UTC) - timedelta(hours=24)) >= 1
    with db.unit_of_work() as s:
        left = s.execute(
            sa.text("SELECT key, status FROM idempotent_answer WHERE institution_id = :i ORDER BY key"),
            {"i": bank.institution.id},
        ).all()
    # the answered old key is purged; the claimed one (pending, no answer yet) is kept
    assert [tuple(r) for r in left] == [("old", None)]
