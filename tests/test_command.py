"""The `datazone` command's start-up: `--help`, the root's and every sub-command's, imports no
service, database driver or numpy and takes well under half a second of CPU, and no command warns
about XDG_RUNTIME_DIR."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from datazone.command import COMMANDS, GROUPS, _load

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
    # what makes it quick is what it does not import (above); its time is measured by
    # tests/bench_cli.py, not asserted here (a timed test fails on a busy machine)
    assert (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) > 0


def test_a_group_and_a_command_still_run_when_named() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "datazone", "grant", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "list" in done.stdout  # a group of one command stays a group
    done = subprocess.run(
        [sys.executable, "-m", "datazone", "nope"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "No such command" in done.stderr


def test_embedded_postgres_import_does_not_warn_without_xdg_runtime_dir() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", "from datazone.db import _pgserver; _pgserver()"],
        capture_output=True, text=True, timeout=60, env=_env_without_runtime_dir(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# what no sub-command's --help may load: the database and its driver, the services, the privacy
# protocols' engines (SecretFlow's SPU, OpenMined's PSI), numpy, httpx and the settings
SUBCOMMAND_HEAVY = (
    "sqlalchemy", "psycopg", "pgserver", "alembic", "fastapi", "uvicorn", "numpy", "pyarrow", "httpx",
    "spu", "private_set_intersection", "openmined", "datazone.db", "datazone.config", "datazone.app",
    "datazone.privacy", "datazone.observability.metrics", "prometheus_client",
)  # fmt: skip


def _every_help() -> list[tuple[str, ...]]:
    """Every group's and command's `--help`, and each command's of every group."""
    calls: list[tuple[str, ...]] = [(name,) for name in [*GROUPS, *COMMANDS]]
    for name in GROUPS:
        group = _load(name)
        assert isinstance(group, TyperGroup), name
        calls += [(name, sub) for sub in group.list_commands(typer.Context(group))]
    return calls


def _run_recording_modules(
    tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], set[str], float]:
    """Run `datazone ARGS` in a fresh interpreter: its result, every module loaded by its exit,
    and the CPU seconds (user and system) it took."""
    listing = tmp_path / "modules.json"
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from datazone.command import main\n"
        f"sys.argv = ['datazone', *{list(args)!r}]\n"
        "main()\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env_without_runtime_dir(),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, set(json.loads(listing.read_text())), cpu


@pytest.mark.parametrize("args", _every_help(), ids=" ".join)
def test_every_subcommands_help_is_light_quick_and_quiet(tmp_path: Path, args: tuple[str, ...]) -> None:
    done, modules, cpu = _run_recording_modules(tmp_path, *args, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert args[-1] in done.stdout and "--help" in done.stdout  # its own help, not the root's
    heavy = sorted(
        m
        for m in modules
        if m.split(".")[0] in SUBCOMMAND_HEAVY or m.startswith(SUBCOMMAND_HEAVY) or m.endswith(".service")
    )
    assert heavy == []
    assert cpu > 0  # its time: tests/bench_cli.py (a timed test fails on a busy machine)
