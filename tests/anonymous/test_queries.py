"""Anonymous query end to end: the real gateway on loopback, the synthetic zone, the institution's
side from privacy/anonymous_query.py, and answers checked against plaintext read from the zone
tables (the dishonest-debtor list; credit-basic as its lookup gives it at clearance 1).

Covers: existence (listed, not listed, not in the zone) and full answers; buckets of at least k
candidates, in the gateway's answer and in the stored table; the request never holds a code or
its plain hash; every evaluation metered and audited; the refusals (parameters changed after a
rebuild, quota, malformed points, too many queries, a revoked grant, the wrong channel) each
with what to fix and nothing written; an idempotent replay free and identical.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.ingest import service as ingest_service
from datazone.ingest.pipeline import execute_run
from datazone.privacy import anonymous_query as aq
from datazone.privacy import oprf
from tests.anonymous.conftest import CREDIT, DEBTORS, Institution, K, Zone, anonymous_product, put_product
from tests.conftest import problem


def ask(
    zone: Zone, inst: Institution, product: str, usccs: list[str], *, prefix_bits: int | None = None,
    purpose: str = "pre_loan", idempotency_key: str | None = None,
) -> tuple[httpx.Response, Any, bytes]:
    """One request as an SDK would send it: (response, the Blinded to open it with, the raw body sent)."""
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=60) as c:
        if prefix_bits is None:
            params = c.get(f"/v1/anonymous/{product}")
            assert params.status_code == 200, params.text
            prefix_bits = params.json()["prefix_bits"]
        buckets, blinded = aq.prepare(usccs, prefix_bits)
        body = {
            "purpose": purpose,
            "prefix_bits": prefix_bits,
            "queries": [{"bucket": b, "point": aq.b64encode(p)} for b, p in zip(buckets, blinded.points, strict=True)],
        }
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return c.post(f"/v1/anonymous/{product}/queries", content=raw, headers=headers), blinded, raw


def opened(resp: httpx.Response, blinded: Any, k: int) -> list[bytes | None]:
    """What the institution's side reads from an answer, after checking every bucket's size."""
    answers = resp.json()["answers"]
    aq.check_buckets([a["candidates"] for a in answers], k)
    return aq.open_answers(
        blinded, [aq.b64decode(a["point"]) for a in answers], [aq.b64decode(a["entries"]) for a in answers]
    )


def assert_blind(body: bytes, items: list[str]) -> None:
    """No USCC, nor any plain hash of one, appears in what the institution sends."""
    for code in items:
        raw = code.encode()
        digests = [hashlib.new(h, raw).digest() for h in ("sha256", "sha1", "md5")]
        digests.append(hashlib.sha256(aq.BUCKET_TAG + raw).digest())
        for needle in [raw, *digests, *(d.hex().encode() for d in digests), oprf.hash_to_point(code)]:
            assert needle not in body, f"the request carries {code} in a recognisable form"
            assert aq.b64encode(needle).encode()[:40] not in body


def usage(zone: Zone, inst: Institution) -> tuple[int, int]:
    with zone.db.engine.connect() as conn:
        count, fen = conn.execute(
            sa.text("SELECT coalesce(sum(quantity), 0), coalesce(sum(quantity * price_fen), 0) FROM usage_event WHERE institution_id = :i"),
            {"i": inst.id},
        ).one()
    return int(count), int(fen)


def test_every_bucket_holds_k_candidates_in_the_parameters_and_the_stored_table(zone: Zone) -> None:
    inst = zone.institution([DEBTORS, CREDIT, "dishonest-debtor-anonymous", "credit-basic-anonymous"])
    expected = aq.choose_prefix_bits(zone.registered, K)
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        for product in (DEBTORS, CREDIT):
            params = c.get(f"/v1/anonymous/{product}").json()
            assert params["k"] == K and params["prefix_bits"] == expected.prefix_bits
            assert params["buckets"] == 2 ** expected.prefix_bits
            assert params["candidates"] == len(zone.registered)
            assert params["smallest_bucket"] == expected.smallest_bucket >= K
            with zone.db.engine.connect() as conn:
                stored = conn.execute(
                    sa.text("SELECT bucket, candidates, entries FROM anonymous_bucket WHERE table_id = :t ORDER BY bucket"),
                    {"t": params["table"]},
                ).all()
            # the stored counts are the plaintext bucket sizes of the registered enterprises
            assert [r.candidates for r in stored] == aq.bucket_sizes(zone.registered, expected.prefix_bits)
            assert min(r.candidates for r in stored) >= K
            if product == DEBTORS:  # one sealed entry per listed enterprise, in its own bucket
                assert [r.entries for r in stored] == aq.bucket_sizes(zone.listed, expected.prefix_bits)
            else:  # one per candidate
                assert [r.entries for r in stored] == [r.candidates for r in stored]
        # the shipped products, k = 1,000, on 2,000 enterprises: one bucket of them all, never less than k
        for product in ("dishonest-debtor-anonymous", "credit-basic-anonymous"):
            params = c.get(f"/v1/anonymous/{product}").json()
            assert params["k"] == 1000 and params["smallest_bucket"] >= 1000
            assert params["prefix_bits"] == aq.choose_prefix_bits(zone.registered, 1000).prefix_bits
    # and the database itself refuses a ready table whose smallest bucket is below k
    with zone.db.engine.connect() as conn, pytest.raises(sa.exc.IntegrityError, match="ck_anonymous_table_k"):
        conn.execute(
            sa.text(
                "UPDATE anonymous_table SET smallest_bucket = k - 1 WHERE id = :t"
            ),
            {"t": params["table"]},
        )


def test_existence_answers_listed_not_listed_and_not_in_the_zone(zone: Zone) -> None:
    inst = zone.institution([DEBTORS])
    asked = [zone.listed[0], zone.unlisted[0], zone.listed[1], zone.strangers(1)[0], zone.unlisted[1]]
    before = usage(zone, inst)
    resp, blinded, raw = ask(zone, inst, DEBTORS, asked, purpose="anti_fraud")
    assert resp.status_code == 200, resp.text
    assert_blind(raw, asked)
    assert opened(resp, blinded, K) == [b"", None, b"", None, None]
    body = resp.json()
    assert body["k"] == K and body["charged_fen"] == 5 * 3  # 3 fen a query
    # five evaluations, five units billed, no enterprise named
    count, fen = usage(zone, inst)
    assert (count - before[0], fen - before[1]) == (5, 15)
    with zone.db.engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT count(*) FROM usage_event WHERE institution_id = :i AND uscc IS NOT NULL"), {"i": inst.id}
        ).scalar() == 0
        entry = conn.execute(
            sa.text(
                "SELECT entity_count, detail, entities FROM audit_entry WHERE action = 'anonymous.query'"
                " AND institution_id = :i ORDER BY id DESC LIMIT 1"
            ),
            {"i": inst.id},
        ).one()
    assert entry.entity_count == 5 and entry.entities == []
    assert entry.detail["buckets"] == [a["bucket"] for a in body["answers"]]
    assert entry.detail["table"] == body["table"] and entry.detail["epoch"] == body["epoch"]
    # every listed enterprise asked in turn: all found, and none of the unlisted
    listed = zone.listed[:20]
    sample = listed + zone.unlisted[:20]
    found: list[bytes | None] = []
    for start in range(0, len(sample), 5):
        r, b, _ = ask(zone, inst, DEBTORS, sample[start : start + 5])
        found += opened(r, b, K)
    assert len(listed) >= 10 and found == [b""] * len(listed) + [None] * 20


def test_full_answers_equal_the_lookup_at_clearance_1(zone: Zone) -> None:
    inst = zone.institution([CREDIT, "credit-basic"], clearance=1)
    asked = [*zone.registered[:12:3], zone.strangers(1)[0], zone.registered[-1]]
    resp, blinded, raw = ask(zone, inst, CREDIT, asked)
    assert resp.status_code == 200, resp.text
    assert_blind(raw, asked)
    assert resp.json()["charged_fen"] == 0  # a free product: metered, not charged
    answers = opened(resp, blinded, K)
    assert answers[4] is None  # not a registered enterprise: not a candidate
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        for code, answer in zip(asked, answers, strict=True):
            if code in zone.registered:
                assert answer is not None
                lookup = c.get(f"/v1/products/credit-basic/enterprises/{code}", params={"purpose": "pre_loan"})
                assert lookup.status_code == 200, lookup.text
                assert lookup.json()["masking"]["clearance"] == 1
                assert json.loads(answer) == lookup.json()["answer"]
    # the bucket's table holds every candidate of the bucket, sealed: no answer shows in it
    entries = aq.b64decode(resp.json()["answers"][0]["entries"])
    first = answers[0]
    assert first is not None and len(entries) > K * len(first)
    assert json.loads(first)["name"].encode() not in entries and first not in entries


def test_a_prefix_too_long_for_k_is_refused_with_figures_and_nothing_applied(zone: Zone) -> None:
    fits = aq.choose_prefix_bits(zone.registered, K)
    too_long = fits.prefix_bits + 2
    smallest = min(aq.bucket_sizes(zone.registered, too_long))
    r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", "anon-too-long", k=K, prefix_bits=too_long))
    body = problem(r)
    assert r.status_code == 422 and body["type"].endswith("/invalid-spec")
    (err,) = [e for e in body["errors"] if e["location"] == "anonymous.prefix_bits"]
    assert f"at prefix_bits {too_long}" in err["problem"] and f"holds {smallest:,}" in err["problem"]
    assert f"k = {K}" in err["problem"] and f"use prefix_bits {fits.prefix_bits} or less" in err["problem"]
    # k above the zone's candidates, and a filter on a field the spec does not declare: all listed at once
    spec = anonymous_product("dishonest-debtor-anonymous", "anon-too-big", k=5000)
    spec["anonymous"]["members"] = {"dataset": "court_dishonest", "where": {"court": "x"}}
    r = put_product(zone, spec)
    body = problem(r)
    located = {e["location"]: e["problem"] for e in body["errors"]}
    assert "anonymous.members.where.court" in located
    r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", "anon-too-big", k=5000))
    located = {e["location"]: e["problem"] for e in problem(r)["errors"]}
    assert f"holds {len(zone.registered):,} candidates, fewer than k = 5,000" in located["anonymous.k"]
    with httpx.Client(base_url=zone.url, headers=zone.operator) as c:
        for pid in ("anon-too-long", "anon-too-big"):
            assert c.get(f"/v1/catalog/products/{pid}").status_code == 404


def test_parameters_changed_after_a_rebuild_409_then_success_after_refetch(zone: Zone) -> None:
    product = "anon-debtors-changing"
    fits = aq.choose_prefix_bits(zone.registered, K)
    r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", product, k=K, prefix_bits=fits.prefix_bits))
    assert r.status_code in (200, 201), r.text
    inst = zone.institution([product])
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        waiting = c.get(f"/v1/anonymous/{product}")
        assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "30"
        assert problem(waiting)["type"].endswith("/anonymous-table-building")
        built = zone.build()
        assert f"{product}@table {zone_table(zone, product)}" in built
        old = c.get(f"/v1/anonymous/{product}").json()
        assert old["prefix_bits"] == fits.prefix_bits
        # a new price changes nothing the table seals: the same table answers, without a rebuild
        repriced = anonymous_product("dishonest-debtor-anonymous", product, k=K, prefix_bits=fits.prefix_bits)
        repriced["price_fen"] = 4
        assert put_product(zone, repriced).json()["result"] == "updated"
        assert c.get(f"/v1/anonymous/{product}").json()["table"] == old["table"]
        assert not [b for b in zone.build() if product in b]
        # the operator shortens the prefix: a new spec, so a new table; the old one is not served for it
        r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", product, k=K, prefix_bits=fits.prefix_bits - 1))
        assert r.status_code == 200 and r.json()["result"] == "updated"
        assert c.get(f"/v1/anonymous/{product}").status_code == 503
        zone.build()
        asked = [zone.listed[2], zone.unlisted[2]]
        before = usage(zone, inst)
        stale, _, _ = ask(zone, inst, product, asked, prefix_bits=old["prefix_bits"])
        body = problem(stale)
        assert stale.status_code == 409 and body["type"].endswith("/anonymous-parameters-changed")
        assert body["current"]["prefix_bits"] == fits.prefix_bits - 1 and body["current"]["table"] != old["table"]
        assert usage(zone, inst) == before  # nothing charged
        fresh, blinded, _ = ask(zone, inst, product, asked)  # refetches the parameters first
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["prefix_bits"] == fits.prefix_bits - 1
        assert opened(fresh, blinded, K) == [b"", None]


def zone_table(zone: Zone, product: str) -> int:
    with zone.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT max(id) FROM anonymous_table WHERE product_id = :p AND state = 'ready'"), {"p": product}
            ).scalar_one()
        )


def test_quota_counts_every_evaluation_and_a_refusal_writes_nothing(zone: Zone) -> None:
    inst = zone.institution(
        [DEBTORS], plan={"rate_per_second": 100.0, "burst": 100, "quota_units": 7, "quota_period": "day"}
    )
    asked = [*zone.listed[:2], *zone.unlisted[:3]]
    first, _, _ = ask(zone, inst, DEBTORS, asked)
    assert first.status_code == 200, first.text
    assert usage(zone, inst)[0] == 5  # five queries, five units of the quota
    over, _, _ = ask(zone, inst, DEBTORS, asked)
    body = problem(over)
    assert over.status_code == 429 and body["type"].endswith("/quota-exceeded") and body["check"] == "quota"
    assert body["used"] == 5 and body["requested"] == 5 and body["remaining"] == 2
    assert usage(zone, inst)[0] == 5  # nothing written
    with zone.db.engine.connect() as conn:
        refused = conn.execute(
            sa.text(
                "SELECT count(*) FROM audit_entry WHERE institution_id = :i AND outcome = 'refused'"
                " AND reason = 'quota-exceeded'"
            ),
            {"i": inst.id},
        ).scalar()
        answered = conn.execute(
            sa.text("SELECT count(*) FROM audit_entry WHERE institution_id = :i AND action = 'anonymous.query'"),
            {"i": inst.id},
        ).scalar()
    assert (refused, answered) == (1, 1)
    last, _, _ = ask(zone, inst, DEBTORS, asked[:2])
    assert last.status_code == 200 and usage(zone, inst)[0] == 7


def test_malformed_queries_are_listed_at_once_and_nothing_charged(zone: Zone) -> None:
    inst = zone.institution([DEBTORS])
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        bits = c.get(f"/v1/anonymous/{DEBTORS}").json()["prefix_bits"]
        buckets, blinded = aq.prepare(zone.listed[:5], bits)
        queries: list[dict[str, Any]] = [
            {"bucket": b, "point": aq.b64encode(p)} for b, p in zip(buckets, blinded.points, strict=True)
        ]
        off_curve = next(
            b"\x02" + x.to_bytes(32, "big") for x in range(1, 100) if oprf.find_malformed([b"\x02" + x.to_bytes(32, "big")])
        )
        queries[1]["point"] = "not*base64"
        queries[2]["point"] = aq.b64encode(b"\x02" + b"\x01" * 20)
        queries[3]["point"] = aq.b64encode(off_curve)
        queries[4]["bucket"] = 2**bits
        before = usage(zone, inst)
        r = c.post(f"/v1/anonymous/{DEBTORS}/queries", json={"purpose": "pre_loan", "prefix_bits": bits, "queries": queries})
        body = problem(r)
        assert r.status_code == 422 and body["type"].endswith("/malformed-anonymous-query")
        assert body["positions"] == [1, 2, 3, 4] and body["check"] == "anonymous_query"
        assert [e["location"] for e in body["errors"]] == [
            "queries.1.point", "queries.2.point", "queries.3.point", "queries.4.bucket",
        ]
        assert "base64" in body["errors"][0]["problem"] and "21 bytes" in body["errors"][1]["problem"]
        assert "not a point on P-256" in body["errors"][2]["problem"]
        assert f"outside 0..{2**bits - 1}" in body["errors"][3]["problem"]
        # an off-curve point alone is found by the evaluation itself, and named the same way
        only = [dict(queries[0]), {**queries[0], "point": aq.b64encode(off_curve)}]
        r = c.post(f"/v1/anonymous/{DEBTORS}/queries", json={"purpose": "pre_loan", "prefix_bits": bits, "queries": only})
        assert r.status_code == 422 and problem(r)["positions"] == [1]
        # too many queries for the product (5 at most), and none at all
        six = [queries[0]] * 6
        r = c.post(f"/v1/anonymous/{DEBTORS}/queries", json={"purpose": "pre_loan", "prefix_bits": bits, "queries": six})
        assert r.status_code == 422 and problem(r)["type"].endswith("/anonymous-too-many-queries")
        assert problem(r)["limit"] == 5
        r = c.post(f"/v1/anonymous/{DEBTORS}/queries", json={"purpose": "pre_loan", "prefix_bits": bits, "queries": []})
        assert r.status_code == 422 and problem(r)["type"].endswith("/invalid-request")
        assert usage(zone, inst) == before
        # the detail names positions and lengths, never a point's bytes
        assert queries[3]["point"] not in json.dumps(body)


def test_a_revoked_grant_refuses_the_next_query_naming_the_department(zone: Zone) -> None:
    inst = zone.institution([DEBTORS])
    ok, _, _ = ask(zone, inst, DEBTORS, zone.listed[:1])
    assert ok.status_code == 200
    with httpx.Client(base_url=zone.url, timeout=30) as c:
        r = c.post(f"/v1/grants/{inst.grants['courts']}/revoke", headers=zone.departments["courts"],
                   json={"reason": "test: the courts withdraw"})
        assert r.status_code == 200, r.text
    before = usage(zone, inst)
    refused, _, _ = ask(zone, inst, DEBTORS, zone.listed[:1])
    body = problem(refused)
    assert refused.status_code == 403 and body["check"] == "grant" and "courts" in body["detail"]
    assert usage(zone, inst) == before


def test_each_product_answers_through_its_own_channel_only(zone: Zone) -> None:
    inst = zone.institution([DEBTORS, "credit-basic"])
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        lookup = c.get(f"/v1/products/{DEBTORS}/enterprises/{zone.listed[0]}", params={"purpose": "pre_loan"})
        assert lookup.status_code == 409 and problem(lookup)["type"].endswith("/anonymous-only-product")
        assert f"/v1/anonymous/{DEBTORS}/queries" in problem(lookup)["detail"]
        params = c.get("/v1/anonymous/credit-basic")
        assert params.status_code == 409 and problem(params)["type"].endswith("/not-an-anonymous-product")
        _, blinded = aq.prepare(zone.listed[:1], 0)
        r = c.post("/v1/anonymous/credit-basic/queries", json={
            "purpose": "pre_loan", "prefix_bits": 0, "queries": [{"bucket": 0, "point": aq.b64encode(blinded.points[0])}],
        })
        assert r.status_code == 409 and problem(r)["type"].endswith("/not-an-anonymous-product")
        # a product outside the token's scopes
        r = c.get(f"/v1/anonymous/{CREDIT}")
        assert r.status_code == 403 and problem(r)["type"].endswith("/insufficient-scope")


def test_an_idempotent_replay_is_free_and_identical(zone: Zone) -> None:
    inst = zone.institution([CREDIT])
    asked = zone.registered[100:103]
    first, blinded, raw = ask(zone, inst, CREDIT, asked, idempotency_key="anon-replay-1")
    assert first.status_code == 200, first.text
    before = usage(zone, inst)
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        headers = {"Content-Type": "application/json", "Idempotency-Key": "anon-replay-1"}
        again = c.post(f"/v1/anonymous/{CREDIT}/queries", content=raw, headers=headers)
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        assert opened(again, blinded, K) == opened(first, blinded, K)
        assert usage(zone, inst) == before
        # the same key for another request is refused
        other = json.loads(raw)
        other["queries"] = other["queries"][:1]
        reused = c.post(f"/v1/anonymous/{CREDIT}/queries", json=other, headers={"Idempotency-Key": "anon-replay-1"})
        assert reused.status_code == 422 and problem(reused)["type"].endswith("/idempotency-key-reused")
    # what the zone kept for the replay holds no bucket table (they are read back from the table)
    with zone.db.engine.connect() as conn:
        kept = conn.execute(
            sa.text("SELECT body FROM idempotent_answer WHERE institution_id = :i AND key = 'anon-replay-1'"),
            {"i": inst.id},
        ).scalar_one()
    assert "entries" not in json.dumps(kept) and kept["table"] == first.json()["table"]


def _ingest_court_list(zone: Zone, path: Path) -> None:
    with zone.db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id="court_dishonest", trigger="cli", file=str(path)).id
    run = execute_run(zone.db, run_id=run_id, settings=zone.settings)
    assert run.status == "succeeded", run.error


def test_data_that_no_longer_gives_k_is_not_sealed_and_queries_are_refused_with_figures(
    zone: Zone, tmp_path: Path
) -> None:
    # the list itself as the candidates, k = 5: sealed while the list is long enough
    product = "anon-on-the-list"
    spec = anonymous_product("dishonest-debtor-anonymous", product, k=5)
    spec["anonymous"]["candidates"] = {"dataset": "court_dishonest"}
    assert put_product(zone, spec).status_code == 201
    inst = zone.institution([product])
    built = zone.build()
    assert f"{product}@table {zone_table(zone, product)}" in built
    ok, blinded, _ = ask(zone, inst, product, zone.listed[:2])
    assert ok.status_code == 200 and opened(ok, blinded, 5) == [b"", b""]

    delivered = sorted(zone.settings.drop_path.joinpath("court_dishonest").rglob("*.csv"))[-1]
    original = tmp_path / "court_dishonest_as_delivered.csv"
    original.write_bytes(delivered.read_bytes())
    with original.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    three = [next(r for r in body if r[0] == code) for code in zone.listed[:3]]
    shrunk = tmp_path / "court_dishonest_three.csv"
    with shrunk.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *three])
    try:
        _ingest_court_list(zone, shrunk)
        built = zone.build()
        assert f"failed:{product}" in built
        with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
            refused = c.get(f"/v1/anonymous/{product}")
        body_ = problem(refused)
        assert refused.status_code == 503 and body_["type"].endswith("/anonymous-buckets-below-k")
        assert "holds 3 candidates, fewer than k = 5" in body_["detail"]
        before = usage(zone, inst)
        stale, _, _ = ask(zone, inst, product, zone.listed[:1], prefix_bits=0)
        assert stale.status_code == 503 and usage(zone, inst) == before
        # the other products over the same list are sealed anew, their k still met
        assert f"failed:{DEBTORS}" not in built
        with zone.db.engine.connect() as conn:
            state, error = conn.execute(
                sa.text("SELECT state, error FROM anonymous_table WHERE product_id = :p ORDER BY id DESC LIMIT 1"),
                {"p": product},
            ).one()
        assert state == "failed" and "fewer than k = 5" in error
        # a second pass does not try the same data again
        assert f"failed:{product}" not in zone.build()
    finally:
        _ingest_court_list(zone, original)
        zone.build()
    with httpx.Client(base_url=zone.url, headers=inst.token, timeout=30) as c:
        assert c.get(f"/v1/anonymous/{product}").status_code == 200
    again, blinded, _ = ask(zone, inst, product, [zone.listed[5], zone.unlisted[5]])
    assert again.status_code == 200 and opened(again, blinded, 5) == [b"", None]


def test_answers_masked_above_the_contracts_clearance_are_refused(zone: Zone) -> None:
    product = "anon-credit-clearance-2"
    spec = anonymous_product("credit-basic-anonymous", product, k=K, clearance=2)
    assert put_product(zone, spec).status_code == 201
    inst = zone.institution([product], clearance=1)
    before = usage(zone, inst)
    refused, _, _ = ask(zone, inst, product, zone.registered[:1], prefix_bits=0)
    body = problem(refused)
    assert refused.status_code == 403 and body["type"].endswith("/anonymous-clearance-above-contract")
    assert "clearance 2" in body["detail"] and body["check"] == "contract"
    assert usage(zone, inst) == before


def test_no_key_and_no_sealed_answer_reaches_a_log_or_a_table_in_clear(zone: Zone) -> None:
    from datazone.psi import service as psi_service

    inst = zone.institution([CREDIT, DEBTORS])
    ask(zone, inst, CREDIT, zone.registered[:3])
    ask(zone, inst, DEBTORS, [*zone.listed[:2], "91110105000000001X"])  # a bad check digit is still just a point
    with zone.db.unit_of_work() as s:
        epochs = [e.id for e in s.scalars(sa.select(psi_service.PsiKeyEpoch))]
        keys = [psi_service.epoch_key(s, settings=zone.settings, epoch=e) for e in epochs]
    secrets_ = [*keys, *(aq.product_key(k, p) for k in keys for p in (CREDIT, DEBTORS))]
    needles = [form for key in secrets_ for form in (key.hex(), aq.b64encode(key), str(int.from_bytes(key, "big")))]
    with zone.db.engine.connect() as conn:
        stored = [
            json.dumps(dict(row), default=str)
            for table in ("audit_entry", "idempotent_answer", "anonymous_table", "usage_event")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
        ]
        sealed = conn.execute(sa.text("SELECT data FROM anonymous_bucket")).scalars().all()
    logged = zone.log.read_text(encoding="utf-8", errors="replace")
    for needle in needles:
        assert needle not in logged and all(needle not in row for row in stored)
    # the sealed tables hold no answer in clear: no registered name appears in any bucket's bytes
    with zone.db.engine.connect() as conn:
        names = conn.execute(sa.text("SELECT name FROM zone.mr_registration WHERE _vto IS NULL LIMIT 50")).scalars().all()
    for name in names:
        assert all(name.encode() not in bytes(data) for data in sealed)
