"""A stand-in for the gateway's PSI routes, for the SDK's own tests.

It follows the HTTP contract of `/v1/psi/sessions` and `/v1/psi/jobs` (issue 5) with the
REAL privacy code on the zone's side (`privacy.openmined.server_setup/process_request`,
`privacy.labels.seal_labels` over `privacy.oprf.direct`, the engine's `run_zone_side`), over
a zone slice the test chooses, so an intersection the SDK computes can be compared with the
plaintext one. What it does not do is the gateway's authorization, metering and audit:
those are the real gateway's, tested there.

It records every request's raw bytes (to prove no USCC or hash of one leaves the bank),
can build its setup slowly (503 `psi-setup-building` with Retry-After), and can lose the
answer to a chosen request after doing the work, then refuse connections until `up()`,
which is what a dropped connection or a killed process looks like to the SDK.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from datazone.privacy import labels, openmined, oprf
from datazone.purposes import Purpose
from tests.client.fake_gateway import FakeGateway, Seen, problem

SESSION_PATH = re.compile(r"/v1/psi/sessions/(?P<id>[^/]+)(?:/(?P<part>setup|labels|chunks/(?P<index>\d+)))?")
JOB_PATH = re.compile(r"/v1/psi/jobs/(?P<id>[^/]+)")


@dataclass(frozen=True)
class PsiProduct:
    id: str
    result: str = "intersection"  # or "size"
    labeled: bool = False  # whether the product has label fields
    min_set: int = 100
    max_set: int = 1_000_000
    price_fen: int = 500


@dataclass(frozen=True)
class Raw:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PsiGateway(FakeGateway):
    zone_slice: list[str] = field(default_factory=list)
    zone_labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, PsiProduct] = field(default_factory=dict)
    max_chunk_items: int = 64
    setup_building: int = 0  # answer 503 psi-setup-building this many times first
    key: bytes = field(default_factory=oprf.new_zone_key)
    # lose the answer to the first request matching (method, path) after doing its work, then go down
    drop: tuple[str, str] | None = None
    down: bool = False
    raw: list[Raw] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunks: dict[tuple[str, int], tuple[bytes, bytes]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    setups: dict[tuple[str, int], bytes] = field(default_factory=dict)
    label_table: bytes | None = None
    workdir: Path | None = None  # where engine jobs keep the zone's files
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def up(self) -> None:
        self.down = False
        self.drop = None

    def psi_requests(self) -> list[Raw]:
        return [r for r in self.raw if "/v1/psi/" in r.url]

    def puts(self) -> list[tuple[int, bytes]]:
        """(chunk index, body) of every chunk PUT, in order."""
        found = []
        for r in self.psi_requests():
            m = SESSION_PATH.search(r.url)
            if r.method == "PUT" and m and m["index"] is not None:
                found.append((int(m["index"]), r.content))
        return found

    # -- the transport ---------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        with self.lock:
            if self.down:
                raise httpx.ConnectError("connection refused", request=request)
            self.raw.append(Raw(request.method, str(request.url), dict(request.headers), content))
        if not request.url.path.startswith("/v1/psi/"):
            return super().handle(request)
        with self.lock:
            self.seen.append(Seen(request.method, request.url.path, request.headers, None))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens_issued or token in self.revoked:
            return problem(401, "invalid-token", "the access token was revoked")
        resp = self.psi(request, content)
        with self.lock:
            if self.drop == (request.method, request.url.path):
                # the work is done (and would be billed); the bank never sees the answer
                self.down = True
                raise httpx.ReadError("connection reset by peer", request=request)
        return resp

    def psi(self, request: httpx.Request, content: bytes) -> httpx.Response:
        path = request.url.path
        if path == "/v1/psi/sessions" and request.method == "POST":
            return self.idempotently(request, content, self.create_session)
        if path == "/v1/psi/jobs" and request.method == "POST":
            return self.idempotently(request, content, self.create_job)
        if m := SESSION_PATH.fullmatch(path):
            session = self.sessions.get(m["id"])
            if session is None:
                return problem(404, "not-found", f"no PSI session {m['id']}")
            if m["part"] is None and request.method == "GET":
                return httpx.Response(200, json=self.session_view(session))
            if m["part"] == "setup" and request.method == "GET":
                return self.setup(session)
            if m["part"] == "labels" and request.method == "GET":
                return self.labels(session)
            if m["index"] is not None and request.method == "PUT":
                return self.chunk(session, int(m["index"]), request, content)
        if (m := JOB_PATH.fullmatch(path)) and request.method == "GET":
            job = self.jobs.get(m["id"])
            if job is None:
                return problem(404, "not-found", f"no PSI job {m['id']}")
            return httpx.Response(200, json=self.job_view(job))
        return problem(404, "not-found", f"{request.method} {path}")

    def idempotently(self, request: httpx.Request, content: bytes, create: Any) -> httpx.Response:
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self.idempotent:
            body, answered = self.idempotent[key]
            if body != content:
                return problem(422, "idempotency-key-reused", "the key was used for another request")
            return httpx.Response(201, json=json.loads(answered))
        resp: httpx.Response = create(json.loads(content))
        if key is not None and resp.status_code == 201:
            self.idempotent[key] = (content, resp.content.decode())
        return resp

    # -- sessions --------------------------------------------------------------------------

    def refuse_request(self, body: dict[str, Any]) -> tuple[PsiProduct | None, httpx.Response | None]:
        errors = []
        product = self.products.get(str(body.get("product")))
        if product is None:
            return None, problem(404, "not-found", f"no PSI product {body.get('product')!r}")
        if body.get("purpose") not in {p.value for p in Purpose}:
            errors.append({"location": "purpose", "problem": "unknown purpose"})
        size = body.get("set_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            errors.append({"location": "set_size", "problem": "a positive integer"})
        if errors:
            return None, problem(422, "invalid-spec", "fix the fields listed", errors=errors)
        assert isinstance(size, int)
        if size < product.min_set:
            return None, problem(
                422,
                "psi-set-below-floor",
                f"a set of {size} would tell the zone too much about the institution's interest;"
                f" send at least {product.min_set}",
                check="psi-floor",
                min_set=product.min_set,
            )
        if size > product.max_set:
            return None, problem(
                422,
                "psi-set-over-limit",
                f"the contract allows sets of at most {product.max_set}",
                check="psi-limit",
                max_set=product.max_set,
            )
        return product, None

    def create_session(self, body: dict[str, Any]) -> httpx.Response:
        product, refusal = self.refuse_request(body)
        if refusal is not None:
            return refusal
        assert product is not None
        labeled = bool(body.get("labeled"))
        if labeled and not product.labeled:
            return problem(422, "psi-not-labeled", f"{product.id} has no label fields")
        sid = f"ps_{next(self.ids)}"
        base = f"/v1/psi/sessions/{sid}"
        session = {
            "session_id": sid,
            "product": product.id,
            "purpose": body["purpose"],
            "epoch": 1,
            "slice": f"{product.id}@v1",
            "result": product.result,
            "labeled": labeled,
            "set_size": body["set_size"],
            "max_chunk_items": self.max_chunk_items,
            "expires_at": "2099-01-01T00:00:00Z",
            "charged_fen": product.price_fen,
            "setup_url": base + "/setup",
            "labels_url": base + "/labels" if labeled else None,
            "chunks_url": base + "/chunks/{index}",
        }
        self.sessions[sid] = {**session, "chunks_done": [], "items_received": 0, "state": "open"}
        return httpx.Response(201, json=session)

    def session_view(self, session: dict[str, Any]) -> dict[str, Any]:
        return {**session, "chunks_done": sorted(session["chunks_done"])}

    def reveals(self, session: dict[str, Any]) -> bool:
        return bool(session["labeled"]) or session["result"] == "intersection"

    def setup(self, session: dict[str, Any]) -> httpx.Response:
        with self.lock:
            if self.setup_building > 0:
                self.setup_building -= 1
                return self.building()
        cache_key = (session["result"], int(session["set_size"]))
        if cache_key not in self.setups:
            self.setups[cache_key] = openmined.server_setup(
                self.key,
                self.zone_slice,
                reveal_intersection=session["result"] == "intersection",
                max_client_items=int(session["set_size"]),
            )
        return httpx.Response(
            200, content=self.setups[cache_key], headers={"content-type": "application/x-protobuf"}
        )

    def labels(self, session: dict[str, Any]) -> httpx.Response:
        with self.lock:
            if self.setup_building > 0:
                self.setup_building -= 1
                return self.building()
        if self.label_table is None:
            outputs = oprf.direct(self.key, self.zone_slice)
            sealed = [
                json.dumps(self.zone_labels[c], ensure_ascii=False, separators=(",", ":")).encode()
                for c in self.zone_slice
            ]
            self.label_table = labels.seal_labels(outputs, sealed)
        return httpx.Response(
            200, content=self.label_table, headers={"content-type": "application/octet-stream"}
        )

    def building(self) -> httpx.Response:
        resp = problem(503, "psi-setup-building", "the slice's setup is being built; try again")
        resp.headers["Retry-After"] = "0"
        return resp

    def chunk(
        self, session: dict[str, Any], index: int, request: httpx.Request, content: bytes
    ) -> httpx.Response:
        sid = session["session_id"]
        if request.headers.get("content-type") != "application/x-protobuf":
            return problem(415, "unsupported-media-type", "send application/x-protobuf")
        done = self.chunks.get((sid, index))
        if done is not None:
            if done[0] != content:
                return problem(
                    409,
                    "psi-chunk-conflict",
                    f"chunk {index} was sent before with another body; a chunk is sent again only as it was",
                )
            return httpx.Response(200, content=done[1], headers={"content-type": "application/x-protobuf"})
        try:
            parsed = openmined.parse_request(
                content, reveal_intersection=self.reveals(session), max_items=self.max_chunk_items
            )
        except openmined.MalformedRequest as exc:
            return problem(422, "psi-malformed-request", str(exc), positions=exc.indices)
        count = openmined.request_size(parsed)
        if session["items_received"] + count > session["set_size"]:
            return problem(
                422,
                "psi-set-over-limit",
                f"the session was opened for {session['set_size']} items;"
                f" {session['items_received'] + count} would be over it",
            )
        answer = openmined.process_request(self.key, parsed, reveal_intersection=self.reveals(session))
        self.chunks[(sid, index)] = (content, answer)
        session["chunks_done"].append(index)
        session["items_received"] += count
        return httpx.Response(200, content=answer, headers={"content-type": "application/x-protobuf"})

    # -- engine jobs -----------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> httpx.Response:
        from datazone.privacy import engine

        product, refusal = self.refuse_request(body)
        if refusal is not None:
            return refusal
        assert product is not None and self.workdir is not None
        asked = str(body.get("protocol", "auto"))
        if asked != "auto" and asked not in engine.PROTOCOLS:
            return problem(422, "invalid-spec", f"unknown protocol {asked!r}")
        protocol: engine.Protocol = (
            engine.choose_protocol(zone_items=len(self.zone_slice), institution_items=int(body["set_size"]))
            if asked == "auto"
            else cast("engine.Protocol", asked)
        )
        job_id = f"pj_{next(self.ids)}"
        ticket = secrets.token_urlsafe(24)
        jobdir = self.workdir / job_id
        jobdir.mkdir(parents=True)
        items_csv = jobdir / "zone.csv"
        engine.write_items_csv(items_csv, self.zone_slice)
        tls = None
        zone_pem = None
        if body.get("institution_certificate_pem"):
            cert, key = engine.new_link_certificate(jobdir / "tls", common_name="zone")
            peer_ca = jobdir / "tls" / "institution.pem"
            peer_ca.write_text(str(body["institution_certificate_pem"]))
            tls = engine.TlsFiles(certificate=cert, private_key=key, peer_ca=peer_ca)
            zone_pem = cert.read_text()
        zone_address = f"127.0.0.1:{free_port()}"
        link = engine.LinkSpec(
            job_id=job_id,
            zone_address=zone_address,
            institution_address=str(body["peer_address"]),
            connect_timeout_s=20.0,
            recv_timeout_s=30.0,
            tls=tls,
        )
        cache_id = None
        cache: dict[str, Path] = {}
        if protocol == "unbalanced":
            cache_id, cache = self.unbalanced_cache(items_csv)
        process = engine.ZoneSideProcess(
            link=link,
            ticket_sha256=hashlib.sha256(ticket.encode()).digest(),
            protocol=protocol,
            items_csv=items_csv,
            workdir=jobdir / "engine",
            **cache,
        )
        process.start()
        self.jobs[job_id] = {"job_id": job_id, "process": process, "status": "running", "reason": None}
        return httpx.Response(
            201,
            json={
                "job_id": job_id,
                "ticket": ticket,
                "protocol": protocol,
                "zone_address": zone_address,
                "cache_id": cache_id,
                "link_timeout_s": 20,
                "zone_certificate_pem": zone_pem,
                "expires_at": "2099-01-01T00:00:00Z",
                "charged_fen": product.price_fen,
                "result": product.result,
            },
        )

    def unbalanced_cache(self, items_csv: Path) -> tuple[str, dict[str, Path]]:
        """The slice's offline cache, built once (as the zone does per slice version and key epoch)."""
        from datazone.privacy import engine

        assert self.workdir is not None
        cache_dir = self.workdir / "ub-cache"
        key_file = self.workdir / "ub.key"
        if not cache_dir.exists():
            engine.new_unbalanced_key(key_file)
            engine.build_unbalanced_cache(items_csv=items_csv, cache_dir=cache_dir, secret_key_file=key_file)
        record = json.loads((cache_dir / engine.CACHE_RECORD).read_text())
        return str(record["cache_id"]), {"unbalanced_cache": cache_dir, "secret_key_file": key_file}

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        if job["status"] == "running":
            try:
                report = job["process"].wait(timeout=0)
            except Exception as exc:
                job["status"], job["reason"] = "failed", str(exc)
            else:
                if report is not None:
                    job["status"] = "succeeded"
        return {"job_id": job["job_id"], "status": job["status"], "reason": job["reason"]}

    def close(self) -> None:
        for job in self.jobs.values():
            process = job["process"]
            if process.running:
                process.cancel("test over")
