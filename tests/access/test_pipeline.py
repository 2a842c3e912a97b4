"""One gate order for every channel (issue 11): single and batch lookups, PSI sessions and jobs,
anonymous queries, secure scores and scoring jobs all run through `access.pipeline.run`.

For each channel a caller fails several gates at once: a token without the product's scope, a
suspended contract, a blacklisted department, revoked grants, no consent, a request its channel
refuses, and a plan with a quota of 0. Each refusal must name the earliest gate that fails; the
test then mends that one failure and sends the call again, until only the quota is left. Every
refusal is audited exactly once, with the check that refused it. Real gateway on loopback, real
PostgreSQL, the synthetic zone.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.access import pipeline
from datazone.access import service as access_service
from datazone.anonymous import service as anonymous_service
from datazone.config import Settings
from datazone.consent import service as consent_service
from datazone.consent.schemas import ConsentIn
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.metering import service as metering
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.privacy import anonymous_query as aq
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.product import service as product_service
from datazone.psi import service as psi_service
from datazone.psi import worker as psi_worker
from datazone.scoring import service as scoring_service
from datazone.supplier import service as supplier_service
from tests.anonymous.conftest import DEBTORS, K, anonymous_product, put_product
from tests.anonymous.conftest import Zone as AnonymousZone
from tests.conftest import Server, column, problem, synthetic_zone_settings
from tests.factories import bearer, make_uscc, new_principal
from tests.scoring.helpers import LOGISTIC_WEIGHTS, logistic

NOW = datetime.now(UTC)
YEAR = timedelta(days=365)
PURPOSE = "pre_loan"
# a product every test institution's second scope is for: a token for it lacks the tested one's
OTHER = "credit-basic"


@dataclass
class Gateway:
    db: Database
    settings: Settings
    url: str
    operator: dict[str, str]  # the demo operator's token: curator, reviewer
    registered: list[str]  # enterprises in the zone
    absent: list[str]  # valid codes of enterprises the zone does not hold
    scoring_key: tuple[paillier.PublicKey, paillier.PrivateKey]
    _taken: int = 0

    def take(self, n: int) -> list[str]:
        """n registered enterprises no other test here uses."""
        taken = self.registered[self._taken : self._taken + n]
        self._taken += n
        return taken


@pytest.fixture(scope="module")
def gw(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "pipeline")
    # the PSI products' precomputed sides, as a worker pass leaves them
    psi_worker.run_once(db, settings)
    server = Server(settings)
    server.wait_ready()
    registered = column(db, "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL ORDER BY uscc DESC LIMIT 200")
    known = set(column(db, "SELECT uscc FROM zone.mr_registration"))
    absent = [c for c in (make_uscc(960_000 + i) for i in range(40)) if c not in known][:5]
    try:
        yield Gateway(
            db=db,
            settings=settings,
            url=server.url,
            operator=bearer(synthetic_zone["operator_token"]),
            registered=registered,
            absent=absent,
            scoring_key=paillier.generate_keypair(2048),
        )
    finally:
        server.stop()


def _operator(s: Any) -> Principal:
    found = principal_service.find_principal(s, name="demo-operator")
    assert found is not None
    return found


@dataclass
class Caller:
    """An institution failing every gate it can at once; `mend_*` lifts one failure."""

    gw: Gateway
    product: str
    id: int
    contract_id: int
    key: dict[str, str]  # its control-plane key
    unscoped: dict[str, str]  # a token for OTHER only
    scoped: dict[str, str]  # a token for the product too
    department: str  # the department it blacklists
    grant_ids: list[str] = field(default_factory=list)
    token: dict[str, str] = field(default_factory=dict)

    def refused_audits(self) -> list[tuple[str, str | None]]:
        """(object, check) of this institution's refused calls, oldest first."""
        with self.gw.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT object_id, detail->>'check' FROM audit_entry"
                    " WHERE institution_id = :i AND outcome = 'refused' ORDER BY id"
                ),
                {"i": self.id},
            ).all()
        return [(r[0], r[1]) for r in rows]

    def mend_scope(self) -> None:
        self.token = self.scoped

    def mend_contract(self) -> None:
        with self.gw.db.unit_of_work() as s:
            contract_service.resume_contract(s, contract_id=self.contract_id, by=_operator(s), reason="整改完成")

    def mend_data(self) -> None:
        with self.gw.db.unit_of_work() as s:
            supplier_service.reinstate_supplier(s, supplier_id=self.department, by=_operator(s), reason="整改完成")

    def mend_grants(self) -> None:
        _grant(self.gw, self.id, [self.product, OTHER])

    def consent(self, usccs: list[str]) -> None:
        with self.gw.db.unit_of_work() as s:
            bank = principal_service.get_principal(s, principal_id=self.id)
            consent_service.register_consents(
                s,
                institution=bank,
                items=[
                    ConsentIn(
                        uscc=code,
                        purpose=PURPOSE,
                        products=None,
                        valid_from=NOW - timedelta(days=1),
                        valid_to=NOW + YEAR,
                        evidence_ref=f"test://consents/{code}.pdf",
                        evidence_sha256=hashlib.sha256(code.encode()).hexdigest(),
                    )
                    for code in usccs
                ],
            )


def _departments(s: Any, product_id: str) -> dict[str, list[str]]:
    spec = product_service.spec_of(product_service.get_product(s, product_id=product_id))
    out: dict[str, list[str]] = {}
    for dataset_id in sorted(spec.sources):
        out.setdefault(dataset_service.get_dataset(s, dataset_id=dataset_id).supplier_id, []).append(dataset_id)
    return out


def _grant(gw: Gateway, institution_id: int, products: list[str]) -> list[str]:
    """Every department's grant of the products' datasets to the institution; their ids."""
    ids = []
    with gw.db.unit_of_work() as s:
        wanted: dict[str, set[str]] = {}
        for p in products:
            for dept, datasets in _departments(s, p).items():
                wanted.setdefault(dept, set()).update(datasets)
        for dept, granted in sorted(wanted.items()):
            by = principal_service.find_principal(s, name=f"demo-{dept}")
            assert by is not None, dept
            grant = grant_service.create_grant(
                s,
                department=dept,
                datasets=sorted(granted),
                purposes=[PURPOSE],
                products=None,
                institutions=[institution_id],
                valid_from=NOW - timedelta(days=1),
                valid_to=NOW + YEAR,
                by=by,
            )
            ids.append(grant.id)
    return ids


def _token(gw: Gateway, institution_id: int, products: list[str]) -> dict[str, str]:
    with gw.db.unit_of_work() as s:
        client, secret = oauth_service.create_client(s, institution_id=institution_id, name="app", by_name="test")
        client_id = client.client_id
    r = httpx.post(
        f"{gw.url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": " ".join(f"product:{p}" for p in products)},
        auth=(client_id, secret or ""),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def caller_failing_everything(
    gw: Gateway, product: str, *, department: str, before_breaking: Callable[[Caller], None] | None = None
) -> Caller:
    """An institution under a plan with a quota of 0, with a contract and grants for `product` and
    OTHER and tokens for both; then its contract suspended, `department` blacklisted and its grants
    revoked. `before_breaking` runs while everything still holds (a model's registration)."""
    inst_id, key = new_principal(gw.db, "institution")
    with gw.db.unit_of_work() as s:
        operator = _operator(s)
        plan = metering.create_plan(
            s,
            plan_id=f"zero-{secrets.token_hex(4)}",
            name="no quota left",
            institution_id=inst_id,
            quota_units=0,
            quota_period="day",
            rate_per_second=1000.0,
            burst=1000,
            by=operator,
        )
        contract_id = contract_service.create_contract(
            s,
            institution_id=inst_id,
            purposes=[PURPOSE],
            products=[product, OTHER],
            clearance=2,
            valid_from=NOW - timedelta(days=1),
            valid_to=NOW + YEAR,
            by=operator,
            plan_id=plan.id,
            scoring_max_batch=5,
        ).id
    grant_ids = _grant(gw, inst_id, [product, OTHER])
    caller = Caller(
        gw=gw,
        product=product,
        id=inst_id,
        contract_id=contract_id,
        key=bearer(key),
        unscoped=_token(gw, inst_id, [OTHER]),
        scoped=_token(gw, inst_id, [product, OTHER]),
        department=department,
        grant_ids=grant_ids,
    )
    caller.token = caller.unscoped
    if before_breaking is not None:
        before_breaking(caller)
    with gw.db.unit_of_work() as s:
        operator = _operator(s)
        contract_service.suspend_contract(s, contract_id=contract_id, by=operator, reason="欠费")
        for grant_id in grant_ids:
            grant = grant_service.get_grant(s, grant_id=grant_id, viewer=operator)
            by = principal_service.find_principal(s, name=f"demo-{grant.department}")
            assert by is not None
            grant_service.revoke_grant(s, grant_id=grant_id, by=by, reason="收回")
        supplier_service.blacklist_supplier(s, supplier_id=department, by=operator, reason="数据核查")
    return caller


@pytest.fixture
def reinstated(gw: Gateway) -> Iterator[list[str]]:
    """Departments a test blacklists, reinstated afterwards whatever happens (other tests share them)."""
    blacklisted: list[str] = []
    yield blacklisted
    with gw.db.unit_of_work() as s:
        for dept in blacklisted:
            supplier = s.execute(
                sa.text("SELECT admission_status FROM supplier WHERE id = :d"), {"d": dept}
            ).scalar_one()
            if supplier == "blacklisted":
                supplier_service.reinstate_supplier(s, supplier_id=dept, by=_operator(s), reason="测试结束")


Send = Callable[[Caller], httpx.Response]


def peel(caller: Caller, send: Send, steps: list[tuple[str, Callable[[], None] | None]]) -> None:
    """Send the call; it must be refused by each step's check in turn, audited once with it;
    then the step's mend lifts that failure and the call goes again."""
    audited = caller.refused_audits()
    for expected, mend in steps:
        r = send(caller)
        body = problem(r)
        assert body.get("check") == expected, (expected, r.status_code, body)
        now = caller.refused_audits()
        assert len(now) == len(audited) + 1, (expected, now[len(audited) :])
        assert now[-1][1] == expected, (expected, now[-1])
        audited = now
        if mend is not None:
            mend()


def _shared_steps(caller: Caller) -> list[tuple[str, Callable[[], None] | None]]:
    return [
        ("scope", caller.mend_scope),
        ("contract", caller.mend_contract),
        ("data", caller.mend_data),
        ("grant", caller.mend_grants),
    ]


# ---------------------------------------------------------------- lookups


def test_single_lookup_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    reinstated.append("courts")
    caller = caller_failing_everything(gw, "risk-insight", department="courts")
    [firm] = gw.take(1)
    code = {"uscc": firm[:-1] + ("0" if firm[-1] != "0" else "1")}  # a wrong check digit

    def send(c: Caller) -> httpx.Response:
        return httpx.get(
            f"{gw.url}/v1/products/{c.product}/enterprises/{code['uscc']}",
            params={"purpose": PURPOSE},
            headers=c.token,
            timeout=60,
        )

    def absent() -> None:
        code["uscc"] = gw.absent[0]

    def present() -> None:
        code["uscc"] = firm

    peel(
        caller,
        send,
        [
            *_shared_steps(caller),
            ("uscc", absent),
            ("consent", lambda: caller.consent([gw.absent[0], firm])),
            ("zone", present),
            ("quota", None),
        ],
    )
    # the refusals were audited under the product asked for, nothing was billed
    assert {obj for obj, _ in caller.refused_audits()} == {"risk-insight"}
    assert _usage(gw, caller.id) == 0


def test_batch_lookup_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    reinstated.append("courts")
    caller = caller_failing_everything(gw, "risk-insight", department="courts")
    firms = gw.take(3)
    batch = {"usccs": [firms[0], firms[0].lower(), firms[1]]}  # the same enterprise twice

    def send(c: Caller) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/products/{c.product}/enterprises",
            json={"purpose": PURPOSE, **batch},
            headers=c.token,
            timeout=60,
        )

    def distinct() -> None:
        batch["usccs"] = firms

    peel(
        caller,
        send,
        [*_shared_steps(caller), ("uscc", distinct), ("consent", lambda: caller.consent(firms)), ("quota", None)],
    )
    assert _usage(gw, caller.id) == 0


# ---------------------------------------------------------------- PSI


def test_psi_session_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    reinstated.append("courts")
    caller = caller_failing_everything(gw, "dishonest-debtor-psi", department="courts")
    size = {"set_size": 10}  # below the product's floor of 100

    def send(c: Caller) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/psi/sessions",
            json={"product": c.product, "purpose": PURPOSE, "labeled": False, **size},
            headers=c.token,
            timeout=60,
        )

    peel(caller, send, [*_shared_steps(caller), ("psi_set", lambda: size.update(set_size=150)), ("quota", None)])
    assert _usage(gw, caller.id) == 0


def test_psi_job_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    reinstated.append("courts")
    caller = caller_failing_everything(gw, "dishonest-debtor-psi", department="courts")
    job = {"peer_address": "nowhere"}  # not host:port

    def send(c: Caller) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/psi/jobs",
            json={"product": c.product, "purpose": PURPOSE, "set_size": 150, "protocol": "rr22", **job},
            headers=c.token,
            timeout=60,
        )

    peel(caller, send, [*_shared_steps(caller), ("psi_job", lambda: job.update(peer_address="127.0.0.1:1")), ("quota", None)])
    assert _usage(gw, caller.id) == 0


# ---------------------------------------------------------------- anonymous query


def test_anonymous_query_refusals_come_in_gate_order_each_audited_once(
    gw: Gateway, reinstated: list[str]
) -> None:
    with gw.db.engine.connect() as conn:
        suppliers = list(conn.execute(sa.text("SELECT DISTINCT supplier_id FROM dataset")).scalars())
    zone = AnonymousZone(
        db=gw.db,
        settings=gw.settings,
        url=gw.url,
        log=gw.settings.home,
        operator=bearer(new_principal(gw.db, "operator")[1]),
        departments={sid: bearer(new_principal(gw.db, "department", supplier_id=sid)[1]) for sid in suppliers},
        registered=[],
        listed=[],
        unlisted=[],
    )
    r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", DEBTORS, k=K, max_queries=5))
    assert r.status_code in (200, 201), r.text
    assert not [b for b in zone.build() if b.startswith("failed:")]
    reinstated.append("courts")
    caller = caller_failing_everything(gw, DEBTORS, department="courts")
    with httpx.Client(base_url=gw.url, headers=caller.scoped, timeout=60) as c:
        params = c.get(f"/v1/anonymous/{DEBTORS}")
    assert params.status_code == 200, params.text
    right = params.json()["prefix_bits"]
    asked = {"prefix_bits": right + 1}
    buckets, blinded = aq.prepare(gw.take(2), right)
    queries = [{"bucket": b, "point": aq.b64encode(p)} for b, p in zip(buckets, blinded.points, strict=True)]

    def send(c: Caller) -> httpx.Response:
        return httpx.post(
            f"{gw.url}/v1/anonymous/{c.product}/queries",
            json={"purpose": PURPOSE, "queries": queries, **asked},
            headers=c.token,
            timeout=60,
        )

    peel(
        caller,
        send,
        [*_shared_steps(caller), ("anonymous_parameters", lambda: asked.update(prefix_bits=right)), ("quota", None)],
    )
    assert _usage(gw, caller.id) == 0


# ---------------------------------------------------------------- secure scoring


@dataclass
class Models:
    pending: str = ""
    approved: str = ""


def _register_models(gw: Gateway, models: Models) -> Callable[[Caller], None]:
    """Two models of the caller's, registered while its contract and grants hold: one left
    pending review, one approved."""
    public, _ = gw.scoring_key

    def register(caller: Caller) -> None:
        with gw.db.unit_of_work() as s:
            spec = product_service.spec_of(product_service.get_product(s, product_id=caller.product))
        assert spec.scoring is not None
        bounds = {f.name: circuits.FeatureBounds(f.name, f.min, f.max, f.missing) for f in spec.scoring.features}
        ids = []
        for name in ("pending", "approved"):
            doc = circuits.encrypt_model(logistic(f"{name}-{secrets.token_hex(3)}", LOGISTIC_WEIGHTS, scale=100), public, bounds=bounds)
            r = httpx.post(f"{gw.url}/v1/scoring/models", json=doc, headers=caller.scoped, timeout=120)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        models.pending, models.approved = ids
        r = httpx.post(
            f"{gw.url}/v1/scoring/models/{models.approved}/review",
            json={"decision": "approve", "reason": "评审通过"},
            headers=gw.operator,
            timeout=60,
        )
        assert r.status_code == 200, r.text

    return register


def test_secure_score_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    models = Models()
    # the tax department's data is among every model's features
    reinstated.append("tax")
    caller = caller_failing_everything(
        gw, "secure-credit-score", department="tax", before_breaking=_register_models(gw, models)
    )
    [firm] = gw.take(1)
    asked = {"uscc": "91110000ABCDEFGHIJ", "model": models.pending}

    def send(c: Caller) -> httpx.Response:
        return httpx.post(f"{gw.url}/v1/scoring/scores", json=asked, headers=c.token, timeout=120)

    peel(
        caller,
        send,
        [
            *_shared_steps(caller),
            ("uscc", lambda: asked.update(uscc=firm)),
            ("consent", lambda: caller.consent([firm])),
            ("scoring_model", lambda: asked.update(model=models.approved)),
            ("quota", None),
        ],
    )
    # a refused score is audited under its model's product
    assert {obj for obj, _ in caller.refused_audits()} == {"secure-credit-score"}
    assert _usage(gw, caller.id) == 0


def test_scoring_job_refusals_come_in_gate_order_each_audited_once(gw: Gateway, reinstated: list[str]) -> None:
    models = Models()
    reinstated.append("tax")
    caller = caller_failing_everything(
        gw, "secure-credit-score", department="tax", before_breaking=_register_models(gw, models)
    )
    firms = gw.take(6)  # one over the contract's limit of 5
    asked: dict[str, Any] = {"usccs": firms, "model": models.pending}

    def send(c: Caller) -> httpx.Response:
        return httpx.post(f"{gw.url}/v1/scoring/jobs", json=asked, headers=c.token, timeout=120)

    peel(
        caller,
        send,
        [
            *_shared_steps(caller),
            ("scoring_batch", lambda: asked.update(usccs=firms[:5])),
            ("consent", lambda: caller.consent(firms[:5])),
            ("scoring_model", lambda: asked.update(model=models.approved)),
            ("quota", None),
        ],
    )
    assert _usage(gw, caller.id) == 0


def _usage(gw: Gateway, institution_id: int) -> int:
    with gw.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM usage_event WHERE institution_id = :i"), {"i": institution_id}
            ).scalar_one()
        )


def test_every_channel_runs_through_the_pipeline() -> None:
    """The six channels are the pipeline's `Channel`s, declaring no gate of their own."""
    channels = [
        access_service.Lookup,
        psi_service.OpenSession,
        psi_service.EngineJob,
        anonymous_service.AnonymousQueries,
        scoring_service.OneScore,
        scoring_service.BatchScoring,
    ]
    for channel in channels:
        assert issubclass(channel, pipeline.Channel)
        assert "run" not in vars(channel) and "replay" not in vars(channel)
