"""Builders for test data: valid USCCs, dataset specs, department files."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import DatasetSpec
from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.joint.models import JointJob
from datazone.oauth import service as oauth_service
from datazone.oauth.resource import AccessGrant
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.product import service as product_service
from datazone.product.schemas import ProductSpec
from datazone.scoring import service as scoring_service
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec
from tests.client.codes import bad_check as bad_check
from tests.client.codes import make_uscc as make_uscc

HEADER = ["统一社会信用代码", "企业名称", "注册资本(万元)", "成立日期", "登记状态", "参保人数"]


def firm_spec(dataset_id: str, **overrides: Any) -> DatasetSpec:
    raw: dict[str, Any] = {
        "id": dataset_id,
        "name": "测试企业登记",
        "department": "test-dept",
        "entity_key": "uscc",
        "fields": [
            {"name": "uscc", "type": "uscc", "required": True, "headers": ["统一社会信用代码"], "grade": 1},
            {"name": "name", "type": "string", "required": True, "headers": ["企业名称"], "grade": 1},
            {"name": "capital", "type": "decimal", "headers": ["注册资本(万元)"], "grade": 2},
            {"name": "founded", "type": "date", "required": True, "headers": ["成立日期"], "grade": 1},
            {
                "name": "status",
                "type": "enum",
                "required": True,
                "headers": ["登记状态"],
                "values": {"active": ["存续", "在业"], "deregistered": ["注销"]},
            },
            {"name": "staff", "type": "integer", "headers": ["参保人数"], "grade": 2},
        ],
        "source": {"kind": "directory", "path": f"{dataset_id}/*.csv"},
        "format": "csv",
        "encoding": "gb18030",
        "schedule": "0 2 * * *",
        "reject_tolerance": 0.0,
    }
    raw.update(overrides)
    return DatasetSpec.model_validate(raw)


def firm_rows(n: int, start: int = 0) -> list[list[str]]:
    return [
        [
            make_uscc(i),
            f"北京测试{i}科技有限公司",
            f"{(i % 97 + 1) * 10:,}",
            f"2015/{i % 12 + 1}/{i % 28 + 1}",
            "存续",
            str(i % 50),
        ]
        for i in range(start, start + n)
    ]


def write_csv(
    path: Path, rows: list[list[str]], *, header: list[str] | None = None, encoding: str = "gb18030"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header if header is not None else HEADER)] + [",".join(r) for r in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def ensure_department(session: Session, dept: str = "test-dept") -> None:
    supplier_service.apply_supplier(
        session, spec=SupplierSpec(id=dept, name="测试委办局", name_en="Test department")
    )


def apply_spec(session: Session, spec: DatasetSpec) -> None:
    ensure_department(session, spec.department)
    dataset_service.apply_dataset(session, spec=spec)


def new_principal(
    db: Database,
    kind: str = "operator",
    *,
    roles: list[str] | None = None,
    supplier_id: str | None = None,
    name: str | None = None,
) -> tuple[int, str]:
    """Create a principal (committed): (its id, its bearer key)."""

    if kind == "operator" and not roles:
        roles = ["curator", "reviewer", "auditor"]
    with db.unit_of_work() as s:
        p = principal_service.create_principal(
            s, kind=kind, name=name or f"{kind}_{secrets.token_hex(4)}", roles=roles, supplier_id=supplier_id
        )
        return p.id, principal_service.issue_key(s, principal=p).token


def session_principal(
    session: Session,
    kind: str = "operator",
    *,
    roles: list[str] | None = None,
    supplier_id: str | None = None,
) -> Principal:
    """A principal created in the test's own transaction (rolled back with it); an operator holds
    every role unless `roles` says otherwise."""
    if kind == "operator" and not roles:
        roles = ["curator", "reviewer", "auditor"]
    return principal_service.create_principal(
        session, kind=kind, name=f"{kind}_{uuid.uuid4().hex[:10]}", roles=roles, supplier_id=supplier_id
    )


def principal_key(
    db: Database,
    kind: str = "operator",
    *,
    roles: list[str] | None = None,
    supplier_id: str | None = None,
    name: str | None = None,
) -> str:
    """Create a principal (committed) and return its bearer key."""
    return new_principal(db, kind, roles=roles, supplier_id=supplier_id, name=name)[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def grants_revoked(
    db: Database, *, department: str, reason: str, institution_id: int | None = None
) -> Iterator[list[str]]:
    """The department's live grants (to one institution, when named) revoked for the block, then
    given again with the same terms: the shared synthetic zone's later tests rely on them.
    Yields the ids of the grants revoked."""
    from datazone.grant import service as grant_service
    from datazone.grant.models import Grant

    query = sa.select(Grant).where(Grant.department == department, Grant.revoked_at.is_(None))
    if institution_id is not None:
        query = query.where(Grant.institutions.contains([institution_id]))
    with db.unit_of_work() as s:
        dept = principal_service.find_principal(s, name=f"demo-{department}")
        assert dept is not None
        live = s.scalars(query).all()
        assert live
        revoked = [g.id for g in live]
        terms = [(g.datasets, g.purposes, g.products, g.institutions, g.valid_from, g.valid_to) for g in live]
        for g in live:
            grant_service.revoke_grant(s, grant_id=g.id, by=dept, reason=reason)
    try:
        yield revoked
    finally:
        with db.unit_of_work() as s:
            dept = principal_service.find_principal(s, name=f"demo-{department}")
            assert dept is not None
            for datasets, purposes, products, institutions, valid_from, valid_to in terms:
                grant_service.create_grant(
                    s,
                    department=department,
                    datasets=datasets,
                    purposes=purposes,
                    products=products,
                    institutions=institutions,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    by=dept,
                )


def registered_model(db: Database, *, institution: str = "demo-bank", product_id: str = "secure-credit-score",
                     name: str | None = None) -> str:
    """A scoring model the institution registers as its SDK would (a real Paillier key, the weights
    encrypted under it, the registration checked in full by the service), pending review. Needs a
    zone where the institution may use the product (the `synthetic_zone` fixture's demo bank)."""
    public, _ = paillier.generate_keypair()
    with db.unit_of_work() as s:
        bank = principal_service.named_principal(s, name=institution)
        spec = product_service.spec_of(product_service.get_product(s, product_id=product_id))
        bounds = scoring_service.feature_bounds(spec)
        features = sorted(bounds)[:4]
        model = circuits.parse_model({
            "format": circuits.MODEL_FORMAT, "name": name or f"model-{secrets.token_hex(3)}", "product": product_id,
            "purpose": "pre_loan", "kind": "logistic", "scale": 1000, "intercept": -1.0,
            "features": [{"name": f, "weight": 0.01 * (i + 1)} for i, f in enumerate(features)],
        })
        grant = AccessGrant(
            client_id="tests", institution=bank, scopes=frozenset({oauth_service.product_scope(product_id)}),
            jti=secrets.token_hex(8), expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        registered = scoring_service.register_model(
            s, grant=grant, document=circuits.encrypt_model(model, public, bounds=bounds)
        )
        model_id: str = registered.id
    return model_id


def retire_model(db: Database, model_id: str, *, institution: str = "demo-bank") -> None:
    """Retire a test's approved model, so later workers do not fill a factor pool for its key."""
    with db.unit_of_work() as s:
        scoring_service.retire_model(
            s, model_id=model_id, by=principal_service.named_principal(s, name=institution), reason="test over"
        )


def grant_every_department(
    session: Session,
    *,
    spec: ProductSpec,
    institution_id: int,
    purposes: list[str],
    products: list[str],
    valid_from: datetime,
    valid_to: datetime,
) -> None:
    """Each department whose datasets the product reads grants them to the institution (by the
    demo's department principals, `demo-<department>`), for these purposes and products."""
    by_department: dict[str, list[str]] = {}
    for dataset_id in spec.sources:
        owner = dataset_service.get_dataset(session, dataset_id=dataset_id).supplier_id
        by_department.setdefault(owner, []).append(dataset_id)
    for department, datasets in sorted(by_department.items()):
        dept = principal_service.find_principal(session, name=f"demo-{department}")
        assert dept is not None, department
        grant_service.create_grant(
            session,
            department=department,
            datasets=datasets,
            purposes=purposes,
            products=products,
            institutions=[institution_id],
            valid_from=valid_from,
            valid_to=valid_to,
            by=dept,
        )


def add_joint_job(session: Session, *, institution_id: int, status: str, sample_size: int = 1234) -> JointJob:
    """A statistics job's row as the pipeline leaves it (no sample kept here): for pages that list jobs."""
    created = datetime.now(UTC) - timedelta(minutes=5)
    job = JointJob(
        id="joint_" + secrets.token_hex(9), kind="stats", institution_id=institution_id, client_id="app-1",
        product_id="joint-modeling", purpose="risk_modeling", contract_id=1, status=status,
        features=["reg_capital_wan", "tax_grade_code"], params={"bins": 10}, sample_size=sample_size, sample=[],
        progress_phase="sums" if status == "running" else None, created_at=created, expires_at=created + timedelta(hours=1),
    )
    session.add(job)
    session.flush()
    return job
