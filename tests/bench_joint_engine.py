"""Benchmark: joint logistic regression on SPU CHEETAH (FM64), the bank and the zone as separate
processes over the engine link (brpc, mutual TLS) on loopback, against scikit-learn's plaintext
logistic regression on the same joined data.

Not part of the test suite: `.venv/bin/python tests/bench_joint_engine.py` (`--quick` for a
small run that checks the script). The data are synthetic: --rows rows (default 100,000) of 10
bank features (floats) and 30 zone features (integers clamped to 0..100, as the zone's are), a
label drawn from a logistic model of both; the bank holds out --holdout (20 %) of the rows.

Printed: seconds per phase on each side (link, share exchange, compile, WOE lookup for the scorecard, each epoch, model
output), bytes each side wrote (its link traffic, TLS included), the hold-out AUC and KS of the
secure model, scikit-learn's hold-out AUC and the difference; with --scorecard the WOE form
too (10 quantile bins per zone feature, WOE over the training rows). A JSON summary goes to
stdout last, as one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from datazone.privacy import engine, joint_model
from datazone.privacy.joint_model import InstitutionTrainReport, TrainParams, ZoneTrainReport

TICKET = "bench-ticket-0123456789abcdef"


def free_port(start: int) -> int:
    for port in range(start, 48000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 47000-47999")


def links(directory: Path) -> tuple[engine.LinkSpec, engine.LinkSpec]:
    zone_cert, zone_key = engine.new_link_certificate(directory / "zone-tls", common_name="127.0.0.1")
    bank_cert, bank_key = engine.new_link_certificate(directory / "bank-tls", common_name="127.0.0.1")
    zone_port = free_port(47600)
    bank_port = free_port(zone_port + 1)
    common: dict[str, Any] = {
        "job_id": "bench-joint",
        "zone_address": f"127.0.0.1:{zone_port}",
        "institution_address": f"127.0.0.1:{bank_port}",
        "connect_timeout_s": 30.0,
        "recv_timeout_s": 120.0,
    }
    return (
        engine.LinkSpec(**common, tls=engine.TlsFiles(zone_cert, zone_key, bank_cert)),
        engine.LinkSpec(**common, tls=engine.TlsFiles(bank_cert, bank_key, zone_cert)),
    )


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(zone features, bank features, labels): the label depends on both sides' features."""
    rng = np.random.default_rng(seed)
    zone = np.clip(np.round(rng.normal(50, 18, size=(rows, 30))), 0, 100)
    own = rng.normal(size=(rows, 10)) * rng.uniform(0.5, 20, size=10)
    beta_zone = rng.normal(size=30) * 0.025
    beta_own = rng.normal(size=10) * 0.35 / own.std(axis=0)
    logit = -1.5 + (zone - 50) @ beta_zone + own @ beta_own
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return zone, own, labels


def run_pair(
    directory: Path,
    params: TrainParams,
    zone: np.ndarray,
    own: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    scorecard: tuple[np.ndarray, list[int], list[np.ndarray]] | None = None,
) -> tuple[InstitutionTrainReport, ZoneTrainReport, float]:
    zone_link, bank_link = links(directory)
    outcome: dict[str, Any] = {}
    extra_zone: dict[str, Any] = {}
    extra_bank: dict[str, Any] = {}
    if scorecard is not None:
        bins, counts, woe = scorecard
        extra_zone = {"bins": bins, "bin_counts": counts}
        extra_bank = {"woe": woe}

    def zone_side() -> None:
        try:
            outcome["zone"] = joint_model.run_zone_side(
                zone_link,
                ticket_sha256=hashlib.sha256(TICKET.encode()).digest(),
                features=zone,
                params=params,
                run_dir=directory / "zone",
                **extra_zone,
            )
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=zone_side)
    thread.start()
    started = time.monotonic()
    report = joint_model.run_institution_side(
        bank_link,
        ticket=TICKET,
        labels=labels,
        train_mask=mask,
        own_features=own,
        zone_feature_count=zone.shape[1],
        params=params,
        run_dir=directory / "bank",
        **extra_bank,
    )
    wall = time.monotonic() - started
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return report, outcome["zone"], wall


def quantile_bins(zone: np.ndarray, count: int) -> tuple[np.ndarray, list[int]]:
    bins = np.zeros(zone.shape, dtype=np.int64)
    counts = []
    for i in range(zone.shape[1]):
        edges = np.unique(np.quantile(zone[:, i], np.linspace(0, 1, count + 1)[1:-1]))
        bins[:, i] = np.searchsorted(edges, zone[:, i], side="right")
        counts.append(len(edges) + 1)
    return bins, counts


def woe_tables(bins: np.ndarray, counts: list[int], labels: np.ndarray) -> list[np.ndarray]:
    """WOE_b = ln((pos_b/P) / (neg_b/N)), 0.5 for a zero count (the stats job's convention)."""
    tables = []
    positives_total, negatives_total = labels.sum(), len(labels) - labels.sum()
    for i, count in enumerate(counts):
        positives = np.bincount(bins[:, i], weights=labels, minlength=count)
        negatives = np.bincount(bins[:, i], weights=1 - labels, minlength=count)
        positives[positives == 0] = 0.5
        negatives[negatives == 0] = 0.5
        tables.append(np.log((positives / positives_total) / (negatives / negatives_total)))
    return tables


def show(
    title: str, report: InstitutionTrainReport, zone: ZoneTrainReport, wall: float, reference: float
) -> dict[str, Any]:
    epochs = [v for k, v in report.seconds.items() if k.startswith("epoch_")]
    print(f"\n{title}")
    print(f"  bank seconds: {report.seconds}")
    print(f"  zone seconds: {zone.seconds}")
    print(f"  epochs {len(epochs)}, median epoch {np.median(epochs):.2f} s, wall {wall:.1f} s")
    print(f"  bytes written: bank {report.bytes_sent / 1e6:.1f} MB, zone {zone.bytes_sent / 1e6:.1f} MB")
    print(
        f"  hold-out AUC {report.holdout_auc:.4f} (scikit-learn {reference:.4f}, "
        f"difference {report.holdout_auc - reference:+.4f}), KS {report.holdout_ks:.4f}"
    )
    return {
        "bank_seconds": report.seconds,
        "zone_seconds": zone.seconds,
        "median_epoch_s": float(np.median(epochs)),
        "wall_s": round(wall, 2),
        "bank_bytes": report.bytes_sent,
        "zone_bytes": zone.bytes_sent,
        "auc": round(report.holdout_auc, 5),
        "sklearn_auc": round(reference, 5),
        "ks": round(report.holdout_ks, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=TrainParams().epochs)
    parser.add_argument("--batch-size", type=int, default=TrainParams().batch_size)
    parser.add_argument("--learning-rate", type=float, default=TrainParams().learning_rate)
    parser.add_argument("--sigmoid", choices=joint_model.SIGMOIDS, default=TrainParams().sigmoid)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--scorecard", action="store_true", help="also train the WOE scorecard form")
    parser.add_argument("--quick", action="store_true", help="5,000 rows, to check the script")
    args = parser.parse_args()
    rows = 5_000 if args.quick else args.rows
    params = TrainParams(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, sigmoid=args.sigmoid
    )
    zone, own, labels = synthetic(rows, args.seed)
    mask = np.random.default_rng(args.seed + 1).random(rows) >= args.holdout
    print(f"{rows:,} rows x (10 bank + 30 zone features), {int((~mask).sum()):,} held out; {params}")
    joined = np.hstack([zone, own])
    started = time.monotonic()
    reference_model = LogisticRegression(max_iter=5000).fit(joined[mask], labels[mask])
    reference = joint_model.auc(labels[~mask], reference_model.decision_function(joined[~mask]))
    print(f"scikit-learn plaintext fit: {time.monotonic() - started:.1f} s")
    summary: dict[str, Any] = {"rows": rows, "params": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-joint-") as temporary:
        directory = Path(temporary)
        report, zone_report, wall = run_pair(directory / "lr", params, zone, own, labels, mask)
        summary["logistic"] = show("logistic regression", report, zone_report, wall, reference)
        if args.scorecard:
            bins, counts = quantile_bins(zone, 10)
            woe = woe_tables(bins[mask], counts, labels[mask])
            woe_joined = np.hstack([np.stack([woe[i][bins[:, i]] for i in range(30)], axis=1), own])
            card_model = LogisticRegression(max_iter=5000).fit(woe_joined[mask], labels[mask])
            card_reference = joint_model.auc(labels[~mask], card_model.decision_function(woe_joined[~mask]))
            report, zone_report, wall = run_pair(
                directory / "card", params, zone, own, labels, mask, scorecard=(bins, counts, woe)
            )
            summary["scorecard"] = show("WOE scorecard", report, zone_report, wall, card_reference)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
