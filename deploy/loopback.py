#!/usr/bin/env python3
"""The deployment's topology as plain processes on loopback, proved under load.

Starts what deploy/compose.yaml starts, without a container engine: a throwaway cluster of
Debian's PostgreSQL server (initdb/pg_ctl in a temporary directory, on a free port), two
`datazone serve` replicas, one `datazone scheduler` (the only sealer: replicas run with
DATAZONE_AUDIT_SEAL_SECONDS=0), one `datazone worker`, and HAProxy running deploy/haproxy/haproxy.cfg
as is. It seeds the demo zone (`datazone demo --no-serve`: departments, datasets, products, a bank
with a contract, grants, consents and an OAuth client), then drives metered load through the
balancer: concurrent paid lookups, each with its own Idempotency-Key, retried with the same key on
connection errors and 502/503/504. Mid-load it SIGKILLs one replica, restarts it a few seconds
later, and checks:

  failover   every call was answered 200 and the surviving replica answered while the other was down;
  lost       every key answered 200 has exactly one usage event;
  twice      usage events == distinct keys answered 200, no key billed twice, none billed unanswered;
  ledger     the ledger's net debits == the sum of charged_fen answered == the usage events' prices;
  rejoin     the balancer marks the restarted replica up again and routes calls to it;
  sealed     the scheduler sealed every audit entry the calls wrote; scheduler and worker still run.

It prints a summary (JSON with --summary FILE too) and exits 1 on any violation, 2 when the
topology could not start. Runs as root too: PostgreSQL then runs as the `postgres` user.

    python deploy/loopback.py --health-path /readyz --seconds 20 --concurrency 16
"""

# every command run here is built from fixed paths and this script's own arguments
# ruff: noqa: S603

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

DEPLOY_DIR = Path(__file__).resolve().parent
HAPROXY_CFG = DEPLOY_DIR / "haproxy" / "haproxy.cfg"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
RETRY_STATUSES = frozenset({502, 503, 504})
KEY_PREFIX = "topology-"


class TopologyError(RuntimeError):
    """The topology could not be started (as opposed to a violation found under load)."""


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, chars: int = 2500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Outcome:
    key: str
    status: int | None = None
    charged_fen: int = 0
    served_by: str | None = None
    replayed: bool = False
    attempts: int = 0
    transient: list[str] = field(default_factory=list)  # what each retried attempt met
    finished_at: float = 0.0
    error: str | None = None


class Topology:
    """Every process of the topology; stop() ends them all, whatever happened."""

    def __init__(self, workdir: Path, health_path: str, datazone: list[str]) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.health_path = health_path
        self.datazone = datazone
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg_dir = workdir / "pg"
        self.pg_started = False
        (
            self.pg_port,
            self.lb_port,
            self.stats_port,
            gw1,
            gw2,
        ) = free_ports(5)
        self.gateway_ports = {"gw1": gw1, "gw2": gw2}
        self.lb_url = f"http://127.0.0.1:{self.lb_port}"
        self.database_url = ""
        self.signing_key_secret = secrets.token_urlsafe(32)

    # ------------------------------------------------------------------ PostgreSQL
    def _as_postgres(self, cmd: list[str]) -> list[str]:
        # initdb refuses to run as root: the cluster belongs to the postgres user then
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start_postgres(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise TopologyError(f"{PG_BIN}/initdb not found: apt-get install postgresql-15")
        password = secrets.token_urlsafe(24)
        self.pg_dir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, owner.pw_uid, owner.pw_gid)
            self.workdir.chmod(0o711)  # postgres must reach its directory, and nothing more
        pwfile = self.pg_dir / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        data = self.pg_dir / "data"
        run = subprocess.run(
            self._as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", "datazone", "-A", "scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"]
            ),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        pwfile.unlink()
        if run.returncode != 0:
            raise TopologyError(f"initdb failed: {run.stderr[-2000:]}")
        options = f"-p {self.pg_port} -k {self.pg_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run = subprocess.run(
            self._as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.pg_dir / "postgres.log"),
                 "-o", options, "-w", "-t", "60", "start"]
            ),
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if run.returncode != 0:
            raise TopologyError(f"pg_ctl start failed: {run.stderr}{tail(self.pg_dir / 'postgres.log')}")
        self.pg_started = True
        admin = f"postgresql://datazone:{password}@127.0.0.1:{self.pg_port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE datazone")
        self.database_url = f"postgresql://datazone:{password}@127.0.0.1:{self.pg_port}/datazone"

    def stop_postgres(self) -> None:
        if self.pg_started:
            subprocess.run(
                self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir / "data"), "-m", "immediate", "-w", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip
            self.pg_started = False

    # ------------------------------------------------------------------ datazone processes
    def env(self, home: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DATAZONE_HOME": str(self.workdir / home),
                "DATAZONE_DATABASE_URL": self.database_url,
                # the same on every process: tokens one replica signs, the other verifies
                "DATAZONE_SIGNING_KEY_SECRET": self.signing_key_secret,
                "DATAZONE_OAUTH_ISSUER": self.lb_url,
                "DATAZONE_DROP_DIR": str(self.workdir / "drop"),
            }
        )
        env.update(extra)
        return env

    def run_datazone(self, name: str, *args: str, timeout: float = 300) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            run = subprocess.run(
                [*self.datazone, *args],
                env=self.env("seed"),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if run.returncode != 0:
            raise TopologyError(f"`datazone {' '.join(args)}` failed ({run.returncode}): {tail(log)}")

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def start_gateway(self, name: str) -> None:
        port = self.gateway_ports[name]
        self.spawn(
            name,
            [*self.datazone, "serve", "--host", "127.0.0.1", "--port", str(port)],
            # sealing runs in the scheduler; replicas only insert audit entries
            self.env(name, DATAZONE_AUDIT_SEAL_SECONDS="0"),
        )

    def wait_gateway(self, name: str, timeout: float = 120) -> None:
        url = f"http://127.0.0.1:{self.gateway_ports[name]}{self.health_path}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise TopologyError(
                    f"{name} exited with {proc.returncode}: {tail(self.logs / f'{name}.log')}"
                )
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TopologyError(
            f"{name} not healthy on {url} in {timeout:.0f} s: {tail(self.logs / f'{name}.log')}"
        )

    def start_background(self) -> None:
        self.spawn("scheduler", [*self.datazone, "scheduler"], self.env("scheduler"))
        self.spawn("worker", [*self.datazone, "worker", "--interval", "5"], self.env("worker"))

    # ------------------------------------------------------------------ the balancer
    def start_haproxy(self, haproxy: str) -> None:
        binary = shutil.which(haproxy)
        if binary is None:
            raise TopologyError(f"{haproxy} not found: apt-get install haproxy")
        env = dict(os.environ)
        env.update(
            {
                "DATAZONE_LB_BIND": f"127.0.0.1:{self.lb_port}",
                "DATAZONE_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
                "DATAZONE_GATEWAY_1": f"127.0.0.1:{self.gateway_ports['gw1']}",
                "DATAZONE_GATEWAY_2": f"127.0.0.1:{self.gateway_ports['gw2']}",
                "DATAZONE_HEALTH_PATH": self.health_path,
            }
        )
        env.pop("DATAZONE_LB_USER", None)
        check = subprocess.run(
            [binary, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True
        )
        if check.returncode != 0:
            raise TopologyError(f"haproxy rejects {HAPROXY_CFG}: {check.stdout}{check.stderr}")
        # -db: stay in the foreground, so this process is HAProxy itself and stop() ends it
        self.spawn("haproxy", [binary, "-db", "-f", str(HAPROXY_CFG)], env)

    def server_status(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each replica (status UP/DOWN, sessions), from its stats CSV."""
        resp = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)
        resp.raise_for_status()
        rows = csv.DictReader(io.StringIO(resp.text.lstrip("# ")))
        return {
            r["svname"]: r for r in rows if r["pxname"] == "gateway" and r["svname"] in self.gateway_ports
        }

    def wait_status(self, name: str, status: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.server_status().get(name, {}).get("status", "").startswith(status):
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.stop_postgres()


class Load:
    """Concurrent paid lookups through the balancer, each key retried until it is answered."""

    def __init__(self, lb_url: str, token: str, firms: list[str], product: str, concurrency: int) -> None:
        self.lb_url = lb_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.firms = firms
        self.product = product
        self.concurrency = concurrency
        self.stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(90)

    def _run(self, index: int) -> None:
        n = index
        with httpx.Client(base_url=self.lb_url, headers=self.headers, timeout=15) as client:
            while not self.stop.is_set():
                firm = self.firms[n % len(self.firms)]
                n += self.concurrency
                outcome = self._call(client, firm)
                with self._lock:
                    self.outcomes.append(outcome)

    def _call(self, client: httpx.Client, firm: str) -> Outcome:
        outcome = Outcome(key=f"{KEY_PREFIX}{uuid.uuid4()}")
        url = f"/v1/products/{self.product}/enterprises/{firm}"
        give_up = time.monotonic() + 60
        while True:
            outcome.attempts += 1
            try:
                resp = client.get(
                    url, params={"purpose": "pre_loan"}, headers={"Idempotency-Key": outcome.key}
                )
            except httpx.TransportError as exc:
                outcome.transient.append(type(exc).__name__)
            else:
                if resp.status_code not in RETRY_STATUSES:
                    outcome.status = resp.status_code
                    outcome.served_by = resp.headers.get("x-served-by")
                    outcome.replayed = resp.headers.get("idempotent-replayed") == "true"
                    if resp.status_code == 200:
                        outcome.charged_fen = int(resp.json()["charged_fen"])
                    else:
                        outcome.error = resp.text[:500]
                    break
                outcome.transient.append(str(resp.status_code))
            if time.monotonic() > give_up:
                outcome.error = f"gave up after {outcome.attempts} attempts: {outcome.transient[-5:]}"
                break
            # the same key again: the gateway answers it once, whichever replica gets it
            time.sleep(min(0.05 * outcome.attempts, 1.0))
        outcome.finished_at = time.monotonic()
        return outcome


@contextmanager
def workspace(workdir: Path | None, keep: bool) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    path = Path(tempfile.mkdtemp(prefix="datazone-topology-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def ledger_net(conn: psycopg.Connection[Any], institution_id: int) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(CASE kind WHEN 'debit' THEN amount_fen ELSE -amount_fen END), 0)"
        " FROM ledger_entry WHERE institution_id = %s",
        (institution_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def billing_check(
    answered: dict[str, Outcome], usage: dict[str, tuple[int, int]], ledger_delta: int
) -> tuple[dict[str, int], list[str]]:
    """Nothing lost, nothing billed twice: the answers clients got against the usage events
    ({key: (events, price_fen)}) and the ledger's net debits over the load."""
    lost = [k for k in answered if k not in usage]
    twice = [k for k, (count, _) in usage.items() if count != 1]
    unanswered = [k for k in usage if k not in answered]
    charged = sum(o.charged_fen for o in answered.values())
    usage_fen = sum(price for _, price in usage.values())
    events = sum(count for count, _ in usage.values())
    figures = {
        "usage_events": events,
        "keys_with_usage": len(usage),
        "lost": len(lost),
        "billed_twice": len(twice),
        "billed_unanswered": len(unanswered),
        "charged_fen_answered": charged,
        "usage_price_fen": usage_fen,
        "ledger_net_fen": ledger_delta,
    }
    violations = []
    if lost:
        violations.append(f"lost: {len(lost)} keys answered 200 have no usage event, e.g. {lost[:3]}")
    if twice:
        violations.append(f"twice: {len(twice)} keys have more than one usage event, e.g. {twice[:3]}")
    if unanswered:
        violations.append(
            f"twice: {len(unanswered)} keys billed but never answered 200, e.g. {unanswered[:3]}"
        )
    if events != len(answered):
        violations.append(f"twice: {events} usage events for {len(answered)} keys answered 200")
    if not (ledger_delta == charged == usage_fen):
        violations.append(
            f"ledger: net debits {ledger_delta} fen, answered charges {charged} fen, usage {usage_fen} fen"
        )
    return figures, violations


def run(args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {"health_path": args.health_path, "violations": []}
    violations: list[str] = summary["violations"]
    with workspace(args.workdir, args.keep) as workdir:
        topo = Topology(workdir, args.health_path, args.datazone)
        summary["workdir"] = str(workdir)
        try:
            started = time.monotonic()
            topo.start_postgres()
            topo.run_datazone("migrate", "migrate")
            topo.run_datazone("seed", "demo", "--entities", str(args.entities), "--no-serve")
            demo = json.loads((workdir / "seed" / "demo.json").read_text())
            for name in topo.gateway_ports:
                topo.start_gateway(name)
            topo.start_background()
            for name in topo.gateway_ports:
                topo.wait_gateway(name)
            topo.start_haproxy(args.haproxy)
            for name in topo.gateway_ports:
                if topo.wait_status(name, "UP", 30) is None:
                    raise TopologyError(f"haproxy never marked {name} up: {tail(topo.logs / 'haproxy.log')}")
            summary["startup_seconds"] = round(time.monotonic() - started, 1)

            token_resp = httpx.post(
                f"{topo.lb_url}/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(demo["client_id"], demo["client_secret"]),
                timeout=15,
            )
            if token_resp.status_code != 200:
                raise TopologyError(
                    f"no token through the balancer: {token_resp.status_code} {token_resp.text}"
                )
            token = token_resp.json()["access_token"]

            with psycopg.connect(topo.database_url) as conn:
                row = conn.execute(
                    "SELECT id FROM principal WHERE name = %s", (demo["institution"],)
                ).fetchone()
                assert row is not None
                bank_id = int(row[0])
                ledger_before = ledger_net(conn, bank_id)

            load = Load(topo.lb_url, token, demo["consented_usccs"], args.product, args.concurrency)
            t0 = time.monotonic()
            load.start()
            time.sleep(args.kill_after)
            victim = topo.procs["gw1"]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            t_kill = time.monotonic()
            t_down = topo.wait_status("gw1", "DOWN", 10)
            time.sleep(max(0.0, args.down_seconds - (time.monotonic() - t_kill)))
            topo.start_gateway("gw1")
            t_restart = time.monotonic()
            t_up = topo.wait_status("gw1", "UP", 90)
            # keep the load on for the planned time, and at least a few seconds after the rejoin
            end = max(t0 + args.seconds, (t_up or time.monotonic()) + args.after_rejoin)
            time.sleep(max(0.0, end - time.monotonic()))
            load.join()
            t_end = time.monotonic()
            outcomes = load.outcomes
            stats = topo.server_status()

            answered = {o.key: o for o in outcomes if o.status == 200}
            failed = [o for o in outcomes if o.status != 200]
            during_outage = [o for o in answered.values() if t_kill <= o.finished_at <= (t_up or t_end)]
            served_after_rejoin = Counter(
                o.served_by for o in answered.values() if t_up is not None and o.finished_at > t_up
            )
            summary.update(
                {
                    "load_seconds": round(t_end - t0, 1),
                    "concurrency": args.concurrency,
                    "calls": len(outcomes),
                    "answered_200": len(answered),
                    "failed": len(failed),
                    "retried_keys": sum(1 for o in outcomes if o.attempts > 1),
                    "transient_errors": dict(Counter(t for o in outcomes for t in o.transient)),
                    "replayed_answers": sum(1 for o in answered.values() if o.replayed),
                    "served_by": dict(Counter(o.served_by for o in answered.values())),
                    "killed": "gw1",
                    "killed_at_s": round(t_kill - t0, 1),
                    "marked_down_after_s": round(t_down - t_kill, 2) if t_down else None,
                    "restarted_at_s": round(t_restart - t0, 1),
                    "rejoined_at_s": round(t_up - t0, 1) if t_up else None,
                    "answered_during_outage": len(during_outage),
                    "served_after_rejoin": dict(served_after_rejoin),
                    # the balancer's own account: sessions, retries and redispatches of cut requests
                    "haproxy": {
                        name: {k: row[k] for k in ("status", "stot", "wretr", "wredis", "econ", "eresp")}
                        for name, row in stats.items()
                    },
                }
            )
            for o in failed[:5]:
                violations.append(f"failover: key {o.key} ended {o.status}: {o.error}")
            if failed:
                violations.append(f"failover: {len(failed)} of {len(outcomes)} calls not answered 200")
            if not during_outage:
                violations.append("failover: no call was answered while gw1 was down")
            if t_down is None:
                violations.append("failover: haproxy never marked the killed replica down")
            if t_up is None:
                violations.append("rejoin: haproxy never marked the restarted replica up")
            elif served_after_rejoin.get("gw1", 0) == 0:
                violations.append("rejoin: no call was routed to the restarted replica")

            with psycopg.connect(topo.database_url) as conn:
                usage = {
                    key: (int(count), int(price))
                    for key, count, price in conn.execute(
                        "SELECT idempotency_key, count(*), sum(price_fen) FROM usage_event"
                        " WHERE institution_id = %s AND idempotency_key LIKE %s GROUP BY idempotency_key",
                        (bank_id, KEY_PREFIX + "%"),
                    )
                }
                ledger_delta = ledger_net(conn, bank_id) - ledger_before
                sealed_at = None
                seal_deadline = time.monotonic() + 30
                while time.monotonic() < seal_deadline:
                    row = conn.execute(
                        "SELECT count(*) FROM audit_entry WHERE block_height IS NULL"
                    ).fetchone()
                    conn.commit()
                    if row is not None and row[0] == 0:
                        sealed_at = time.monotonic()
                        break
                    time.sleep(0.5)
                blocks = conn.execute("SELECT count(*) FROM audit_block").fetchone()

            figures, found = billing_check(answered, usage, ledger_delta)
            summary.update(figures)
            violations.extend(found)
            if figures["charged_fen_answered"] == 0:
                violations.append(f"ledger: nothing was charged; is {args.product} a paid product?")
            summary["audit_blocks"] = int(blocks[0]) if blocks else 0
            summary["audit_all_sealed"] = sealed_at is not None
            if sealed_at is None:
                violations.append(
                    "sealed: audit entries still unsealed 30 s after the load (is the scheduler sealing?)"
                )
            for name in ("scheduler", "worker", "gw2"):
                if topo.procs[name].poll() is not None:
                    violations.append(f"{name} exited with {topo.procs[name].returncode} during the run")
        except TopologyError as exc:
            summary["error"] = str(exc)
        except Exception as exc:  # report what broke, with the logs, rather than a bare traceback
            summary["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            topo.stop()
            if "error" in summary:
                summary["logs"] = {p.stem: tail(p, 1500) for p in sorted(topo.logs.glob("*.log"))}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--health-path", default="/readyz", help="the replicas' readiness probe (default /readyz)"
    )
    parser.add_argument("--seconds", type=float, default=20, help="planned load time (default 20)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kill-after", type=float, default=5, help="seconds into the load gw1 is SIGKILLed")
    parser.add_argument("--down-seconds", type=float, default=3, help="how long gw1 stays down")
    parser.add_argument("--after-rejoin", type=float, default=4, help="least load time after gw1 rejoins")
    parser.add_argument("--entities", type=int, default=1000, help="enterprises in the seeded demo zone")
    parser.add_argument("--product", default="risk-insight", help="the paid product the load calls")
    parser.add_argument("--haproxy", default="haproxy")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--summary", type=Path, help="also write the summary as JSON here")
    parser.add_argument(
        "--datazone",
        nargs="+",
        default=[sys.executable, "-m", "datazone"],
        help="how to run the datazone command",
    )
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, a supervisor) unwinds like Ctrl-C: every process started is stopped,
    # the PostgreSQL cluster included, rather than left running
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    summary = run(args)
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.summary:
        args.summary.write_text(text)
    if "error" in summary:
        print(f"topology did not start: {summary['error']}", file=sys.stderr)
        return 2
    if summary["violations"]:
        print("VIOLATIONS:\n  " + "\n  ".join(summary["violations"]), file=sys.stderr)
        return 1
    print(
        f"ok: {summary['answered_200']} calls answered through the balancer, gw1 killed at "
        f"{summary['killed_at_s']} s and back at {summary['rejoined_at_s']} s, {summary['usage_events']} usage "
        f"events, {summary['ledger_net_fen']} fen billed once",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
