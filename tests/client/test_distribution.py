"""The client distribution alone: what a bank gets from `pip install ./client`.

A fresh virtual environment, the client/ folder installed into it (not editable, without the
engine extra) from a copy, so the build leaves nothing in the repository: its size, none of the
server's distributions, `import datazone.client`, `datazone-client --help`, then the client's own
tests run there, against the installed copy. It needs a package index (PyPI or the pip cache),
so it is marked `client_install` and left out of the default run; .ci/run runs it as its own step:

    pytest -m client_install -s tests/client/test_distribution.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "client"
# numpy is about 73 MB of it, cryptography 16, pip and setuptools (in every venv) 24; the server's
# distribution with spu, jax and PostgreSQL's binaries came to 1.5 GB
MAX_SITE_PACKAGES_MB = 200
SERVER_SIDE = {
    "datazone",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg-binary",
    "pgserver",
    "apscheduler",
    "pandas",
    "pyarrow",
    "spu",
    "jax",
    "jaxlib",
}
# the client's tests that need no server (no database, no gateway process); the engine's own
# tests (tests/privacy/test_engine.py) need the extra, and test_psi_sdk skips its engine jobs
CLIENT_TESTS = [
    "tests/client/test_config.py",
    "tests/client/test_errors.py",
    "tests/client/test_retry.py",
    "tests/client/test_enterprises.py",
    "tests/client/test_sdk.py",
    "tests/client/test_cli.py",
    "tests/client/test_psi_sdk.py",
    "tests/client/test_psi_cli.py",
    "tests/privacy/test_oprf.py",
    "tests/privacy/test_labels.py",
    "tests/privacy/test_openmined.py",
    "tests/privacy/test_anonymous_query.py",
    "tests/privacy/test_paillier.py",
    "tests/privacy/test_scoring_circuit.py",
    "tests/test_uscc.py",
]
# what those tests import besides the client (the same lower bounds as the server's test extra)
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "openpyxl>=3.1", "phe>=1.5", "python-stdnum>=1.20"]


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def _size_mb(folder: Path) -> float:
    total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 1e6


@pytest.mark.client_install
@pytest.mark.timeout(1800)
def test_client_installs_and_passes_its_tests_alone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env, tmp_path, 120)
    python, pip = str(venv / "bin" / "python"), str(venv / "bin" / "pip")
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env, tmp_path, 60
        ).stdout.strip()
    )
    before = _size_mb(site)

    _run([pip, "install", "--quiet", "--timeout", "60", str(source)], env, tmp_path, 900)

    after = _size_mb(site)
    biggest = sorted(((_size_mb(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:5]
    print(
        f"\nclient installed alone: site-packages {after:.0f} MB ({after - before:.0f} MB more than a fresh "
        f"venv's pip and setuptools); largest: " + ", ".join(f"{name} {mb:.0f} MB" for mb, name in biggest)
    )
    assert after <= MAX_SITE_PACKAGES_MB, (
        f"site-packages holds {after:.0f} MB, above {MAX_SITE_PACKAGES_MB} MB"
    )
    listed = json.loads(_run([pip, "list", "--format=json"], env, tmp_path, 120).stdout)
    installed = {str(d["name"]).lower().replace("_", "-") for d in listed}
    assert "datazone-client" in installed
    assert installed.isdisjoint(SERVER_SIDE), (
        f"the server's distributions came along: {installed & SERVER_SIDE}"
    )

    probe = (
        "import importlib.util, json, datazone.client, datazone.client.cli, datazone.privacy.oprf\n"
        "print(json.dumps({'client': datazone.client.__file__, 'server': [m for m in "
        "('datazone.app', 'datazone.db', 'datazone.config', 'datazone.privacy.engine') "
        "if importlib.util.find_spec(m) is not None], 'spu': importlib.util.find_spec('spu') is not None}))\n"
    )
    found = json.loads(_run([python, "-c", probe], env, tmp_path, 120).stdout)
    assert Path(found["client"]).is_relative_to(site), found  # the installed copy, not the repository's
    assert found["server"] == ["datazone.privacy.engine"] and found["spu"] is False, found
    helped = _run([str(venv / "bin" / "datazone-client"), "--help"], env, tmp_path, 120)
    assert "lookup" in helped.stdout and "psi" in helped.stdout and not helped.stderr

    _run([pip, "install", "--quiet", "--timeout", "60", *TEST_TOOLS], env, tmp_path, 900)
    tested = _run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--noconftest",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(REPO),
            "--basetemp",
            str(tmp_path / "pt"),
            *CLIENT_TESTS,
        ],
        env,
        REPO,
        1500,
    )
    summary = tested.stdout.strip().splitlines()[-1]
    print(f"the client's tests in that environment: {summary}")
    assert " passed" in summary and "failed" not in summary and "error" not in summary
