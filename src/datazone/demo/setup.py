"""`datazone demo`: a synthetic zone loaded through the real pipeline, then served.

Departments and dataset specs come from the package's demo specs; files are written
in the departments' own formats into the drop directory and ingested exactly like
real deliveries, never inserted directly. A second `datazone demo` on the same home
finds the zone loaded and reuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from datazone import worker as zone_worker
from datazone.config import Settings
from datazone.consent import service as consent_service
from datazone.consent.schemas import ConsentIn
from datazone.console import service as console_service
from datazone.console.models import Account
from datazone.contract import service as contract_service
from datazone.dataset import admission as dataset_admission
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.db import Database
from datazone.demo.generate import generate_zone, load_demo_specs
from datazone.errors import DomainError
from datazone.grant import service as grant_service
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.product import engine as product_engine
from datazone.product import service as product_service
from datazone.purposes import Purpose
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec

DEMO_OPERATOR = "demo-operator"
DEMO_BANK = "demo-bank"
# the products shipped with the zone (one YAML file each), applied and published by the demo
PRODUCTS_DIR = Path(__file__).resolve().parents[3] / "products"
# served by anonymous query (POST /v1/anonymous/{product}/queries)
ANONYMOUS_DEMO_PRODUCTS: tuple[str, ...] = ("dishonest-debtor-anonymous", "credit-basic-anonymous")
# served by secure scoring (/v1/scoring)
SCORING_DEMO_PRODUCTS: tuple[str, ...] = ("secure-credit-score",)
# served by joint statistics and modeling jobs (/v1/joint)
JOINT_DEMO_PRODUCTS: tuple[str, ...] = ("joint-modeling",)
DEMO_PRODUCTS = (
    "credit-basic",
    "risk-insight",
    "enterprise-portrait",
    "admission-analysis",
    # served by private set intersection (POST /v1/psi/sessions)
    "dishonest-debtor-psi",
    "dishonest-debtor-labeled",
    "registered-enterprises-count",
    *ANONYMOUS_DEMO_PRODUCTS,
    *SCORING_DEMO_PRODUCTS,
    *JOINT_DEMO_PRODUCTS,
)
# enterprises whose consent the demo bank holds, so the paid products answer for them
CONSENTED = 20
# the joint-modeling tour's sample: enterprises whose risk-modeling consent the demo bank holds
# (above the product's floor of 1,000), with labels of the bank's own invention
JOINT_SAMPLE = 1200


@dataclass
class DemoZone:
    reused: bool
    runs: list[IngestRun]
    info: dict[str, Any]


def demo_file(settings: Settings) -> Path:
    return settings.home / "demo.json"


def read_demo_file(settings: Settings) -> dict[str, Any]:
    path = demo_file(settings)
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_demo_file(settings: Settings, info: dict[str, Any]) -> None:
    path = demo_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # it holds credentials: readable by the owner only
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=2)
    tmp.replace(path)


def prepare_demo(
    db: Database, settings: Settings, *, entities: int, say: Callable[[str], None] = lambda _m: None
) -> DemoZone:
    departments, specs = load_demo_specs()
    previous = read_demo_file(settings)
    with db.unit_of_work() as s:
        for d in departments:
            supplier_service.apply_supplier(s, spec=SupplierSpec.model_validate(d))
        for spec in specs:
            dataset_service.apply_dataset(s, spec=spec)
        loaded = all(
            dataset_service.get_dataset(s, dataset_id=spec.id).current_version is not None for spec in specs
        )
    reused = loaded and previous.get("entities") == entities
    runs: list[IngestRun] = []
    if not reused:
        say(f"generating a synthetic zone of {entities:,} enterprises in {settings.drop_path}")
        files = generate_zone(settings.drop_path, entities=entities)
        for f in files:
            with db.unit_of_work() as s:
                run = ingest_service.request_run(
                    s, dataset_id=f.dataset_id, trigger="cli", requested_by="demo", file=None
                )
                run_id = run.id
            say(f"ingesting {f.dataset_id} ({f.rows:,} rows, {f.path.name})")
            done = execute_run(db, run_id=run_id, settings=settings)
            runs.append(done)
            if done.status != "succeeded":
                raise RuntimeError(f"demo dataset {f.dataset_id} failed to load: {done.error}")
    with db.unit_of_work() as s:
        operator, token = _principal_with_key(
            s,
            name=DEMO_OPERATOR,
            kind="operator",
            token=previous.get("operator_token"),
            roles=["curator", "reviewer", "auditor"],
        )
        _admit_datasets(s, [spec.id for spec in specs], operator)
        _publish_products(s, operator, say)
    with db.unit_of_work() as s:
        bank, bank_token = _principal_with_key(
            s, name=DEMO_BANK, kind="institution", token=previous.get("institution_token")
        )
        operator = principal_service.get_principal(s, principal_id=operator.id)
        sample = _sample_enterprises(s, count=CONSENTED)
        _authorize_bank(s, bank, operator, [d["id"] for d in departments], sample)
        client_id, client_secret = _bank_client(s, bank, previous)
        people = _console_people(s, settings, previous.get("console") or {})
    # the zone's side of each PSI and anonymous-query product, as the worker would precompute it
    built = zone_worker.run_once(db, settings, worker_name="demo")
    for name in built.done:
        say(f"worker: {name}")
    if built.failed:
        raise RuntimeError(f"demo precomputation failed for {', '.join(built.failed)}")
    customers = _psi_customer_list(db, settings)
    joint_labels, joint_own = _joint_tour_files(db, settings, bank_id=bank.id)
    info = dict(previous)
    info.update(
        {
            "psi_customers": str(customers),
            "joint_labels": str(joint_labels),
            "joint_own_features": str(joint_own),
            "url": f"http://{settings.host}:{settings.port}",
            "database_url": db.url,
            "entities": entities,
            "operator_token": token,
            "institution": DEMO_BANK,
            "institution_token": bank_token,
            "client_id": client_id,
            "client_secret": client_secret,
            "consented_usccs": sample,
            # the console's people: sign in at <url>/console with the login, the password and a code
            # from an authenticator holding totp_secret (or `oathtool --totp -b <totp_secret>`)
            "console": people,
        }
    )
    write_demo_file(settings, info)
    return DemoZone(reused=reused, runs=runs, info=info)


# the demo's people in the console: an operator with every role, the tax department's officer,
# and the demo bank's administrator and analyst
DEMO_PEOPLE = (
    ("operator.admin", "王运营", DEMO_OPERATOR, ["auditor", "curator", "reviewer"]),
    ("tax.officer", "李税务", "demo-tax", ["officer"]),
    ("bank.admin", "赵银行", DEMO_BANK, ["admin"]),
    ("bank.analyst", "钱分析", DEMO_BANK, ["analyst"]),
)


def _console_people(s: Session, settings: Settings, previous: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The demo's console accounts with their passwords and TOTP secrets (demo.json keeps them, as it
    keeps the demo's keys): the ones of a previous run if their accounts still exist."""
    people: dict[str, dict[str, str]] = {}
    for login, name, acts_for, roles in DEMO_PEOPLE:
        known = previous.get(login)
        exists = s.scalar(sa.select(Account.id).where(Account.login == login)) is not None
        if known and exists:
            people[login] = known
            continue
        password = secrets.token_urlsafe(12)
        totp_secret = pyotp.random_base32()
        if exists:
            console_service.reset_password(s, login=login, password=password, by=None)
        else:
            console_service.create_account(
                s, principal_name=acts_for, login=login, display_name=name, roles=roles, password=password,
                created_by="demo",
            )
        console_service.set_totp_secret(s, login=login, totp_secret=totp_secret, settings=settings)
        people[login] = {"password": password, "totp_secret": totp_secret, "acts_for": acts_for}
    return people


def _psi_customer_list(db: Database, settings: Settings) -> Path:
    """A bank customer list for the PSI tour: some on the dishonest-debtor list, most not."""
    path = Path(settings.home) / "psi-customers.csv"
    with db.unit_of_work() as s:
        listed = dataset_service.population(s, dataset_id="court_dishonest")[1][:30]
        registered = dataset_service.current_entities(s, dataset_id="mr_registration", limit=600)
    others = [c for c in registered if c not in set(listed)][: 500 - len(listed)]
    path.write_text("uscc\n" + "".join(f"{c}\n" for c in sorted([*listed, *others])), encoding="utf-8")
    return path


def _joint_tour_files(db: Database, settings: Settings, *, bank_id: int) -> tuple[Path, Path]:
    """The joint-modeling tour's sample: the risk-modeling consent of JOINT_SAMPLE enterprises, and
    the bank's side of it, as the bank would hold it: a labels CSV (a default more likely where the
    courts enforce against the firm or the tax office grades it low; drawn, so it is not the
    features themselves) and a CSV of two features of the bank's own."""
    labels_path = Path(settings.home) / "joint-labels.csv"
    own_path = Path(settings.home) / "joint-own-features.csv"
    now = datetime.now(UTC)
    with db.unit_of_work() as s:
        codes = dataset_service.current_entities(s, dataset_id="mr_registration", limit=JOINT_SAMPLE)
        spec = product_service.spec_of(product_service.get_product(s, product_id=JOINT_DEMO_PRODUCTS[0]))
        answers = product_engine.compute(s, spec=spec, usccs=codes, as_of=now.astimezone(SHANGHAI).date()).answers
        bank = principal_service.get_principal(s, principal_id=bank_id)
        # registered all at once or not at all: a second run of the demo finds the first one's
        registered = any(
            c.purpose == Purpose.risk_modeling.value
            for c in consent_service.list_consents(s, viewer=bank, uscc=codes[0], live=True)
        )
        wanted = [] if registered else [
            ConsentIn(
                uscc=code,
                purpose=Purpose.risk_modeling.value,
                products=[JOINT_DEMO_PRODUCTS[0]],
                valid_from=now - timedelta(days=1),
                valid_to=now + timedelta(days=365),
                evidence_ref=f"demo://consents/{code}-modeling.pdf",
                evidence_sha256=hashlib.sha256(f"demo modeling consent {code}".encode()).hexdigest(),
            )
            for code in codes
        ]
        for start in range(0, len(wanted), consent_service.MAX_BATCH):
            consent_service.register_consents(s, institution=bank, items=wanted[start : start + consent_service.MAX_BATCH])
    # the same files on every run of the demo: synthetic data, not a secret
    rng = random.Random(20261207)  # noqa: S311
    label_lines, own_lines = ["uscc,label"], ["uscc,deposit_months,overdue_days_12m"]
    for code in codes:
        answer = answers.get(code) or {}
        risk = -1.6 + 0.8 * min(int(answer.get("enforcement_cases_24m") or 0), 3)
        risk += 0.5 * (3 - min(int(answer.get("tax_grade_code") or 0), 5)) + 0.9 * int(answer.get("abnormal_listed") or 0)
        overdue = max(0.0, rng.gauss(5 + 6 * max(risk, 0), 4))
        risk += 0.08 * overdue
        label_lines.append(f"{code},{int(rng.random() < 1 / (1 + math.exp(-risk)))}")
        own_lines.append(f"{code},{rng.randint(1, 120)},{overdue:.0f}")
    labels_path.write_text("\n".join(label_lines) + "\n", encoding="utf-8")
    own_path.write_text("\n".join(own_lines) + "\n", encoding="utf-8")
    return labels_path, own_path


def _principal_with_key(
    s: Session, *, name: str, kind: str, token: str | None, roles: list[str] | None = None
) -> tuple[Principal, str]:
    """The demo's principal and a working key: the one in demo.json if it still works."""
    principal = principal_service.find_principal(s, name=name)
    if principal is None:
        principal = principal_service.create_principal(s, kind=kind, name=name, roles=roles)
    if token:
        try:
            if principal_service.authenticate(s, token=token).id == principal.id:
                return principal, token
        except DomainError:
            pass
    return principal, principal_service.issue_key(s, principal=principal).token


def _admit_datasets(s: Session, dataset_ids: list[str], operator: Principal) -> None:
    for dataset_id in dataset_ids:
        if dataset_service.get_dataset(s, dataset_id=dataset_id).admission_state in (
            "admitted",
            "deprecated",
        ):
            continue
        dataset_admission.review_dataset(
            s,
            dataset_id=dataset_id,
            decision="admit",
            by=operator,
            reason="演示数据：样本质量检查通过 (demo data, sample check passed)",
        )


def _publish_products(s: Session, operator: Principal, say: Callable[[str], None]) -> None:
    for product_id in DEMO_PRODUCTS:
        path = PRODUCTS_DIR / f"{product_id}.yaml"
        spec = product_service.parse_product_spec(
            yaml.safe_load(path.read_text(encoding="utf-8")), origin=str(path)
        )
        product, outcome = product_service.apply_product(s, spec=spec, by=operator, origin=str(path))
        if product.state == "draft":
            product_service.publish_product(
                s, product_id=product_id, by=operator, reason="演示目录上线 (demo catalog)"
            )
        say(f"product {product_id}: {outcome}, {product.state}")


def _sample_enterprises(s: Session, *, count: int) -> list[str]:
    """Active enterprises for the tour: the first by code, so every demo run picks the same."""
    codes: list[str] = []
    for code in dataset_service.current_entities(s, dataset_id="mr_registration", limit=count * 3):
        _, rows = dataset_service.read_records(s, dataset_id="mr_registration", uscc=code)
        if rows and rows[0]["status"] == "active":
            codes.append(code)
        if len(codes) == count:
            break
    return codes


def _authorize_bank(
    s: Session, bank: Principal, operator: Principal, departments: list[str], sample: list[str]
) -> None:
    """A contract for the demo products, every department's grant naming the bank, and the
    consent of the sample enterprises: what a real bank has before its first call."""
    now = datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=365)
    purposes = [p.value for p in Purpose]
    live = [
        c
        for c in contract_service.list_contracts(s, viewer=bank)
        if c.status == "active" and c.valid_to > now
    ]
    # a demo home from an older release lacks the products added since: contract for those too
    covered = {p for c in live for p in c.products}
    missing = [p for p in DEMO_PRODUCTS if p not in covered]
    if missing:
        contract_service.create_contract(
            s,
            institution_id=bank.id,
            purposes=purposes,
            products=missing,
            clearance=2,
            valid_from=start,
            valid_to=end,
            by=operator,
        )
    for supplier_id in departments:
        datasets = [d.id for d in dataset_service.list_datasets(s, department=supplier_id)]
        if not datasets:
            continue
        name = f"demo-{supplier_id}"
        dept = principal_service.find_principal(s, name=name) or principal_service.create_principal(
            s, kind="department", name=name, supplier_id=supplier_id
        )
        if grant_service.list_grants(s, viewer=dept, live=True):
            continue
        grant_service.create_grant(
            s,
            department=supplier_id,
            datasets=datasets,
            purposes=purposes,
            products=None,
            institutions=[bank.id],
            valid_from=start,
            valid_to=end,
            by=dept,
        )
    held = {c.uscc for c in consent_service.list_consents(s, viewer=bank, live=True)}
    wanted = [
        ConsentIn(
            uscc=code,
            purpose=purpose,
            products=None,
            valid_from=start,
            valid_to=end,
            evidence_ref=f"demo://consents/{code}.pdf",
            evidence_sha256=hashlib.sha256(f"demo consent {code}".encode()).hexdigest(),
        )
        for code in sample
        if code not in held
        for purpose in (Purpose.pre_loan.value, Purpose.post_loan.value)
    ]
    if wanted:
        consent_service.register_consents(s, institution=bank, items=wanted)


def _bank_client(s: Session, bank: Principal, previous: dict[str, Any]) -> tuple[str, str]:
    """The demo bank's OAuth client: the one in demo.json while its secret still works."""
    client_id, secret = previous.get("client_id"), previous.get("client_secret")
    if client_id and secret:
        client = oauth_service.get_client(s, client_id=client_id)
        if (
            client is not None
            and client.institution_id == bank.id
            and oauth_service.client_problem(s, client) is None
            and oauth_service.check_client_secret(client, secret)
        ):
            return client_id, secret
    client, new_secret = oauth_service.create_client(
        s, institution_id=bank.id, name="demo loan app", by_name="demo"
    )
    assert new_secret is not None  # client_secret_basic clients get a secret
    return client.client_id, new_secret
