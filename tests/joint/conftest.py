"""The joint tests' zone: the synthetic zone served by a real gateway on loopback, and an
institution of the tests' own with a contract for joint modeling (purpose risk_modeling), every
department's grant, and the consent of CONSENTED enterprises.

Besides the shipped product, the tests publish `joint-modeling-small`: the same features with
bounds small enough for the synthetic zone's 2,000 enterprises (a floor of 200, bins of at
least 10, samples differing by at least 20, at most MAX_JOBS jobs a period)."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from datazone.client.sdk import ZoneClient
from datazone.config import Settings
from datazone.consent import service as consent_service
from datazone.consent.schemas import ConsentIn
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.db import Database
from datazone.joint import worker as joint_worker
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.schemas import ProductSpec
from tests.conftest import SIGNING_KEY_SECRET, Server, synthetic_zone_settings
from tests.factories import bearer, grant_every_department

PRODUCT = "joint-modeling"
SMALL = "joint-modeling-small"
PURPOSE = "risk_modeling"
# what a trained model is registered for and scored under (secure scoring)
SCORING = "secure-credit-score"
SCORING_PURPOSE = "pre_loan"
CONSENTED = 1500
MAX_JOBS = 12
SMALL_BOUNDS = {
    "min_sample": 200,
    "min_bin_count": 10,
    "min_difference": 20,
    "max_jobs": MAX_JOBS,
    "period_days": 30,
    "job_units": 100,
}
PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"


@dataclass
class JointZone:
    db: Database
    settings: Settings
    server: Server
    url: str
    token: dict[str, str]
    client_id: str
    client_secret: str
    operator: dict[str, str]  # the demo operator's key: curator, reviewer, auditor
    institution_id: int
    spec: ProductSpec
    consented: list[str]
    unconsented: list[str]  # registered enterprises the institution holds no consent for
    _next_sample: int = 0

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.token, timeout=120)

    def sample(self, size: int = 300) -> list[str]:
        """A sample no earlier one of the tests is close to: each starts 30 enterprises after the
        last, so any two differ by at least 60 (the small product's floor is 20)."""
        start = self._next_sample
        self._next_sample += 30
        if start + size > len(self.consented):
            raise RuntimeError("the joint tests ran out of consented enterprises")
        return self.consented[start : start + size]

    def sdk(self) -> ZoneClient:
        return ZoneClient(self.url, self.client_id, self.client_secret, timeout=120)

    def plain_features(self, codes: list[str], names: list[str]) -> np.ndarray:
        """The features as the product engine computes them in plaintext today, clamped to the
        product's bounds, `missing` where the zone has no data: the truth the tests compare with."""
        assert self.spec.joint is not None
        offer = {f.name: f for f in self.spec.joint.features}
        today = datetime.now(UTC).astimezone(SHANGHAI).date()
        with self.db.unit_of_work() as s:
            computed = engine.compute(s, spec=self.spec, usccs=codes, as_of=today)
        rows = []
        for code in codes:
            answer = computed.answers.get(code) or {}
            row = []
            for name in names:
                value = answer.get(name)
                value = offer[name].missing if value is None else int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
                row.append(min(max(value, offer[name].min), offer[name].max))
            rows.append(row)
        return np.array(rows, dtype=np.int64)

    @contextmanager
    def worker(self, **settings: Any) -> Iterator[None]:
        """The joint worker running in a thread of this process while the block runs (with these
        settings changed)."""
        stop = threading.Event()
        worker_settings = self.worker_settings().model_copy(update=settings)

        def loop() -> None:
            while not stop.is_set():
                joint_worker.run_once(self.db, worker_settings, worker_name="joint-tests")
                stop.wait(0.2)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(120)

    def traces_of(self, labels: np.ndarray, codes: list[str], received: list[bytes], logged: str) -> list[str]:
        """Where the labels show anywhere the zone keeps or received something: every table of the
        database (each row as text; bytea as hex), the gateway's log, the engine logs, the
        worker's log records (`logged`) and the bodies the gateway received (`received`).
        Returns the places found, none when the zone holds no label."""
        traces = label_traces(labels, codes)
        found: list[str] = []
        # a table's row as text: "(91110...,1,...)" is a column beside a code, not a label, so rows
        # are searched for the runs, the JSON pairs and the bytes (bytea shows as hex)
        in_rows = "|".join(traces.runs + traces.pairs_json + [b.hex() for b in traces.octets])
        with self.db.engine.connect() as conn:
            tables = conn.execute(
                sa.text(
                    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
                    "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            ).scalars().all()
            for table in tables:
                hits = conn.execute(sa.text(f"SELECT count(*) FROM {table} t WHERE t::text ~ :p"), {"p": in_rows}).scalar_one()
                if hits:
                    found.append(f"table {table}: {hits} rows")
        in_text = re.compile("|".join(traces.runs + traces.pairs_json + traces.pairs_csv))
        logs = [self.server.log, *sorted((self.settings.home / "joint" / "logs").glob("*"))]
        texts = {str(path): path.read_text(errors="replace") for path in logs if path.is_file()}
        texts["the worker's log records"] = logged
        for where, text in texts.items():
            if in_text.search(text):
                found.append(where)
        for n, body in enumerate(received):
            if any(o in body for o in traces.octets) or in_text.search(body.decode("latin-1")):
                found.append(f"received body {n}")
        return found

    def worker_settings(self) -> Settings:
        return Settings(
            home=self.settings.home,
            database_url=self.settings.database_url,
            signing_key_secret=SIGNING_KEY_SECRET,
        )


@dataclass(frozen=True)
class LabelTraces:
    """The forms the bank's labels would take if they leaked, as regular expressions that
    PostgreSQL and Python both read, and as bytes. 64 random labels match by chance once in 2^64."""

    runs: list[str]  # 64 labels joined as a program would print them (never bare "0100...", which
    # a hex dump of 0/1 bytes could spell by chance)
    pairs_json: list[str]  # the first 20 positive enterprises beside their label, as JSON has it
    pairs_csv: list[str]  # ... and as a CSV line or a log line would
    octets: list[bytes]  # 64 labels as 8-bit, 64-bit and float64 values, and the labels bit-packed


def label_traces(labels: np.ndarray, codes: list[str]) -> LabelTraces:
    run = [str(int(v)) for v in labels[:64]]
    positives = [c for c, y in zip(codes, labels, strict=True) if y == 1][:20]
    head = labels[:64]
    return LabelTraces(
        runs=[re.escape(sep.join(run)) for sep in (",", ", ", " ", ";", "|")],
        # a row's text doubles the quotes of a JSON column: "{""code"": 1}"
        pairs_json=[f'{c}"{{1,2}} *: *"{{0,2}}1(?![0-9])' for c in positives],
        pairs_csv=[f"{c}[,;:\t ]+1(?![0-9A-Za-z,])" for c in positives],
        octets=[
            head.astype(np.int8).tobytes(),
            head.astype(np.int64).tobytes(),
            head.astype(np.float64).tobytes(),
            np.packbits(labels.astype(np.uint8)).tobytes()[:8],
        ],
    )


def _small_spec() -> ProductSpec:
    doc = yaml.safe_load((PRODUCTS_DIR / f"{PRODUCT}.yaml").read_text(encoding="utf-8"))
    doc["id"], doc["name"] = SMALL, "企业联合建模（测试）"
    doc["joint"].update(SMALL_BOUNDS)
    return product_service.parse_product_spec(doc, origin="tests/joint")


@pytest.fixture(scope="module")
def joint_zone(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JointZone]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "joint")
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=365)
    tag = secrets.token_hex(3)
    with db.unit_of_work() as s:
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        product, _ = product_service.apply_product(s, spec=_small_spec(), by=operator, origin="tests/joint")
        if product.state == "draft":
            product_service.publish_product(s, product_id=SMALL, by=operator, reason="the joint tests' product")
        spec = product_service.spec_of(product_service.get_product(s, product_id=SMALL))
        bank = principal_service.create_principal(s, kind="institution", name=f"joint-bank-{tag}")
        institution_id = bank.id
        contract_service.create_contract(
            s,
            institution_id=bank.id,
            purposes=[PURPOSE, SCORING_PURPOSE],
            products=[PRODUCT, SMALL, SCORING],
            clearance=2,
            valid_from=start,
            valid_to=end,
            by=operator,
        )
        grant_every_department(
            s,
            spec=spec,
            institution_id=institution_id,
            purposes=[PURPOSE, SCORING_PURPOSE],
            products=[PRODUCT, SMALL, SCORING],
            valid_from=start,
            valid_to=end,
        )
        client, secret = oauth_service.create_client(s, institution_id=bank.id, name="joint tests", by_name="tests")
        client_id = client.client_id
        registered = dataset_service.current_entities(s, dataset_id="mr_registration", limit=CONSENTED + 50)
    consented, unconsented = registered[:CONSENTED], registered[CONSENTED:]
    for at in range(0, len(consented), 500):
        with db.unit_of_work() as s:
            bank = principal_service.get_principal(s, principal_id=institution_id)
            consent_service.register_consents(
                s,
                institution=bank,
                items=[
                    ConsentIn(
                        uscc=code,
                        purpose=purpose,
                        products=None,
                        valid_from=start,
                        valid_to=end,
                        evidence_ref=f"test://consents/{code}.pdf",
                        evidence_sha256=hashlib.sha256(code.encode()).hexdigest(),
                    )
                    for code in consented[at : at + 500]
                    for purpose in (PURPOSE, SCORING_PURPOSE)
                ],
            )
    server = Server(settings)
    server.wait_ready()
    r = httpx.post(
        f"{server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""), timeout=30
    )
    assert r.status_code == 200, r.text
    assert f"product:{SMALL}" in r.json()["scope"].split()
    try:
        yield JointZone(
            db=db,
            settings=settings,
            server=server,
            url=server.url,
            token=bearer(r.json()["access_token"]),
            client_id=client_id,
            client_secret=secret or "",
            operator=bearer(synthetic_zone["operator_token"]),
            institution_id=institution_id,
            spec=spec,
            consented=consented,
            unconsented=unconsented,
        )
    finally:
        server.stop()
        # jobs nobody will join must not hold up a later test's worker (it claims any queued job)
        with db.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE joint_job SET status = 'expired', reason = 'the tests ended', finished_at = now() "
                    "WHERE institution_id = :i AND status IN ('receiving', 'queued')"
                ),
                {"i": institution_id},
            )
