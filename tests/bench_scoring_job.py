"""Benchmark: one secure-scoring batch job (安全评分) of every enterprise in a 100,000-enterprise zone,
end to end: the job's creation, the worker computing it, and the institution downloading and opening
every chunk, over the real gateway.

Not part of the test suite: `make bench-scoring-job` (or `.venv/bin/python tests/bench_scoring_job.py`;
`--entities 20000` checks the script in a few minutes).

The zone is the demo zone (embedded PostgreSQL in a temporary home) at --entities enterprises. A
bench institution has a private plan (no quota, no rate limit to speak of; the product's price of
2 yuan an enterprise scored), a contract for secure-credit-score at clearance 3 (so a model may
weigh every feature), every department's grant for the product's sources, an OAuth client and the
consent of every registered enterprise (the product requires consent), registered with the consent
service's bulk registration, 1,000 a batch. The gateway is uvicorn (tests/bench_gateway.py's).

The institution generates a 2048-bit Paillier key and registers a 30-feature logistic model (scale
10^6, the product's resolution of 0.01 logit) through the SDK (`ZoneClient.register_model`); the
demo operator approves it (`POST /v1/scoring/models/{id}/review`). Then, timed:
1. the worker's pass after the approval: it fills the key's pool of re-randomization factors
   (`scoring_factor_pool`, r^n mod n^2, in `scoring_processes` processes), as a running worker does
   before any job arrives;
2. the job's creation: `POST /v1/scoring/jobs` of every registered enterprise (up to the product's
   max_batch), checked, capped and billed in one request; the same Idempotency-Key again returns the
   same job, not billed twice;
3. the worker running the job (`datazone.scoring.worker.run_once`, in this process): features,
   circuit, seal, one stored chunk a transaction. A thread polls the job view over HTTP meanwhile
   (chunks_done over time) and downloads and opens chunk 0 as soon as it is there: the time to the
   first chunk. Factors beyond the pool are computed fresh in the job; their time is measured apart;
4. the SDK downloading and opening every chunk: `ZoneClient.score_batch` resuming the job from a state
   file (what it does after a crash), so it asks for no new job: it reads the job view, downloads
   each chunk and decrypts it. The bytes it downloads are counted on the wire.
The phases run one after another (each has the machine to itself); the SDK normally downloads
chunks while the worker computes the next ones, so their sum is an upper bound on the elapsed time.

Every opened score is checked against `privacy.scoring.plain_score` over the features the product
engine computes in plaintext as of the chunks' day: a multiple of the resolution within one step
of the exact score (all of them unless --check N samples N at random).
The last line printed is a one-line JSON summary (the whole summary also goes to --json when given).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench_gateway import Uvicorn  # noqa: E402

PRODUCT = "secure-credit-score"
PURPOSE = "pre_loan"
BENCH_PLAN = "bench-scoring-job"
FEATURES = 30  # the product offers 31; the model weighs 30 of them
SCALE = 1_000_000


def say(text: str = "") -> None:
    print(text, flush=True)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# ---------------------------------------------------------------- the zone


def build_zone(home: Path, entities: int) -> dict[str, Any]:
    """The demo zone, and the bench institution: plan, contract at clearance 3, grants, client."""
    from datazone.config import Settings
    from datazone.contract import service as contract_service
    from datazone.dataset import service as dataset_service
    from datazone.db import Database
    from datazone.demo.setup import prepare_demo
    from datazone.grant import service as grant_service
    from datazone.metering import service as metering
    from datazone.oauth import service as oauth_service
    from datazone.principal import service as principal_service
    from datazone.product import service as product_service

    settings = Settings(home=home, drop_dir=home / "drop")
    db = Database.from_settings(settings)
    t0 = time.perf_counter()
    zone = prepare_demo(db, settings, entities=entities)
    say(f"demo zone of {entities:,} enterprises ready in {time.perf_counter() - t0:.1f} s")
    now = datetime.now(UTC)
    valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=30)
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        bench = principal_service.create_principal(s, kind="institution", name="bench-scoring-bank")
        metering.create_plan(
            s, plan_id=BENCH_PLAN, name="bench: a scoring job", institution_id=bench.id,
            rate_per_second=1_000_000.0, burst=1_000_000, by=operator,
        )
        contract_service.create_contract(
            s, institution_id=bench.id, purposes=[PURPOSE], products=[PRODUCT], clearance=3,
            plan_id=BENCH_PLAN, by=operator, valid_from=valid_from, valid_to=valid_to,
        )
        spec = product_service.spec_of(product_service.get_product(s, product_id=PRODUCT))
        by_department: dict[str, list[str]] = {}
        for dataset_id in spec.sources:
            owner = dataset_service.get_dataset(s, dataset_id=dataset_id).supplier_id
            by_department.setdefault(owner, []).append(dataset_id)
        for department, datasets in sorted(by_department.items()):
            dept = principal_service.find_principal(s, name=f"demo-{department}")
            assert dept is not None, department
            grant_service.create_grant(
                s, department=department, datasets=datasets, purposes=[PURPOSE], products=[PRODUCT],
                institutions=[bench.id], by=dept, valid_from=valid_from, valid_to=valid_to,
            )
        client, secret = oauth_service.create_client(s, institution_id=bench.id, name="bench", by_name="bench")
        _, registered = dataset_service.population(s, dataset_id="mr_registration")
        bench_id = bench.id
    assert secret is not None
    return {
        "db": db, "settings": settings, "spec": spec, "institution_id": bench_id,
        "client_id": client.client_id, "client_secret": secret, "registered": registered,
        "operator_token": zone.info["operator_token"], "valid_from": valid_from, "valid_to": valid_to,
    }


def register_consents(ctx: dict[str, Any], codes: Sequence[str]) -> float:
    """Every enterprise's consent, through the consent service's bulk registration (1,000 a batch,
    each batch one transaction, as `POST /v1/consents` does it); returns the seconds."""
    from datazone.consent import service as consent_service
    from datazone.consent.schemas import ConsentIn
    from datazone.principal import service as principal_service

    t0 = time.perf_counter()
    for start in range(0, len(codes), consent_service.MAX_BATCH):
        with ctx["db"].unit_of_work() as s:
            bank = principal_service.get_principal(s, principal_id=ctx["institution_id"])
            consent_service.register_consents(
                s,
                institution=bank,
                items=[
                    ConsentIn(
                        uscc=code, purpose=PURPOSE, products=[PRODUCT],
                        valid_from=ctx["valid_from"], valid_to=ctx["valid_to"],
                        evidence_ref=f"bench://consents/{code}.pdf",
                        evidence_sha256=hashlib.sha256(code.encode()).hexdigest(),
                    )
                    for code in codes[start : start + consent_service.MAX_BATCH]
                ],
            )
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the institution's side


class Bearer:
    """The bench client's access token for raw HTTP calls, renewed well before it expires."""

    def __init__(self, url: str, client_id: str, secret: str) -> None:
        self.url, self.client_id, self.secret = url, client_id, secret
        self._token, self._until = "", 0.0
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() >= self._until:
                r = httpx.post(
                    self.url + "/oauth/token", data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self.secret), timeout=30,
                )
                r.raise_for_status()
                body = r.json()
                self._token = body["access_token"]
                self._until = time.monotonic() + max(10.0, float(body.get("expires_in", 300)) / 2)
            return {"Authorization": f"Bearer {self._token}"}


class CountingTransport(httpx.HTTPTransport):
    """The SDK's transport, counting the bytes that come back (chunks apart from the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunk_bytes = 0
        self.chunk_responses = 0
        self.other_bytes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        size = response.num_bytes_downloaded
        if "/chunks/" in request.url.path and response.status_code == 200:
            self.chunk_bytes += size
            self.chunk_responses += 1
        else:
            self.other_bytes += size
        return response


@contextmanager
def timed_calls(module: Any, name: str) -> Iterator[list[float]]:
    """Time every call of `module.name` (the callers look it up on the module at each call);
    yields [calls, items, seconds] (items: the call's `count` argument, or its result's length)."""
    original = getattr(module, name)
    tally = [0.0, 0.0, 0.0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        tally[2] += time.perf_counter() - t0
        tally[0] += 1
        tally[1] += len(result) if isinstance(result, list) else 0
        return result

    setattr(module, name, wrapper)
    try:
        yield tally
    finally:
        setattr(module, name, original)


def logistic_model(rng: random.Random, bounds: dict[str, Any], names: Sequence[str]) -> Any:
    """A 30-feature logistic model, each weight about 0.3 to 2 logits over its feature's range."""
    from datazone.privacy import scoring

    features = []
    for name in names:
        b = bounds[name]
        weight = rng.choice([-1, 1]) * rng.uniform(0.3, 2.0) / max(1, b.max - b.min)
        features.append({"name": name, "weight": float(f"{weight:.7g}")})
    return scoring.parse_model({
        "format": scoring.MODEL_FORMAT, "name": "bench-job-logistic", "product": PRODUCT, "purpose": PURPOSE,
        "kind": "logistic", "scale": SCALE, "intercept": -2.1, "features": features,
        "description": "the job benchmark's model: random weights over 30 features",
    })


class Progress(threading.Thread):
    """Polls the job view over HTTP while the worker runs; downloads and opens chunk 0 as soon as
    the view counts a chunk done (the institution's first results)."""

    def __init__(self, url: str, bearer: Bearer, job_id: str, private: Any, interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.bearer, self.job_id, self.private, self.interval = url, bearer, job_id, private, interval
        self.stop_event = threading.Event()
        self.t0 = time.perf_counter()
        self.timeline: list[tuple[float, int, str]] = []
        self.first_chunk_at: float | None = None  # seconds after t0: chunk 0 downloaded and opened
        self.first_chunk: dict[str, Any] | None = None
        self.error: str | None = None

    def run(self) -> None:
        from datazone.privacy import paillier, scoring

        try:
            with httpx.Client(base_url=self.url, timeout=60) as c:
                while not self.stop_event.is_set():
                    view = c.get(f"/v1/scoring/jobs/{self.job_id}", headers=self.bearer.headers())
                    view.raise_for_status()
                    job = view.json()
                    at = time.perf_counter() - self.t0
                    if not self.timeline or self.timeline[-1][1:] != (job["chunks_done"], job["status"]):
                        self.timeline.append((round(at, 2), job["chunks_done"], job["status"]))
                    if self.first_chunk is None and job["chunks_done"] >= 1:
                        r = c.get(f"/v1/scoring/jobs/{self.job_id}/chunks/0", headers=self.bearer.headers())
                        r.raise_for_status()
                        body = r.json()
                        texts = {str(i): t for i, t in enumerate(body["ciphertexts"])}
                        cts = paillier.decode_ciphertexts(self.private.public, texts)
                        scores = scoring.open_scores(
                            self.private, [cts[str(i)] for i in range(len(texts))], count=body["count"],
                            slot_bits=body["slot_bits"], slots=body["slots"], resolution=body["resolution"],
                        )
                        assert len(scores) == body["count"] == sum(body["found"])
                        self.first_chunk_at = time.perf_counter() - self.t0
                        self.first_chunk = {"bytes": len(r.content), "count": body["count"], "as_of": body["as_of"]}
                    if job["status"] in ("succeeded", "failed"):
                        return
                    self.stop_event.wait(self.interval)
        except Exception as exc:  # reported by the main thread
            self.error = f"{type(exc).__name__}: {exc}"


def expected_scores(
    ctx: dict[str, Any], model: Any, bounds: dict[str, Any], codes: Sequence[str], as_of: date
) -> dict[str, int]:
    """The plaintext reference: the product engine's features, `plain_score` over them."""
    from datazone.privacy import scoring
    from datazone.product import engine

    names = [f.name for f in model.features]
    out: dict[str, int] = {}
    for start in range(0, len(codes), 1000):
        with ctx["db"].unit_of_work() as s:
            computed = engine.compute(s, spec=ctx["spec"], usccs=list(codes[start : start + 1000]), as_of=as_of)
        for code, answer in computed.answers.items():
            assert answer is not None, f"{code} is not in the zone"
            values = {}
            for name in names:
                value = answer[name]
                # the engine's features are whole numbers (the product declares them so)
                assert value is None or isinstance(value, int), f"{code}.{name}: {type(value).__name__}"
                values[name] = value
            out[code] = scoring.plain_score(model, values, bounds)
    return out


# ---------------------------------------------------------------- the run


def run(ctx: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from datazone.client.scoring import JobState, JobStateFile, ScoringKey, input_digest
    from datazone.client.sdk import ZoneClient
    from datazone.privacy import paillier, scoring
    from datazone.scoring import service as scoring_service
    from datazone.scoring import worker as scoring_worker

    db, settings = ctx["db"], ctx["settings"]
    rng = random.Random(args.seed)
    out: dict[str, Any] = {}

    registered: list[str] = ctx["registered"]
    say(f"\n-- consents: {len(registered):,} registered enterprises --")
    seconds = register_consents(ctx, registered)
    out["consents"] = {"count": len(registered), "s": round(seconds, 2), "per_s": round(rate(len(registered), seconds))}
    say(f"  {len(registered):,} consents in {seconds:.1f} s ({rate(len(registered), seconds):,.0f}/s), 1,000 a batch")

    env = dict(os.environ)
    env.update({
        "DATAZONE_HOME": str(settings.home), "DATAZONE_DATABASE_URL": db.url,
        "DATAZONE_DROP_DIR": str(settings.drop_path), "DATAZONE_SCORING_CHUNK": str(args.chunk),
    })
    gateway = Uvicorn("datazone.app:create_app", env, work / "gateway.log")
    gateway.start()
    transport = CountingTransport()
    zone = ZoneClient(gateway.url, ctx["client_id"], ctx["client_secret"], timeout=300, transport=transport)
    bearer = Bearer(gateway.url, ctx["client_id"], ctx["client_secret"])
    try:
        say("\n-- the model --")
        t0 = time.perf_counter()
        _, private = paillier.generate_keypair(2048)
        keygen_s = time.perf_counter() - t0
        key = ScoringKey(private=private)
        catalog = zone.scoring_catalog(PRODUCT)
        offer = catalog.raw
        names = list(catalog.bounds)[:FEATURES]
        model = logistic_model(rng, catalog.bounds, names)
        t0 = time.perf_counter()
        view = zone.register_model(model, key)
        register_s = time.perf_counter() - t0
        r = httpx.post(
            f"{gateway.url}/v1/scoring/models/{view['id']}/review",
            json={"decision": "approve", "reason": "bench: the job benchmark's model"},
            headers={"Authorization": f"Bearer {ctx['operator_token']}"}, timeout=60,
        )
        r.raise_for_status()
        view = r.json()
        assert view["state"] == "approved", view
        model_id, resolution = view["id"], view["resolution"]
        out["model"] = {
            "features": len(model.features), "key_bits": view["key_bits"], "score_bits": view["score_bits"],
            "slot_bits": view["slot_bits"], "slots": view["slots"], "resolution": resolution,
            "keygen_s": round(keygen_s, 2), "register_s": round(register_s, 2),
        }
        say(f"  2048-bit key in {keygen_s:.1f} s; {len(model.features)}-feature logistic model registered in"
            f" {register_s:.2f} s (encrypted, sent, checked) as {model_id}, approved; score_bits"
            f" {view['score_bits']}, {view['slots']} scores a ciphertext, resolution {resolution} units")

        say("\n-- the worker's pass after the approval: the factor pool --")
        with timed_calls(paillier, "rerandomization_factors") as tally:
            t0 = time.perf_counter()
            done = scoring_worker.run_once(db, settings, worker_name="bench")
            pool_s = time.perf_counter() - t0
        pooled = int(tally[1])
        assert not [d for d in done if d.startswith("failed")], done
        out["factor_pool"] = {
            "factors": pooled, "pass_s": round(pool_s, 2), "factors_s": round(tally[2], 2),
            "per_s": round(rate(pooled, tally[2]), 1), "processes": settings.scoring_processes or os.cpu_count(),
        }
        say(f"  {pooled:,} factors in {tally[2]:.1f} s ({rate(pooled, tally[2]):.0f}/s in"
            f" {out['factor_pool']['processes']} processes); the pass took {pool_s:.1f} s")

        codes = registered[: offer.get("max_batch") or len(registered)]
        say(f"\n-- the job: {len(codes):,} enterprises --")
        idempotency_key = str(uuid.uuid4())
        payload = json.dumps({"model": model_id, "usccs": codes}).encode()
        headers = {**bearer.headers(), "Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        created_at = time.perf_counter()
        r = httpx.post(f"{gateway.url}/v1/scoring/jobs", content=payload, headers=headers, timeout=600)
        create_s = time.perf_counter() - created_at
        assert r.status_code == 201, r.text[:2000]
        job = r.json()
        assert job["total"] == len(codes) and job["found"] == len(codes) and job["status"] == "queued", job
        price_fen = next(p["price_fen"] for p in zone.products() if p.get("id") == PRODUCT)
        assert job["charged_fen"] == price_fen * len(codes), (job["charged_fen"], price_fen)
        replay = httpx.post(
            f"{gateway.url}/v1/scoring/jobs", content=payload,
            headers={**headers, **bearer.headers()}, timeout=600,
        )
        assert replay.status_code == 201 and replay.json()["id"] == job["id"], replay.text[:500]
        assert replay.headers.get("Idempotent-Replayed") == "true"
        out["create"] = {
            "s": round(create_s, 2), "per_s": round(rate(len(codes), create_s)), "request_bytes": len(payload),
            "chunks": job["chunks"], "chunk_size": job["chunk_size"], "charged_fen": job["charged_fen"],
        }
        say(f"  POST /v1/scoring/jobs: {create_s:.2f} s ({rate(len(codes), create_s):,.0f} enterprises/s,"
            f" {len(payload) / 1e6:.1f} MB sent); {job['chunks']} chunks of {job['chunk_size']:,}; billed"
            f" {job['charged_fen'] / 100:,.2f} yuan; the same Idempotency-Key again: the same job, not billed again")

        say("\n-- the worker runs it (in this process); the job view meanwhile --")
        progress = Progress(gateway.url, bearer, job["id"], private, args.poll)
        with (
            timed_calls(paillier, "rerandomization_factors") as fresh_tally,
            timed_calls(scoring_service, "compute_features") as features_tally,
            timed_calls(scoring.ScoringCircuit, "encrypted_scores") as circuit_tally,
            timed_calls(scoring.ScoringCircuit, "seal") as seal_tally,
        ):
            progress.start()
            t0 = time.perf_counter()
            done = scoring_worker.run_once(db, settings, worker_name="bench")
            worker_s = time.perf_counter() - t0
        progress.join(timeout=120)
        progress.stop_event.set()
        assert progress.error is None, progress.error
        assert f"job:{job['id']}:succeeded" in done, done
        assert progress.first_chunk is not None and progress.first_chunk_at is not None
        # the worker started at progress.t0; the job's creation began before it
        first_from_worker = progress.first_chunk_at
        first_from_create = progress.t0 - created_at + progress.first_chunk_at
        step, shown = max(1, job["chunks"] // 10), -1
        for t, n, _ in progress.timeline:
            if n // step > shown // step or n == job["chunks"] > shown:
                say(f"    {t:7.1f} s  chunks_done {n:>4}/{job['chunks']}")
                shown = n
        out["worker"] = {
            "s": round(worker_s, 2), "per_s": round(rate(len(codes), worker_s)),
            "fresh_factors": int(fresh_tally[1]), "fresh_factors_s": round(fresh_tally[2], 2),
            "features_s": round(features_tally[2], 2), "circuit_s": round(circuit_tally[2], 2),
            "seal_s": round(seal_tally[2], 2),
            "rest_s": round(worker_s - features_tally[2] - circuit_tally[2] - seal_tally[2] - fresh_tally[2], 2),
            "timeline": progress.timeline,
        }
        out["first_chunk"] = {
            "from_worker_start_s": round(first_from_worker, 2), "from_create_s": round(first_from_create, 2),
            **progress.first_chunk,
        }
        w = out["worker"]
        say(f"  the worker: {worker_s:.1f} s ({rate(len(codes), worker_s):,.0f} enterprises/s): features (product"
            f" engine) {w['features_s']:.1f} s, circuit {w['circuit_s']:.1f} s, pack + noise + re-randomize"
            f" {w['seal_s']:.1f} s, fresh factors {int(fresh_tally[1]):,} in {fresh_tally[2]:.1f} s, the rest"
            f" (claims, checks again before each chunk, factors from the pool, storing, commits) {w['rest_s']:.1f} s")
        say(f"  first chunk downloaded and opened {first_from_worker:.1f} s after the worker started"
            f" ({first_from_create:.1f} s after the job was asked for), {progress.first_chunk['bytes']:,} bytes")

        say("\n-- the SDK downloads and opens every chunk (score_batch resuming the job) --")
        state_path = work / "job.scoring-state.json"
        JobStateFile(state_path).save(JobState(
            model_id=model_id, key_fingerprint=key.fingerprint, input_digest=input_digest(codes),
            items=len(codes), idempotency_key=idempotency_key, job_id=job["id"],
        ))
        transport.chunk_bytes = transport.chunk_responses = transport.other_bytes = 0
        with timed_calls(scoring, "open_scores") as opened:
            t0 = time.perf_counter()
            batch = zone.score_batch(model, codes, key=key, model_id=model_id, state_path=state_path)
            download_s = time.perf_counter() - t0
        assert batch.job_id == job["id"] and batch.resumed and batch.found == len(codes), batch
        assert transport.chunk_responses == job["chunks"], transport.chunk_responses
        size, slots = job["chunk_size"], view["slots"]
        ciphertext_chars = len(paillier.encode_ciphertext(private.public, 1))
        packed = sum(-(-len(codes[i : i + size]) // slots) for i in range(0, len(codes), size))
        out["download"] = {
            "ciphertexts": packed,
            "s": round(download_s, 2), "per_s": round(rate(len(codes), download_s)),
            "open_s": round(opened[2], 2), "chunk_bytes": transport.chunk_bytes,
            "other_bytes": transport.other_bytes, "bytes_per_score": round(transport.chunk_bytes / len(codes), 1),
            # of which the ciphertexts (base64url, fixed width); the rest is each chunk's codes and found flags
            "ciphertext_bytes_per_score": round(packed * ciphertext_chars / len(codes), 1),
        }
        say(f"  {download_s:.1f} s ({rate(len(codes), download_s):,.0f} enterprises/s), of which decrypting"
            f" {opened[2]:.1f} s; {transport.chunk_bytes / 1e6:.2f} MB of chunks"
            f" ({transport.chunk_bytes / len(codes):.1f} bytes a score, {packed * ciphertext_chars / len(codes):.1f}"
            f" of them ciphertext: {packed:,} ciphertexts),"
            f" {transport.other_bytes:,} bytes else")
        total = create_s + worker_s + download_s
        out["total"] = {"s": round(total, 2), "per_s": round(rate(len(codes), total))}

        say("\n-- every score against the plaintext --")
        scored = {e.uscc: e.score_units for e in batch.scores}
        sample = codes if args.check == 0 else rng.sample(codes, min(args.check, len(codes)))
        t0 = time.perf_counter()
        as_of = date.fromisoformat(progress.first_chunk["as_of"])
        expected = expected_scores(ctx, model, catalog.bounds, sample, as_of)
        plain_s = time.perf_counter() - t0
        wrong = []
        drift = 0
        for code in sample:
            got, want = scored[code], expected[code]
            assert got is not None
            if got % resolution != 0 or abs(got - want) >= resolution:
                wrong.append(code)
            drift += got - want
        assert not wrong, f"{len(wrong)} scores off, the first {wrong[:5]}"
        out["check"] = {
            "checked": len(sample), "of": len(codes), "plaintext_s": round(plain_s, 2),
            "mean_rounding_units": round(drift / len(sample), 2), "resolution": resolution,
        }
        say(f"  {len(sample):,} of {len(codes):,} scores checked ({'all' if len(sample) == len(codes) else 'a random sample'};"
            f" the plaintext reference took {plain_s:.1f} s): each a multiple of {resolution} units within one"
            f" step of plain_score; mean rounding {drift / len(sample):+.1f} units (unbiased: about 0)")
    finally:
        zone.close()
        gateway.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100_000, help="enterprises in the demo zone")
    parser.add_argument("--chunk", type=int, default=1000, help="the gateway's scoring_chunk")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between job views")
    parser.add_argument("--check", type=int, default=0, help="scores to check in plaintext (0: all)")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--keep", type=Path, help="keep the zone in this directory")
    args = parser.parse_args()

    say(f"== a secure-scoring batch job on a demo zone of {args.entities:,} enterprises, {os.cpu_count()} cores ==")
    load_before = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="datazone-bench-scoring-job-"))
    home = work / "home"
    started = time.perf_counter()
    ctx = build_zone(home, args.entities)
    try:
        figures = run(ctx, args, work)
    finally:
        ctx["db"].dispose()
        import pgserver

        # the zone's handle was opened to outlive its process (db.py); stop the server with it
        server = pgserver.get_server(home / "pgdata")  # type: ignore[attr-defined]
        server.cleanup_mode = "stop"
        server.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    n = figures["check"]["of"]
    say(f"\n-- {n:,} enterprises, enterprises/s of each phase --")
    for label, phase in (
        ("job creation (POST /v1/scoring/jobs)", "create"),
        ("worker (features, circuit, seal, store)", "worker"),
        ("SDK download + open", "download"),
        ("total (the three in turn)", "total"),
    ):
        seconds = figures[phase]["s"]
        say(f"  {label:42s} {seconds:8.1f} s  {rate(n, seconds):9,.0f}/s")
    say(f"  factor pool ({figures['factor_pool']['factors']:,} factors, before the job) {figures['factor_pool']['factors_s']:.1f} s;"
        f" time to first chunk {figures['first_chunk']['from_create_s']:.1f} s;"
        f" {figures['download']['chunk_bytes'] / 1e6:.2f} MB downloaded")
    summary = {
        "bench": "scoring-job",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "entities": args.entities,
        "wall_s": round(time.perf_counter() - started, 1),
        **figures,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    short = {
        "entities": args.entities, "job": n, "chunks": figures["create"]["chunks"],
        "create_per_s": figures["create"]["per_s"], "worker_per_s": figures["worker"]["per_s"],
        "download_open_per_s": figures["download"]["per_s"], "total_per_s": figures["total"]["per_s"],
        "create_s": figures["create"]["s"], "worker_s": figures["worker"]["s"],
        "download_open_s": figures["download"]["s"], "total_s": figures["total"]["s"],
        "first_chunk_s": figures["first_chunk"]["from_create_s"],
        "pool_factors": figures["factor_pool"]["factors"], "pool_factors_s": figures["factor_pool"]["factors_s"],
        "fresh_factors": figures["worker"]["fresh_factors"], "bytes_downloaded": figures["download"]["chunk_bytes"],
        "checked": figures["check"]["checked"],
    }
    say(f"load average (1, 5, 15 min) before {load_before}, after {summary['load_average_after']}")
    say(json.dumps(short, separators=(",", ":")))


if __name__ == "__main__":
    main()
