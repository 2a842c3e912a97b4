"""The fuzzing stage: Schemathesis against a real gateway on loopback, driven by the gateway's own
OpenAPI document. Any 5xx, or any answer (status, body, content type) the document does not
describe, fails the stage.

Not part of the test suite: `make fuzz` (or `.venv/bin/python tests/fuzz_api.py`); `.ci/run` runs it.

A zone of its own (embedded PostgreSQL in a temporary home, or a scratch database on
DATAZONE_DATABASE_URL's server), migrated and loaded through the demo pipeline (departments,
datasets, published products, the demo bank with a contract, grants, consents and an OAuth client,
the operator with the curator, reviewer and auditor roles). The gateway runs as `datazone serve`
on 127.0.0.1. Three runs, in this order (the operator's may change state the bank's relies on):
no credentials, the bank's OAuth access token, the operator's key. Each run is bounded by
--max-examples per operation and a fixed seed (the same cases every time), and the whole stage
by a wall-clock budget.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datazone.config import Settings  # noqa: E402
from datazone.db import Database, _pgserver, migrate  # noqa: E402
from datazone.demo.setup import prepare_demo  # noqa: E402
from tests.conftest import Server, scratch_database  # noqa: E402

CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
ENTITIES = 2000  # the anonymous-query products need k = 1,000 candidates


@contextmanager
def zone_database(scratch: Path) -> Iterator[str]:
    """A database of the fuzzing run's own, dropped (or its server stopped) afterwards."""
    server_url = os.environ.get("DATAZONE_DATABASE_URL")
    server = None
    if not server_url:
        # through datazone.db: it imports pgserver without its XDG_RUNTIME_DIR warning
        server = _pgserver().get_server(scratch / "pg", cleanup_mode="stop")
        server_url = server.get_uri()
    try:
        with scratch_database(server_url, prefix="datazone_fuzz") as url:
            yield url
    finally:
        if server is not None:
            server.cleanup()


def bank_token(url: str, client_id: str, client_secret: str) -> str:
    answer = httpx.post(
        url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, client_secret)
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def schemathesis(
    url: str, name: str, headers: list[str], args: argparse.Namespace, timeout: float, workdir: Path
) -> bool:
    """One Schemathesis run; True when it found nothing."""
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{url}/openapi.json",
        "--checks", CHECKS,
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        "--workers", "1",
        "--request-timeout", "30",
        "--phases", args.phases,
        "--no-color",
    ]
    for header in headers:
        command += ["--header", header]
    print(f"\n== fuzz: {name} (max {args.max_examples} examples an operation, seed {args.seed})", flush=True)
    started = time.monotonic()
    try:
        # in the scratch directory: Schemathesis keeps a cache in its working directory
        done = subprocess.run(command, timeout=timeout, check=False, cwd=workdir)
    except subprocess.TimeoutExpired:
        print(f"== fuzz: {name} exceeded its {timeout:.0f} s budget", flush=True)
        return False
    print(f"== fuzz: {name}: exit {done.returncode} in {time.monotonic() - started:.0f} s", flush=True)
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=20, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=20261207, help="Hypothesis seed (fixed: the same cases each run)")
    parser.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds for the three runs together")
    parser.add_argument("--phases", default="examples,coverage,fuzzing", help="Schemathesis phases to run")
    parser.add_argument(
        "--only", choices=["anonymous", "bank", "operator"], action="append", help="run only these (repeatable)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="datazone-fuzz-") as tmp:
        scratch = Path(tmp)
        with zone_database(scratch) as url:
            db = Database(url)
            try:
                migrate(db.engine)
                settings = Settings(
                    home=scratch / "home",
                    database_url=url,
                    drop_dir=scratch / "drop",
                    signing_key_secret=secrets.token_urlsafe(32),
                )
                print(f"== fuzz: loading a demo zone of {ENTITIES} enterprises", flush=True)
                zone = prepare_demo(db, settings, entities=ENTITIES).info
            finally:
                db.dispose()
            server = Server(settings)
            try:
                server.wait_ready()
                # a token is fetched when its run starts: it lives five minutes
                runs: dict[str, Callable[[], list[str]]] = {
                    "anonymous": list,
                    "bank": lambda: [
                        "Authorization: Bearer " + bank_token(server.url, zone["client_id"], zone["client_secret"])
                    ],
                    "operator": lambda: [f"Authorization: Bearer {zone['operator_token']}"],
                }
                chosen = [name for name in runs if not args.only or name in args.only]
                deadline = time.monotonic() + args.budget
                failed = []
                for i, name in enumerate(chosen):
                    # each run gets an equal share of what is left of the budget
                    share = (deadline - time.monotonic()) / (len(chosen) - i)
                    if not schemathesis(server.url, name, runs[name](), args, share, scratch):
                        failed.append(name)
            finally:
                server.stop()
                if server.proc.returncode not in (0, -15, None):
                    print(server.log.read_text()[-3000:])
    if failed:
        print(f"\n== fuzz: FAILED ({', '.join(failed)})")
        return 1
    print("\n== fuzz: no server error, every answer as the document describes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
