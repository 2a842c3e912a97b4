"""Benchmark: the full product path against bare endpoints, under overload, and through a crash.

Not part of the test suite: `make bench-gateway` (or `.venv/bin/python tests/bench_gateway.py`;
`--phases`, `--seconds`, `--rounds` and the other flags shorten or skip phases).

The gateway and each baseline run as one uvicorn process each, same settings (no access log),
on loopback; `wrk` drives them. Rounds alternate the two sides; medians are printed.

1. throughput: authenticated, authorized, metered and audited `credit-basic` lookups
   (`GET /v1/products/credit-basic/enterprises/{uscc}`, OAuth2 access token) against a bare
   FastAPI endpoint doing the same single-row lookup, at 16, 64 and 256 connections: requests
   answered 200 per second, p50, p99, ratio (target: at least 0.5 at each). Latencies are wrk's,
   over every answer (a quick 503 included); the rates count 200s only.
2. batch: `POST /v1/products/credit-basic/enterprises` with 1,000 enterprises a request against a
   bare endpoint reading the same 1,000 rows in one query: enterprises answered per second, ratio
   (target: at least 0.5). Every body is first checked once: 200 and all 1,000 found.
3. institutions: one institution on 64 connections against 64 institutions (each its own private
   plan, contract, OAuth client and token; request n uses token n mod 64) on 64 connections
   (target: one at least 0.8x of 64).
4. overload: 1,000 connections for 60 s, every request its own Idempotency-Key (echoed back as
   X-Request-ID, so the script knows which keys got a 200), `/healthz` probed every 50 ms. Then
   every key sent that did not get a 200 through wrk (shed with 503, or in flight when wrk closed
   its connections) is retried with the same key until it gets one. The 5xx other than 503 must
   be 0, the probe's p99 under 100 ms, and the usage events must be the keys answered 200, once each.
5. crash: client threads call the gateway, each call retried with its key until it gets a 200;
   the gateway is killed with SIGKILL mid-load and restarted. The usage events must equal the
   distinct keys that got a 200 and the ledger must hold one charge for each.

The run ends with one markdown table of every figure, its target and whether it is met, and a
JSON summary with --json. The exit code is 1 when a correctness check fails (a 5xx other than 503
from the gateway, an answer other than 200/429/503, a batch not found in full, a usage mismatch,
the crash's exactness); a speed target missed prints NO and does not change it.

Every phase uses one zone of its own (embedded PostgreSQL in a temporary home), loaded through
the demo pipeline. `wrk` comes from Debian's packages; it is installed when missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datazone.config import Settings  # noqa: E402
from datazone.contract import service as contract_service  # noqa: E402
from datazone.dataset import service as dataset_service  # noqa: E402
from datazone.db import Database, make_engine, stop_embedded  # noqa: E402
from datazone.demo.setup import prepare_demo  # noqa: E402
from datazone.grant import service as grant_service  # noqa: E402
from datazone.metering import service as metering  # noqa: E402
from datazone.oauth import service as oauth_service  # noqa: E402
from datazone.principal import service as principal_service  # noqa: E402

# the bench institutions' private plans: no rate limit to speak of, no quota, one fen a call
# (an enterprise, in a batch), so the crash test can count charges in the ledger
BENCH_PLAN = "bench-one-fen"
PHASES = ("throughput", "batch", "institutions", "overload", "crash")
REGISTRATION_COLUMNS = (
    "uscc, name, legal_rep, reg_capital, founded, status, enterprise_type, industry_code, district, address"
)
PRODUCT_PATH = "/v1/products/credit-basic/enterprises"


class BareBatchIn(BaseModel):
    usccs: list[str]


def bare_app() -> FastAPI:
    """The baselines: the same lookups, with nothing around them (uvicorn --factory)."""
    engine = make_engine(os.environ["DATAZONE_DATABASE_URL"])
    app = FastAPI()
    one = sa.text(f"SELECT {REGISTRATION_COLUMNS} FROM zone.mr_registration WHERE uscc = :u AND _vto IS NULL")
    many = sa.text(
        f"SELECT {REGISTRATION_COLUMNS} FROM zone.mr_registration WHERE uscc = ANY(:codes) AND _vto IS NULL"
    )

    @app.get("/bare/{uscc}")
    def lookup(uscc: str) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(one, {"u": uscc}).mappings().first()
        if row is None:
            raise HTTPException(404)
        return {k: (str(v) if v is not None else None) for k, v in row.items()}

    @app.post("/bare/batch")
    def lookup_batch(body: BareBatchIn) -> JSONResponse:
        with engine.connect() as conn:
            rows = conn.execute(many, {"codes": body.usccs}).mappings().all()
        results = [{k: (str(v) if v is not None else None) for k, v in row.items()} for row in rows]
        return JSONResponse({"found": len(results), "results": results})

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


def prepare(home: Path, entities: int, institutions: int) -> dict[str, Any]:
    """A demo zone; a bench institution and `institutions` more, each with its own private plan,
    contract and OAuth client, all under the same grants; in one transaction."""
    settings = Settings(home=home, drop_dir=home / "drop")
    db = Database.from_settings(settings)
    t0 = time.perf_counter()
    zone = prepare_demo(db, settings, entities=entities)
    print(f"zone of {entities:,} enterprises ready in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    now = datetime.now(UTC)
    valid_from, valid_to = now - timedelta(days=1), now + timedelta(days=30)
    clients: list[tuple[str, str]] = []
    ids: list[int] = []
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        for n in range(institutions + 1):
            # n == 0 is "bench-bank", the one institution of every single-institution phase
            suffix = "" if n == 0 else f"-{n:02d}"
            bank = principal_service.create_principal(s, kind="institution", name=f"bench-bank{suffix}")
            metering.create_plan(
                s, plan_id=BENCH_PLAN + suffix, name=f"bench: one fen a call{suffix}", institution_id=bank.id,
                unit_price_fen=1, rate_per_second=1_000_000.0, burst=1_000_000, by=operator,
            )
            contract_service.create_contract(
                s, institution_id=bank.id, purposes=["pre_loan"], products=["credit-basic"], clearance=2,
                plan_id=BENCH_PLAN + suffix, by=operator, valid_from=valid_from, valid_to=valid_to,
            )
            client, secret = oauth_service.create_client(s, institution_id=bank.id, name="bench", by_name="bench")
            assert secret is not None
            clients.append((client.client_id, secret))
            ids.append(bank.id)
        for dept_id in ("market-regulation", "tax"):
            dept = principal_service.find_principal(s, name=f"demo-{dept_id}")
            assert dept is not None
            datasets = [d.id for d in dataset_service.list_datasets(s, department=dept_id)]
            grant_service.create_grant(
                s, department=dept_id, datasets=datasets, purposes=["pre_loan"], products=["credit-basic"],
                institutions=ids, by=dept, valid_from=valid_from, valid_to=valid_to,
            )
        codes = dataset_service.current_entities(s, dataset_id="mr_registration", limit=5000)
    print(f"{institutions + 1} bench institutions ready in {time.perf_counter() - t0:.1f} s", flush=True)
    return {
        "db": db,
        "database_url": db.url,
        "institution_id": ids[0],
        "client_id": clients[0][0],
        "client_secret": clients[0][1],
        "other_clients": clients[1:],
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


# Every wrk script counts the statuses per thread and prints them in done(), so a 503 (load shed,
# allowed) is told from a 500 (never allowed) and only 200s count as answered. `$request` is the
# body of request(), `$on_response` runs on each response, `$on_done` at the end.
LUA = string.Template("""
$head
local threads = {}
local nthreads = 0
setup = function(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end
init = function(args)
  i = 0
  counts = {}
  ok_keys = {}
end
request = function()
  i = i + 1
  $request
end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  $on_response
end
done = function(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    io.write(string.format("status %d %d\\n", status, count))
  end
  $on_done
end
""")


def lua_list(items: Sequence[str]) -> str:
    return ", ".join(f'"{x}"' for x in items)


def lookup_script(codes: Sequence[str], prefix: str, suffix: str, tokens: Sequence[str]) -> str:
    """GET prefix+code+suffix over the codes; with tokens, request n of a thread uses token n mod len."""
    return LUA.substitute(
        head=f"local codes = {{{lua_list(codes)}}}\nlocal tokens = {{{lua_list(tokens)}}}",
        request=f"""local headers = {{}}
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[((i + tid) % #tokens) + 1] end
  return wrk.format("GET", "{prefix}" .. codes[(i % #codes) + 1] .. "{suffix}", headers)""",
        on_response="",
        on_done="",
    )


def batch_script(bodies: Sequence[str], path: str, token: str | None) -> str:
    """POST the JSON bodies in turn (long Lua strings: a body never holds ']==]')."""
    auth = f'["Authorization"] = "Bearer {token}", ' if token else ""
    return LUA.substitute(
        head="local bodies = {" + ", ".join(f"[==[{b}]==]" for b in bodies) + "}",
        request=f"""return wrk.format("POST", "{path}", {{{auth}["Content-Type"] = "application/json"}},
                    bodies[(i % #bodies) + 1])""",
        on_response="",
        on_done="",
    )


def overload_script(codes: Sequence[str], run: str, token: str, keys_file: Path) -> str:
    """Every request its own Idempotency-Key, `run-thread-n`, sent as X-Request-ID too: the gateway
    echoes that, so a 200's key is known. done() writes, per thread, how many keys it sent and the
    keys that got a 200."""
    return LUA.substitute(
        head=f"local codes = {{{lua_list(codes)}}}",
        request=f"""local key = "{run}-" .. tid .. "-" .. i
  return wrk.format("GET", "{PRODUCT_PATH}/" .. codes[(i % #codes) + 1] .. "?purpose=pre_loan",
                    {{["Authorization"] = "Bearer {token}", ["Idempotency-Key"] = key, ["X-Request-ID"] = key}})""",
        on_response="""if status == 200 then
    local key = headers["X-Request-ID"] or headers["x-request-id"]
    if key then table.insert(ok_keys, key) end
  end""",
        on_done=f"""local f = io.open("{keys_file}", "w")
  for _, thread in ipairs(threads) do
    f:write(string.format("sent %d %d\\n", thread:get("tid"), thread:get("i")))
    for _, key in ipairs(thread:get("ok_keys")) do f:write("ok " .. key .. "\\n") end
  end
  f:close()""",
    )


@dataclass
class WrkResult:
    rps: float  # every answer, whatever its status
    ok_rps: float  # 200s only
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: str
    stdout: str = field(repr=False)

    @property
    def server_errors_other_than_503(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 and s != 503)

    @property
    def unexpected(self) -> int:
        """Answers that mean the bench itself is wrong (a refused token, a bad request...)."""
        return sum(n for s, n in self.statuses.items() if s not in (200, 429, 503) and s < 500)

    def brief(self) -> dict[str, Any]:
        return {"rps": self.rps, "ok_rps": self.ok_rps, "p50_ms": self.p50_ms, "p99_ms": self.p99_ms,
                "statuses": self.statuses, "socket_errors": self.socket_errors}


def wrk_run(wrk: str, url: str, script: Path, seconds: float, connections: int, *, latency: bool = True) -> WrkResult:
    threads = min(2, connections)
    # a 30 s time-out rather than wrk's 2 s: a slow answer is measured, not dropped as a socket error
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
           "-s", str(script), url]
    if latency:
        cmd.insert(1, "--latency")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+\w+)", out, re.M))
    statuses = {int(a): int(b) for a, b in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    errors = re.search(r"Socket errors: (.*)", out)
    answered = sum(statuses.values())
    return WrkResult(
        rps=rps,
        ok_rps=rps * statuses.get(200, 0) / answered if answered else 0.0,
        p50_ms=to_ms(lat["50"]) if "50" in lat else math.nan,
        p99_ms=to_ms(lat["99"]) if "99" in lat else math.nan,
        statuses=statuses,
        socket_errors=errors.group(1) if errors else "",
        stdout=out,
    )


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    value, unit = float(m.group(1)), m.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[unit]


def median_of(results: Sequence[WrkResult]) -> dict[str, float]:
    return {
        k: statistics.median(getattr(r, k) for r in results) for k in ("rps", "ok_rps", "p50_ms", "p99_ms")
    }


@dataclass
class Checks:
    """The correctness checks of the whole run: any failure makes the exit code 1."""

    failures: list[str] = field(default_factory=list)
    gateway_runs: list[tuple[str, WrkResult]] = field(default_factory=list)

    def gateway_run(self, label: str, result: WrkResult) -> None:
        self.gateway_runs.append((label, result))
        if result.server_errors_other_than_503:
            self.failures.append(f"{label}: {result.server_errors_other_than_503} 5xx other than 503 {result.statuses}")
        if result.unexpected:
            self.failures.append(f"{label}: answers other than 200/429/503 {result.statuses}")

    def require(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


@dataclass
class Row:
    """One line of the summary table."""

    phase: str
    figure: str
    gateway: str
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None  # None: a figure without a target

    def cells(self) -> list[str]:
        return [self.phase, self.figure, self.gateway, self.baseline,
                "" if self.ratio is None else f"{self.ratio:.2f}", self.target,
                "" if self.met is None else ("yes" if self.met else "NO")]


def speed(rps: float, p50: float, p99: float, unit: str = "req/s") -> str:
    return f"{rps:,.0f} {unit}, p50 {p50:,.1f} ms, p99 {p99:,.1f} ms"


def alternate(
    wrk: str, sides: dict[str, tuple[str, Path]], connections: int, args: argparse.Namespace, checks: Checks,
    label: str, gateway_sides: Sequence[str],
) -> dict[str, list[WrkResult]]:
    """A short warm-up of each side, then `--rounds` rounds, sides alternating within each."""
    for url, script in sides.values():
        wrk_run(wrk, url, script, min(3.0, args.seconds), connections)
    results: dict[str, list[WrkResult]] = {name: [] for name in sides}
    for rnd in range(args.rounds):
        for name, (url, script) in sides.items():
            r = wrk_run(wrk, url, script, args.seconds, connections)
            results[name].append(r)
            if name in gateway_sides:
                checks.gateway_run(f"{label} {name}", r)
            print(f"{label} round {rnd + 1} {name:10} {r.ok_rps:9.1f} ok/s  p50 {r.p50_ms:8.2f} ms"
                  f"  p99 {r.p99_ms:8.2f} ms  statuses {r.statuses} {r.socket_errors}", flush=True)
    return results


@dataclass
class Servers:
    """The gateway and the bare baselines, one uvicorn process each, shared by the phases that compare them."""

    gateway: Uvicorn
    bare: Uvicorn


PhaseResult = tuple[dict[str, Any], list[Row]]


def throughput(args: argparse.Namespace, work: Path, ctx: dict[str, Any], servers: Servers, checks: Checks) -> PhaseResult:
    wrk = ensure_wrk()
    token = token_for(servers.gateway.url, ctx["client_id"], ctx["client_secret"])
    gateway_lua, bare_lua = work / "gateway.lua", work / "bare.lua"
    gateway_lua.write_text(lookup_script(ctx["codes"], PRODUCT_PATH + "/", "?purpose=pre_loan", [token]))
    bare_lua.write_text(lookup_script(ctx["codes"], "/bare/", "", []))
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    for connections in args.connections:
        results = alternate(
            wrk, {"bare": (servers.bare.url, bare_lua), "gateway": (servers.gateway.url, gateway_lua)},
            connections, args, checks, f"throughput c={connections}", ["gateway"],
        )
        m = {name: median_of(rs) for name, rs in results.items()}
        ratio = m["gateway"]["ok_rps"] / m["bare"]["ok_rps"] if m["bare"]["ok_rps"] else math.nan
        raw[str(connections)] = {**m, "ratio": ratio, "rounds": {n: [r.brief() for r in rs] for n, rs in results.items()}}
        rows.append(Row(
            "throughput", f"single lookup, {connections} connections",
            speed(m["gateway"]["ok_rps"], m["gateway"]["p50_ms"], m["gateway"]["p99_ms"]),
            speed(m["bare"]["ok_rps"], m["bare"]["p50_ms"], m["bare"]["p99_ms"]),
            ratio, "≥ 0.50", ratio >= 0.5,
        ))
    return raw, rows


def batch(args: argparse.Namespace, work: Path, ctx: dict[str, Any], servers: Servers, checks: Checks) -> PhaseResult:
    wrk = ensure_wrk()
    size = args.batch_size
    codes: list[str] = ctx["codes"]
    chunks = [codes[i:i + size] for i in range(0, len(codes) - size + 1, size)]
    if not chunks:
        sys.exit(f"--batch-size {size} needs at least {size} enterprises (--entities)")
    token = token_for(servers.gateway.url, ctx["client_id"], ctx["client_secret"])
    gateway_bodies = [json.dumps({"usccs": chunk, "purpose": "pre_loan"}) for chunk in chunks]
    bare_bodies = [json.dumps({"usccs": chunk}) for chunk in chunks]
    # each body once, before the load: the gateway answers 200 with every enterprise found, as does the baseline
    found_ok = True
    for gateway_body, bare_body in zip(gateway_bodies, bare_bodies, strict=True):
        r = httpx.post(servers.gateway.url + PRODUCT_PATH, content=gateway_body, timeout=300,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        found = sum(1 for a in r.json().get("results", []) if a.get("found")) if r.status_code == 200 else 0
        b = httpx.post(servers.bare.url + "/bare/batch", content=bare_body, timeout=300,
                       headers={"Content-Type": "application/json"})
        bare_found = int(b.json()["found"]) if b.status_code == 200 else 0
        if not (r.status_code == 200 and found == size and bare_found == size):
            found_ok = False
            checks.failures.append(f"batch: gateway {r.status_code} found {found}, bare {b.status_code} found"
                                   f" {bare_found}, of {size}: {r.text[:300]}")
    gateway_lua, bare_lua = work / "gateway-batch.lua", work / "bare-batch.lua"
    gateway_lua.write_text(batch_script(gateway_bodies, PRODUCT_PATH, token))
    bare_lua.write_text(batch_script(bare_bodies, "/bare/batch", None))
    raw: dict[str, Any] = {"batch_size": size, "bodies": len(chunks), "all_found": found_ok}
    rows = [Row("batch", f"{len(chunks)} bodies of {size:,}: 200, all found", "yes" if found_ok else "NO",
                target="all found", met=found_ok)]
    for connections in args.batch_connections:
        results = alternate(
            wrk, {"bare": (servers.bare.url, bare_lua), "gateway": (servers.gateway.url, gateway_lua)},
            connections, args, checks, f"batch c={connections}", ["gateway"],
        )
        m = {name: median_of(rs) for name, rs in results.items()}
        per_s = {name: m[name]["ok_rps"] * size for name in m}
        ratio = per_s["gateway"] / per_s["bare"] if per_s["bare"] else math.nan
        raw[str(connections)] = {**m, "enterprises_per_s": per_s, "ratio": ratio,
                                 "rounds": {n: [r.brief() for r in rs] for n, rs in results.items()}}
        rows.append(Row(
            "batch", f"{size:,} a request, {connections} connections",
            speed(per_s["gateway"], m["gateway"]["p50_ms"], m["gateway"]["p99_ms"], "enterprises/s"),
            speed(per_s["bare"], m["bare"]["p50_ms"], m["bare"]["p99_ms"], "enterprises/s"),
            ratio, "≥ 0.50", ratio >= 0.5,
        ))
    return raw, rows


def institutions(args: argparse.Namespace, work: Path, ctx: dict[str, Any], servers: Servers, checks: Checks) -> PhaseResult:
    wrk = ensure_wrk()
    url = servers.gateway.url
    one = token_for(url, ctx["client_id"], ctx["client_secret"])
    many = [token_for(url, client_id, secret) for client_id, secret in ctx["other_clients"]]
    one_lua, many_lua = work / "one-institution.lua", work / "many-institutions.lua"
    one_lua.write_text(lookup_script(ctx["codes"], PRODUCT_PATH + "/", "?purpose=pre_loan", [one]))
    many_lua.write_text(lookup_script(ctx["codes"], PRODUCT_PATH + "/", "?purpose=pre_loan", many))
    connections = args.institution_connections
    results = alternate(wrk, {"one": (url, one_lua), "many": (url, many_lua)}, connections, args, checks,
                        f"institutions c={connections}", ["one", "many"])
    m = {name: median_of(rs) for name, rs in results.items()}
    ratio = m["one"]["ok_rps"] / m["many"]["ok_rps"] if m["many"]["ok_rps"] else math.nan
    raw = {**m, "institutions": len(many), "connections": connections, "ratio": ratio,
           "rounds": {n: [r.brief() for r in rs] for n, rs in results.items()}}
    row = Row(
        "institutions", f"1 against {len(many)} institutions, {connections} connections",
        "1: " + speed(m["one"]["ok_rps"], m["one"]["p50_ms"], m["one"]["p99_ms"]),
        f"{len(many)}: " + speed(m["many"]["ok_rps"], m["many"]["p50_ms"], m["many"]["p99_ms"]),
        ratio, "≥ 0.80", ratio >= 0.8,
    )
    return raw, [row]


def retry_unanswered(url: str, token: str, calls: Sequence[tuple[str, str]], workers: int) -> dict[str, Any]:
    """Call each (Idempotency-Key, path) again with its key until it gets a 200: a key billed under
    the load gets its first answer replayed, free; one never served is served now."""
    lock = threading.Lock()
    tally: dict[str, Any] = {"answered": set(), "replayed": 0, "unexpected": []}

    def work(part: Sequence[tuple[str, str]]) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for key, path in part:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        r = c.get(path, headers={"Idempotency-Key": key})
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code == 200:
                        with lock:
                            tally["answered"].add(key)
                            tally["replayed"] += r.headers.get("Idempotent-Replayed") == "true"
                        break
                    if r is not None and r.status_code not in (429, 503):
                        with lock:
                            tally["unexpected"].append(f"{key}: {r.status_code} {r.text[:200]}")
                        break
                    if time.monotonic() > deadline:
                        with lock:
                            tally["unexpected"].append(f"{key}: no 200 within 120 s")
                        break
                    time.sleep(0.2)

    threads = [threading.Thread(target=work, args=(calls[n::workers],)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def overload(args: argparse.Namespace, work: Path, ctx: dict[str, Any], env: dict[str, str], checks: Checks) -> PhaseResult:
    """`--overload-connections` connections for `--overload-seconds` against one gateway process, every
    request with its own Idempotency-Key, while /healthz is probed every 50 ms; then the keys that got
    no 200 through wrk retried: the 5xx other than 503 (must be none), the probe's p99, and usage
    events against the keys answered 200."""
    wrk = ensure_wrk()
    gateway = Uvicorn("datazone.app:create_app", env, work / "overload.log")
    gateway.start()
    run = uuid.uuid4().hex[:8]
    probes: list[float] = []
    probe_errors = [0]
    stop = threading.Event()
    codes: list[str] = ctx["codes"]

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
        script, keys_file = work / "overload.lua", work / "overload-keys.txt"
        script.write_text(overload_script(codes, run, token, keys_file))
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            load = wrk_run(wrk, gateway.url, script, args.overload_seconds, args.overload_connections)
        finally:
            stop.set()
            prober.join()
        checks.gateway_run("overload", load)
        sent = {int(t): int(n) for t, n in re.findall(r"^sent (\d+) (\d+)$", keys_file.read_text(), re.M)}
        ok_through_wrk = set(re.findall(r"^ok (\S+)$", keys_file.read_text(), re.M))
        # the key of a thread's request n asked for codes[n mod len] (Lua: codes[(n % #codes) + 1])
        all_calls = {
            f"{run}-{tid}-{n}": f"{PRODUCT_PATH}/{codes[n % len(codes)]}?purpose=pre_loan"
            for tid, count in sent.items() for n in range(1, count + 1)
        }
        unanswered = sorted((k, p) for k, p in all_calls.items() if k not in ok_through_wrk)
        print(f"overload: {len(all_calls):,} keys sent, {len(ok_through_wrk):,} answered 200 through wrk;"
              f" retrying {len(unanswered):,} with their keys", flush=True)
        t0 = time.perf_counter()
        retried = retry_unanswered(gateway.url, token, unanswered, args.retry_workers)
        retry_seconds = time.perf_counter() - t0
    finally:
        gateway.stop()
    with ctx["db"].engine.connect() as conn:
        billed: dict[str, int] = {key: count for key, count in conn.execute(
            sa.text("SELECT idempotency_key, count(*) FROM usage_event"
                    " WHERE institution_id = :i AND idempotency_key LIKE :run GROUP BY idempotency_key"),
            {"i": ctx["institution_id"], "run": f"{run}-%"},
        )}
    answered = ok_through_wrk | retried["answered"]
    usage_events = sum(billed.values())
    exact = (
        usage_events == len(billed) == len(answered)
        and set(billed) == answered
        and not retried["unexpected"]
        and len(answered) == len(all_calls)
    )
    checks.require(exact, f"overload: usage events {usage_events} on {len(billed)} keys, {len(answered)} keys"
                          f" answered 200 of {len(all_calls)} sent; {retried['unexpected'][:5]}")
    probes.sort()
    p50 = round(probes[len(probes) // 2], 1) if probes else math.nan
    p99 = round(probes[min(len(probes) - 1, int(len(probes) * 0.99))], 1) if probes else math.nan
    raw = {
        "connections": args.overload_connections,
        "seconds": args.overload_seconds,
        "statuses": load.statuses,
        "server_errors_other_than_503": load.server_errors_other_than_503,
        "socket_errors": load.socket_errors,
        "healthz_probes": len(probes),
        "healthz_failed": probe_errors[0],
        "healthz_p50_ms": p50,
        "healthz_p99_ms": p99,
        "keys_sent": len(all_calls),
        "answered_200_through_wrk": len(ok_through_wrk),
        "retried": len(unanswered),
        "retried_replayed": retried["replayed"],
        "retry_seconds": round(retry_seconds, 1),
        "retry_unexpected": retried["unexpected"][:20],
        "keys_answered_200": len(answered),
        "usage_events": usage_events,
        "distinct_keys_billed": len(billed),
    }
    status_text = ", ".join(f"{s}: {n:,}" for s, n in sorted(load.statuses.items()))
    rows = [
        Row("overload", f"{args.overload_connections:,} connections, {args.overload_seconds} s: 5xx other than 503",
            f"{load.server_errors_other_than_503} ({status_text})", target="0",
            met=load.server_errors_other_than_503 == 0),
        Row("overload", "/healthz during the load", f"p99 {p99} ms, p50 {p50} ms ({len(probes)} probes,"
            f" {probe_errors[0]} failed)", target="p99 < 100 ms", met=p99 < 100),
        Row("overload", "usage events = distinct keys answered 200",
            f"{usage_events:,} events, {len(billed):,} keys billed, {len(answered):,} keys with a 200 of"
            f" {len(all_calls):,} sent ({len(unanswered):,} retried, {retried['replayed']:,} of them replayed)",
            target="equal", met=exact),
    ]
    return raw, rows


def crash(args: argparse.Namespace, work: Path, ctx: dict[str, Any], env: dict[str, str], checks: Checks) -> PhaseResult:
    gateway = Uvicorn("datazone.app:create_app", env, work / "crash.log")
    gateway.start()
    token = token_for(gateway.url, ctx["client_id"], ctx["client_secret"])
    started = datetime.now(UTC)
    ok_keys: set[str] = set()
    lock = threading.Lock()
    attempts = [0]
    failures: list[str] = []
    stop_at = time.monotonic() + args.crash_seconds

    def client(n: int) -> None:
        codes = ctx["codes"]
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
            i = n
            while time.monotonic() < stop_at:
                key = str(uuid.uuid4())
                url = f"{PRODUCT_PATH}/{codes[i % len(codes)]}?purpose=pre_loan"
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
                            failures.append(f"unexpected {r.status_code}: {r.text[:300]}")
                            return
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        failures.append("a call never got through after the restart")
                        return
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
    raw = {
        "keys_answered": len(ok_keys),
        "attempts": attempts[0],
        "usage_events": sum(per_key.values()),
        "keys_billed_twice": sum(1 for n in per_key.values() if n > 1),
        "events_without_an_answered_key": sum(n for k, n in per_key.items() if k not in ok_keys),
        "answered_keys_without_event": len(ok_keys - set(per_key)),
        "ledger_debits_fen": int(debits),
        "client_failures": failures[:20],
    }
    exact = (
        raw["usage_events"] == raw["keys_answered"] == raw["ledger_debits_fen"]
        and raw["keys_billed_twice"] == 0
        and raw["events_without_an_answered_key"] == 0
        and raw["answered_keys_without_event"] == 0
        and not failures
    )
    checks.require(exact, f"crash: not exact {raw}")
    row = Row("crash", "SIGKILL mid-load, restart: nothing lost, nothing billed twice",
              f"{raw['keys_answered']:,} keys answered, {raw['usage_events']:,} usage events,"
              f" {raw['ledger_debits_fen']:,} fen debited, {raw['keys_billed_twice']} billed twice",
              target="exact", met=exact)
    return raw, [row]


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def phase_list(text: str) -> list[str]:
    phases = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown phases {unknown}; choose from {','.join(PHASES)}")
    return phases


def json_safe(value: Any) -> Any:
    """NaN (a side that answered nothing) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| phase | figure | gateway | baseline | ratio | target | met |", "| --- | --- | --- | --- | ---: | --- | --- |"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


@contextmanager
def compared_servers(work: Path, env: dict[str, str]) -> Iterator[Servers]:
    """The gateway and the bare baselines for the throughput, batch and institutions phases."""
    servers = Servers(
        Uvicorn("datazone.app:create_app", env, work / "gateway.log"),
        Uvicorn("tests.bench_gateway:bare_app", env, work / "bare.log"),
    )
    try:
        servers.gateway.start()
        servers.bare.start()
        yield servers
    finally:
        servers.gateway.stop()
        servers.bare.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=phase_list, default=list(PHASES), help=f"any of {','.join(PHASES)}")
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10, help="each wrk run of the compared phases")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int_list, default=[16, 64, 256], help="throughput, e.g. 16,64,256")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-connections", type=int_list, default=[4, 16])
    parser.add_argument("--institutions", type=int, default=64, help="the many institutions' count")
    parser.add_argument("--institution-connections", type=int, default=64)
    parser.add_argument("--overload-connections", type=int, default=1000)
    parser.add_argument("--overload-seconds", type=int, default=60)
    parser.add_argument("--retry-workers", type=int, default=8, help="threads retrying the overload's unanswered keys")
    parser.add_argument("--crash-seconds", type=float, default=9.0)
    parser.add_argument("--crash-clients", type=int, default=8)
    parser.add_argument("--only-overload", action="store_true", help="the same as --phases overload")
    parser.add_argument("--json", type=Path, help="write a JSON summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    phases: list[str] = ["overload"] if args.only_overload else args.phases
    work = Path(tempfile.mkdtemp(prefix="datazone-bench-gw-"))
    home = work / "home"
    ctx = prepare(home, args.entities, args.institutions if "institutions" in phases else 0)
    env = {
        **os.environ,
        "DATAZONE_HOME": str(home),
        "DATAZONE_DATABASE_URL": ctx["database_url"],
        "DATAZONE_OAUTH_TOKEN_SECONDS": "3600",
        # the repository (for tests.bench_gateway:bare_app), before whatever path the caller set
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    checks = Checks()
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    compared = {"throughput": throughput, "batch": batch, "institutions": institutions}
    alone = {"overload": overload, "crash": crash}
    try:
        if any(p in compared for p in phases):
            with compared_servers(work, env) as servers:
                for name, compared_phase in compared.items():
                    if name in phases:
                        raw[name], more = compared_phase(args, work, ctx, servers, checks)
                        rows += more
        for name, alone_phase in alone.items():
            if name in phases:
                raw[name], more = alone_phase(args, work, ctx, env, checks)
                rows += more
    finally:
        ctx["db"].dispose()
        stop_embedded(home)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    # every answer the gateway gave under wrk, all phases: a 500 anywhere is a failure, not a slow figure
    runs = checks.gateway_runs
    other_5xx = sum(r.server_errors_other_than_503 for _, r in runs)
    shed = sum(r.statuses.get(503, 0) for _, r in runs)
    if runs:
        rows.append(Row("all", f"gateway answers under wrk, {len(runs)} runs: 5xx other than 503",
                        f"{other_5xx} (503: {shed:,})", target="0", met=other_5xx == 0))
    print("\n" + markdown_table(rows))
    correct = not checks.failures
    print("\ncorrectness:", "yes" if correct else "NO")
    for failure in checks.failures:
        print("  -", failure)
    if args.json:
        args.json.write_text(json.dumps(json_safe({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "phases": raw,
            "rows": [asdict(r) for r in rows],
            "failures": checks.failures,
            "correct": correct,
        }), indent=2, default=str))
    sys.exit(0 if correct else 1)


if __name__ == "__main__":
    main()
