"""deploy/'s files agree with each other and with the tools that run them.

The compose file cannot run here (no container engine), so its wiring is checked as data: the
roles it starts exist in the image's entrypoint, every datazone service shares the signing-key
secret and issuer, sealing is left to the scheduler, and the balancer runs the HAProxy file the
loopback topology test runs. HAProxy parses that file with compose's and systemd's values, and
systemd-analyze verifies the units.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DATAZONE_SERVICES = ("migrate", "gateway-1", "gateway-2", "scheduler", "worker")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def entrypoint_roles() -> set[str]:
    text = (DEPLOY / "container" / "entrypoint.sh").read_text()
    return set(re.findall(r"^\s+(\w+)\)\s+exec", text, flags=re.MULTILINE))


def test_compose_starts_the_topology_with_shared_secrets() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "lb", *DATAZONE_SERVICES}
    roles = entrypoint_roles()
    assert roles == {"gateway", "scheduler", "worker", "migrate"}
    env = {name: services[name]["environment"] for name in DATAZONE_SERVICES}
    for name in DATAZONE_SERVICES:
        assert services[name]["command"][0] in roles
        assert services[name]["build"]["dockerfile"] == "deploy/Containerfile"
        # one secret and one issuer for all: tokens one replica signs, another verifies
        assert env[name]["DATAZONE_SIGNING_KEY_SECRET"] == env["gateway-1"]["DATAZONE_SIGNING_KEY_SECRET"]
        assert env[name]["DATAZONE_OAUTH_ISSUER"] == env["gateway-1"]["DATAZONE_OAUTH_ISSUER"]
        assert env[name]["DATAZONE_SIGNING_KEY_SECRET"].startswith("${DATAZONE_SIGNING_KEY_SECRET:?")
        # the gateway names the engine link's address and the worker binds it: the same for both
        assert env[name]["DATAZONE_PSI_LINK_HOST"] == env["worker"]["DATAZONE_PSI_LINK_HOST"]
        assert env[name]["DATAZONE_PSI_LINK_PORTS"] == env["worker"]["DATAZONE_PSI_LINK_PORTS"]
    assert (
        env["gateway-1"]["DATAZONE_AUDIT_SEAL_SECONDS"]
        == env["gateway-2"]["DATAZONE_AUDIT_SEAL_SECONDS"]
        == "0"
    )
    assert "DATAZONE_AUDIT_SEAL_SECONDS" not in env["scheduler"]  # the scheduler seals
    assert services["gateway-1"]["volumes"] != services["gateway-2"]["volumes"]  # a home each
    assert services["worker"]["network_mode"] == "host"
    assert "@127.0.0.1:5432/" in env["worker"]["DATAZONE_DATABASE_URL"]
    assert "127.0.0.1:5432:5432" in services["postgres"]["ports"]


def test_compose_balancer_runs_the_tested_haproxy_file() -> None:
    services = compose()["services"]
    lb = services["lb"]
    assert "./haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert (DEPLOY / "haproxy" / "haproxy.cfg").is_file()
    assert lb["environment"]["DATAZONE_HEALTH_PATH"] == "/readyz"
    for n in (1, 2):
        host, port = lb["environment"][f"DATAZONE_GATEWAY_{n}"].split(":")
        assert host in services and port == "8000"
    assert "/readyz" in " ".join(services["gateway-1"]["healthcheck"]["test"])


def haproxy_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    return subprocess.run(
        [binary, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("where", ["compose", "systemd"])
def test_haproxy_accepts_the_configuration(where: str) -> None:
    if where == "compose":
        env = {k: str(v) for k, v in compose()["services"]["lb"]["environment"].items()}
        # compose resolves the replicas' names in its network; outside it, resolvable stand-ins
        env.update({k: "localhost:8000" for k in env if k.startswith("DATAZONE_GATEWAY_")})
    else:
        dropin = (DEPLOY / "systemd" / "haproxy.service.d" / "datazone.conf").read_text()
        env = dict(re.findall(r"^Environment=(\w+)=(\S+)$", dropin, flags=re.MULTILINE))
        assert env["DATAZONE_LB_USER"] == "haproxy"
    assert env["DATAZONE_HEALTH_PATH"] == "/readyz"
    run = haproxy_check(env)
    assert run.returncode == 0, run.stdout + run.stderr


def test_haproxy_refuses_to_start_without_its_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing variable is an error at start-up, not a balancer bound to nothing."""
    env = {"DATAZONE_LB_BIND": "127.0.0.1:18000", "DATAZONE_LB_STATS_BIND": "127.0.0.1:18404"}
    env.update({"DATAZONE_GATEWAY_1": "127.0.0.1:1", "DATAZONE_HEALTH_PATH": "/readyz"})
    monkeypatch.delenv("DATAZONE_GATEWAY_2", raising=False)
    run = haproxy_check(env)  # DATAZONE_GATEWAY_2 unset
    assert run.returncode != 0
    assert "'server' expects <name> and <addr>" in run.stdout + run.stderr


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not Path("/lib/systemd/system/sysinit.target").exists():
        pytest.skip("systemd-analyze and systemd's units are needed")
    # a root of its own: the host's systemd units, ours, and the command they start
    shutil.copytree("/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    units = tmp_path / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (DEPLOY / "systemd").glob("*.service"):
        shutil.copy(unit, units)
    command = tmp_path / "opt/datazone/venv/bin/datazone"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    names = ["datazone-gateway@8001.service", "datazone-scheduler.service", "datazone-worker.service"]
    run = subprocess.run(
        [analyze, "verify", f"--root={tmp_path}", *names],
        cwd=units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stderr == "" and run.stdout == "", run.stdout + run.stderr
    gateway = (DEPLOY / "systemd" / "datazone-gateway@.service").read_text()
    assert "--port %i" in gateway and "DATAZONE_AUDIT_SEAL_SECONDS=0" in gateway
    for name in ("datazone-gateway@.service", "datazone-scheduler.service", "datazone-worker.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        for option in (
            "User=datazone",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
        ):
            assert option in text, f"{name} lacks {option!r}"


class _Replica(http.server.BaseHTTPRequestHandler):
    """A stand-in replica: ready on the probe; `dies` ones close every other request unanswered,
    as a replica SIGKILLed mid-request does."""

    dies = False

    def do_GET(self) -> None:
        if self.path == "/readyz" or not self.dies:
            body = self.server.server_address[1].to_bytes(4, "big").hex().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.close_connection = True  # nothing sent: HAProxy sees an empty response

    def log_message(self, *args: Any) -> None:
        pass


class _DyingReplica(_Replica):
    dies = True


def test_haproxy_resends_a_cut_request_only_when_it_carries_an_idempotency_key() -> None:
    """A request cut mid-way may have been committed: HAProxy re-sends it to the other replica only
    with an Idempotency-Key (the gateway answers a key once); without one the client sees 502
    rather than a second bill."""
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    dying = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DyingReplica)
    healthy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    for server in (dying, healthy):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        lb_port, stats_port = a.getsockname()[1], b.getsockname()[1]
    env = {
        **os.environ,
        "DATAZONE_LB_BIND": f"127.0.0.1:{lb_port}",
        "DATAZONE_LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        "DATAZONE_GATEWAY_1": f"127.0.0.1:{dying.server_address[1]}",
        "DATAZONE_GATEWAY_2": f"127.0.0.1:{healthy.server_address[1]}",
        "DATAZONE_HEALTH_PATH": "/readyz",
    }
    lb = subprocess.Popen(
        [binary, "-db", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                stats = httpx.get(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=1).text
                if stats.count(",UP,") >= 2:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("haproxy never marked both stand-ins up")
        with httpx.Client(base_url=f"http://127.0.0.1:{lb_port}", timeout=5) as client:
            keyed = [client.get("/v1/x", headers={"Idempotency-Key": f"k{i}"}) for i in range(8)]
            unkeyed = [client.get("/v1/x") for _ in range(8)]
        healthy_name = healthy.server_address[1].to_bytes(4, "big").hex()
        assert [r.status_code for r in keyed] == [200] * 8
        assert {r.text for r in keyed} == {healthy_name}
        assert {r.headers["x-served-by"] for r in keyed} == {"gw2"}
        statuses = [r.status_code for r in unkeyed]
        assert 502 in statuses and set(statuses) <= {200, 502}
    finally:
        lb.terminate()
        lb.wait(10)
        dying.shutdown()
        healthy.shutdown()
