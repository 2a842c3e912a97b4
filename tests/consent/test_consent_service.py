"""Subject consent: bulk registration (all or nothing), the per-request check, revocation, visibility."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from datazone.audit.models import AuditEntry
from datazone.consent import service
from datazone.consent.models import Consent
from datazone.consent.schemas import ConsentIn
from datazone.consent.service import ConsentRequired
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from tests.factories import bad_check, make_uscc
from tests.grant.builders import Parties, days, make_parties, now

pytestmark = pytest.mark.usefixtures("catalog")
EVIDENCE = hashlib.sha256(b"signed letter").hexdigest()


@pytest.fixture
def p(session: Session) -> Parties:
    return make_parties(session)


def item(n: int, **kw: Any) -> ConsentIn:
    raw: dict[str, Any] = {
        "uscc": make_uscc(n),
        "purpose": "pre_loan",
        "products": None,
        "valid_from": now() - days(1),
        "valid_to": now() + days(90),
        "evidence_ref": f"oss://consents/{n}.pdf",
        "evidence_sha256": EVIDENCE,
    }
    raw.update(kw)
    return ConsentIn.model_validate(raw)


def count(session: Session, institution_id: int) -> int:
    q = sa.select(sa.func.count()).select_from(Consent).where(Consent.institution_id == institution_id)
    return session.scalar(q) or 0


def require(session: Session, p: Parties, usccs: list[str], **kw: Any) -> None:
    args: dict[str, Any] = {
        "institution_id": p.bank1.id,
        "purpose": "pre_loan",
        "product_id": "risk-insight",
        "at": now(),
    }
    args.update(kw)
    service.require_consents(session, usccs=usccs, **args)


def test_register_and_audit(session: Session, p: Parties) -> None:
    lower = make_uscc(1).lower()
    consents = service.register_consents(
        session, institution=p.bank1, items=[item(1, uscc=f" {lower} "), item(2)]
    )
    assert [c.uscc for c in consents] == [make_uscc(1), make_uscc(2)]  # stored normalized
    assert all(c.institution_id == p.bank1.id and c.revoked_at is None for c in consents)
    entry = session.scalar(
        sa.select(AuditEntry).where(
            AuditEntry.action == "consent.register", AuditEntry.institution_id == p.bank1.id
        )
    )
    assert entry is not None and entry.entities == sorted([make_uscc(1), make_uscc(2)])
    assert entry.purpose == "pre_loan" and entry.detail["consent_ids"] == [c.id for c in consents]


def test_a_batch_with_any_bad_item_registers_nothing_and_lists_every_problem(
    session: Session, p: Parties
) -> None:
    items = [
        item(1),
        item(2, uscc=bad_check(make_uscc(2))),
        item(3, uscc="91110105ABC"),
        item(4, purpose="lottery", evidence_sha256=EVIDENCE.upper()),
        item(5, evidence_sha256="abc", products=["no-such-product"]),
        item(6, valid_from=now() + days(5), valid_to=now() + days(1)),
        item(7, valid_from=now() - days(10), valid_to=now() - days(1), evidence_ref=" "),
        item(8, products=[]),
    ]
    with pytest.raises(InvalidSpec) as exc:
        service.register_consents(session, institution=p.bank1, items=items)
    assert exc.value.type == "invalid-consent"
    got = [(e["index"], e["location"]) for e in exc.value.errors]
    assert got == [
        (1, "[1].uscc"), (2, "[2].uscc"), (3, "[3].purpose"), (3, "[3].evidence_sha256"),
        (4, "[4].products"), (4, "[4].evidence_sha256"), (5, "[5].valid_to"),
        (6, "[6].evidence_ref"), (6, "[6].valid_to"), (7, "[7].products"),
    ]  # fmt: skip
    by_location = {e["location"]: e["problem"] for e in exc.value.errors}
    assert "check character is" in by_location["[1].uscc"]  # the USCC rules say why
    assert "has 18 characters, this has 11" in by_location["[2].uscc"]
    assert "(use lowercase)" in by_location["[3].evidence_sha256"]
    assert "no product 'no-such-product'" in by_location["[4].products"]
    assert "is in the past" in by_location["[6].valid_to"]
    assert exc.value.detail.startswith("7 of 8 consents are not valid, none was registered")
    assert count(session, p.bank1.id) == 0


def test_batch_size_limits(session: Session, p: Parties) -> None:
    with pytest.raises(InvalidSpec, match="at least one"):
        service.register_consents(session, institution=p.bank1, items=[])
    with pytest.raises(InvalidSpec, match="at most 1000"):
        service.register_consents(session, institution=p.bank1, items=[item(i) for i in range(1001)])
    with pytest.raises(Forbidden, match="only an institution"):
        service.register_consents(session, institution=p.dept_a_user, items=[item(1)])
    assert count(session, p.bank1.id) == 0


def test_require_consents_checks_a_batch_of_1000_in_one_query(session: Session, p: Parties) -> None:
    codes = [make_uscc(i) for i in range(1000)]
    service.register_consents(session, institution=p.bank1, items=[item(i) for i in range(1000)])
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(session.get_bind(), "before_cursor_execute", seen)
    try:
        require(session, p, codes)
        with pytest.raises(ConsentRequired) as exc:
            require(session, p, [*codes[:500], make_uscc(5000), *codes[500:], make_uscc(5001)])
    finally:
        event.remove(session.get_bind(), "before_cursor_execute", seen)
    assert len([s for s in statements if "consent" in s]) == 2
    body = exc.value.problem()
    assert body["type"].endswith("/consent-required") and body["status"] == 403
    assert body["missing"] == [make_uscc(5000), make_uscc(5001)]
    assert "POST /v1/consents" in body["detail"]


def test_what_a_consent_covers(session: Session, p: Parties) -> None:
    service.register_consents(
        session, institution=p.bank1,
        items=[item(1, products=["risk-insight"], valid_to=now() + days(10)), item(2, purpose="post_loan")],
    )  # fmt: skip
    require(session, p, [make_uscc(1)])
    refusals: list[tuple[list[str], dict[str, Any]]] = [
        ([make_uscc(1)], {"product_id": "enterprise-portrait"}),  # not one of its products
        ([make_uscc(1)], {"institution_id": p.bank2.id}),  # registered by another institution
        ([make_uscc(1)], {"at": now() + days(11)}),  # expired
        ([make_uscc(1)], {"at": now() - days(2)}),  # not yet valid
        ([make_uscc(2)], {}),  # consent for another purpose
    ]
    for usccs, kw in refusals:
        with pytest.raises(ConsentRequired) as exc:
            require(session, p, usccs, **kw)
        assert exc.value.extra["missing"] == usccs
    require(session, p, [make_uscc(2)], purpose="post_loan", product_id="credit-basic")  # NULL products: any
    require(session, p, [])  # nothing to check


def test_revoke_consent(session: Session, p: Parties) -> None:
    [c] = service.register_consents(session, institution=p.bank1, items=[item(1)])
    with pytest.raises(NotFound):
        service.revoke_consent(session, consent_id=c.id, by=p.bank2, reason="not mine")
    with pytest.raises(Forbidden):
        service.revoke_consent(session, consent_id=c.id, by=p.auditor, reason="x")
    service.revoke_consent(session, consent_id=c.id, by=p.bank1, reason="enterprise withdrew its consent")
    assert c.revoked_at is not None and c.revoke_reason == "enterprise withdrew its consent"
    with pytest.raises(ConsentRequired):
        require(session, p, [make_uscc(1)])
    with pytest.raises(Conflict, match="already revoked"):
        service.revoke_consent(session, consent_id=c.id, by=p.bank1, reason="again")
    entry = session.scalar(
        sa.select(AuditEntry).where(AuditEntry.action == "consent.revoke", AuditEntry.object_id == str(c.id))
    )
    assert (
        entry is not None
        and entry.entities == [make_uscc(1)]
        and entry.reason == "enterprise withdrew its consent"
    )


def test_who_sees_consents(session: Session, p: Parties) -> None:
    [c1] = service.register_consents(session, institution=p.bank1, items=[item(1)])
    [c2] = service.register_consents(session, institution=p.bank2, items=[item(2)])
    assert [c.id for c in service.list_consents(session, viewer=p.bank1)] == [c1.id]
    assert [c.id for c in service.list_consents(session, viewer=p.bank2, uscc=make_uscc(1))] == []
    # other modules' consents share the database: look at these two banks' only
    assert [c.id for c in service.list_consents(session, viewer=p.auditor, institution_id=p.bank1.id)] == [c1.id]
    assert [c.id for c in service.list_consents(session, viewer=p.auditor, institution_id=p.bank2.id)] == [
        c2.id
    ]
    for who in (p.dept_a_user, p.curator, p.reviewer):
        with pytest.raises(Forbidden):
            service.list_consents(session, viewer=who)
    with pytest.raises(NotFound):
        service.get_consent(session, consent_id=c2.id, viewer=p.bank1)
    service.revoke_consent(session, consent_id=c1.id, by=p.bank1, reason="x")
    assert service.list_consents(session, viewer=p.bank1, live=True) == []
    assert [c.id for c in service.list_consents(session, viewer=p.bank1, live=False)] == [c1.id]
