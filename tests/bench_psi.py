"""Benchmark: private set intersection through the gateway against openmined-psi and OpenSSL.

Not part of the test suite: `make bench-psi` (or `.venv/bin/python tests/bench_psi.py`;
`--quick` checks the script in a few minutes at small sizes).

1. Unbalanced: an institution set of 100,000 against a zone slice of 2,600,000, zone side
   cached. Ours: an engine job through the gateway (POST /v1/psi/jobs, the zone's worker runs
   its side, the SDK runs the institution's side over SecretFlow's link with TLS, result CSV),
   protocol `unbalanced`. The first job builds the zone's cache and transfers it to the
   institution: that is the offline phase, reported apart. Baseline: openmined-psi, its
   server setup over the slice counted once (like our cache), then online: client request,
   server process, client intersection, each message serialized and parsed.
2. Balanced: 1,000,000 against 1,000,000. Ours: an engine job through the gateway with RR22,
   from job creation to the result file. Baselines: SecretFlow's engine alone on the same sets
   (both sides as `privacy.engine` runs them, in two processes on loopback, same link and TLS,
   CSV in, CSV out; target: at least 0.5x its speed), and openmined-psi end to end (setup,
   request, process, intersection; nothing cached; --skip-openmined leaves it out).
   `--only balanced` runs this phase alone, without the 2.6M slice.
3. HTTP-native path: the zone's work per item (`privacy.openmined.process_request`, one
   thread, on 100,000 blinded points) and the gateway's round trip per item for a session of
   100,000 (`PUT /v1/psi/sessions/{id}/chunks/{i}` with OpenMined's own client), each against
   one P-256 scalar multiplication at OpenSSL's speed (`openssl speed ecdhp256`).
4. Labeled PSI at 100,000 against 2,600,000 (for docs/): the zone's offline work (OPRF over
   the slice, sealed label table), the table's bytes, the institution's blind/finalize/open,
   the zone's online work, and the bytes each way.

Every result is checked against the plaintext intersection. Medians over --rounds; rounds
alternate ours and the baseline. The zone is a zone of its own (embedded PostgreSQL in a
temporary home): the demo zone, plus a bench department whose dataset holds the slice,
loaded through the ingest pipeline, admitted, and served by two PSI products under a
contract and a grant for the demo bank; its worker is a process of its own, as in a zone.
A JSON summary goes to --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench_gateway import Uvicorn, free_port  # noqa: E402

T = TypeVar("T")

BENCH_DEPARTMENT = "bench-registry"
BENCH_DATASET = "bench_population"
PRODUCT_ALL = "bench-psi-all"  # the whole bench dataset (2.6M)
PRODUCT_PART = "bench-psi-part-a"  # its rows with part = a (1M)
SESSION_PRODUCT = "dishonest-debtor-psi"  # a demo product: the HTTP session's per-item cost does not depend on the slice
PURPOSE = "pre_loan"
FPR = 1e-9  # the products' false-positive bound, and openmined-psi's in the baseline
PHASES = ("unbalanced", "balanced", "http", "labeled")


# ---------------------------------------------------------------- small things


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def say(text: str) -> None:
    print(text, flush=True)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ssl = subprocess.run(["openssl", "version"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "openssl": ssl,
        "python": platform.python_version(),
        "spu": md.version("spu"),
        "openmined-psi": md.version("openmined-psi"),
    }


def openssl_speed(seconds: int) -> dict[str, float]:
    """op/s of one ECDH (one scalar multiplication) on P-256 and X25519 at OpenSSL's own speed."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "ecdhp256", "ecdhx25519"],
        capture_output=True, text=True, check=True,
    ).stdout
    p256 = re.search(r"ecdh \(nistp256\)\s+[\d.]+s\s+([\d.]+)", out)
    x25519 = re.search(r"ecdh \(X25519\)\s+[\d.]+s\s+([\d.]+)", out)
    if p256 is None or x25519 is None:
        sys.exit(f"cannot read `openssl speed` output:\n{out}")
    return {"p256_ops": float(p256.group(1)), "x25519_ops": float(x25519.group(1))}


# ---------------------------------------------------------------- the sets


def make_codes(n: int, seed: int) -> list[str]:
    """n distinct valid USCCs, vectorised: random bodies, the GB 32100 check character computed."""
    from datazone.uscc import ALPHABET, WEIGHTS, valid_bytes

    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
    value = np.zeros(256, dtype=np.int64)
    value[alphabet] = np.arange(len(ALPHABET))
    want = n + n // 100 + 100  # collisions among 31^9 bodies are rare; dropped below
    m = np.empty((want, 18), dtype=np.uint8)
    m[:, 0:8] = np.frombuffer(b"91110108", dtype=np.uint8)  # enterprise, Haidian district
    m[:, 8:17] = alphabet[rng.integers(0, len(ALPHABET), size=(want, 9))]
    total = (value[m[:, :17]] * WEIGHTS).sum(axis=1)
    m[:, 17] = alphabet[(31 - total % 31) % 31]
    keys = np.ascontiguousarray(m).view("S18").ravel()
    _, first = np.unique(keys, return_index=True)
    first.sort()  # keep the random order
    if len(first) < n:
        sys.exit("not enough distinct codes generated")
    m = m[first[:n]]
    if not bool(valid_bytes(m).all()):
        sys.exit("generated an invalid USCC")
    codes: list[str] = np.ascontiguousarray(m).view("S18").ravel().astype("U18").tolist()
    return codes


class Sets:
    """The zone's slices and the institution's lists (about half of each list in its slice)."""

    def __init__(self, args: argparse.Namespace) -> None:
        outside_n = max(args.small // 2, args.large // 2, args.session_items) + 1000
        t0 = time.perf_counter()
        codes = make_codes(args.zone + outside_n, seed=20261121)
        self.zone = codes[: args.zone]  # the bench dataset: part a first, then part b
        self.part_a = self.zone[: args.even]
        self.outside = codes[args.zone :]
        rng = np.random.default_rng(7)
        self.small = self._mix(rng, self.zone, args.small)
        self.large = self._mix(rng, self.part_a, args.large)
        say(f"{len(codes):,} distinct USCCs generated in {time.perf_counter() - t0:.1f} s")

    def _mix(self, rng: np.random.Generator, inside: list[str], n: int) -> list[str]:
        half = n // 2
        picked = [inside[i] for i in rng.choice(len(inside), size=half, replace=False)]
        picked += [self.outside[i] for i in rng.choice(len(self.outside), size=n - half, replace=False)]
        order = rng.permutation(n)
        return [picked[i] for i in order]


# ---------------------------------------------------------------- the bench zone


def dataset_spec() -> dict[str, Any]:
    return {
        "id": BENCH_DATASET,
        "name": "基准测试企业名单",
        "name_en": "Benchmark population",
        "description": "基准测试用企业名单：part a 为前一百万家，其余为 b。",
        "department": BENCH_DEPARTMENT,
        "entity_key": "uscc",
        "fields": [
            {"name": "uscc", "type": "uscc", "required": True, "headers": ["统一社会信用代码"], "grade": 1},
            {"name": "part", "type": "string", "required": True, "headers": ["分组"], "grade": 1, "max_length": 1},
        ],
        "source": {"kind": "directory", "path": f"{BENCH_DATASET}/*.csv"},
        "format": "csv",
        "encoding": "utf-8",
        "frequency": "daily",
    }


def product_spec(product_id: str, where: dict[str, str], max_set: int) -> dict[str, Any]:
    """registered-enterprises-count's shape (logic credit_basic), over the bench population."""
    import yaml

    spec: dict[str, Any] = yaml.safe_load((ROOT / "products" / "registered-enterprises-count.yaml").read_text("utf-8"))
    spec.update(
        {
            "id": product_id,
            "name": f"基准测试隐私求交 {product_id}",
            "name_en": f"Benchmark PSI {product_id}",
            "description": "Benchmark: a bank's list against the bench population, intersection to the bank only.",
            "purposes": [PURPOSE],
        }
    )
    spec["sources"][BENCH_DATASET] = ["part"]
    spec["psi"] = {
        "population": {"dataset": BENCH_DATASET, "where": where},
        "result": "intersection",
        "min_set": 100,
        "max_set": max_set,
        "fpr": FPR,
    }
    return spec


def build_zone(home: Path, args: argparse.Namespace, sets: Sets) -> dict[str, Any]:
    from datazone.config import Settings
    from datazone.contract import service as contract_service
    from datazone.dataset import admission as dataset_admission
    from datazone.dataset import service as dataset_service
    from datazone.dataset.schemas import DatasetSpec
    from datazone.db import Database
    from datazone.demo.setup import prepare_demo
    from datazone.grant import service as grant_service
    from datazone.ingest import service as ingest_service
    from datazone.ingest.pipeline import execute_run
    from datazone.principal import service as principal_service
    from datazone.product import service as product_service
    from datazone.supplier import service as supplier_service
    from datazone.supplier.schemas import SupplierSpec

    settings = Settings(home=home, drop_dir=home / "drop", psi_link_timeout_seconds=args.link_timeout)
    db = Database.from_settings(settings)
    _, seconds = timed(lambda: prepare_demo(db, settings, entities=args.entities))
    say(f"demo zone of {args.entities:,} enterprises ready in {seconds:.1f} s")

    with db.unit_of_work() as s:
        supplier_service.apply_supplier(
            s, spec=SupplierSpec(id=BENCH_DEPARTMENT, name="基准测试登记机关", name_en="Benchmark registry")
        )
        dataset_service.apply_dataset(s, spec=DatasetSpec.model_validate(dataset_spec()))
    folder = settings.drop_path / BENCH_DATASET
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "population.csv").open("w", encoding="utf-8") as f:
        f.write("统一社会信用代码,分组\n")
        f.write("".join(f"{c},a\n" for c in sets.part_a))
        f.write("".join(f"{c},b\n" for c in sets.zone[len(sets.part_a) :]))
    with db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id=BENCH_DATASET, trigger="cli", requested_by="bench").id
    run, seconds = timed(lambda: execute_run(db, run_id=run_id, settings=settings))
    if run.status != "succeeded":
        sys.exit(f"ingesting the bench population failed: {run.error}")
    say(f"bench population of {len(sets.zone):,} enterprises ingested in {seconds:.1f} s")

    now = datetime.now(UTC)
    valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=30)
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        bank = principal_service.find_principal(s, name="demo-bank")
        assert operator is not None and bank is not None
        dataset_admission.review_dataset(
            s, dataset_id=BENCH_DATASET, decision="admit", by=operator, override=True,
            reason="benchmark data, generated",
        )
        for product_id, where in ((PRODUCT_ALL, {}), (PRODUCT_PART, {"part": "a"})):
            spec = product_service.parse_product_spec(product_spec(product_id, where, args.max_set), origin="bench")
            product_service.apply_product(s, spec=spec, by=operator, origin="bench")
            product_service.publish_product(s, product_id=product_id, by=operator, reason="benchmark")
        contract_service.create_contract(
            s, institution_id=bank.id, purposes=[PURPOSE], products=[PRODUCT_ALL, PRODUCT_PART], clearance=2,
            valid_from=valid_from, valid_to=valid_to, by=operator,
        )
        officer = principal_service.create_principal(
            s, kind="department", name="bench-registry-officer", supplier_id=BENCH_DEPARTMENT
        )
        grant_service.create_grant(
            s, department=BENCH_DEPARTMENT, datasets=[BENCH_DATASET], purposes=[PURPOSE],
            products=[PRODUCT_ALL, PRODUCT_PART], institutions=[bank.id], valid_from=valid_from, valid_to=valid_to,
            by=officer,
        )
        _, court = dataset_service.population(s, dataset_id="court_dishonest")
    info = json.loads((home / "demo.json").read_text("utf-8"))
    return {
        "db": db,
        "settings": settings,
        "database_url": db.url,
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "court": court,
    }


class BenchWorker:
    """The zone's worker in a process of its own, as `datazone worker` runs (the SDK's Python and
    the worker's do not share a GIL): it claims queued engine jobs and runs the zone's side, woken
    by the job's notification. Only the job share of a pass: the artifact builds a full pass
    also does (OpenMined setups over the bench slices) would take minutes and are not the job's."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log_path = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors: list[str] = []

    def start(self) -> None:
        log = self.log_path.open("ab")
        ready = self.log_path.with_name("worker.ready")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker-process", "--json", str(ready)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        # a worker that cannot start would leave every job waiting out its link timeout
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the bench worker did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.returncode not in (0, -signal.SIGTERM):
            self.errors.append(f"exit status {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")


def worker_process(ready: Path) -> None:
    """The body of BenchWorker's process: run queued jobs, then wait for the next notification.
    `ready` is written once it listens."""
    from datazone.config import Settings
    from datazone.db import Database
    from datazone.psi import worker as psi_worker
    from datazone.worker import listen_for_work, wait_for_work

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    db = Database.from_settings(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    listener = listen_for_work(db)
    ready.write_text("listening\n")
    while not stop.is_set():
        psi_worker.run_queued_jobs(db, settings, worker_name="bench-worker")
        listener = wait_for_work(db, listener, 30.0, stop)
    db.dispose()


# ---------------------------------------------------------------- openmined-psi, the baseline


def om_setup(zone: list[str], client_items: int) -> tuple[Any, bytes]:
    import private_set_intersection.python as om

    server = om.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(FPR, client_items, zone, om.DataStructure.GCS)
    return server, setup.SerializeToString()


def om_online(server: Any, setup_bytes: bytes, items: list[str]) -> tuple[set[str], dict[str, float]]:
    """openmined-psi's online phase, each message serialized and parsed as it would cross a wire."""
    import private_set_intersection.python as om

    t0 = time.perf_counter()
    client = om.client.CreateWithNewKey(True)
    request_bytes = client.CreateRequest(items).SerializeToString()
    t1 = time.perf_counter()
    request = om.Request()
    request.ParseFromString(request_bytes)
    response_bytes = server.ProcessRequest(request).SerializeToString()
    t2 = time.perf_counter()
    setup = om.ServerSetup()
    setup.ParseFromString(setup_bytes)
    response = om.Response()
    response.ParseFromString(response_bytes)
    found = {items[i] for i in client.GetIntersection(setup, response)}
    t3 = time.perf_counter()
    return found, {
        "client_request_s": t1 - t0,
        "server_process_s": t2 - t1,
        "client_intersection_s": t3 - t2,
        "online_s": t3 - t0,
        "request_bytes": len(request_bytes),
        "response_bytes": len(response_bytes),
    }


# ---------------------------------------------------------------- SecretFlow's engine alone, the baseline


def engine_alone(zone_items: list[str], bank_items: list[str], work: Path, tag: str) -> tuple[set[str], dict[str, float]]:
    """SecretFlow's engine run directly on the same sets: the zone's and the institution's sides
    each in a child process of their own (`privacy.engine`, as a job runs them), RR22 over the
    same brpc link with the same mutual TLS, CSV in (written before the clock starts) and CSV out.
    No gateway, database, HTTP or worker. Timed from starting both sides to the institution's
    result file in place, as ours is timed from job creation to the result file."""
    import hashlib
    import secrets

    from datazone.privacy import engine

    run = work / f"alone-{tag}"
    run.mkdir(parents=True)
    zone_csv, bank_csv = run / "zone.csv", run / "bank.csv"
    engine.write_items_csv(zone_csv, zone_items)
    engine.write_items_csv(bank_csv, bank_items)
    zone_cert, zone_key = engine.new_link_certificate(run / "zone-tls", common_name="zone")
    bank_cert, bank_key = engine.new_link_certificate(run / "bank-tls", common_name="institution")
    ticket = secrets.token_urlsafe(32)
    link = engine.LinkSpec(
        job_id=f"alone-{tag}",
        zone_address=f"127.0.0.1:{free_port()}",
        institution_address=f"127.0.0.1:{free_port()}",
        connect_timeout_s=120.0,
    )
    zone_side = engine.ZoneSideProcess(
        link=dataclasses.replace(link, tls=engine.TlsFiles(zone_cert, zone_key, bank_cert)),
        ticket_sha256=hashlib.sha256(ticket.encode()).digest(),
        protocol="rr22",
        items_csv=zone_csv,
        workdir=run / "zone-work",
    )
    bank_side = engine.InstitutionSideProcess(
        link=dataclasses.replace(link, tls=engine.TlsFiles(bank_cert, bank_key, zone_cert)),
        ticket=ticket,
        protocol="rr22",
        items_csv=bank_csv,
        output_csv=run / "matches.csv",
        workdir=run / "bank-work",
    )
    with zone_side, bank_side:
        t0 = time.perf_counter()
        zone_side.start()
        bank_side.start()
        bank_report = bank_side.wait()
        seconds = time.perf_counter() - t0
        zone_report = zone_side.wait()
    assert bank_report is not None and zone_report is not None
    with bank_report.output.open(encoding="utf-8") as f:
        found = {line.strip() for line in f} - {"uscc", ""}
    shutil.rmtree(run, ignore_errors=True)
    return found, {"total_s": seconds, "link_to_result_s": bank_report.seconds}


# ---------------------------------------------------------------- ours, through the gateway


def engine_job(zc: Any, product: str, codes: list[str], protocol: str, work: Path, tag: str) -> tuple[Any, float]:
    """One PSI job end to end: POST /v1/psi/jobs, the worker's zone side, the SDK's side, the CSV."""
    out = work / f"{tag}.csv"
    result, seconds = timed(
        lambda: zc.psi(
            product, codes, purpose=PURPOSE, mode="engine", peer_address=f"127.0.0.1:{free_port()}",
            protocol=protocol, cache_dir=work / "bank-cache", output=out,
        )
    )
    return result, seconds


def zone_seconds(zc: Any, job_id: str) -> dict[str, float]:
    """From the job's record: how long it queued, and how long the zone's worker ran it."""
    status = job_status(zc.config.url, zc.token().value, job_id)
    created, started, finished = (
        datetime.fromisoformat(status[k]).timestamp() for k in ("created_at", "started_at", "finished_at")
    )
    return {"queued_s": started - created, "zone_worker_s": finished - started}


def check_result(result: Any, expected: set[str], what: str, protocol: str) -> None:
    got = {m.uscc for m in result.matched}
    if result.protocol != protocol:
        sys.exit(f"{what}: the job ran {result.protocol}, not {protocol}")
    if got != expected:
        sys.exit(f"{what}: {len(got)} matched, plaintext has {len(expected)} ({len(got - expected)} extra, "
                 f"{len(expected - got)} missing)")
    rows = sum(1 for _ in result.output.open(encoding="utf-8-sig")) - 1
    if rows != len(expected):
        sys.exit(f"{what}: the result CSV has {rows} rows, plaintext has {len(expected)}")


def job_status(url: str, token: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/psi/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


# ---------------------------------------------------------------- the measurements


def measure_unbalanced(args: argparse.Namespace, ctx: dict[str, Any], sets: Sets, zc: Any, work: Path) -> dict[str, Any]:
    expected = set(sets.small) & set(sets.zone)
    n, z = len(sets.small), len(sets.zone)
    say(f"\n== 1. {n:,} against {z:,}, zone side cached: unbalanced engine job vs openmined-psi ==")
    first, seconds = engine_job(zc, PRODUCT_ALL, sets.small, "unbalanced", work, "unbalanced-first")
    check_result(first, expected, "unbalanced (first job)", "unbalanced")
    status = job_status(zc.config.url, zc.token().value, first.job_id)
    zone_cache = ctx["settings"].home / "psi" / "engine-cache" / str(status["cache_id"])
    bank_cache = work / "bank-cache" / str(status["cache_id"])
    started = datetime.fromisoformat(status["started_at"]).timestamp()
    gen_cache_s = (zone_cache / "ready").stat().st_mtime - started
    offline = {
        "first_job_s": seconds,
        "zone_cache_build_s": gen_cache_s,
        "transfer_and_online_s": seconds - gen_cache_s,
        "zone_cache_bytes": dir_bytes(zone_cache),
        "client_cache_bytes": dir_bytes(bank_cache),
    }
    say(f"offline (first job): {seconds:.1f} s end to end, of which the zone's cache build {gen_cache_s:.1f} s;"
        f" zone cache {offline['zone_cache_bytes'] / 1e6:.1f} MB, client cache {offline['client_cache_bytes'] / 1e6:.1f} MB")
    om_server, setup_seconds = timed(lambda: om_setup(sets.zone, n))
    server, setup_bytes = om_server
    say(f"openmined-psi setup over {z:,} (once): {setup_seconds:.1f} s, {len(setup_bytes) / 1e6:.1f} MB")
    cache_file = bank_cache / "server_cache"
    cache_mtime = cache_file.stat().st_mtime
    ours: list[float] = []
    parts: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    for rnd in range(args.rounds):
        result, seconds = engine_job(zc, PRODUCT_ALL, sets.small, "unbalanced", work, f"unbalanced-{rnd}")
        check_result(result, expected, "unbalanced", "unbalanced")
        if cache_file.stat().st_mtime != cache_mtime:
            sys.exit("an online job transferred the zone's cache again")
        ours.append(seconds)
        parts.append(zone_seconds(zc, result.job_id))
        found, b = om_online(server, setup_bytes, sets.small)
        if found != expected:
            sys.exit(f"openmined-psi found {len(found)}, plaintext has {len(expected)}")
        base.append(b)
        say(f"round {rnd + 1}: ours {seconds:6.2f} s (job creation and queue {parts[-1]['queued_s']:.2f} s,"
            f" zone worker {parts[-1]['zone_worker_s']:.2f} s)"
            f"   openmined-psi online {b['online_s']:6.2f} s"
            f" (request {b['client_request_s']:.2f}, process {b['server_process_s']:.2f},"
            f" intersection {b['client_intersection_s']:.2f})   matched {len(expected):,}")
    summary: dict[str, Any] = {
        "institution_items": n,
        "zone_items": z,
        "intersection": len(expected),
        "ours_offline": offline,
        "ours_online_s": ours,
        "ours_online_median_s": median(ours),
        "ours_online_zone": parts,
        "ours_online_queued_median_s": median([p["queued_s"] for p in parts]),
        "ours_online_zone_worker_median_s": median([p["zone_worker_s"] for p in parts]),
        "openmined_setup_s": setup_seconds,
        "openmined_setup_bytes": len(setup_bytes),
        "openmined_online": base,
        "openmined_online_median_s": median([b["online_s"] for b in base]),
    }
    summary["ratio"] = summary["openmined_online_median_s"] / summary["ours_online_median_s"]
    return summary


def measure_balanced(args: argparse.Namespace, sets: Sets, zc: Any, work: Path) -> dict[str, Any]:
    expected = set(sets.large) & set(sets.part_a)
    n, z = len(sets.large), len(sets.part_a)
    with_om = not args.skip_openmined
    say(f"\n== 2. {n:,} against {z:,}: RR22 engine job through the gateway vs SecretFlow's engine alone"
        + (" and openmined-psi end to end ==" if with_om else " ==")
    )
    ours: list[float] = []
    parts: list[dict[str, float]] = []
    alone: list[dict[str, float]] = []
    base: list[dict[str, float]] = []
    for rnd in range(args.rounds):
        result, seconds = engine_job(zc, PRODUCT_PART, sets.large, "rr22", work, f"rr22-{rnd}")
        check_result(result, expected, "rr22", "rr22")
        ours.append(seconds)
        parts.append(zone_seconds(zc, result.job_id))
        found, a = engine_alone(sets.part_a, sets.large, work, f"rr22-{rnd}")
        if found != expected:
            sys.exit(f"SecretFlow's engine alone found {len(found)}, plaintext has {len(expected)}")
        alone.append(a)
        line = (f"round {rnd + 1}: ours {seconds:6.2f} s (job creation and queue {parts[-1]['queued_s']:.2f} s,"
                f" zone worker {parts[-1]['zone_worker_s']:.2f} s)"
                f"   engine alone {a['total_s']:6.2f} s (link up to result {a['link_to_result_s']:.2f} s)")
        if with_om:
            (server, setup_bytes), setup_s = timed(lambda: om_setup(sets.part_a, n))
            found, b = om_online(server, setup_bytes, sets.large)
            if found != expected:
                sys.exit(f"openmined-psi found {len(found)}, plaintext has {len(expected)}")
            b = {**b, "setup_s": setup_s, "setup_bytes": len(setup_bytes), "total_s": setup_s + b["online_s"]}
            base.append(b)
            line += (f"   openmined-psi {b['total_s']:7.2f} s (setup {setup_s:.1f},"
                     f" request {b['client_request_s']:.1f}, process {b['server_process_s']:.1f},"
                     f" intersection {b['client_intersection_s']:.1f})")
        say(line + f"   matched {len(expected):,}")
    summary: dict[str, Any] = {
        "institution_items": n,
        "zone_items": z,
        "intersection": len(expected),
        "ours_s": ours,
        "ours_median_s": median(ours),
        "ours_zone": parts,
        "ours_queued_median_s": median([p["queued_s"] for p in parts]),
        "ours_zone_worker_median_s": median([p["zone_worker_s"] for p in parts]),
        "engine_alone": alone,
        "engine_alone_median_s": median([a["total_s"] for a in alone]),
    }
    # the target: at least 0.5 (ours at most twice the engine's own time)
    summary["ratio_engine_alone"] = summary["engine_alone_median_s"] / summary["ours_median_s"]
    if with_om:
        summary["openmined"] = base
        summary["openmined_median_s"] = median([b["total_s"] for b in base])
        summary["ratio"] = summary["openmined_median_s"] / summary["ours_median_s"]
    return summary


def measure_http(args: argparse.Namespace, ctx: dict[str, Any], sets: Sets, zc: Any) -> dict[str, Any]:
    from datazone.privacy import openmined, oprf

    n = args.session_items
    court = ctx["court"]
    inside = court[: n // 2]
    items = inside + sets.outside[: n - len(inside)]
    expected = set(inside)
    say("\n== 3. HTTP-native OPRF: the zone's work per item and the gateway's round trip, vs OpenSSL ==")
    key = oprf.new_zone_key()
    url = zc.config.url
    rounds: list[dict[str, float]] = []
    for rnd in range(args.rounds):
        # the zone's per-chunk work, in process, one thread
        client = openmined.OpenMinedClient.new(True)
        body = client.request(items)
        request, parse_s = timed(
            lambda: openmined.parse_request(body, reveal_intersection=True, check_points=False)
        )
        _, process_s = timed(lambda: openmined.process_request(key, request, reveal_intersection=True, threads=1))
        # the gateway: one session of n items, its chunks PUT one after another
        token = zc.token().value
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
            opened, open_s = timed(
                lambda: http.post(
                    "/v1/psi/sessions",
                    json={"product": SESSION_PRODUCT, "purpose": PURPOSE, "set_size": n, "labeled": False},
                )
            )
            if opened.status_code != 201:
                sys.exit(f"opening a PSI session failed: {opened.status_code} {opened.text[:500]}")
            session = opened.json()
            setup = http.get(session["setup_url"])
            setup.raise_for_status()
            size = int(session["max_chunk_items"])
            chunks = [items[i : i + size] for i in range(0, n, size)]
            sender = openmined.OpenMinedClient.new(True)
            bodies = [sender.request(chunk) for chunk in chunks]
            answers: list[bytes] = []
            t0 = time.perf_counter()
            for index, chunk_body in enumerate(bodies):
                r = http.put(
                    session["chunks_url"].replace("{index}", str(index)),
                    content=chunk_body, headers={"Content-Type": "application/x-protobuf"},
                )
                if r.status_code != 200:
                    sys.exit(f"chunk {index} failed: {r.status_code} {r.text[:500]}")
                answers.append(r.content)
            gateway_s = time.perf_counter() - t0
        found = {
            chunk[i]
            for chunk, answer in zip(chunks, answers, strict=True)
            for i in sender.intersection(setup.content, answer, request_size=len(chunk))
        }
        if found != expected:
            sys.exit(f"the gateway session found {len(found)}, plaintext has {len(expected)}")
        speed = openssl_speed(args.openssl_seconds)
        r_ = {
            "parse_us": parse_s / n * 1e6,
            "process_us": process_s / n * 1e6,
            "gateway_us": gateway_s / n * 1e6,
            "session_open_s": open_s,
            "openssl_p256_us": 1e6 / speed["p256_ops"],
            "openssl_x25519_us": 1e6 / speed["x25519_ops"],
            "openssl_p256_ops": speed["p256_ops"],
            "openssl_x25519_ops": speed["x25519_ops"],
        }
        rounds.append(r_)
        say(f"round {rnd + 1}: process_request {r_['process_us']:.1f} us/item (parse {r_['parse_us']:.2f}),"
            f" gateway round trip {r_['gateway_us']:.1f} us/item (session open {open_s:.2f} s),"
            f" openssl ecdhp256 {r_['openssl_p256_us']:.1f} us/op ({speed['p256_ops']:,.0f} op/s),"
            f" x25519 {r_['openssl_x25519_us']:.1f} us/op   matched {len(expected):,}")
    med = {k: median([r[k] for r in rounds]) for k in rounds[0]}
    return {
        "items": n,
        "chunk_items": size,
        "intersection": len(expected),
        "rounds": rounds,
        "median": med,
        "ratio_zone_work": med["process_us"] / med["openssl_p256_us"],
        "ratio_zone_work_with_parse": (med["process_us"] + med["parse_us"]) / med["openssl_p256_us"],
        "ratio_gateway": med["gateway_us"] / med["openssl_p256_us"],
    }


def label_for(i: int) -> bytes:
    """A label of about 60 bytes, the size of a few authorized fields as compact JSON."""
    return (
        f'{{"cases":{i % 7},"unperformed":{i % 3},"latest":"2025-{i % 12 + 1:02d}-{i % 28 + 1:02d}",'
        f'"grade":"{"ABMCD"[i % 5]}"}}'
    ).encode()


def measure_labeled(args: argparse.Namespace, sets: Sets) -> dict[str, Any]:
    import private_set_intersection.python as om

    from datazone.privacy import labels, openmined, oprf

    n, z = len(sets.small), len(sets.zone)
    say(f"\n== 4. labeled PSI, {n:,} against {z:,} ==")
    key = oprf.new_zone_key()
    outputs, oprf_s = timed(lambda: oprf.direct_parallel(key, sets.zone))
    values = [label_for(i) for i in range(z)]
    table, seal_s = timed(lambda: labels.seal_labels(outputs, values))
    stats = labels.label_table_stats(table)
    outputs.clear()  # 2.6M outputs are not needed past the table
    say(f"zone offline: OPRF over the slice {oprf_s:.1f} s ({os.cpu_count()} processes), sealing {seal_s:.1f} s;"
        f" table {stats} ({len(table) / 1e6:.1f} MB, mean label {sum(map(len, values)) / z:.0f} bytes)")
    position = {code: i for i, code in enumerate(sets.zone)}
    expected = {code: values[position[code]] for code in sets.small if code in position}
    rounds: list[dict[str, float]] = []
    for rnd in range(args.rounds):
        blinded, blind_s = timed(lambda: oprf.blind(sets.small))
        up = om.Request(reveal_intersection=True, encrypted_elements=blinded.points).SerializeToString()
        request, parse_s = timed(lambda: openmined.parse_request(up, reveal_intersection=True, check_points=False))
        down, process_s = timed(lambda: openmined.process_request(key, request, reveal_intersection=True))
        response = om.Response()
        response.ParseFromString(down)
        finals, finalize_s = timed(lambda: oprf.finalize(blinded, list(response.encrypted_elements)))
        opened, open_s = timed(lambda: labels.open_labels(table, finals))
        got = {sets.small[i]: label for i, label in opened.items()}
        if got != expected:
            sys.exit(f"labeled PSI opened {len(got)} labels, plaintext has {len(expected)} (or a label differs)")
        r = {
            "blind_s": blind_s,
            "zone_parse_s": parse_s,
            "zone_process_s": process_s,
            "finalize_s": finalize_s,
            "open_labels_s": open_s,
            "request_bytes": len(up),
            "response_bytes": len(down),
        }
        rounds.append(r)
        say(f"round {rnd + 1}: blind {blind_s:.2f} s, zone {parse_s + process_s:.2f} s, finalize {finalize_s:.2f} s,"
            f" open labels {open_s:.2f} s; up {len(up) / 1e6:.2f} MB, down {len(down) / 1e6:.2f} MB"
            f" + table {len(table) / 1e6:.1f} MB   labels opened {len(got):,}")
    med = {k: median([r[k] for r in rounds]) for k in rounds[0]}
    return {
        "institution_items": n,
        "zone_items": z,
        "intersection": len(expected),
        "zone_oprf_s": oprf_s,
        "zone_seal_s": seal_s,
        "zone_offline_s": oprf_s + seal_s,
        "processes": os.cpu_count(),
        "label_table": stats,
        "label_table_bytes": len(table),
        "mean_label_bytes": sum(map(len, values)) / z,
        "rounds": rounds,
        "median": med,
    }


# ---------------------------------------------------------------- the report


def report(out: dict[str, Any]) -> None:
    ub, rr, http, lab = (out.get(k) for k in ("unbalanced", "balanced", "http", "labeled"))
    say("\n| measurement | ours | baseline | ratio | target |")
    say("| --- | ---: | ---: | ---: | --- |")
    if ub is not None:
        say(f"| {ub['institution_items']:,} vs {ub['zone_items']:,}, online, zone side cached (unbalanced engine job"
            f" through the gateway vs openmined-psi online) | {ub['ours_online_median_s']:.2f} s"
            f" | {ub['openmined_online_median_s']:.2f} s | {ub['ratio']:.1f}x faster | at least 4x |")
    if rr is not None:
        say(f"| {rr['institution_items']:,} vs {rr['zone_items']:,} end to end (RR22 engine job through the gateway,"
            f" job creation to result file, vs SecretFlow's engine alone on the same sets)"
            f" | {rr['ours_median_s']:.2f} s | {rr['engine_alone_median_s']:.2f} s"
            f" | {rr['ratio_engine_alone']:.2f}x | at least 0.5x |")
        if "openmined_median_s" in rr:
            say(f"| {rr['institution_items']:,} vs {rr['zone_items']:,} end to end (RR22 engine job through the gateway"
                f" vs openmined-psi) | {rr['ours_median_s']:.2f} s | {rr['openmined_median_s']:.2f} s"
                f" | {rr['ratio']:.1f}x faster | at least 5x |")
    if http is not None:
        m = http["median"]
        say(f"| HTTP-native: the zone's work per item (process_request, 1 thread) vs one P-256 scalar multiplication"
            f" (openssl speed ecdhp256) | {m['process_us']:.1f} us | {m['openssl_p256_us']:.1f} us"
            f" | {http['ratio_zone_work']:.2f}x | at most 1.5x |")
        say(f"| HTTP-native: the gateway's round trip per item (PUT chunks of {http['chunk_items']:,}, session of"
            f" {http['items']:,}) vs the same | {m['gateway_us']:.1f} us | {m['openssl_p256_us']:.1f} us"
            f" | {http['ratio_gateway']:.2f}x | (reference) |")
    split = []
    if ub is not None:
        split.append(f"unbalanced: job creation (POST /v1/psi/jobs) and queue {ub['ours_online_queued_median_s']:.2f} s,"
                     f" zone worker {ub['ours_online_zone_worker_median_s']:.2f} s")
    if rr is not None:
        split.append(f"RR22: job creation and queue {rr['ours_queued_median_s']:.2f} s, zone worker"
                     f" {rr['ours_zone_worker_median_s']:.2f} s")
    if split:
        say("\nwhere our time goes (medians): " + "; ".join(split)
            + "; the rest is the SDK (list check, CSVs, engine process, status).")
    if http is not None:
        say(f"HTTP session open for {http['items']:,} items: {http['median']['session_open_s']:.2f} s")
    if ub is not None:
        off = ub["ours_offline"]
        say(f"\noffline, once per slice version and key epoch: our first unbalanced job {off['first_job_s']:.1f} s"
            f" (zone cache build {off['zone_cache_build_s']:.1f} s, cache transfer + online"
            f" {off['transfer_and_online_s']:.1f} s; zone cache {off['zone_cache_bytes'] / 1e6:.1f} MB,"
            f" institution's copy {off['client_cache_bytes'] / 1e6:.1f} MB);"
            f" openmined-psi setup {ub['openmined_setup_s']:.1f} s ({ub['openmined_setup_bytes'] / 1e6:.1f} MB)")
    if lab is None:
        return
    lm = lab["median"]
    say(f"\nlabeled PSI, {lab['institution_items']:,} vs {lab['zone_items']:,} ({lab['intersection']:,} matched):")
    say("| step | side | time | bytes |")
    say("| --- | --- | ---: | ---: |")
    say(f"| OPRF over the slice ({lab['processes']} processes) | zone, offline | {lab['zone_oprf_s']:.1f} s | |")
    say(f"| seal the label table (mean label {lab['mean_label_bytes']:.0f} bytes) | zone, offline"
        f" | {lab['zone_seal_s']:.1f} s | {lab['label_table_bytes']:,} (table, downloaded once per epoch) |")
    say(f"| blind | institution | {lm['blind_s']:.2f} s | {lm['request_bytes']:,.0f} up |")
    say(f"| parse + evaluate | zone, online | {lm['zone_parse_s'] + lm['zone_process_s']:.2f} s"
        f" | {lm['response_bytes']:,.0f} down |")
    say(f"| finalize | institution | {lm['finalize_s']:.2f} s | |")
    say(f"| open labels | institution | {lm['open_labels_s']:.2f} s | |")


def stop_postmaster(pgdata: Path) -> None:
    """pgserver leaves the server running when another process that opened it is not known to
    have closed (the worker's): stop it here (fast shutdown), before its directory goes."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--zone", type=int, default=2_600_000, help="the large slice (the bench dataset)")
    parser.add_argument("--even", type=int, default=1_000_000, help="the slice of part a (balanced case)")
    parser.add_argument("--small", type=int, default=100_000, help="the institution's list against the large slice")
    parser.add_argument("--large", type=int, default=1_000_000, help="the institution's list against part a")
    parser.add_argument("--session-items", type=int, default=100_000, help="the HTTP-native session's set")
    parser.add_argument("--entities", type=int, default=20_000, help="enterprises of the demo zone")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--openssl-seconds", type=int, default=5)
    parser.add_argument("--link-timeout", type=float, default=900.0,
                        help="seconds an engine job waits for its peer (the first unbalanced job builds the cache first)")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 vs 260,000 and 50,000 vs 50,000, sessions of 20,000, one round")
    parser.add_argument("--json", type=Path, default=Path("bench-psi.json"), help="where the summary goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--only", choices=PHASES, action="append",
                        help="run only this phase (repeatable); --only balanced skips the 2.6M slice's setup")
    parser.add_argument("--skip-openmined", action="store_true",
                        help="balanced phase: SecretFlow's engine alone as the only baseline")
    parser.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_process:
        worker_process(args.json)
        return
    if args.quick:
        args.zone, args.even, args.small, args.large, args.session_items = 260_000, 50_000, 20_000, 50_000, 20_000
        args.rounds, args.openssl_seconds = 1, 3
    phases = set(args.only or PHASES)
    if phases == {"balanced"}:
        args.zone = args.even  # the balanced slice is the whole bench dataset: no 2.6M setup
    if args.even > args.zone:
        parser.error("--even is part of --zone: it cannot be larger")
    args.max_set = max(args.small, args.large, 100_000)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from datazone.client.sdk import ZoneClient

    started = time.perf_counter()
    out: dict[str, Any] = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    # the figures are only as good as the machine's quiet: the load before and after goes with them
    out["load_average_before"] = os.getloadavg()
    say(f"machine: {out['machine']}")
    sets = Sets(args)
    work = Path(tempfile.mkdtemp(prefix="datazone-bench-psi-"))
    home = work / "home"
    ctx = build_zone(home, args, sets)
    env = {
        **os.environ,
        "DATAZONE_HOME": str(home),
        "DATAZONE_DATABASE_URL": ctx["database_url"],
        "DATAZONE_OAUTH_TOKEN_SECONDS": "3600",
        "DATAZONE_PSI_LINK_TIMEOUT_SECONDS": str(args.link_timeout),
        # this checkout's code in the gateway and the worker (a worktree's, not an editable install's)
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), str(ROOT / "client" / "src")]),
    }
    gateway = Uvicorn("datazone.app:create_app", env, work / "gateway.log")
    worker = BenchWorker(env, work / "worker.log")
    try:
        gateway.start()
        worker.start()
        with ZoneClient(gateway.url, ctx["client_id"], ctx["client_secret"], timeout=300) as zc:
            if "unbalanced" in phases:
                out["unbalanced"] = measure_unbalanced(args, ctx, sets, zc, work)
            if "balanced" in phases:
                out["balanced"] = measure_balanced(args, sets, zc, work)
            if "http" in phases:
                out["http"] = measure_http(args, ctx, sets, zc)
        if "labeled" in phases:
            out["labeled"] = measure_labeled(args, sets)
    finally:
        worker.close()
        gateway.stop()
        ctx["db"].dispose()
        import pgserver

        pgserver.get_server(home / "pgdata", cleanup_mode="stop").cleanup()  # type: ignore[attr-defined]
        stop_postmaster(home / "pgdata")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if worker.errors:
        sys.exit(f"the worker failed: {worker.errors}")
    out["seconds"] = time.perf_counter() - started
    out["load_average_after"] = os.getloadavg()
    report(out)
    args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    say(f"\nload average (1, 5, 15 min) before {out['load_average_before']}, after {out['load_average_after']}")
    say(f"\nsummary written to {args.json} ({out['seconds'] / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
