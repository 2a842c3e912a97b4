"""Joint statistics' HEU part at the issue's size: 100,000 rows, 30 zone features x 10 bins, 5 grouped.

    PYTHONPATH=$PWD/src:$PWD/client/src .venv/bin/python tests/bench_joint_stats.py [--rows N] [--repeat R]

Prints the median seconds of each phase (the bank's key and encryption, the zone's load and bin sums,
the bank's decryption) and the serialized sizes; the baseline measured in the same run is one HEU sum
over the column (n additions), to which the bin sums (30 n additions) are compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from datazone.privacy import joint_stats as js


def timed(repeat: int, work: Callable[[], Any]) -> tuple[float, Any]:
    seconds: list[float] = []
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--grouped", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(15)
    n, f = args.rows, args.features
    values = rng.integers(0, 100_000, (n, f))
    labels = rng.integers(0, 2, n)
    names = [f"f{i}" for i in range(f)]

    keygen_s, key = timed(1, js.LabelKey.generate)
    encrypt_s, blob = timed(args.repeat, lambda: key.encrypt_column(labels))
    public = js.load_public_key(key.public_key_bytes())
    load_s, column = timed(args.repeat, lambda: js.load_column(public, blob, n))
    baseline_s, _ = timed(args.repeat, lambda: public.kit.evaluator().sum(column.array))
    edges = [js.quantile_edges(values[:, i], 10) for i in range(f)]
    index = np.stack([js.bin_index(values[:, i], edges[i]) for i in range(f)], axis=1)
    bins = [len(e) + 1 for e in edges]
    sums_s, sums = timed(args.repeat, lambda: js.bin_sums(public, column, index, bins))
    grouped_s, grouped = timed(
        args.repeat, lambda: js.weighted_sums_by_feature(public, [column], values[:, : args.grouped])
    )
    decrypt_s, _ = timed(args.repeat, lambda: [key.decrypt(s, b) for s, b in zip(sums, bins, strict=True)])
    result_s, _ = timed(
        1,
        lambda: js.compute_result(
            public, column, [], names, values, bins=10, min_count=50, grouped=names[: args.grouped]
        ),
    )
    print(f"rows {n}, features {f} x 10 bins, grouped {args.grouped}, medians of {args.repeat}")
    print(f"  key generation (once)        {keygen_s:7.2f} s   public key {len(key.public_key_bytes())} B")
    print(f"  bank encrypts the labels     {encrypt_s:7.2f} s   column {len(blob) / 2**20:.1f} MiB")
    print(f"  zone checks and loads it     {load_s:7.2f} s")
    print(f"  baseline: one sum of n       {baseline_s:7.2f} s")
    print(
        f"  zone's bin sums {f}x10        {sums_s:7.2f} s   = {sums_s / baseline_s:.1f} x baseline"
        f"; {sum(len(s) for s in sums)} B in all"
    )
    print(f"  zone's grouped sums ({args.grouped})     {grouped_s:7.2f} s   {sum(len(g) for g in grouped)} B")
    print(f"  bank decrypts {sum(bins)} bin sums   {decrypt_s:7.3f} s")
    print(f"  compute_result (edges, merging, sums, grouped; once) {result_s:7.2f} s")


if __name__ == "__main__":
    main()
