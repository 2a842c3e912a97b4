"""Benchmark: the full product path against a bare endpoint, then a crash under load.

Not part of the test suite: `make bench-gateway` (or `.venv/bin/python tests/bench_gateway.py`).

1. Throughput. On loopback, with the same uvicorn settings (one process, no access log),
   `wrk` drives authenticated, authorized, metered and audited `credit-basic` lookups
   (`GET /v1/products/credit-basic/enterprises/{uscc}` with an OAuth2 access token) and a
   bare FastAPI endpoint doing the same single-row lookup in the zone table and nothing
   else. Rounds alternate; medians of requests/s, p50 and p99 are printed with the ratio.
2. Crash. Client threads call the gateway, each call with its own Idempotency-Key and
   retried with that key until it gets a 200; the gateway is killed with SIGKILL mid-load
   and restarted. The usage events must equal the distinct keys that got a 200, and the
   ledger must hold exactly one charge for each: nothing lost, nothing billed twice.

Both use a zone of their own (embedded PostgreSQL in a temporary home), loaded through
the demo pipeline. `wrk` comes from Debian's packages; it is installed when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the bench institution's private plan: no rate limit to speak of, one fen a call, so the
# crash test can count charges in the ledger
BENCH_PLAN = "bench-one-fen"


def bare_app() -> Any:
    """The baseline: the same single-row lookup, with nothing around it (uvicorn --factory)."""
    from fastapi import FastAPI, HTTPException

    from datazone.db import make_engine

    engine = make_engine(os.environ["DATAZONE_DATABASE_URL"])
    app = FastAPI()
    query = sa.text(
        "SELECT uscc, name, legal_rep, reg_capital, founded, status, enterprise_type, industry_code,"
        " district, address FROM zone.mr_registration WHERE uscc = :u AND _vto IS NULL"
    )

    @app.get("/bare/{uscc}")
    def lookup(uscc: str) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(query, {"u": uscc}).mappings().first()
        if row is None:
            raise HTTPException(404)
        return {k: (str(v) if v is not None else None) for k, v in row.items()}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk from Debian's packages", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is not available; install it (apt-get install wrk)")
    return found


class Uvicorn:
    """One uvicorn process, the same settings for the gateway and the baseline."""

    def __init__(self, factory: str, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.factory, self.env, self.log_path = factory, env, log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", self.factory, "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.factory} exited: {self.log_path.read_text()[-2000:]}")
            try:
                httpx.get(self.url + "/docs", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        sys.exit(f"{self.factory} did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def prepare(home: Path, entities: int) -> dict[str, Any]:
    """A demo zone, and a bench institution: private plan, contract, grants, OAuth client."""
    from datazone.config import Settings
    from datazone.contract import service as contract_service
    from datazone.dataset import service as dataset_service
    from datazone.db import Database
    from datazone.demo.setup import prepare_demo
    from datazone.grant import service as grant_service
    from datazone.metering import service as metering
    from datazone.oauth import service as oauth_service
    from datazone.principal import service as principal_service

    settings = Settings(home=home, drop_dir=home / "drop")
    db = Database.from_settings(settings)
    t0 = time.perf_counter()
    zone = prepare_demo(db, settings, entities=entities)
    print(f"zone of {entities:,} enterprises ready in {time.perf_counter() - t0:.1f} s", flush=True)
    now = datetime.now(UTC)
    window = {"valid_from": now - timedelta(days=1), "valid_to": now + timedelta(days=30)}
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        bench = principal_service.create_principal(s, kind="institution", name="bench-bank")
        metering.create_plan(
            s, plan_id=BENCH_PLAN, name="bench: one fen a call", institution_id=bench.id,
            unit_price_fen=1, rate_per_second=1_000_000.0, burst=1_000_000, by=operator,
        )
        contract_service.create_contract(
            s, institution_id=bench.id, purposes=["pre_loan"], products=["credit-basic"], clearance=2,
            plan_id=BENCH_PLAN, by=operator, **window,
        )
        for dept_id in ("market-regulation", "tax"):
            dept = principal_service.find_principal(s, name=f"demo-{dept_id}")
            assert dept is not None
            datasets = [d.id for d in dataset_service.list_datasets(s, department=dept_id)]
            grant_service.create_grant(
                s, department=dept_id, datasets=datasets, purposes=["pre_loan"], products=["credit-basic"],
                institutions=[bench.id], by=dept, **window,
            )
        client, secret = oauth_service.create_client(s, institution_id=bench.id, name="bench", by_name="bench")
        codes = dataset_service.current_entities(s, dataset_id="mr_registration", limit=5000)
        bench_id = bench.id
    return {
        "db": db,
        "database_url": db.url,
        "institution_id": bench_id,
        "client_id": client.client_id,
        "client_secret": secret,
        "codes": codes,
        "zone": zone.info,
    }


def token_for(url: str, client_id: str, secret: str) -> str:
    r = httpx.post(
        url + "/oauth/token", data={"grant_type": "client_credentials", "scope": "product:credit-basic"},
        auth=(client_id, secret), timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


LUA = """
local codes = {%(codes)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "%(prefix)s" .. codes[(i %% #codes) + 1] .. "%(suffix)s", {%(headers)s})
end
"""


def wrk_run(wrk: str, url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": to_ms(lat["50"]),
        "p99_ms": to_ms(lat["99"]),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def throughput(args: argparse.Namespace, work: Path, ctx: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    wrk = ensure_wrk()
    gateway = Uvicorn("datazone.app:create_app", env, work / "gateway.log")
    bare = Uvicorn("tests.bench_gateway:bare_app", env, work / "bare.log")
    gateway.start()
    bare.start()
    try:
        token = token_for(gateway.url, ctx["client_id"], ctx["client_secret"])
        codes = ",".join(f'"{c}"' for c in ctx["codes"])
        scripts = {
            "gateway": (gateway.url, LUA % {
                "codes": codes, "prefix": "/v1/products/credit-basic/enterprises/", "suffix": "?purpose=pre_loan",
                "headers": f'["Authorization"] = "Bearer {token}"',
            }),
            "bare": (bare.url, LUA % {"codes": codes, "prefix": "/bare/", "suffix": "", "headers": ""}),
        }
        files = {}
        for name, (_, lua) in scripts.items():
            files[name] = work / f"{name}.lua"
            files[name].write_text(lua)
        # warm both (connections, plans, the JIT-less caches of the ORM)
        for name, (url, _) in scripts.items():
            wrk_run(wrk, url, files[name], 3, args.connections)
        results: dict[str, list[dict[str, float]]] = {"bare": [], "gateway": []}
        for rnd in range(args.rounds):
            for name in ("bare", "gateway"):
                r = wrk_run(wrk, scripts[name][0], files[name], args.seconds, args.connections)
                results[name].append(r)
                print(f"round {rnd + 1} {name:8} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms"
                      f"  p99 {r['p99_ms']:6.2f} ms  non-2xx {r['non2xx']:.0f}", flush=True)
    finally:
        gateway.stop()
        bare.stop()
    summary = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "non2xx")}
        for name, rs in results.items()
    }
    summary["ratio"] = summary["gateway"]["rps"] / summary["bare"]["rps"]
    return summary


OVERLOAD_LUA = """
-- every request its own Idempotency-Key; statuses counted per thread and summed in done()
local codes = {%(codes)s}
local threads = {}
local n = 0
setup = function(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end
init = function(args)
  i = 0
  counts = {}
end
request = function()
  i = i + 1
  local key = "%(run)s-" .. tid .. "-" .. i
  return wrk.format("GET", "/v1/products/credit-basic/enterprises/" .. codes[(i %% #codes) + 1] .. "?purpose=pre_loan",
                    {["Authorization"] = "Bearer %(token)s", ["Idempotency-Key"] = key})
end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %%d %%d\\n", status, count))
  end
end
"""


def overload(args: argparse.Namespace, work: Path, ctx: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """`--overload-connections` connections for `--overload-seconds` against one gateway process, every
    request with its own Idempotency-Key, while /healthz is probed every 50 ms: the 5xx other than
    503 (must be none), the probe's p99, and usage events against the keys answered 200."""
    wrk = ensure_wrk()
    gateway = Uvicorn("datazone.app:create_app", env, work / "overload.log")
    gateway.start()
    run = uuid.uuid4().hex[:8]
    probes: list[float] = []
    probe_errors = [0]
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = c.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                probes.append((time.perf_counter() - t0) * 1000)
                probe_errors[0] += 0 if ok else 1
                time.sleep(0.05)

    try:
        token = token_for(gateway.url, ctx["client_id"], ctx["client_secret"])
        script = work / "overload.lua"
        script.write_text(OVERLOAD_LUA % {
            "codes": ",".join(f'"{c}"' for c in ctx["codes"]), "run": run, "token": token,
        })
        prober = threading.Thread(target=probe)
        prober.start()
        out = subprocess.run(
            [wrk, "-t2", f"-c{args.overload_connections}", f"-d{args.overload_seconds}s", "--timeout", "30s",
             "-s", str(script), gateway.url],
            capture_output=True, text=True, check=True,
        ).stdout
        stop.set()
        prober.join()
    finally:
        gateway.stop()
    statuses = {int(a): int(b) for a, b in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    errors = re.search(r"Socket errors: (.*)", out)
    with ctx["db"].engine.connect() as conn:
        billed = conn.execute(
            sa.text("SELECT count(*), count(DISTINCT idempotency_key) FROM usage_event"
                    " WHERE institution_id = :i AND idempotency_key LIKE :run"),
            {"i": ctx["institution_id"], "run": f"{run}-%"},
        ).one()
    probes.sort()
    return {
        "connections": args.overload_connections,
        "seconds": args.overload_seconds,
        "statuses": statuses,
        "server_errors_other_than_503": sum(n for s, n in statuses.items() if s >= 500 and s != 503),
        "socket_errors": errors.group(1) if errors else "",
        "healthz_probes": len(probes),
        "healthz_failed": probe_errors[0],
        "healthz_p50_ms": round(probes[len(probes) // 2], 1) if probes else None,
        "healthz_p99_ms": round(probes[int(len(probes) * 0.99)], 1) if probes else None,
        "answered_200": statuses.get(200, 0),
        "usage_events": int(billed[0]),
        "distinct_keys_billed": int(billed[1]),
    }


def crash(args: argparse.Namespace, work: Path, ctx: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    gateway = Uvicorn("datazone.app:create_app", env, work / "crash.log")
    gateway.start()
    token = token_for(gateway.url, ctx["client_id"], ctx["client_secret"])
    started = datetime.now(UTC)
    ok_keys: set[str] = set()
    lock = threading.Lock()
    attempts = [0]
    stop_at = time.monotonic() + args.crash_seconds

    def client(n: int) -> None:
        codes = ctx["codes"]
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            i = n
            while time.monotonic() < stop_at:
                key = str(uuid.uuid4())
                url = f"/v1/products/credit-basic/enterprises/{codes[i % len(codes)]}?purpose=pre_loan"
                i += 7
                deadline = time.monotonic() + 120
                while True:  # retry this call, with its key, until it is answered
                    with lock:
                        attempts[0] += 1
                    try:
                        r = c.get(url, headers={"Idempotency-Key": key})
                        if r.status_code == 200:
                            with lock:
                                ok_keys.add(key)
                            break
                        if r.status_code not in (429, 502, 503):
                            raise SystemExit(f"unexpected {r.status_code}: {r.text[:300]}")
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("a call never got through after the restart")
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.crash_clients)]
    for t in threads:
        t.start()
    time.sleep(args.crash_seconds / 3)
    gateway.kill9()
    killed_at = time.monotonic()
    print("gateway killed with SIGKILL; restarting", flush=True)
    time.sleep(1.0)
    gateway.start()
    print(f"restarted in {time.monotonic() - killed_at:.1f} s", flush=True)
    for t in threads:
        t.join()
    gateway.stop()
    with ctx["db"].engine.connect() as conn:
        events = conn.execute(
            sa.text("SELECT idempotency_key, count(*) FROM usage_event WHERE institution_id = :i AND at >= :t"
                    " GROUP BY idempotency_key"),
            {"i": ctx["institution_id"], "t": started},
        ).all()
        debits = conn.execute(
            sa.text("SELECT coalesce(sum(amount_fen), 0) FROM ledger_entry WHERE institution_id = :i"
                    " AND kind = 'debit' AND at >= :t"),
            {"i": ctx["institution_id"], "t": started},
        ).scalar_one()
    per_key = {k: n for k, n in events}
    return {
        "keys_answered": len(ok_keys),
        "attempts": attempts[0],
        "usage_events": sum(per_key.values()),
        "keys_billed_twice": sum(1 for n in per_key.values() if n > 1),
        "events_without_an_answered_key": sum(n for k, n in per_key.items() if k not in ok_keys),
        "answered_keys_without_event": len(ok_keys - set(per_key)),
        "ledger_debits_fen": int(debits),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--crash-seconds", type=float, default=9.0)
    parser.add_argument("--crash-clients", type=int, default=8)
    parser.add_argument("--overload-connections", type=int, default=1000)
    parser.add_argument("--overload-seconds", type=int, default=60)
    parser.add_argument("--only-overload", action="store_true", help="skip the throughput and crash phases")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="datazone-bench-gw-"))
    home = work / "home"
    ctx = prepare(home, args.entities)
    env = {
        **os.environ,
        "DATAZONE_HOME": str(home),
        "DATAZONE_DATABASE_URL": ctx["database_url"],
        "DATAZONE_OAUTH_TOKEN_SECONDS": "3600",
        # the repository (for tests.bench_gateway:bare_app), before whatever path the caller set
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    tp: dict[str, Any] = {}
    cr: dict[str, Any] = {}
    try:
        if not args.only_overload:
            tp = throughput(args, work, ctx, env)
            cr = crash(args, work, ctx, env)
        ov = overload(args, work, ctx, env)
    finally:
        ctx["db"].dispose()
        import pgserver

        pgserver.get_server(home / "pgdata", cleanup_mode="stop").cleanup()  # type: ignore[attr-defined]
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\noverload:", json.dumps(ov, indent=2))
    held = (
        ov["server_errors_other_than_503"] == 0
        and ov["usage_events"] == ov["distinct_keys_billed"] == ov["answered_200"]
    )
    print("no 5xx but 503, every 200 billed once:", "yes" if held else "NO",
          f"; /healthz p99 {ov['healthz_p99_ms']} ms (target: under 100)")
    if args.only_overload:
        sys.exit(0 if held else 1)
    print()
    print("| endpoint | req/s (median) | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("bare", "gateway"):
        r = tp[name]
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"\nthroughput ratio gateway/bare: {tp['ratio']:.2f} (target: at least 0.50)")
    print("\ncrash under load:", json.dumps(cr, indent=2))
    exact = (
        cr["usage_events"] == cr["keys_answered"] == cr["ledger_debits_fen"]
        and cr["keys_billed_twice"] == 0
        and cr["events_without_an_answered_key"] == 0
        and cr["answered_keys_without_event"] == 0
    )
    print("nothing lost, nothing billed twice:", "yes" if exact else "NO")
    if not (exact and held):
        sys.exit(1)


if __name__ == "__main__":
    main()
