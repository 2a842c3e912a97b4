"""Department grants: creation rules, overlap detection, revocation, and the per-request check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit.models import AuditEntry
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.grant import service
from datazone.grant.models import Grant
from datazone.grant.service import GrantExpired, GrantRequired, GrantRevoked
from tests.grant.builders import Parties, days, make_parties, now

pytestmark = pytest.mark.usefixtures("catalog")


@pytest.fixture
def p(session: Session) -> Parties:
    return make_parties(session)


def grant(session: Session, p: Parties, **kw: Any) -> Grant:
    args: dict[str, Any] = {
        "department": p.dept_a,
        "datasets": [p.ds_a1],
        "purposes": ["pre_loan"],
        "products": None,
        "institutions": None,
        "valid_from": now() - days(1),
        "valid_to": now() + days(30),
        "by": p.dept_a_user,
    }
    args.update(kw)
    return service.create_grant(session, **args)


def grant_count(session: Session, department: str) -> int:
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Grant).where(Grant.department == department))
        or 0
    )


def audit(session: Session, action: str, object_id: str) -> list[AuditEntry]:
    q = sa.select(AuditEntry).where(AuditEntry.action == action, AuditEntry.object_id == object_id)
    return list(session.scalars(q))


def test_create_grant_records_the_scope_and_audits(session: Session, p: Parties) -> None:
    g = grant(
        session, p, datasets=[p.ds_a1, p.ds_a2, p.ds_a1], purposes=["pre_loan", "post_loan"],
        products=["credit-basic"], institutions=[p.bank1.id],
    )  # fmt: skip
    assert g.id.startswith("grt_") and len(g.id) == 20
    assert g.datasets == [p.ds_a1, p.ds_a2]  # duplicates dropped, order kept
    assert g.products == ["credit-basic"] and g.institutions == [p.bank1.id]
    assert g.revoked_at is None and g.created_by == p.dept_a_user.id
    [entry] = audit(session, "grant.create", g.id)
    assert entry.supplier_ids == [p.dept_a] and entry.actor_id == p.dept_a_user.id
    assert entry.detail["datasets"] == [p.ds_a1, p.ds_a2]


def test_a_department_cannot_grant_another_departments_dataset(session: Session, p: Parties) -> None:
    with pytest.raises(Forbidden) as exc:
        grant(session, p, datasets=[p.ds_a1, p.ds_b1])
    assert f"{p.ds_b1} belongs to {p.dept_b}" in exc.value.detail
    assert exc.value.extra["datasets"] == [{"dataset": p.ds_b1, "department": p.dept_b}]
    # nor grant in another department's name
    with pytest.raises(Forbidden, match=f"you act for department {p.dept_a}, not {p.dept_b}"):
        grant(session, p, department=p.dept_b, datasets=[p.ds_b1])
    with pytest.raises(Forbidden, match="only a department grants"):
        grant(session, p, by=p.curator)
    assert grant_count(session, p.dept_a) == grant_count(session, p.dept_b) == 0


def test_every_problem_of_a_grant_is_listed_and_nothing_is_written(session: Session, p: Parties) -> None:
    with pytest.raises(InvalidSpec) as exc:
        grant(
            session, p, datasets=[p.ds_a1, "no_such_dataset"], purposes=["pre_loan", "gambling"],
            products=["credit-basic", "no-such-product"], institutions=[p.bank1.id, p.curator.id, 999_999_999],
            valid_from=now() + days(10), valid_to=now() + days(5),
        )  # fmt: skip
    assert exc.value.status == 422 and exc.value.type == "invalid-grant"
    problems = {(e["location"], e["problem"]) for e in exc.value.errors}
    locations = sorted(loc for loc, _ in problems)
    assert locations == ["datasets", "institutions", "institutions", "products", "purposes[1]", "valid_to"]
    text = exc.value.detail
    for needle in (
        "'no_such_dataset'",
        "'gambling'",
        "'no-such-product'",
        "is an operator",
        "999999999",
        "must be after",
    ):
        assert needle in text, needle
    assert grant_count(session, p.dept_a) == 0


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"datasets": []}, "name at least one of your datasets"),
        ({"purposes": []}, "name at least one purpose"),
        ({"products": []}, "omit products (null) to grant any product"),
        ({"institutions": []}, "omit institutions (null) to grant all institutions"),
        ({"valid_from": now() - days(10), "valid_to": now() - days(1)}, "is in the past"),
        ({"valid_from": datetime(2026, 1, 1), "valid_to": datetime(2036, 1, 1)}, "give a time zone"),
    ],
)
def test_bad_fields_are_refused(session: Session, p: Parties, kw: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidSpec, match=problem.replace("(", r"\(").replace(")", r"\)")):
        grant(session, p, **kw)
    assert grant_count(session, p.dept_a) == 0


# (second grant's differences from the first, whether it overlaps)
OVERLAP_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("same scope, overlapping dates", {}, {"valid_from": 10, "valid_to": 40}, True),
    (
        "same scope, disjoint dates",
        {},
        {"valid_from": 30, "valid_to": 60},
        False,
    ),  # touches: [0,30) and [30,60)
    ("disjoint purposes", {}, {"purposes": ["marketing"]}, False),
    ("one shared purpose", {}, {"purposes": ["marketing", "pre_loan"]}, True),
    ("other dataset", {}, {"datasets": ["a2"]}, False),
    ("one shared dataset", {}, {"datasets": ["a2", "a1"]}, True),
    ("disjoint product lists", {"products": ["credit-basic"]}, {"products": ["risk-insight"]}, False),
    (
        "intersecting product lists",
        {"products": ["credit-basic", "risk-insight"]},
        {"products": ["risk-insight"]},
        True,
    ),
    ("all products vs a list", {"products": None}, {"products": ["risk-insight"]}, True),
    ("a list vs all products", {"products": ["credit-basic"]}, {"products": None}, True),
    ("disjoint institution lists", {"institutions": ["bank1"]}, {"institutions": ["bank2"]}, False),
    (
        "intersecting institution lists",
        {"institutions": ["bank1"]},
        {"institutions": ["bank2", "bank1"]},
        True,
    ),
    ("all institutions vs a list", {"institutions": None}, {"institutions": ["bank2"]}, True),
    ("a list vs all institutions", {"institutions": ["bank1"]}, {"institutions": None}, True),
]


@pytest.mark.parametrize(
    ("first", "second", "overlaps"), [c[1:] for c in OVERLAP_CASES], ids=[c[0] for c in OVERLAP_CASES]
)
def test_overlap_detection(
    session: Session, p: Parties, first: dict[str, Any], second: dict[str, Any], overlaps: bool
) -> None:
    base = now()

    def resolve(spec: dict[str, Any]) -> dict[str, Any]:
        out = dict(spec)
        if "datasets" in out:
            out["datasets"] = [{"a1": p.ds_a1, "a2": p.ds_a2}[d] for d in out["datasets"]]
        if out.get("institutions") is not None:
            out["institutions"] = [getattr(p, i).id for i in out["institutions"]]
        for k in ("valid_from", "valid_to"):
            if k in out:
                out[k] = base + days(out[k])
        return {"valid_from": base, "valid_to": base + days(30), **out}

    g1 = grant(session, p, **resolve(first))
    if not overlaps:
        g2 = grant(session, p, **resolve(second))
        assert g2.id != g1.id
        return
    with pytest.raises(Conflict) as exc:
        grant(session, p, **resolve(second))
    assert exc.value.type == "grant-overlap"
    assert exc.value.extra["grant_id"] == g1.id and g1.id in exc.value.detail
    overlap = exc.value.extra["overlap"]
    assert overlap["datasets"] and "pre_loan" in overlap["purposes"]
    assert overlap["from"] < overlap["to"]
    assert grant_count(session, p.dept_a) == 1


def test_a_revoked_or_expired_grant_does_not_block_a_new_one(session: Session, p: Parties) -> None:
    old = grant(session, p)
    service.revoke_grant(session, grant_id=old.id, by=p.dept_a_user, reason="renegotiated")
    new = grant(session, p)
    assert new.id != old.id
    # another department's grant never overlaps this one's
    other = grant(session, p, department=p.dept_b, datasets=[p.ds_b1], by=p.dept_b_user)
    assert other.department == p.dept_b


def test_revoke_grant(session: Session, p: Parties) -> None:
    g = grant(session, p)
    with pytest.raises(NotFound):  # another department does not learn the grant exists
        service.revoke_grant(session, grant_id=g.id, by=p.dept_b_user, reason="mine now")
    with pytest.raises(Forbidden):
        service.revoke_grant(session, grant_id=g.id, by=p.curator, reason="operator says so")
    with pytest.raises(InvalidSpec, match="'reason' is empty"):
        service.revoke_grant(session, grant_id=g.id, by=p.dept_a_user, reason="  ")
    assert g.revoked_at is None
    before = session.scalar(sa.select(sa.func.statement_timestamp()))
    revoked = service.revoke_grant(session, grant_id=g.id, by=p.dept_a_user, reason="bank breached terms")
    assert revoked.revoked_at is not None and before is not None and revoked.revoked_at >= before
    assert revoked.revoked_by == p.dept_a_user.id and revoked.revoke_reason == "bank breached terms"
    [entry] = audit(session, "grant.revoke", g.id)
    assert entry.reason == "bank breached terms" and entry.supplier_ids == [p.dept_a]
    with pytest.raises(Conflict, match="already revoked"):
        service.revoke_grant(session, grant_id=g.id, by=p.dept_a_user, reason="again")
    with pytest.raises(NotFound):
        service.revoke_grant(session, grant_id="grt_0000000000000000", by=p.dept_a_user, reason="x")


def check(session: Session, p: Parties, **kw: Any) -> list[Grant]:
    args: dict[str, Any] = {
        "product_id": "credit-basic",
        "dataset_ids": [p.ds_a1],
        "institution_id": p.bank1.id,
        "purpose": "pre_loan",
        "at": now(),
    }
    args.update(kw)
    return service.require_grants(session, **args)


def test_require_grants_finds_the_covering_grant_per_dataset(session: Session, p: Parties) -> None:
    ga = grant(session, p, datasets=[p.ds_a1, p.ds_a2])
    gb = grant(session, p, department=p.dept_b, datasets=[p.ds_b1], by=p.dept_b_user)
    covering = check(session, p, dataset_ids=[p.ds_a1, p.ds_b1, p.ds_a2])
    assert [g.id for g in covering] == [ga.id, gb.id]
    assert check(session, p, dataset_ids=[]) == []


def test_require_grants_respects_products_institutions_and_purposes(session: Session, p: Parties) -> None:
    g = grant(session, p, products=["risk-insight"], institutions=[p.bank2.id], purposes=["post_loan"])
    assert check(session, p, product_id="risk-insight", institution_id=p.bank2.id, purpose="post_loan") == [g]
    for kw in (
        {"product_id": "credit-basic", "institution_id": p.bank2.id, "purpose": "post_loan"},
        {"product_id": "risk-insight", "institution_id": p.bank1.id, "purpose": "post_loan"},
        {"product_id": "risk-insight", "institution_id": p.bank2.id, "purpose": "pre_loan"},
    ):
        with pytest.raises(GrantRequired) as exc:
            check(session, p, **kw)
        assert type(exc.value) is GrantRequired
        body = exc.value.problem()
        assert body["type"].endswith("/grant-required") and body["status"] == 403
        assert body["department"] == p.dept_a and body["dataset"] == p.ds_a1
        assert body["product"] == kw["product_id"] and body["purpose"] == kw["purpose"]
        assert "grant_id" not in body


def test_require_grants_names_a_revoked_grant(session: Session, p: Parties) -> None:
    g = grant(session, p)
    service.revoke_grant(session, grant_id=g.id, by=p.dept_a_user, reason="ended")
    with pytest.raises(GrantRevoked) as exc:
        check(session, p)
    body = exc.value.problem()
    assert body["type"].endswith("/grant-revoked") and body["status"] == 403
    assert body["grant_id"] == g.id and body["department"] == p.dept_a and body["dataset"] == p.ds_a1
    assert g.revoked_at is not None and body["revoked_at"] == g.revoked_at.isoformat()
    assert f"revoked grant {g.id}" in body["detail"]


def test_require_grants_names_an_expired_grant(session: Session, p: Parties) -> None:
    g = grant(session, p, valid_to=now() + days(2))
    with pytest.raises(GrantExpired) as exc:
        check(session, p, at=now() + days(3))
    body = exc.value.problem()
    assert body["type"].endswith("/grant-expired")
    assert body["grant_id"] == g.id and body["valid_to"] == g.valid_to.isoformat()
    # before it starts, a grant covers nothing, and the refusal says when it starts
    with pytest.raises(GrantRequired, match=f"grant {g.id} starts at"):
        check(session, p, at=now() - days(2))


def test_every_dataset_without_a_grant_is_listed(session: Session, p: Parties) -> None:
    g = grant(session, p, datasets=[p.ds_a2])
    service.revoke_grant(session, grant_id=g.id, by=p.dept_a_user, reason="ended")
    grant(session, p, department=p.dept_b, datasets=[p.ds_b1], by=p.dept_b_user)
    with pytest.raises(GrantRequired) as exc:
        check(session, p, dataset_ids=[p.ds_a1, p.ds_b1, p.ds_a2])
    body = exc.value.problem()
    assert body["dataset"] == p.ds_a1 and body["type"].endswith("/grant-required")
    assert [(e["location"], e["type"]) for e in body["errors"]] == [
        (p.ds_a1, "grant-required"),
        (p.ds_a2, "grant-revoked"),
    ]
    assert body["errors"][1]["grant_id"] == g.id


def test_grants_are_listed_to_whom_they_concern(session: Session, p: Parties) -> None:
    open_grant = grant(session, p)
    named = grant(session, p, datasets=[p.ds_a2], institutions=[p.bank2.id], products=["risk-insight"])
    other = grant(
        session, p, department=p.dept_b, datasets=[p.ds_b1], by=p.dept_b_user, institutions=[p.bank1.id]
    )
    ids = lambda gs: {g.id for g in gs}  # noqa: E731
    mine = {open_grant.id, named.id, other.id}
    assert ids(service.list_grants(session, viewer=p.dept_a_user)) == {open_grant.id, named.id}
    assert ids(service.list_grants(session, viewer=p.dept_b_user)) == {other.id}
    assert ids(service.list_grants(session, viewer=p.bank1)) & mine == {open_grant.id, other.id}
    assert ids(service.list_grants(session, viewer=p.bank2)) & mine == {open_grant.id, named.id}
    assert ids(service.list_grants(session, viewer=p.auditor)) >= mine
    assert ids(service.list_grants(session, viewer=p.dept_a_user, dataset=p.ds_a2)) == {named.id}
    assert ids(service.list_grants(session, viewer=p.dept_a_user, product="credit-basic")) == {open_grant.id}
    service.revoke_grant(session, grant_id=named.id, by=p.dept_a_user, reason="x")
    assert ids(service.list_grants(session, viewer=p.dept_a_user, live=True)) == {open_grant.id}
    assert ids(service.list_grants(session, viewer=p.dept_a_user, live=False)) == {named.id}
    assert service.grant_status(named) == "revoked" and service.grant_status(open_grant) == "live"
    # a department asking for another's grants sees only its own
    assert ids(service.list_grants(session, viewer=p.dept_a_user, department=p.dept_b)) == set()
    with pytest.raises(NotFound):
        service.get_grant(session, grant_id=other.id, viewer=p.dept_a_user)
    with pytest.raises(NotFound):
        service.get_grant(session, grant_id=named.id, viewer=p.bank1)
    assert service.get_grant(session, grant_id=named.id, viewer=p.bank2).id == named.id
