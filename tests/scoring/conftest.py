"""The scoring tests' zone: the synthetic zone served by a real gateway on loopback, and an
institution of the tests' own (its contract, grants, consents and OAuth client), so its caps,
quotas and grant revocations touch no other module's institution.

The institution holds every department's grant for pre_loan and post_loan, except the
intellectual-property department's, which covers post_loan only: a pre_loan model that weighs
patents is one its grants do not cover (the token's scope still holds, through post_loan).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.consent import service as consent_service
from datazone.consent.schemas import ConsentIn
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.schemas import ProductSpec
from tests.conftest import SIGNING_KEY_SECRET, Server, synthetic_zone_settings
from tests.factories import bearer, make_uscc

PRODUCT = "secure-credit-score"
PURPOSES = ["pre_loan", "post_loan"]
# the department whose grant covers post_loan only
PARTIAL_DEPARTMENT = "intellectual-property"
# the tests' contract lets a job hold at most this many enterprises
MAX_BATCH = 400
# enterprises per job chunk, on the tests' gateway
CHUNK = 50
# enterprises the tests' institution holds consents for (handed out to tests, never twice)
CONSENTED = 1500


@dataclass
class ScoringZone:
    db: Database
    settings: Settings
    server: Server
    url: str
    token: dict[str, str]
    operator: dict[str, str]  # the demo operator's key: curator, reviewer, auditor
    institution_id: int
    institution_name: str
    spec: ProductSpec
    bounds: dict[str, circuits.FeatureBounds]
    public: paillier.PublicKey
    private: paillier.PrivateKey
    drop_dir: Path
    outsiders: list[str]  # valid codes of enterprises not in the zone
    _free: list[str] = field(default_factory=list)

    def take(self, n: int) -> list[str]:
        """n registered enterprises no other test of the module scores (caps count per enterprise)."""
        if n > len(self._free):
            raise RuntimeError(f"only {len(self._free)} consented enterprises left for the scoring tests")
        taken, self._free[:] = self._free[:n], self._free[n:]
        return taken

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.token, timeout=120)

    def worker_settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": self.settings.home,
            "database_url": self.settings.database_url,
            "drop_dir": self.drop_dir,
            "signing_key_secret": SIGNING_KEY_SECRET,
            "scoring_factor_pool": 8,
            "scoring_processes": 2,
        }
        values.update(overrides)
        return Settings(**values)

    def features(self, usccs: list[str]) -> dict[str, dict[str, int | None]]:
        """The product engine's features of each enterprise, today (the plaintext truth)."""
        today = datetime.now(UTC).astimezone(SHANGHAI).date()
        return features_of(self.db, self.spec, usccs, today)


def features_of(
    db: Database, spec: ProductSpec, usccs: list[str], as_of: date
) -> dict[str, dict[str, int | None]]:
    assert spec.scoring is not None
    names = [f.name for f in spec.scoring.features]
    with db.unit_of_work() as s:
        computed = engine.compute(s, spec=spec, usccs=usccs, as_of=as_of)
    out: dict[str, dict[str, int | None]] = {}
    for code, answer in computed.answers.items():
        assert answer is not None, f"{code} is not in the zone"
        out[code] = {name: answer[name] for name in names}
    return out


def _grant_all(
    s: Any, *, institution_id: int, valid_from: datetime, valid_to: datetime, spec: ProductSpec
) -> None:
    by_department: dict[str, list[str]] = {}
    for dataset_id in spec.sources:
        owner = dataset_service.get_dataset(s, dataset_id=dataset_id).supplier_id
        by_department.setdefault(owner, []).append(dataset_id)
    for department, datasets in sorted(by_department.items()):
        dept = principal_service.find_principal(s, name=f"demo-{department}")
        assert dept is not None, department
        grant_service.create_grant(
            s,
            department=department,
            datasets=datasets,
            purposes=["post_loan"] if department == PARTIAL_DEPARTMENT else PURPOSES,
            products=[PRODUCT],
            institutions=[institution_id],
            valid_from=valid_from,
            valid_to=valid_to,
            by=dept,
        )


@pytest.fixture(scope="module")
def scoring_zone(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoringZone]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "scoring")
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=365)
    tag = secrets.token_hex(3)
    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id=PRODUCT))
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        bank = principal_service.create_principal(s, kind="institution", name=f"scoring-bank-{tag}")
        institution_id, institution_name = bank.id, bank.name
        contract_service.create_contract(
            s,
            institution_id=bank.id,
            purposes=PURPOSES,
            products=[PRODUCT],
            clearance=2,
            valid_from=start,
            valid_to=end,
            by=operator,
            scoring_max_batch=MAX_BATCH,
        )
        _grant_all(s, institution_id=bank.id, valid_from=start, valid_to=end, spec=spec)
        client, secret = oauth_service.create_client(
            s, institution_id=bank.id, name="scoring tests", by_name="tests"
        )
        client_id = client.client_id
        registered = dataset_service.current_entities(s, dataset_id="mr_registration", limit=CONSENTED + 40)[
            40:
        ]
    known = set(registered)
    with db.engine.connect() as conn:
        known |= set(conn.execute(sa.text("SELECT uscc FROM zone.mr_registration")).scalars())
    outsiders = [c for c in (make_uscc(970_000 + i) for i in range(40)) if c not in known][:10]
    # consent is checked before the zone looks an enterprise up (as for lookups): the outsiders have it too
    consented = [*registered, *outsiders]
    for start_at in range(0, len(consented), 500):
        with db.unit_of_work() as s:
            bank = principal_service.get_principal(s, principal_id=institution_id)
            consent_service.register_consents(
                s,
                institution=bank,
                items=[
                    ConsentIn(
                        uscc=code,
                        purpose=purpose,
                        products=[PRODUCT],
                        valid_from=start,
                        valid_to=end,
                        evidence_ref=f"test://consents/{code}.pdf",
                        evidence_sha256=hashlib.sha256(code.encode()).hexdigest(),
                    )
                    for code in consented[start_at : start_at + 500]
                    for purpose in PURPOSES
                ],
            )
    with pytest.MonkeyPatch.context() as env:
        # the gateway fixes a job's chunk size when the job is created
        env.setenv("DATAZONE_SCORING_CHUNK", str(CHUNK))
        server = Server(settings)
    server.wait_ready()
    r = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret or ""),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert f"product:{PRODUCT}" in r.json()["scope"].split()
    public, private = paillier.generate_keypair(2048)
    offer = spec.scoring
    assert offer is not None
    try:
        yield ScoringZone(
            db=db,
            settings=settings,
            server=server,
            url=server.url,
            token=bearer(r.json()["access_token"]),
            operator=bearer(synthetic_zone["operator_token"]),
            institution_id=institution_id,
            institution_name=institution_name,
            spec=spec,
            bounds={f.name: circuits.FeatureBounds(f.name, f.min, f.max, f.missing) for f in offer.features},
            public=public,
            private=private,
            drop_dir=Path(synthetic_zone["drop_dir"]),
            outsiders=outsiders,
            _free=list(registered),
        )
    finally:
        server.stop()
