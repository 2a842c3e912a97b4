"""Benchmark: anonymous query (匿踪查询), the zone's work per query against one X25519 scalar
multiplication at OpenSSL's own speed, and the bytes per query.

Not part of the test suite: `make bench-anonymous` (or `.venv/bin/python tests/bench_anonymous.py`;
`--quick` checks the script in a minute or two on a small zone).

The zone is the demo zone (embedded PostgreSQL in a temporary home) at --entities enterprises
(default 100,000: with k = 1,000 that is 2^6 = 64 buckets of about 1,560, so k means something,
and the zone builds in about a minute on two cores), with the two shipped anonymous products
(dishonest-debtor-anonymous: existence; credit-basic-anonymous: full answers), k = 1,000 as
they declare, their bucket tables sealed by the worker. A bench institution has a private plan
(no quota, no rate limit to speak of), a contract and the departments' grants.

Measured in one run, medians over --rounds (each round one query, alternating the products):
1. the zone's work per query, in process: `anonymous.service.query` for one query end to end,
   committed (scope, authorize, parameters, the point checked and evaluated, the bucket read,
   audit entry, meter admission, usage event, commit), the bucket held in the gateway's memory
   (as a busy gateway has it) and read from PostgreSQL (the cache emptied before each query);
2. its cryptographic part alone: `oprf.evaluate` of one point under the product key (the point
   validated and multiplied), and per point in a request of 100;
3. one X25519 scalar multiplication at OpenSSL's speed: `cryptography`'s
   X25519PrivateKey.exchange, median per operation over batches;
4. over HTTP against the real gateway (uvicorn): the bytes of the request and response bodies
   for one query of each product, and the round trip per query.
Every answer is opened by the institution's side and checked against the zone tables.
A JSON summary goes to --json and, as one line, to stdout last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench_gateway import Uvicorn  # noqa: E402

EXISTENCE = "dishonest-debtor-anonymous"
FULL = "credit-basic-anonymous"
PRODUCTS = (EXISTENCE, FULL)
PURPOSE = "pre_loan"
BENCH_PLAN = "bench-anonymous"


def say(text: str) -> None:
    print(text, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def per_op(fn: Callable[[], object], *, batches: int, size: int) -> float:
    """Median seconds per call, over `batches` timed batches of `size` calls."""
    times = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(size):
            fn()
        times.append((time.perf_counter() - t0) / size)
    return median(times)


def x25519_seconds(batches: int) -> float:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    mine, theirs = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    return per_op(lambda: mine.exchange(theirs), batches=batches, size=1000)


# ---------------------------------------------------------------- the zone


def build_zone(home: Path, entities: int) -> dict[str, Any]:
    from datazone.config import Settings
    from datazone.contract import service as contract_service
    from datazone.dataset import service as dataset_service
    from datazone.db import Database
    from datazone.demo.setup import prepare_demo
    from datazone.grant import service as grant_service
    from datazone.metering import service as metering
    from datazone.oauth import service as oauth_service
    from datazone.principal import service as principal_service

    settings = Settings(home=home, drop_dir=home / "drop")
    db = Database.from_settings(settings)
    t0 = time.perf_counter()
    prepare_demo(db, settings, entities=entities)
    say(f"demo zone of {entities:,} enterprises ready, bucket tables sealed, in {time.perf_counter() - t0:.1f} s")
    now = datetime.now(UTC)
    valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=30)
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        bench = principal_service.create_principal(s, kind="institution", name="bench-anonymous-bank")
        metering.create_plan(
            s, plan_id=BENCH_PLAN, name="bench: anonymous queries", institution_id=bench.id,
            rate_per_second=1_000_000.0, burst=1_000_000, by=operator,
        )
        contract_service.create_contract(
            s, institution_id=bench.id, purposes=[PURPOSE], products=list(PRODUCTS), clearance=1,
            plan_id=BENCH_PLAN, by=operator, valid_from=valid_from, valid_to=valid_to,
        )
        for dept_id in ("market-regulation", "tax", "courts"):
            dept = principal_service.find_principal(s, name=f"demo-{dept_id}")
            assert dept is not None
            datasets = [d.id for d in dataset_service.list_datasets(s, department=dept_id)]
            grant_service.create_grant(
                s, department=dept_id, datasets=datasets, purposes=[PURPOSE], products=list(PRODUCTS),
                institutions=[bench.id], by=dept, valid_from=valid_from, valid_to=valid_to,
            )
        client, secret = oauth_service.create_client(s, institution_id=bench.id, name="bench", by_name="bench")
        _, registered = dataset_service.population(s, dataset_id="mr_registration")
        _, listed = dataset_service.population(s, dataset_id="court_dishonest")
        bench_id = bench.id
    assert secret is not None
    return {
        "db": db, "settings": settings, "institution_id": bench_id, "client_id": client.client_id,
        "client_secret": secret, "registered": registered, "listed": listed,
    }


def expected_answers(db: Any, codes: list[str], as_of: Any) -> dict[str, dict[str, Any] | None]:
    """credit-basic-anonymous's answers in plaintext: the engine, masked at clearance 1."""
    from datazone.masking import service as masking
    from datazone.product import engine
    from datazone.product import service as product_service

    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id=FULL))
        computed = engine.compute(s, spec=spec, usccs=codes, as_of=as_of)
    rules = [masking.FieldRule(o.name, *o.policy()) for o in spec.outputs]
    return {
        c: None if a is None else json.loads(json.dumps(masking.mask_answer(a, rules, clearance=1).values, default=str))
        for c, a in computed.answers.items()
    }


# ---------------------------------------------------------------- measurements


def in_process(ctx: dict[str, Any], sample: list[str], rounds: int) -> dict[str, Any]:
    """The service's query path for one query, committed, per product; the cryptographic part alone."""
    from datazone.anonymous import service
    from datazone.anonymous.schemas import QueryIn
    from datazone.oauth.resource import AccessGrant
    from datazone.principal import service as principal_service
    from datazone.privacy import anonymous_query as aq
    from datazone.privacy import oprf
    from datazone.product import service as product_service
    from datazone.psi import service as psi_service
    from datazone.purposes import Purpose

    db, settings = ctx["db"], ctx["settings"]
    with db.unit_of_work() as s:
        institution = principal_service.get_principal(s, principal_id=ctx["institution_id"])
        s.expunge(institution)
    grant = AccessGrant(
        client_id=ctx["client_id"], institution=institution,
        scopes=frozenset(f"product:{p}" for p in PRODUCTS), jti="bench",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    out: dict[str, Any] = {}
    listed = set(ctx["listed"])
    for product in PRODUCTS:
        with db.unit_of_work() as s:
            params = service.parameters(s, grant=grant, product_id=product)
            table = service.live_table(s, product=product_service.get_product(s, product_id=product))
            assert table is not None
            key = aq.product_key(psi_service.epoch_key(s, settings=settings, epoch=table.epoch), product)
        bits = params["prefix_bits"]
        prepared = [aq.prepare([code], bits) for code in sample]
        expected = expected_answers(db, sample, table.as_of) if product == FULL else None

        def one(i: int, *, cold: bool) -> float:
            buckets, blinded = prepared[i % len(prepared)]
            queries = [QueryIn(bucket=buckets[0], point=aq.b64encode(blinded.points[0]))]
            if cold:
                service.BUCKETS.clear()
            t0 = time.perf_counter()
            with db.unit_of_work() as s:
                answered = service.query(
                    s, settings=settings, grant=grant, product_id=product, purpose=Purpose(PURPOSE),
                    prefix_bits=bits, queries=queries,
                )
            seconds = time.perf_counter() - t0
            (a,) = answered.body["answers"]
            (got,) = aq.open_answers(blinded, [aq.b64decode(a["point"])], [aq.b64decode(a["entries"])])
            code = sample[i % len(sample)]
            if product == EXISTENCE:
                assert (got == b"") == (code in listed), f"{code}: wrong existence answer"
            else:
                assert expected is not None and got is not None and json.loads(got) == expected[code], code
            assert a["candidates"] >= params["k"]
            return seconds

        def full_request(i: int) -> float:
            """A request of the product's max_queries queries: seconds per query."""
            n = params["max_queries"]
            codes = [sample[(i * n + j) % len(sample)] for j in range(n)]
            buckets, blinded = aq.prepare(codes, bits)
            queries = [QueryIn(bucket=b, point=aq.b64encode(p)) for b, p in zip(buckets, blinded.points, strict=True)]
            t0 = time.perf_counter()
            with db.unit_of_work() as s:
                answered = service.query(
                    s, settings=settings, grant=grant, product_id=product, purpose=Purpose(PURPOSE),
                    prefix_bits=bits, queries=queries,
                )
            seconds = time.perf_counter() - t0
            got = aq.open_answers(
                blinded, [aq.b64decode(a["point"]) for a in answered.body["answers"]],
                [aq.b64decode(a["entries"]) for a in answered.body["answers"]],
            )
            if product == EXISTENCE:
                assert [g == b"" for g in got] == [c in listed for c in codes]
            else:
                assert expected is not None and [json.loads(g or b"0") for g in got] == [expected[c] for c in codes]
            return seconds / n

        for i in range(5):  # warm: the product key's OpenMined server, the bucket cache, the pool
            one(i, cold=False)
        warm = median([one(i, cold=False) for i in range(rounds)])
        cold = median([one(i, cold=True) for i in range(rounds)])
        batched = median([full_request(i) for i in range(max(5, rounds // 20))])
        point = prepared[0][1].points[0]
        crypto = per_op(lambda: oprf.evaluate(key, [point]), batches=max(5, rounds // 20), size=200)
        hundred = [p for _, b in prepared[:100] for p in b.points]
        batch = per_op(lambda: oprf.evaluate(key, hundred), batches=max(5, rounds // 20), size=5) / len(hundred)
        out[product] = {
            "k": params["k"], "prefix_bits": bits, "buckets": params["buckets"],
            "smallest_bucket": params["smallest_bucket"], "candidates": params["candidates"],
            "max_queries": params["max_queries"], "query_warm_s": warm, "query_cold_s": cold,
            "query_in_full_request_s": batched, "oprf_one_s": crypto, "oprf_per_point_in_100_s": batch,
        }
        say(f"  {product}: service query {warm * 1e3:.2f} ms (bucket in memory), {cold * 1e3:.2f} ms (from PostgreSQL),"
            f" {batched * 1e3:.2f} ms a query in a request of {params['max_queries']};"
            f" OPRF evaluation {crypto * 1e6:.1f} us alone, {batch * 1e6:.1f} us a point in a request of 100")
    return out


def over_http(ctx: dict[str, Any], sample: list[str], rounds: int, work: Path) -> dict[str, Any]:
    """Bytes per query and the round trip per query against the real gateway."""
    from datazone.privacy import anonymous_query as aq

    env = dict(os.environ)
    env.update({
        "DATAZONE_HOME": str(ctx["settings"].home), "DATAZONE_DATABASE_URL": ctx["db"].url,
        "DATAZONE_DROP_DIR": str(ctx["settings"].drop_path),
    })
    gateway = Uvicorn("datazone.app:create_app", env, work / "gateway.log")
    gateway.start()
    try:
        r = httpx.post(gateway.url + "/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(ctx["client_id"], ctx["client_secret"]), timeout=30)
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}", "Content-Type": "application/json"}
        out: dict[str, Any] = {}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as c:
            for product in PRODUCTS:
                params = c.get(f"/v1/anonymous/{product}").json()
                times, requests, responses = [], [], []
                for i in range(rounds):
                    code = sample[i % len(sample)]
                    buckets, blinded = aq.prepare([code], params["prefix_bits"])
                    body = json.dumps({
                        "purpose": PURPOSE, "prefix_bits": params["prefix_bits"],
                        "queries": [{"bucket": buckets[0], "point": aq.b64encode(blinded.points[0])}],
                    }).encode()
                    t0 = time.perf_counter()
                    resp = c.post(f"/v1/anonymous/{product}/queries", content=body)
                    times.append(time.perf_counter() - t0)
                    resp.raise_for_status()
                    (a,) = resp.json()["answers"]
                    aq.check_buckets([a["candidates"]], params["k"])
                    (got,) = aq.open_answers(blinded, [aq.b64decode(a["point"])], [aq.b64decode(a["entries"])])
                    if product == EXISTENCE:
                        assert (got == b"") == (code in set(ctx["listed"])), code
                    else:
                        assert got is not None, code
                    requests.append(len(body))
                    responses.append(len(resp.content))
                    table = aq.b64decode(a["entries"])
                out[product] = {
                    "round_trip_s": median(times), "request_bytes": median(requests),
                    "response_bytes": median(responses), "response_bytes_max": max(responses),
                    "bucket_table_bytes": len(table),
                }
                say(f"  {product}: {median(requests):.0f} B up, {median(responses):,.0f} B down "
                    f"(largest {max(responses):,}), round trip {median(times) * 1e3:.1f} ms")
        return out
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100_000, help="enterprises in the demo zone")
    parser.add_argument("--rounds", type=int, default=400, help="queries per measurement")
    parser.add_argument("--quick", action="store_true", help="a small zone and few rounds: checks the script")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-anonymous.json")
    parser.add_argument("--keep", type=Path, help="keep the zone in this directory")
    args = parser.parse_args()
    if args.quick:
        args.entities, args.rounds = 3000, 40

    say(f"== anonymous query on a demo zone of {args.entities:,} enterprises, {os.cpu_count()} cores ==")
    # the figures are only as good as the machine's quiet: the load before and after goes with them
    load_before = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="datazone-bench-anonymous-"))
    home = work / "home"
    ctx = build_zone(home, args.entities)
    try:
        rng = random.Random(5)
        # half on the list (where the list is that long), the rest registered and not on it
        listed = rng.sample(ctx["listed"], min(len(ctx["listed"]), 50))
        others = rng.sample(sorted(set(ctx["registered"]) - set(ctx["listed"])), 100 - len(listed))
        sample = listed + others
        rng.shuffle(sample)

        say("\n-- X25519 at OpenSSL's speed (cryptography, one exchange) --")
        x25519 = x25519_seconds(batches=max(10, args.rounds // 20))
        say(f"  {x25519 * 1e6:.1f} us per scalar multiplication ({1 / x25519:,.0f}/s)")
        say("\n-- the zone's work per query, in process --")
        zone = in_process(ctx, sample, args.rounds)
        say("\n-- over HTTP, the real gateway --")
        http = over_http(ctx, sample, max(20, args.rounds // 4), work)
    finally:
        ctx["db"].dispose()
        import pgserver

        # the zone's handle was opened to outlive its process (db.py); stop the server with it
        server = pgserver.get_server(home / "pgdata")  # type: ignore[attr-defined]
        server.cleanup_mode = "stop"
        server.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    say("\n-- ratios against one X25519 scalar multiplication --")
    ratios: dict[str, Any] = {}
    for product in PRODUCTS:
        z = zone[product]
        ratios[product] = {
            "service_query_warm": z["query_warm_s"] / x25519,
            "service_query_cold": z["query_cold_s"] / x25519,
            "service_query_in_full_request": z["query_in_full_request_s"] / x25519,
            "oprf_one": z["oprf_one_s"] / x25519,
            "oprf_per_point_in_100": z["oprf_per_point_in_100_s"] / x25519,
        }
        r = ratios[product]
        say(f"  {product} (k {z['k']}, prefix_bits {z['prefix_bits']}, {z['buckets']} buckets, smallest "
            f"{z['smallest_bucket']:,}): OPRF alone {r['oprf_one']:.1f}x ({r['oprf_per_point_in_100']:.1f}x a point "
            f"in a request of 100); whole query {r['service_query_warm']:.0f}x warm, {r['service_query_cold']:.0f}x "
            f"cold, {r['service_query_in_full_request']:.0f}x a query in a request of {z['max_queries']}; {http[product]['request_bytes']:.0f} B up, {http[product]['response_bytes']:,.0f} B down")
    summary = {
        "bench": "anonymous-query",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "entities": args.entities,
        "rounds": args.rounds,
        "x25519_s": x25519,
        "zone": zone,
        "http": http,
        "ratios_to_x25519": ratios,
    }
    args.json.write_text(json.dumps(summary, indent=2))
    short = {
        "entities": args.entities,
        **{
            p: {
                "k": zone[p]["k"], "prefix_bits": zone[p]["prefix_bits"],
                "oprf_x25519": round(ratios[p]["oprf_one"], 2),
                "query_x25519_warm": round(ratios[p]["service_query_warm"], 1),
                "query_x25519_cold": round(ratios[p]["service_query_cold"], 1),
                "query_x25519_in_full_request": round(ratios[p]["service_query_in_full_request"], 1),
                "request_bytes": http[p]["request_bytes"], "response_bytes": http[p]["response_bytes"],
            }
            for p in PRODUCTS
        },
        "x25519_us": round(x25519 * 1e6, 2),
    }
    say(f"load average (1, 5, 15 min) before {load_before}, after {summary['load_average_after']}")
    say(json.dumps(short, separators=(",", ":")))


if __name__ == "__main__":
    main()
