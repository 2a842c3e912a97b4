"""The `datazone` command's start-up: `--help` imports no service, database driver or numpy, and
no command warns about XDG_RUNTIME_DIR."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "numpy", "pyarrow", "fastapi", "psycopg", "datazone.db", "datazone.cli", "pgserver")


def _env_without_runtime_dir() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}


@pytest.mark.parametrize("args", [["--help"], []])
def test_help_imports_nothing_heavy_and_starts_fast(args: list[str]) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "datazone", *args],
        capture_output=True, text=True, timeout=60, env=_env_without_runtime_dir(),
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert "serve" in done.stdout and "dataset" in done.stdout and "psi" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert [m for m in imported if m.split(".")[0] in HEAVY or m in HEAVY] == []
    assert "Warning" not in "".join(line for line in done.stderr.splitlines() if "|" not in line)
    # CPU seconds rather than wall time: the machine may be busy, the work is what is measured
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.5, cpu


def test_a_group_and_a_command_still_run_when_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "datazone", "grant", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "list" in done.stdout  # a group of one command stays a group
    done = subprocess.run([sys.executable, "-m", "datazone", "nope"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "No such command" in done.stderr


def test_embedded_postgres_import_does_not_warn_without_xdg_runtime_dir() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", "from datazone.db import _pgserver; _pgserver()"],
        capture_output=True, text=True, timeout=60, env=_env_without_runtime_dir(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
