"""Parties for the authorization tests: two departments with datasets, two institutions,
operator staff, and a stand-in catalog for the product ids grants and contracts name."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from datazone.contract import service as contract_service
from datazone.db import Database
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from tests.factories import apply_spec, firm_spec

# products the stand-in catalog knows; anything else is unknown
CATALOG = frozenset({"credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"})


@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[frozenset[str]]:
    """Product lookups answered from CATALOG, so these tests do not depend on product specs."""

    def unknown_products(session: Session, *, product_ids: Iterable[str]) -> list[str]:
        return [p for p in dict.fromkeys(product_ids) if p not in CATALOG]

    monkeypatch.setattr(contract_service, "unknown_products", unknown_products)
    yield CATALOG


def now() -> datetime:
    return datetime.now(UTC)


def days(n: float) -> timedelta:
    return timedelta(days=n)


@dataclass
class Parties:
    dept_a: str
    dept_b: str
    ds_a1: str
    ds_a2: str
    ds_b1: str
    dept_a_user: Principal
    dept_b_user: Principal
    bank1: Principal
    bank2: Principal
    curator: Principal
    auditor: Principal
    reviewer: Principal
    tokens: dict[str, str] = field(default_factory=dict)


def make_parties(session: Session, *, with_keys: bool = False) -> Parties:
    tag = secrets.token_hex(3)
    dept_a, dept_b = f"dept-a-{tag}", f"dept-b-{tag}"
    ds_a1, ds_a2, ds_b1 = f"a1_{tag}", f"a2_{tag}", f"b1_{tag}"
    apply_spec(session, firm_spec(ds_a1, department=dept_a))
    apply_spec(session, firm_spec(ds_a2, department=dept_a))
    apply_spec(session, firm_spec(ds_b1, department=dept_b))

    def principal(kind: str, name: str, **kw: object) -> Principal:
        return principal_service.create_principal(session, kind=kind, name=f"{name}_{tag}", **kw)

    parties = Parties(
        dept_a=dept_a,
        dept_b=dept_b,
        ds_a1=ds_a1,
        ds_a2=ds_a2,
        ds_b1=ds_b1,
        dept_a_user=principal("department", "dept_a", supplier_id=dept_a),
        dept_b_user=principal("department", "dept_b", supplier_id=dept_b),
        bank1=principal("institution", "bank1"),
        bank2=principal("institution", "bank2"),
        curator=principal("operator", "curator", roles=["curator"]),
        auditor=principal("operator", "auditor", roles=["auditor"]),
        reviewer=principal("operator", "reviewer", roles=["reviewer"]),
    )
    if with_keys:
        for name in ("dept_a_user", "dept_b_user", "bank1", "bank2", "curator", "auditor", "reviewer"):
            p: Principal = getattr(parties, name)
            parties.tokens[name] = principal_service.issue_key(session, principal=p).token
    return parties


def committed_parties(db: Database) -> Parties:
    """Parties committed to the database (for HTTP tests and concurrent transactions)."""
    with db.unit_of_work() as s:
        return make_parties(s, with_keys=True)


def table_count(db: Database, model: type, *where: object) -> int:
    """Committed rows of a table matching `where` (for 'nothing was written' checks)."""
    import sqlalchemy as sa

    with db.unit_of_work() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0
