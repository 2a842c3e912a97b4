"""Benchmark: secure scoring (安全评分) against a straightforward python-paillier (`phe`) implementation.

Not part of the test suite: `.venv/bin/python tests/bench_scoring.py` (`--quick` checks the
script in seconds at a small size).

The computation: 10,000 enterprises scored by a 30-feature logistic model at 2048-bit keys,
scale 10^6, the features random integers in ranges like the zone's (flags 0/1, counts 0..50,
years 0..40, amounts 0..10^6; some missing, some out of range and clamped). Both sides compute
the same integer score, intercept + sum(round(w·scale)·x), and re-randomize what they return.

- Ours (`privacy.scoring`): the zone's circuit (per-model base, fixed-base 8-bit window tables),
  packing `slots` scores into one ciphertext with rounding noise, one re-randomization factor
  per packed ciphertext. "Online" is the request path with the factors precomputed (the
  gateway's worker keeps a pool); the factor precomputation is timed apart, in one process and
  in two. The per-model setup (checking the registration, building the tables) is reported
  apart too: it happens once per model and process.
- phe: EncryptedNumber weights (the same fixed-point integers, so no exponent alignment),
  score = b + sum(w·x) per enterprise, then `.obfuscate()` (a fresh r^n) on each score, the
  way a straightforward implementation re-randomizes. phe is timed on a sample (--phe-sample
  enterprises) and scaled linearly to the full count, which is printed as such.

Every one of our scores is opened by the institution's side (`open_scores`) and checked: with
resolution 1 it equals the plaintext score exactly; at the product's resolution (0.01 logit)
it is a multiple of the resolution within one step of it. phe's sample is decrypted and
checked too. A 30-feature scorecard gets the same treatment in one line. Medians of --rounds.
The last line printed is a one-line JSON summary (also written to --json when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "client" / "src"))

from phe import EncryptedNumber  # noqa: E402
from phe import paillier as phe  # noqa: E402

from datazone.privacy import paillier, scoring  # noqa: E402
from datazone.privacy.scoring import FeatureBounds, ScoringCircuit, ScoringModel  # noqa: E402

T = TypeVar("T")
# the product's default resolutions (product/schemas.py: ScoringSpec)
LOGIT_RESOLUTION = 0.01
POINTS_RESOLUTION = 1.0
SCALE = 1_000_000


def say(text: str = "") -> None:
    print(text, flush=True)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_of(rounds: int, fn: Callable[[], T]) -> tuple[float, T]:
    times, result = [], None
    for _ in range(rounds):
        seconds, result = timed(fn)
        times.append(seconds)
    assert result is not None
    return statistics.median(times), result


def catalog(features: int) -> dict[str, FeatureBounds]:
    """Feature bounds in the zone's style: a quarter each of flags, counts, years and amounts."""
    kinds = [("flag", 0, 1, 0), ("count", 0, 50, 0), ("years", 0, 40, 0), ("amount", 0, 10**6, 0)]
    out = {}
    for i in range(features):
        kind, low, high, missing = kinds[i % 4]
        name = f"{kind}_{i:02d}"
        out[name] = FeatureBounds(name, low, high, missing)
    return out


def logistic_model(rng: random.Random, bounds: dict[str, FeatureBounds]) -> ScoringModel:
    magnitude = {"flag": (0.1, 1.5), "count": (0.005, 0.1), "years": (0.005, 0.1), "amount": (1e-6, 5e-6)}
    features = []
    for name in bounds:
        low, high = magnitude[name.split("_")[0]]
        weight = rng.choice([-1, 1]) * rng.uniform(low, high)
        features.append({"name": name, "weight": float(f"{weight:.7g}")})
    return scoring.parse_model(
        {
            "format": scoring.MODEL_FORMAT,
            "name": "bench-logistic",
            "product": "secure-credit-score",
            "purpose": "pre_loan",
            "kind": "logistic",
            "scale": SCALE,
            "intercept": -2.1,
            "features": features,
        }
    )


def scorecard_model(rng: random.Random, bounds: dict[str, FeatureBounds]) -> ScoringModel:
    features: list[dict[str, Any]] = []
    for name, b in bounds.items():
        if b.max == 1:
            edges: list[float] = [1]
        else:
            edges = sorted(rng.sample(range(b.min + 1, b.max), rng.randint(2, 4)))
        feature: dict[str, Any] = {
            "name": name,
            "bins": edges,
            "points": [rng.randint(-40, 40) for _ in range(len(edges) + 1)],
        }
        if rng.random() < 0.5:
            feature["missing_points"] = rng.randint(-20, 0)
        features.append(feature)
    return scoring.parse_model(
        {
            "format": scoring.MODEL_FORMAT,
            "name": "bench-scorecard",
            "product": "secure-credit-score",
            "purpose": "pre_loan",
            "kind": "scorecard",
            "scale": 1,
            "intercept": 600,
            "features": features,
        }
    )


def enterprises(rng: random.Random, bounds: dict[str, FeatureBounds], count: int) -> list[list[int | None]]:
    rows = []
    for _ in range(count):
        row: list[int | None] = []
        for b in bounds.values():
            draw = rng.random()
            if draw < 0.03:
                row.append(None)
            elif draw < 0.05:
                row.append(b.max + rng.randint(1, 10 * (b.max - b.min)))  # clamped
            else:
                row.append(rng.randint(b.min, b.max))
        rows.append(row)
    return rows


def plain_scores(
    model: ScoringModel, bounds: dict[str, FeatureBounds], rows: Sequence[Sequence[int | None]]
) -> list[int]:
    names = list(bounds)
    return [scoring.plain_score(model, dict(zip(names, row, strict=True)), bounds) for row in rows]


def phe_logistic(
    model: ScoringModel, bounds: dict[str, FeatureBounds], public: phe.PaillierPublicKey
) -> Callable[[Sequence[int | None]], EncryptedNumber]:
    """The straightforward way: encrypted fixed-point weights, sum(w·x) + b, obfuscate."""
    intercept = public.encrypt(scoring.fixed_point(model.intercept, model.scale))
    weights = [public.encrypt(scoring.fixed_point(f.weight or 0.0, model.scale)) for f in model.features]
    limits = list(bounds.values())

    def score(row: Sequence[int | None]) -> EncryptedNumber:
        total = intercept
        for weight, value, b in zip(weights, row, limits, strict=True):
            x = b.missing if value is None else min(max(value, b.min), b.max)
            total = total + weight * x
        total.obfuscate()
        return total

    return score


def phe_scorecard(
    model: ScoringModel, bounds: dict[str, FeatureBounds], public: phe.PaillierPublicKey
) -> Callable[[Sequence[int | None]], EncryptedNumber]:
    """Encrypted points per bin: select one per feature, add them up, obfuscate."""
    intercept = public.encrypt(scoring.fixed_point(model.intercept, model.scale))
    tables = []
    for f in model.features:
        points = [public.encrypt(scoring.fixed_point(p, model.scale)) for p in f.points]
        missing = (
            None
            if f.missing_points is None
            else public.encrypt(scoring.fixed_point(f.missing_points, model.scale))
        )
        tables.append((f, points, missing))
    limits = list(bounds.values())

    def score(row: Sequence[int | None]) -> EncryptedNumber:
        total = intercept
        for (feature, points, missing), value, b in zip(tables, row, limits, strict=True):
            if value is None and missing is not None:
                total = total + missing
                continue
            x = b.missing if value is None else min(max(value, b.min), b.max)
            total = total + points[scoring.bin_index(feature.bins, x)]
        total.obfuscate()
        return total

    return score


def run_kind(
    label: str,
    model: ScoringModel,
    bounds: dict[str, FeatureBounds],
    rows: list[list[int | None]],
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
    phe_keys: tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey],
    args: argparse.Namespace,
    *,
    full: bool,
) -> dict[str, Any]:
    public, private = keys
    count = len(rows)
    plain = plain_scores(model, bounds, rows)
    resolution = scoring.resolution_units(
        model.kind, model.scale, logit_resolution=LOGIT_RESOLUTION, points_resolution=POINTS_RESOLUTION
    )

    # the institution registers; the zone checks the registration and builds the tables (once per model)
    registration = scoring.encrypt_model(model, public, bounds=bounds)
    paillier._verified_proofs.clear()  # time the key proof's verification too

    def setup() -> ScoringCircuit:
        circuit = scoring.compile_model(registration, bounds, min_features=3, resolution=resolution)
        circuit.encrypted_scores(rows[:64])  # 64 rows: builds the fixed-base tables
        return circuit

    setup_seconds, circuit = timed(setup)
    packed = circuit.packed_count(count)

    # factors, as the worker precomputes them: one process, then two
    factor_seconds, factors = median_of(
        args.rounds if full else 1, lambda: paillier.rerandomization_factors(public, packed)
    )
    if full:
        factor2_seconds, factors2 = median_of(
            args.rounds, lambda: paillier.rerandomization_factors(public, packed, processes=2)
        )
    else:
        factor2_seconds, factors2 = 0.0, paillier.rerandomization_factors(public, packed)

    # online: the circuit and the seal, factors at hand
    def online() -> tuple[float, list[int]]:
        circuit_seconds, cts = timed(lambda: circuit.encrypted_scores(rows))
        return circuit_seconds, circuit.seal(cts, factors=factors, resolution=resolution)

    online_seconds, (circuit_seconds, sealed) = median_of(args.rounds, online)
    opened = scoring.open_scores(
        private, sealed, count=count, slot_bits=circuit.slot_bits, slots=circuit.slots, resolution=resolution
    )
    assert all(o % resolution == 0 and abs(o - p) < resolution for o, p in zip(opened, plain, strict=True)), (
        "a rounded score is off"
    )
    exact = scoring.open_scores(
        private,
        circuit.seal(circuit.encrypted_scores(rows), factors=factors2, resolution=1),
        count=count,
        slot_bits=circuit.slot_bits,
        slots=circuit.slots,
        resolution=1,
    )
    assert exact == plain, "an exact score differs from the plaintext score"

    # phe on a sample, scaled to the full count
    phe_public, phe_private = phe_keys
    sample = rows[: min(args.phe_sample, count)]
    make = phe_logistic if model.kind == "logistic" else phe_scorecard
    score_one = make(model, bounds, phe_public)
    phe_sample_seconds, phe_scores = timed(lambda: [score_one(row) for row in sample])
    assert [phe_private.decrypt(s) for s in phe_scores] == plain[: len(sample)], (
        "phe disagrees with plaintext"
    )
    phe_seconds = phe_sample_seconds * count / len(sample)

    bytes_per_score = packed * public.ciphertext_bytes / count
    text_per_score = packed * len(paillier.encode_ciphertext(public, sealed[0])) / count
    result = {
        "kind": model.kind,
        "enterprises": count,
        "features": len(model.features),
        "key_bits": public.bits,
        "score_bits": circuit.score_bits,
        "slot_bits": circuit.slot_bits,
        "slots": circuit.slots,
        "resolution_units": resolution,
        "packed_ciphertexts": packed,
        "setup_s": round(setup_seconds, 3),
        "ours_online_s": round(online_seconds, 3),
        "ours_circuit_s": round(circuit_seconds, 3),
        "ours_seal_s": round(online_seconds - circuit_seconds, 3),
        "factors_1proc_s": round(factor_seconds, 3),
        "ours_with_factors_1proc_s": round(online_seconds + factor_seconds, 3),
        "factor_rate_1proc_per_s": round(packed / factor_seconds, 1),
        "phe_sample": len(sample),
        "phe_sample_s": round(phe_sample_seconds, 3),
        "phe_scaled_s": round(phe_seconds, 3),
        "ratio_online": round(phe_seconds / online_seconds, 1),
        "ratio_with_factors_1proc": round(phe_seconds / (online_seconds + factor_seconds), 1),
        "bytes_per_score": round(bytes_per_score, 1),
        "base64_chars_per_score": round(text_per_score, 1),
        "phe_bytes_per_score": public.ciphertext_bytes,
        "checked": count,
    }
    if full:
        result |= {
            "factors_2proc_s": round(factor2_seconds, 3),
            "ours_with_factors_2proc_s": round(online_seconds + factor2_seconds, 3),
            "factor_rate_2proc_per_s": round(packed / factor2_seconds, 1),
            "ratio_with_factors_2proc": round(phe_seconds / (online_seconds + factor2_seconds), 1),
        }
    us = 1e6 / count
    say(f"== {label}: {count:,} enterprises, {len(model.features)} features, {public.bits}-bit key")
    say(
        f"   layout: score_bits {circuit.score_bits}, slot_bits {circuit.slot_bits}, {circuit.slots} scores per "
        f"ciphertext, resolution {resolution} units; {packed} packed ciphertexts"
    )
    say(f"   per-model setup (check registration, key proof, tables), once: {setup_seconds:.3f} s")
    say(
        f"   ours online (factors precomputed): {online_seconds:.3f} s  ({online_seconds * us:.0f} us/score: "
        f"circuit {circuit_seconds * us:.0f}, pack+noise+re-randomize {(online_seconds - circuit_seconds) * us:.0f})"
    )
    if full:
        say(
            f"   factors: {packed} in {factor_seconds:.3f} s in 1 process ({packed / factor_seconds:.0f}/s), "
            f"{factor2_seconds:.3f} s in 2 ({packed / factor2_seconds:.0f}/s, process start-up included)"
        )
        say(
            f"   ours incl. factors: {online_seconds + factor_seconds:.3f} s (1 process), "
            f"{online_seconds + factor2_seconds:.3f} s (2 processes)"
        )
    say(
        f"   phe: {len(sample)} enterprises in {phe_sample_seconds:.3f} s ({phe_sample_seconds / len(sample) * 1e3:.2f} "
        f"ms each), scaled to {count:,}: {phe_seconds:.1f} s"
    )
    ratios = f"   ratio phe/ours: online {result['ratio_online']}x, with factors {result['ratio_with_factors_1proc']}x"
    if full:
        ratios += f" (1 process), {result['ratio_with_factors_2proc']}x (2 processes)"
    say(ratios + "   [target >= 5x]")
    say(
        f"   bytes returned per score: {bytes_per_score:.1f} ({text_per_score:.1f} base64url chars) "
        f"against {public.ciphertext_bytes} for one ciphertext a score"
    )
    say(
        f"   checked: all {count:,} opened scores equal the plaintext (resolution 1) and lie within one step "
        f"of it at resolution {resolution}; phe's {len(sample)} decrypt to the plaintext"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enterprises", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--phe-sample", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--quick", action="store_true", help="1,000 enterprises, phe sample 50, one round")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.quick:
        args.enterprises, args.phe_sample, args.rounds = 1_000, 50, 1

    rng = random.Random(args.seed)
    bounds = catalog(args.features)
    rows = enterprises(rng, bounds, args.enterprises)
    keys = paillier.generate_keypair(args.bits)
    phe_public = phe.PaillierPublicKey(keys[0].n)
    phe_keys = (phe_public, phe.PaillierPrivateKey(phe_public, keys[1].p, keys[1].q))
    say(
        f"secure scoring benchmark: Python {platform.python_version()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    say(f"medians of {args.rounds} where timed more than once; phe measured on a sample and scaled linearly")
    logistic = run_kind(
        "logistic", logistic_model(rng, bounds), bounds, rows, keys, phe_keys, args, full=True
    )
    card = run_kind("scorecard", scorecard_model(rng, bounds), bounds, rows, keys, phe_keys, args, full=False)
    say(
        f"== scorecard line: ours online {card['ours_online_s']:.3f} s (+ factors {card['factors_1proc_s']:.3f} s), "
        f"phe {card['phe_scaled_s']:.1f} s: {card['ratio_online']}x online, {card['ratio_with_factors_1proc']}x with factors"
    )
    summary = {
        "benchmark": "secure-scoring",
        "cores": os.cpu_count(),
        "logistic": logistic,
        "scorecard": card,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    say(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
