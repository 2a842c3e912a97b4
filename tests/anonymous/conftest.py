"""The anonymous-query tests' zone: the synthetic zone (2,000 enterprises) served by a real gateway
on loopback, test products with k = 100 (so the buckets are a few bits long), institutions of
their own (contract, plan, grants, OAuth client) and the zone's lists read from its tables (the
plaintext truth)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from datazone.anonymous import worker
from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import service as oauth_service
from datazone.privacy import anonymous_query as aq
from tests.conftest import Server, column, synthetic_zone_settings
from tests.factories import bearer, make_uscc, new_principal

PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"
NOW = datetime.now(UTC)
YEAR = timedelta(days=365)
# test products: the shipped ones with k = 100, so 2,000 enterprises give buckets of a few bits
DEBTORS = "anon-debtors-k100"
CREDIT = "anon-credit-k100"
K = 100


@dataclass
class Institution:
    id: int
    token: dict[str, str]  # product-API access token headers
    grants: dict[str, str]  # department -> grant id


@dataclass
class Zone:
    db: Database
    settings: Settings
    url: str
    log: Path  # the gateway's log
    operator: dict[str, str]
    departments: dict[str, dict[str, str]]  # supplier id -> bearer header of its department principal
    registered: list[str]  # enterprises with a current registration record
    listed: list[str]  # enterprises on the dishonest-debtor list
    unlisted: list[str]  # registered enterprises not on the list

    def strangers(self, n: int) -> list[str]:
        """Valid codes of enterprises the zone does not hold."""
        known = set(self.registered) | set(self.listed)
        return [c for c in (make_uscc(800_000 + i) for i in range(2 * n + 10)) if c not in known][:n]

    def build(self) -> list[str]:
        """One worker pass of the anonymous domain, as `datazone worker` runs it."""
        return worker.run_once(self.db, self.settings, worker_name="test")

    def institution(
        self,
        products: list[str],
        *,
        clearance: int = 2,
        purposes: tuple[str, ...] = ("pre_loan", "anti_fraud"),
        plan: dict[str, Any] | None = None,
    ) -> Institution:
        """A new institution with a contract for `products` (and a private plan if given), grants
        from every department concerned naming it, and an access token for its products."""
        inst_id, _ = new_principal(self.db, "institution")
        window = {"valid_from": (NOW - timedelta(days=1)).isoformat(), "valid_to": (NOW + YEAR).isoformat()}
        grants: dict[str, str] = {}
        with httpx.Client(base_url=self.url, timeout=30) as c:
            terms: dict[str, Any] = {}
            if plan is not None:
                plan_id = f"plan-{secrets.token_hex(4)}"
                r = c.post("/v1/plans", headers=self.operator,
                           json={"id": plan_id, "name": "negotiated", "institution_id": inst_id, **plan})
                assert r.status_code == 201, r.text
                terms["plan_id"] = plan_id
            r = c.post(
                "/v1/contracts",
                headers=self.operator,
                json={"institution_id": inst_id, "purposes": list(purposes), "products": products,
                      "clearance": clearance, **terms, **window},
            )
            assert r.status_code == 201, r.text
            owners = self._owners()
            wanted: dict[str, set[str]] = {}
            for product in products:
                for ds in c.get(f"/v1/catalog/products/{product}", headers=self.operator).json()["datasets"]:
                    wanted.setdefault(owners[ds], set()).add(ds)
            for dept, datasets in wanted.items():
                r = c.post(
                    "/v1/grants",
                    headers=self.departments[dept],
                    json={"datasets": sorted(datasets), "purposes": list(purposes), "products": None,
                          "institutions": [inst_id], **window},
                )
                assert r.status_code == 201, r.text
                grants[dept] = r.json()["id"]
        with self.db.unit_of_work() as s:
            client, secret = oauth_service.create_client(s, institution_id=inst_id, name="loan-app", by_name="test")
            client_id = client.client_id
        assert secret is not None
        r = httpx.post(f"{self.url}/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret), timeout=30)
        assert r.status_code == 200, r.text
        return Institution(inst_id, bearer(r.json()["access_token"]), grants)

    def _owners(self) -> dict[str, str]:
        with self.db.engine.connect() as conn:
            return {ds: owner for ds, owner in conn.execute(sa.text("SELECT id, supplier_id FROM dataset")).all()}


def anonymous_product(source: str, product_id: str, **anonymous: Any) -> dict[str, Any]:
    """A shipped anonymous product's spec under another id, its `anonymous` block changed."""
    spec: dict[str, Any] = yaml.safe_load((PRODUCTS_DIR / f"{source}.yaml").read_text(encoding="utf-8"))
    spec["id"] = product_id
    spec["anonymous"] = {**spec["anonymous"], **anonymous}
    return spec


def put_product(zone: Zone, spec: dict[str, Any], *, publish: bool = True) -> httpx.Response:
    with httpx.Client(base_url=zone.url, headers=zone.operator, timeout=60) as c:
        r = c.put(f"/v1/products/{spec['id']}", json=spec)
        if r.status_code in (200, 201) and publish and r.json()["product"]["state"] == "draft":
            published = c.post(f"/v1/products/{spec['id']}/publish", json={"reason": "anonymous-query test"})
            assert published.status_code == 200, published.text
        return r


@pytest.fixture(scope="module")
def zone(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Zone]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "anonymous")
    server = Server(settings)
    server.wait_ready()
    with db.engine.connect() as conn:
        suppliers = list(conn.execute(sa.text("SELECT DISTINCT supplier_id FROM dataset")).scalars())
    registered = column(db, "SELECT DISTINCT uscc FROM zone.mr_registration WHERE _vto IS NULL ORDER BY uscc")
    listed = column(db, "SELECT DISTINCT uscc FROM zone.court_dishonest WHERE _vto IS NULL ORDER BY uscc")
    zone = Zone(
        db=db,
        settings=settings,
        url=server.url,
        log=server.log,
        operator=bearer(new_principal(db, "operator")[1]),
        departments={sid: bearer(new_principal(db, "department", supplier_id=sid)[1]) for sid in suppliers},
        registered=registered,
        listed=listed,
        unlisted=sorted(set(registered) - set(listed)),
    )
    try:
        for spec in (
            anonymous_product("dishonest-debtor-anonymous", DEBTORS, k=K, max_queries=5),
            anonymous_product("credit-basic-anonymous", CREDIT, k=K, max_queries=20),
        ):
            r = put_product(zone, spec)
            assert r.status_code in (200, 201), r.text
        built = zone.build()
        assert not [b for b in built if b.startswith("failed:")], built
        # the synthetic zone is big enough that k = 100 means several bits of prefix
        assert aq.choose_prefix_bits(registered, K).prefix_bits >= 2
        yield zone
    finally:
        server.stop()
