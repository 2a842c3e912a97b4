"""Institution contracts: signing, status changes, visibility, and the per-request check."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit.models import AuditEntry
from datazone.contract import service
from datazone.contract.models import Contract
from datazone.contract.service import ContractRequired
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from tests.grant.builders import Parties, days, make_parties, now


@pytest.fixture
def p(session: Session) -> Parties:
    return make_parties(session)


def sign(session: Session, p: Parties, **kw: Any) -> Contract:
    args: dict[str, Any] = {
        "institution_id": p.bank1.id,
        "purposes": ["pre_loan", "post_loan"],
        "products": ["credit-basic", "risk-insight"],
        "valid_from": now() - days(1),
        "valid_to": now() + days(365),
        "by": p.curator,
    }
    args.update(kw)
    return service.create_contract(session, **args)


def contracts_of(session: Session, institution_id: int) -> int:
    q = sa.select(sa.func.count()).select_from(Contract).where(Contract.institution_id == institution_id)
    return session.scalar(q) or 0


@pytest.mark.usefixtures("catalog")
def test_create_contract_with_defaults_and_audit(session: Session, p: Parties) -> None:
    c = sign(session, p)
    assert (c.status, c.clearance, c.max_batch, c.created_by) == ("active", 2, 1000, p.curator.id)
    entry = session.scalar(
        sa.select(AuditEntry).where(AuditEntry.action == "contract.create", AuditEntry.object_id == str(c.id))
    )
    assert entry is not None and entry.institution_id == p.bank1.id and entry.detail["clearance"] == 2


@pytest.mark.usefixtures("catalog")
def test_only_a_curator_signs(session: Session, p: Parties) -> None:
    for who in (p.reviewer, p.auditor, p.bank1, p.dept_a_user):
        with pytest.raises(Forbidden, match="curator role"):
            sign(session, p, by=who)
    assert contracts_of(session, p.bank1.id) == 0


@pytest.mark.usefixtures("catalog")
def test_every_problem_of_a_contract_is_listed(session: Session, p: Parties) -> None:
    with pytest.raises(InvalidSpec) as exc:
        sign(
            session, p, institution_id=p.dept_a_user.id, purposes=["pre_loan", "lottery"],
            products=["credit-basic", "no-such"], clearance=5, max_batch=0,
            valid_from=now() + days(2), valid_to=now() + days(1),
        )  # fmt: skip
    assert exc.value.type == "invalid-contract"
    assert sorted(e["location"] for e in exc.value.errors) == [
        "clearance", "institution_id", "max_batch", "products", "purposes[1]", "valid_to",
    ]  # fmt: skip
    assert "is a department, not an institution" in exc.value.detail
    assert "grade 5 never leaves the zone" in exc.value.detail
    with pytest.raises(InvalidSpec, match="no principal 987654321"):
        sign(session, p, institution_id=987_654_321)
    with pytest.raises(InvalidSpec, match="name at least one product"):
        sign(session, p, products=[])
    assert contracts_of(session, p.bank1.id) == 0


def test_unknown_products_are_looked_up_in_the_real_catalog(session: Session, p: Parties) -> None:
    # no stand-in catalog here: the product service answers
    assert service.unknown_products(session, product_ids=["no-such-product", "no-such-product"]) == [
        "no-such-product"
    ]
    with pytest.raises(InvalidSpec, match="no product 'no-such-product' in the catalog"):
        sign(session, p, products=["no-such-product"])


@pytest.mark.usefixtures("catalog")
def test_status_changes(session: Session, p: Parties) -> None:
    c = sign(session, p)
    with pytest.raises(Forbidden):
        service.suspend_contract(session, contract_id=c.id, by=p.auditor, reason="x")
    with pytest.raises(InvalidSpec, match="'reason' is empty"):
        service.suspend_contract(session, contract_id=c.id, by=p.curator, reason=" ")
    service.suspend_contract(session, contract_id=c.id, by=p.curator, reason="unpaid invoices")
    assert (c.status, c.status_reason, c.status_changed_by) == ("suspended", "unpaid invoices", p.curator.id)
    service.resume_contract(session, contract_id=c.id, by=p.curator, reason="paid")
    service.terminate_contract(session, contract_id=c.id, by=p.curator, reason="ended by the bank")
    with pytest.raises(Conflict, match="terminated is final") as exc:
        service.suspend_contract(session, contract_id=c.id, by=p.curator, reason="x")
    assert exc.value.extra["contract_status"] == "terminated"
    actions = session.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.object_type == "contract", AuditEntry.object_id == str(c.id))
        .order_by(AuditEntry.id)
    ).all()  # fmt: skip
    assert actions == ["contract.create", "contract.suspend", "contract.resume", "contract.terminate"]
    with pytest.raises(NotFound):
        service.suspend_contract(session, contract_id=987_654_321, by=p.curator, reason="x")


@pytest.mark.usefixtures("catalog")
def test_an_institution_sees_only_its_own_contracts(session: Session, p: Parties) -> None:
    c1 = sign(session, p)
    c2 = sign(session, p, institution_id=p.bank2.id)
    assert [c.id for c in service.list_contracts(session, viewer=p.bank1)] == [c1.id]
    assert {c1.id, c2.id} <= {c.id for c in service.list_contracts(session, viewer=p.auditor)}
    assert [c.id for c in service.list_contracts(session, viewer=p.curator, institution_id=p.bank2.id)] == [
        c2.id
    ]
    with pytest.raises(NotFound):
        service.get_contract(session, contract_id=c2.id, viewer=p.bank1)
    with pytest.raises(Forbidden):
        service.list_contracts(session, viewer=p.dept_a_user)


def require(session: Session, p: Parties, **kw: Any) -> Contract:
    args: dict[str, Any] = {
        "institution_id": p.bank1.id,
        "product_id": "credit-basic",
        "purpose": "pre_loan",
        "at": now(),
    }
    args.update(kw)
    return service.require_contract(session, **args)


@pytest.mark.usefixtures("catalog")
def test_require_contract(session: Session, p: Parties) -> None:
    with pytest.raises(ContractRequired, match="has no contract with the operator") as exc:
        require(session, p)
    assert exc.value.problem()["contracts"] == []
    c = sign(session, p, valid_to=now() + days(10))
    assert require(session, p) is c
    cases: list[tuple[dict[str, Any], str]] = [
        ({"product_id": "enterprise-portrait"}, "product enterprise-portrait not covered"),
        ({"purpose": "marketing"}, "purpose marketing not covered"),
        ({"at": now() + days(11)}, "expired at"),
        ({"at": now() - days(2)}, "not valid before"),
    ]
    for kw, why in cases:
        with pytest.raises(ContractRequired) as exc:
            require(session, p, **kw)
        body = exc.value.problem()
        assert body["type"].endswith("/contract-required") and body["status"] == 403
        assert body["contracts"][0]["contract_id"] == c.id and why in body["contracts"][0]["reasons"][0]
        assert why in body["detail"]
    service.suspend_contract(session, contract_id=c.id, by=p.curator, reason="unpaid invoices")
    with pytest.raises(ContractRequired, match=f"contract {c.id}: suspended: unpaid invoices"):
        require(session, p)
    # another institution's contract never covers bank2
    with pytest.raises(ContractRequired):
        require(session, p, institution_id=p.bank2.id)
    # a second, newer contract covers again
    c2 = sign(session, p, clearance=3)
    assert require(session, p) == c2
