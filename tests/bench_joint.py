"""Benchmark: joint statistics and joint modeling end to end through the gateway, on the demo zone.

Not part of the test suite: `make bench-joint` (or `.venv/bin/python tests/bench_joint.py`;
`--entities 20000 --sample 10000` checks the script in a few minutes).

The zone is the demo zone (embedded PostgreSQL in a temporary home) at --entities enterprises. A
bench institution has a private plan (no quota or rate limit to speak of), a contract for
joint-modeling and secure-credit-score at clearance 3 (so every feature may be used), every
department's grant, an OAuth client, and the risk-modeling consent of its --sample enterprises.
The gateway is uvicorn and the zone's worker is `datazone worker`, each a process of its own; the
bank's side of training runs in a child process of this one, the zone's in a child of the worker.

The bank's data are synthetic: 10 features of its own (normal), and a label drawn from a logistic
model of those and of 30 zone features (standardized), whose values the script reads from the
product engine in plaintext (the bank never could; the benchmark needs the truth to check).

Timed, one after another:
1. statistics: `datazone.client.stats.run_stats` (keys, encryption, job, columns, the worker's
   sums, decryption, WOE/IV) for 30 features x 10 bins; checked equal to the plaintext
   computation (`joint_stats.plain_stats`) bin by bin;
2. training: `datazone.client.training.train` (job, link, shares, epochs, model output) of a
   logistic regression over the 30 zone and 10 bank features, 20 % held out; and the WOE
   scorecard form on the statistics' bins; each against scikit-learn's logistic regression on the
   same joined data and hold-out (test AUC difference printed);
3. the model registered for secure scoring as it is (the registration's time printed).
The last line printed is a one-line JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bench_gateway import Uvicorn, free_port  # noqa: E402

PRODUCT = "joint-modeling"
SCORING = "secure-credit-score"
PURPOSE = "risk_modeling"
PLAN = "bench-joint"
ZONE_FEATURES = 30
BANK_FEATURES = 10
BINS = 10


def say(text: str = "") -> None:
    print(text, flush=True)


def build_zone(home: Path, entities: int, sample_size: int) -> dict[str, Any]:
    """The demo zone and the bench institution: plan, contract, grants, client, consents."""
    from datazone.config import Settings
    from datazone.consent import service as consent_service
    from datazone.consent.schemas import ConsentIn
    from datazone.contract import service as contract_service
    from datazone.dataset import service as dataset_service
    from datazone.db import Database
    from datazone.demo.setup import prepare_demo
    from datazone.metering import service as metering
    from datazone.oauth import service as oauth_service
    from datazone.principal import service as principal_service
    from datazone.product import service as product_service
    from tests.factories import grant_every_department

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
        bench = principal_service.create_principal(s, kind="institution", name="bench-joint-bank")
        metering.create_plan(
            s, plan_id=PLAN, name="bench: joint modeling", institution_id=bench.id,
            rate_per_second=1_000_000.0, burst=1_000_000, by=operator,
        )
        contract_service.create_contract(
            s, institution_id=bench.id, purposes=[PURPOSE, "pre_loan"], products=[PRODUCT, SCORING], clearance=3,
            plan_id=PLAN, by=operator, valid_from=valid_from, valid_to=valid_to,
        )
        spec = product_service.spec_of(product_service.get_product(s, product_id=PRODUCT))
        grant_every_department(
            s, spec=spec, institution_id=bench.id, purposes=[PURPOSE, "pre_loan"], products=[PRODUCT, SCORING],
            valid_from=valid_from, valid_to=valid_to,
        )
        client, secret = oauth_service.create_client(s, institution_id=bench.id, name="bench", by_name="bench")
        _, registered = dataset_service.population(s, dataset_id="mr_registration")
        bench_id = bench.id
    sample = sorted(registered)[:sample_size]
    t0 = time.perf_counter()
    for start in range(0, len(sample), consent_service.MAX_BATCH):
        with db.unit_of_work() as s:
            bank = principal_service.get_principal(s, principal_id=bench_id)
            consent_service.register_consents(
                s,
                institution=bank,
                items=[
                    ConsentIn(
                        uscc=code, purpose=PURPOSE, products=[PRODUCT], valid_from=valid_from, valid_to=valid_to,
                        evidence_ref=f"bench://consents/{code}.pdf",
                        evidence_sha256=hashlib.sha256(code.encode()).hexdigest(),
                    )
                    for code in sample[start : start + consent_service.MAX_BATCH]
                ],
            )
    say(f"{len(sample):,} risk-modeling consents in {time.perf_counter() - t0:.1f} s")
    assert secret is not None
    return {
        "db": db, "settings": settings, "spec": spec, "client_id": client.client_id, "client_secret": secret,
        "sample": sample, "operator_token": zone.info["operator_token"],
    }


def plain_features(ctx: dict[str, Any], names: list[str]) -> np.ndarray:
    """The zone features of the sample in plaintext, clamped as the zone clamps them (the truth)."""
    from datazone.dataset.schemas import SHANGHAI
    from datazone.scoring import service as scoring_service

    spec = ctx["spec"]
    offer = {f.name: f for f in spec.joint.features}
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    with ctx["db"].unit_of_work() as s:
        computed = scoring_service.compute_features(
            s, spec=spec, datasets=scoring_service.model_datasets(spec, names), names=names,
            usccs=ctx["sample"], as_of=today,
        )
    rows = []
    for code in ctx["sample"]:
        found = computed.rows.get(code)
        rows.append([
            min(max(offer[n].missing if found is None or found[k] is None else found[k], offer[n].min), offer[n].max)
            for k, n in enumerate(names)
        ])
    return np.array(rows, dtype=np.int64)


def write_bank_files(work: Path, codes: list[str], labels: np.ndarray, own: np.ndarray) -> tuple[Path, Path]:
    labels_path, own_path = work / "labels.csv", work / "own.csv"
    labels_path.write_text("uscc,label\n" + "".join(f"{c},{int(y)}\n" for c, y in zip(codes, labels, strict=True)))
    header = "uscc," + ",".join(f"b{k}" for k in range(own.shape[1])) + "\n"
    own_path.write_text(
        header + "".join(c + "," + ",".join(f"{v:.6f}" for v in row) + "\n" for c, row in zip(codes, own, strict=True))
    )
    return labels_path, own_path


def sklearn_auc(joined: np.ndarray, labels: np.ndarray, train_rows: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    spread = joined[train_rows].std(axis=0)
    scaled = (joined - joined[train_rows].mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    model = LogisticRegression(C=1e6, max_iter=5000).fit(scaled[train_rows], labels[train_rows])
    return float(roc_auc_score(labels[~train_rows], model.decision_function(scaled[~train_rows])))


def run(ctx: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import httpx

    from datazone.client import stats as stats_sdk
    from datazone.client import training
    from datazone.client.scoring import ScoringKey
    from datazone.client.sdk import ZoneClient
    from datazone.privacy import joint_stats, paillier
    from datazone.purposes import Purpose

    db, settings, sample = ctx["db"], ctx["settings"], ctx["sample"]
    names = [f.name for f in ctx["spec"].joint.features][:ZONE_FEATURES]
    out: dict[str, Any] = {"sample": len(sample), "zone_features": len(names), "bank_features": BANK_FEATURES}
    t0 = time.perf_counter()
    zone_values = plain_features(ctx, names)
    say(f"the truth: {len(names)} zone features of {len(sample):,} enterprises read in plaintext in"
        f" {time.perf_counter() - t0:.1f} s (for the synthetic label and the checks only)")
    rng = np.random.default_rng(args.seed)
    own = rng.normal(size=(len(sample), BANK_FEATURES))
    spread = zone_values.std(axis=0)
    standard = (zone_values - zone_values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    logit = standard @ rng.normal(0, 0.5, len(names)) + own @ rng.normal(0, 0.5, BANK_FEATURES) - 1.0
    labels = (rng.random(len(sample)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    labels_path, own_path = write_bank_files(work, sample, labels, own)
    say(f"labels: {int(labels.sum()):,} positives of {len(labels):,}")

    env = dict(os.environ)
    env.update({
        "DATAZONE_HOME": str(settings.home), "DATAZONE_DATABASE_URL": db.url,
        "DATAZONE_DROP_DIR": str(settings.drop_path),
    })
    # the worker's first pass builds what the demo's other products need (PSI setups, anonymous
    # tables, scoring pools); it runs before the clock starts, as a worker in service has done it
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "datazone", "worker", "--once"], env=env, cwd=ROOT, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    say(f"the worker's first pass (other products' precomputation) took {time.perf_counter() - t0:.1f} s")
    gateway = Uvicorn("datazone.app:create_app", env, work / "gateway.log")
    gateway.start()
    worker_log = (work / "worker.log").open("ab")
    worker = subprocess.Popen([sys.executable, "-m", "datazone", "worker"], env=env, stdout=worker_log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    zone = ZoneClient(gateway.url, ctx["client_id"], ctx["client_secret"], timeout=600)
    try:
        say(f"\n-- statistics: {len(names)} features x {BINS} bins over {len(sample):,} enterprises --")
        labeled = stats_sdk.LabeledSample(codes=sample, labels=labels, segments=None, source="bench")
        phases: dict[str, float] = {}
        last = [time.perf_counter(), ""]

        def note(phase: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if last[1]:
                phases[str(last[1])] = phases.get(str(last[1]), 0.0) + now - float(last[0])
            last[:] = [now, phase]

        t0 = time.perf_counter()
        report = stats_sdk.run_stats(zone, labeled, product=PRODUCT, purpose=PURPOSE, features=names, bins=BINS,
                                     progress=note, poll_interval=0.25)
        stats_s = time.perf_counter() - t0
        note("end", 0, 0)
        plain = joint_stats.plain_stats(names, zone_values, labels, bins=BINS,
                                        min_count=ctx["spec"].joint.min_bin_count)
        exact = all(
            g.edges == p.edges and g.totals == p.totals and g.positives == p.positives
            for g, p in zip(report.features, plain.features, strict=True)
        )
        assert exact, "the statistics differ from the plaintext computation"
        out["stats"] = {"s": round(stats_s, 2), "exact": exact, "phases": {k: round(v, 2) for k, v in phases.items()},
                        "job_id": report.job_id, "top_iv": [(f.name, round(f.iv, 4)) for f in report.by_iv()[:3]]}
        stats_sdk.write_report(work / "out", report)
        say(f"  {stats_s:.1f} s end to end (target < 30 s); every bin equal to the plaintext computation")
        say("  phases (as the SDK saw them): " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))

        train_rows = training.choose_holdout(len(sample), 0.2, args.seed)
        joined = np.hstack([zone_values.astype(np.float64), own])
        # the scorecard's plaintext reference: the zone features replaced by their bins' WOE
        woe = np.column_stack([
            np.asarray(f.woe)[joint_stats.bin_index(zone_values[:, k], f.edges)]
            for k, f in enumerate(report.features)
            if f.edges
        ])
        reference = {
            "logistic": sklearn_auc(joined, labels, train_rows),
            "scorecard": sklearn_auc(np.hstack([woe, own]), labels, train_rows),
        }
        for form in ("logistic", "scorecard"):
            plain_auc = reference[form]
            say(f"\n-- training: {form}, {len(names)} zone + {BANK_FEATURES} bank features --")
            card, wanted = None, names
            if form == "scorecard":
                card = training.read_scorecard_report(work / "out" / f"stats-{report.job_id}.json", report.job_id)
                # a feature the sample leaves in one bin (constant over it) has no points to learn
                wanted = [f.name for f in report.features if f.edges]
                say(f"  {len(wanted)} of the {len(names)} features have two bins or more over the sample")
            t0 = time.perf_counter()
            result = training.train(
                zone, purpose=Purpose.risk_modeling, labels_path=labels_path, own_features_path=own_path,
                features=wanted, listen=f"127.0.0.1:{free_port()}", out_dir=work / f"model-{form}",
                holdout=0.2, seed=args.seed, scorecard=card, product=PRODUCT, params={"epochs": args.epochs},
            )
            train_s = time.perf_counter() - t0
            metrics = json.loads(result.metrics_path.read_text())
            out[form] = {
                "s": round(train_s, 2), "auc": metrics["auc"], "ks": metrics["ks"], "sklearn_auc": round(plain_auc, 6),
                "auc_gap": round(plain_auc - metrics["auc"], 6), "phases": metrics["seconds"],
                "bytes_sent": metrics["bytes_sent"], "epochs": metrics["params"]["epochs"],
            }
            say(f"  {train_s:.1f} s end to end; hold-out AUC {metrics['auc']:.4f} (scikit-learn {plain_auc:.4f},"
                f" gap {plain_auc - metrics['auc']:+.4f}), KS {metrics['ks']:.4f}")
            say("  phases (bank's side): " + ", ".join(f"{k} {v:.1f} s" for k, v in metrics["seconds"].items()))
            say(f"  bytes sent: bank {metrics['bytes_sent']['institution'] / 1e6:.0f} MB,"
                f" zone {metrics['bytes_sent']['zone'] / 1e6:.0f} MB")
        say("\n-- the logistic model registered for secure scoring as it is --")
        _, private = paillier.generate_keypair(2048)
        t0 = time.perf_counter()
        view = zone.register_model(work / "model-logistic" / "model.json", ScoringKey(private=private))
        out["register_s"] = round(time.perf_counter() - t0, 2)
        r = httpx.post(f"{gateway.url}/v1/scoring/models/{view['id']}/review",
                       json={"decision": "approve", "reason": "bench"},
                       headers={"Authorization": f"Bearer {ctx['operator_token']}"}, timeout=60)
        assert r.status_code == 200 and r.json()["state"] == "approved", r.text
        say(f"  registered in {out['register_s']:.2f} s and approved: model {view['id']}")
    finally:
        zone.close()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_log.close()
        gateway.stop()
    total = out["stats"]["s"] + out["logistic"]["s"]
    out["stats_plus_logistic_s"] = round(total, 2)
    out["stats_plus_scorecard_s"] = round(out["stats"]["s"] + out["scorecard"]["s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100_000, help="enterprises in the demo zone")
    parser.add_argument("--sample", type=int, default=100_000, help="enterprises in the bank's sample")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (the job's default)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--keep", type=Path, help="keep the zone in this directory")
    args = parser.parse_args()
    say(f"== joint statistics and modeling through the gateway: {args.sample:,} of {args.entities:,} enterprises,"
        f" {os.cpu_count()} cores ==")
    load_before = os.getloadavg()
    work = args.keep or Path(tempfile.mkdtemp(prefix="datazone-bench-joint-"))
    home = work / "home"
    started = time.perf_counter()
    ctx = build_zone(home, args.entities, args.sample)
    try:
        figures = run(ctx, args, work)
    finally:
        ctx["db"].dispose()
        import pgserver

        server = pgserver.get_server(home / "pgdata")  # type: ignore[attr-defined]
        server.cleanup_mode = "stop"
        server.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    say(f"\n-- summary: statistics {figures['stats']['s']:.1f} s (target < 30), statistics + logistic"
        f" {figures['stats_plus_logistic_s']:.1f} s, statistics + scorecard {figures['stats_plus_scorecard_s']:.1f} s"
        f" (target < 180); AUC gap logistic {figures['logistic']['auc_gap']:+.4f},"
        f" scorecard {figures['scorecard']['auc_gap']:+.4f} (target within 0.005) --")
    summary = {
        "bench": "joint", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "entities": args.entities, "wall_s": round(time.perf_counter() - started, 1), **figures,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    say(f"load average (1, 5, 15 min) before {load_before}, after {summary['load_average_after']}")
    say(json.dumps(summary, separators=(",", ":"), default=str))


if __name__ == "__main__":
    main()
