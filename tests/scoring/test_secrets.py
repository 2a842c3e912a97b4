"""The zone never holds a plaintext weight or point: after a model with distinctive weights and
points is registered, reviewed, scored online and in a job, no row of any platform table (bytes
decoded, never hex; the zone schema holds only the departments' data) and no line of the
gateway's log holds one, neither as written by the risk team nor as the fixed-point integer the
SDK encrypts. The re-randomization
factors are sealed at rest, and a factor is used once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.scoring import service as scoring_service
from datazone.scoring import worker as scoring_worker
from tests.scoring.conftest import ScoringZone
from tests.scoring.helpers import approved, logistic, registration, score, scorecard, unique

WEIGHTS = {
    "years_since_founding": 0.73159267,
    "tax_grade_code": -1.24680139,
    "dishonest_listed": -2.71828459,
    "abnormal_listed": 0.57721566,
}
WEIGHT_SCALE = 1_000_000_000
CARDS = {
    "years_since_founding": ([4, 9], [17.293441, -41.876241, 23.615141], None),
    "tax_grade_code": ([2, 4], [-8.441741, 12.908341, 31.052941], None),
    "headcount_change_pct": ([5], [6.331841, 19.774541], -27.553141),
}
CARD_SCALE = 1_000_000


def _secrets() -> tuple[list[str], list[int]]:
    """The values as written (decimal text) and as the fixed-point integers the SDK encrypts."""
    written = [repr(w) for w in WEIGHTS.values()]
    fixed = [circuits.fixed_point(w, WEIGHT_SCALE) for w in WEIGHTS.values()]
    for _, points, missing in CARDS.values():
        for value in [*points, *([missing] if missing is not None else [])]:
            written.append(repr(value))
            fixed.append(circuits.fixed_point(value, CARD_SCALE))
    return written, fixed


def _finders(written: list[str], fixed: list[int]) -> list[re.Pattern[str]]:
    # an integer counts only standing alone: inside base64 text digits run into letters
    integers = [re.compile(rf"(?<![0-9A-Za-z_-])-?{abs(v)}(?![0-9A-Za-z_-])") for v in fixed]
    return [re.compile(re.escape(w)) for w in written] + integers


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    return str(value)


def _rows(zone: ScoringZone) -> Iterator[tuple[str, str]]:
    """(table, text of a value) for every value of every table the zone keeps."""
    with zone.db.engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
                # the zone schema holds the departments' data (other tests' too), never a model's
                " AND table_schema NOT IN ('pg_catalog', 'information_schema', 'zone')"
            )
        ).all()
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            # names from the catalog, quoted
            for row in conn.execute(sa.text(f"SELECT * FROM {name}")):
                for value in row:
                    if value is not None:
                        yield name, _text(value)


def test_no_plaintext_weight_is_stored_or_logged(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    weighted = logistic(unique("distinctive"), WEIGHTS, scale=WEIGHT_SCALE, intercept=0.0)
    carded = scorecard(unique("distinctive"), CARDS, scale=CARD_SCALE, intercept=0.0)
    written, fixed = _secrets()
    finders = _finders(written, fixed)
    # the search finds the values where they are: in the plaintext model and what the SDK computes
    plain = repr(weighted) + repr(carded)
    assert all(f.search(plain) for f in finders[: len(written)])
    assert all(f.search(" ".join(map(str, fixed))) for f in finders[len(written) :])
    # and it does not mistake a registration's ciphertexts for them
    assert not any(f.search(repr(registration(zone, weighted))) for f in finders)

    views = [approved(zone, weighted), approved(zone, carded)]
    codes = zone.take(6)
    for view in views:
        for code in codes[:2]:
            assert score(zone, view["id"], code).status_code == 200
        with zone.client() as c:
            assert (
                c.post("/v1/scoring/jobs", json={"model": view["id"], "usccs": codes[2:]}).status_code == 201
            )
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-secrets")

    rows = list(_rows(zone))
    # the scan reads what the zone does keep: the models' names, the chunks' JSON
    assert any(weighted.name in text for table, text in rows if table == '"public"."scoring_model"')
    assert any('"ciphertexts"' in text for table, text in rows if table == '"public"."scoring_chunk"')
    hits = [(table, f.pattern) for table, text in rows for f in finders if f.search(text)]
    assert hits == []
    log = zone.server.log.read_text(encoding="utf-8", errors="replace")
    assert "POST /v1/scoring/models" in log  # the log is the gateway's, and it saw the registrations
    assert [f.pattern for f in finders if f.search(log)] == []


def test_factors_are_sealed_at_rest_and_each_is_used_once(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    approved(zone, logistic(unique("pool"), scale=100))
    settings = zone.worker_settings(scoring_factor_pool=6)
    key = zone.public.to_json()
    with zone.db.unit_of_work() as s:
        s.execute(
            sa.text("DELETE FROM scoring_factor WHERE key_fingerprint = :f"), {"f": zone.public.fingerprint}
        )
        added = scoring_service.fill_pool(
            s,
            settings=settings,
            key_fingerprint=zone.public.fingerprint,
            public_key=key,
            target=6,
            processes=1,
        )
    assert added == 6
    with zone.db.unit_of_work() as s:
        # topping up a full pool adds nothing
        assert (
            scoring_service.fill_pool(
                s,
                settings=settings,
                key_fingerprint=zone.public.fingerprint,
                public_key=key,
                target=6,
                processes=1,
            )
            == 0
        )
        sealed = list(
            s.scalars(
                sa.text("SELECT factor_sealed FROM scoring_factor WHERE key_fingerprint = :f"),
                {"f": zone.public.fingerprint},
            )
        )

    first, second = zone.db.session(), zone.db.session()
    try:
        mine = scoring_service.claim_factors(
            first, settings=settings, key_fingerprint=zone.public.fingerprint, count=4
        )
        theirs = scoring_service.claim_factors(
            second, settings=settings, key_fingerprint=zone.public.fingerprint, count=4
        )
        # the second claim skips the rows the first holds: no factor is handed out twice
        assert (len(mine), len(theirs)) == (4, 2) and not set(mine) & set(theirs)
        first.rollback()  # an answer that never left: its factors go back to the pool
        again = scoring_service.claim_factors(
            first, settings=settings, key_fingerprint=zone.public.fingerprint, count=6
        )
        assert sorted(again) == sorted(mine)
    finally:
        first.rollback()
        second.rollback()
        first.close()
        second.close()

    for factor in mine + theirs:
        # each is r^n mod n^2: the same ciphertext's plaintext under fresh randomness
        assert zone.private.decrypt(paillier.PublicKey(zone.public.n).encrypt(42, factor=factor)) == 42
        raw = factor.to_bytes(zone.public.ciphertext_bytes, "big")
        assert not any(raw in bytes(s) for s in sealed)
        assert not any(str(factor) in bytes(s).decode("ascii") for s in sealed)
