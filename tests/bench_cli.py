"""Benchmark: CPU time of the two commands' start-up, against a bare Python start in the same run.

Not part of the test suite (a timed test fails on a busy machine): `make bench-cli`. Each
command runs 5 times; the median of user + system CPU seconds is printed with the target of
0.5 s. What keeps them quick, the modules a help may not import, is what the tests check.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys

RUNS = 5
TARGET = 0.5
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (baseline)", ["-c", "pass"]),
    ("datazone --help", ["-m", "datazone", "--help"]),
    ("datazone grant --help", ["-m", "datazone", "grant", "--help"]),
    ("datazone dataset --help", ["-m", "datazone", "dataset", "--help"]),
    ("datazone serve --help", ["-m", "datazone", "serve", "--help"]),
    ("datazone-client --help", ["-m", "datazone.client.cli", "--help"]),
    ("datazone-client lookup --help", ["-m", "datazone.client.cli", "lookup", "--help"]),
    ("datazone-client psi --help", ["-m", "datazone.client.cli", "psi", "--help"]),
    ("datazone-client model --help", ["-m", "datazone.client.cli", "model", "--help"]),
]


def cpu_seconds(args: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], capture_output=True, check=True, env=dict(os.environ))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    print(f"| command | CPU s (median of {RUNS}) | target |")
    print("| --- | ---: | ---: |")
    over = []
    for name, args in COMMANDS:
        median = statistics.median(cpu_seconds(args) for _ in range(RUNS))
        baseline = name.endswith("(baseline)")
        print(f"| {name} | {median:.3f} | {'' if baseline else f'< {TARGET}'} |")
        if not baseline and median >= TARGET:
            over.append(name)
    print("\nall under the target" if not over else f"\nover the target: {', '.join(over)}")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
