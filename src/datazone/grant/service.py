"""Department grants (授权): a department's permission to use its datasets, per purpose,
product (or any), institution (or all) and period, until it revokes it.

Nothing caches a grant: `require_grants` reads the covering grants on every product
request, in the request's own transaction, after taking a shared transaction-level
advisory lock per dataset. `revoke_grant` takes the exclusive lock on each of the grant's
datasets (both in dataset order, so they cannot deadlock), so it waits for the requests
already answering under the grant to commit, and any request that reads after it has
committed sees the revocation (its read starts after its lock was granted, with a fresh
snapshot). No answer is served under a grant after its revocation committed, whichever
replica serves it.

Why advisory locks and not row locks: PostgreSQL lets a new FOR SHARE join the share
lockers of a row even while a FOR UPDATE waits, so a grant in constant use could keep its
revocation waiting indefinitely, and every FOR SHARE writes to the hot grant rows. The lock
manager instead queues new shared requests behind a waiting exclusive one: the revocation
waits only for the requests already under way.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.grant.models import Grant
from datazone.principal.models import Principal
from datazone.principal.service import a_kind


class GrantRequired(Forbidden):
    """No live grant covers a dataset the product reads (no grant ever did)."""

    type = "grant-required"
    title = "No department grant covers this use of its data"


class GrantRevoked(GrantRequired):
    type = "grant-revoked"
    title = "The department revoked its grant for this use of its data"


class GrantExpired(GrantRequired):
    type = "grant-expired"
    title = "The department's grant for this use of its data has expired"


class InvalidGrant(InvalidSpec):
    type = "invalid-grant"
    title = "The grant is not valid"


class GrantOverlap(Conflict):
    type = "grant-overlap"
    title = "The grant overlaps a live grant of the same scope"


# advisory lock space (first key) for "use of a dataset under a grant"; the second key is hashtext(dataset)
DATASET_USE_LOCK = 7410004


def _lock_datasets(session: Session, dataset_ids: Sequence[str], *, exclusive: bool) -> None:
    """Transaction-level advisory locks on the datasets, taken in sorted order in one round trip."""
    lock = sa.func.pg_advisory_xact_lock if exclusive else sa.func.pg_advisory_xact_lock_shared
    dataset = sa.func.unnest(sa.literal(sorted(set(dataset_ids)), sa.ARRAY(sa.Text))).column_valued("dataset")
    session.execute(sa.select(lock(DATASET_USE_LOCK, sa.func.hashtext(dataset))))


def new_grant_id() -> str:
    return "grt_" + secrets.token_hex(8)


def _now() -> datetime:
    return datetime.now(UTC)


def _any(value: Any, column: Any) -> sa.ColumnElement[bool]:
    """`value = ANY(column)`: is value an element of the array column."""
    return sa.literal(value) == sa.any_(column)


def _scope_covers(*, product_id: str, institution_id: int, purpose: str) -> list[sa.ColumnElement[bool]]:
    return [
        _any(purpose, Grant.purposes),
        sa.or_(Grant.products.is_(None), _any(product_id, Grant.products)),
        sa.or_(Grant.institutions.is_(None), _any(institution_id, Grant.institutions)),
    ]


def _live_at(at: datetime) -> list[sa.ColumnElement[bool]]:
    return [Grant.revoked_at.is_(None), Grant.valid_from <= at, Grant.valid_to > at]


def create_grant(
    session: Session,
    *,
    department: str,
    datasets: Sequence[str],
    purposes: Sequence[str],
    products: Sequence[str] | None,
    institutions: Sequence[int] | None,
    valid_from: datetime,
    valid_to: datetime,
    by: Principal,
) -> Grant:
    """Grant use of `department`'s datasets. `products`/`institutions` None means any/all.

    Refused, with nothing written: when `by` is not that department's principal or a dataset
    is another department's (403, naming it and its owner); with every invalid field listed
    (422); when a live grant of this department covers an intersecting scope in an
    overlapping period (409, naming it and the overlap).
    """
    if by.kind != "department":
        raise Forbidden(f"only a department grants use of its data; you are {a_kind(by.kind)}")
    if by.supplier_id != department:
        raise Forbidden(
            f"you act for department {by.supplier_id}, not {department}: a department grants only its own data",
            department=department,
        )
    errors: list[dict[str, Any]] = []

    def problem(location: str, text: str) -> None:
        errors.append({"location": location, "problem": text})

    datasets = list(dict.fromkeys(datasets))
    foreign: list[dict[str, str]] = []
    if not datasets:
        problem("datasets", "name at least one of your datasets")
    for ds_id in datasets:
        try:
            owner = dataset_service.get_dataset(session, dataset_id=ds_id).supplier_id
        except NotFound:
            problem("datasets", f"no dataset {ds_id!r}")
            continue
        if owner != department:
            foreign.append({"dataset": ds_id, "department": owner})
    if foreign:
        raise Forbidden(
            "a department grants only its own datasets: "
            + ", ".join(f"{f['dataset']} belongs to {f['department']}" for f in foreign),
            datasets=foreign,
        )
    purposes = list(dict.fromkeys(purposes))
    if not purposes:
        problem("purposes", "name at least one purpose")
    for i, p in enumerate(purposes):
        if (why := contract_service.purpose_problem(p)) is not None:
            problem(f"purposes[{i}]", why)
    if products is not None:
        products = list(dict.fromkeys(products))
        if not products:
            problem("products", "omit products (null) to grant any product, or name at least one")
        for pid in contract_service.unknown_products(session, product_ids=products):
            problem("products", f"no product {pid!r} in the catalog")
    if institutions is not None:
        institutions = list(dict.fromkeys(institutions))
        if not institutions:
            problem(
                "institutions", "omit institutions (null) to grant all institutions, or name at least one"
            )
        for inst in institutions:
            if (why := contract_service.institution_problem(session, institution_id=inst)) is not None:
                problem("institutions", why)
    errors.extend(contract_service.period_problems(valid_from, valid_to))
    if errors:
        raise InvalidGrant(
            "the grant is not valid, nothing was written: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        )
    # one grant creation per department at a time, so two overlapping grants cannot both pass the check
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("grant:" + department))))
    overlapping = find_overlaps(
        session,
        department=department,
        datasets=datasets,
        purposes=purposes,
        products=products,
        institutions=institutions,
        valid_from=valid_from,
        valid_to=valid_to,
    )
    if overlapping:
        existing = overlapping[0]
        overlap = _overlap_of(
            existing, datasets=datasets, purposes=purposes, valid_from=valid_from, valid_to=valid_to
        )
        raise GrantOverlap(
            f"grant {existing.id} already covers this scope from {overlap['from']} to {overlap['to']} "
            f"(datasets {', '.join(overlap['datasets'])}; purposes {', '.join(overlap['purposes'])}); "
            "change the period or scope, or revoke that grant first",
            grant_id=existing.id,
            overlap=overlap,
            overlapping_grants=[g.id for g in overlapping],
        )
    grant = Grant(
        id=new_grant_id(),
        department=department,
        datasets=datasets,
        purposes=purposes,
        products=products,
        institutions=institutions,
        valid_from=valid_from,
        valid_to=valid_to,
        created_by=by.id,
    )
    session.add(grant)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="grant.create",
        object_type="grant",
        object_id=grant.id,
        supplier_ids=[department],
        detail={
            "datasets": datasets,
            "purposes": purposes,
            "products": products,
            "institutions": institutions,
            "valid_from": valid_from.isoformat(),
            "valid_to": valid_to.isoformat(),
        },
    )
    return grant


def find_overlaps(
    session: Session,
    *,
    department: str,
    datasets: Sequence[str],
    purposes: Sequence[str],
    products: Sequence[str] | None,
    institutions: Sequence[int] | None,
    valid_from: datetime,
    valid_to: datetime,
) -> list[Grant]:
    """Live grants of the department whose scope intersects this one in an overlapping period.

    Scopes intersect when they share a dataset and a purpose, and their products and their
    institutions intersect (NULL, meaning all, intersects everything).
    """
    q = sa.select(Grant).where(
        Grant.department == department,
        Grant.revoked_at.is_(None),
        Grant.valid_to > _now(),
        Grant.datasets.overlap(list(datasets)),
        Grant.purposes.overlap(list(purposes)),
        Grant.valid_from < valid_to,
        Grant.valid_to > valid_from,
    )
    if products is not None:
        q = q.where(sa.or_(Grant.products.is_(None), Grant.products.overlap(list(products))))
    if institutions is not None:
        q = q.where(
            sa.or_(
                Grant.institutions.is_(None),
                Grant.institutions.overlap(sa.cast(list(institutions), Grant.institutions.type)),
            )
        )
    return list(session.scalars(q.order_by(Grant.created_at, Grant.id)))


def _overlap_of(
    existing: Grant,
    *,
    datasets: Sequence[str],
    purposes: Sequence[str],
    valid_from: datetime,
    valid_to: datetime,
) -> dict[str, Any]:
    return {
        "from": max(existing.valid_from, valid_from).isoformat(),
        "to": min(existing.valid_to, valid_to).isoformat(),
        "datasets": [d for d in datasets if d in existing.datasets],
        "purposes": [p for p in purposes if p in existing.purposes],
    }


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The grants the viewer may read, as a WHERE clause (every list and get of grants uses it):
    a department its own grants, an institution the grants that cover it (named or all
    institutions), the operator all."""
    if viewer.kind == "department":
        return Grant.department == viewer.supplier_id
    if viewer.kind == "institution":
        return sa.or_(Grant.institutions.is_(None), _any(viewer.id, Grant.institutions))
    return sa.true()


def get_grant(session: Session, *, grant_id: str, viewer: Principal) -> Grant:
    grant = session.scalar(sa.select(Grant).where(Grant.id == grant_id, readable_by(viewer)))
    if grant is None:
        raise NotFound(f"no grant {grant_id!r}")
    return grant


def list_grants(
    session: Session,
    *,
    viewer: Principal,
    department: str | None = None,
    dataset: str | None = None,
    product: str | None = None,
    live: bool | None = None,
    at: datetime | None = None,
) -> list[Grant]:
    """Grants the viewer may see, newest first; `live` True: in force at `at` (default now)."""
    q = sa.select(Grant).where(readable_by(viewer))
    if department is not None:
        q = q.where(Grant.department == department)
    if dataset is not None:
        q = q.where(Grant.datasets.contains([dataset]))
    if product is not None:
        q = q.where(sa.or_(Grant.products.is_(None), _any(product, Grant.products)))
    if live is not None:
        in_force = sa.and_(*_live_at(at or _now()))
        q = q.where(in_force if live else sa.not_(in_force))
    return list(session.scalars(q.order_by(Grant.created_at.desc(), Grant.id)))


def revoke_grant(session: Session, *, grant_id: str, by: Principal, reason: str) -> Grant:
    """Revoke a grant of `by`'s department (404 for any other). Waits for requests answering
    under the grant to commit (the exclusive per-dataset locks against their shared ones);
    from this transaction's commit on, every request is refused."""
    if by.kind != "department":
        raise Forbidden(f"only the department that granted it revokes a grant; you are {a_kind(by.kind)}")
    if not reason or not reason.strip():
        raise InvalidGrant(f"say why grant {grant_id} is revoked: 'reason' is empty")
    mine = sa.select(Grant).where(Grant.id == grant_id, Grant.department == by.supplier_id)
    found = session.scalar(mine)
    if found is None:
        raise NotFound(f"no grant {grant_id!r}")
    # queue behind the requests now using the grant's datasets, ahead of any that start later;
    # then lock the row itself against a concurrent revocation of the same grant
    _lock_datasets(session, found.datasets, exclusive=True)
    grant = session.scalar(mine.with_for_update().execution_options(populate_existing=True))
    assert grant is not None  # a grant is never deleted
    if grant.revoked_at is not None:
        raise Conflict(
            f"grant {grant_id} was already revoked at {grant.revoked_at.isoformat()}"
            + (f" ({grant.revoke_reason})" if grant.revoke_reason else ""),
            grant_id=grant_id,
            revoked_at=grant.revoked_at.isoformat(),
        )
    # the time the lock was obtained: every request under the grant has committed by now
    grant.revoked_at = session.scalar(sa.select(sa.func.statement_timestamp()))
    grant.revoked_by = by.id
    grant.revoke_reason = reason.strip()
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="grant.revoke",
        object_type="grant",
        object_id=grant.id,
        reason=reason.strip(),
        supplier_ids=[grant.department],
        detail={"datasets": grant.datasets, "purposes": grant.purposes},
    )
    return grant


def require_grants(
    session: Session,
    *,
    product_id: str,
    dataset_ids: Sequence[str],
    institution_id: int,
    purpose: str,
    at: datetime,
) -> list[Grant]:
    """The live grants covering every dataset for this product, institution and purpose at `at`.

    One query over the GIN index on datasets, under the shared per-dataset locks (see the
    module docstring). Raises `GrantRevoked`, `GrantExpired` or `GrantRequired` for the first
    dataset without one, listing every such dataset in `errors`.
    """
    wanted = list(dict.fromkeys(dataset_ids))
    if not wanted:
        return []
    scope = _scope_covers(product_id=product_id, institution_id=institution_id, purpose=purpose)
    _lock_datasets(session, wanted, exclusive=False)
    live = list(
        session.scalars(
            sa.select(Grant)
            .where(Grant.datasets.overlap(wanted), *scope, *_live_at(at))
            .order_by(Grant.id)
            .execution_options(populate_existing=True)
        )
    )
    covered: dict[str, Grant] = {}
    for grant in live:
        for ds in grant.datasets:
            covered.setdefault(ds, grant)
    missing = [ds for ds in wanted if ds not in covered]
    if not missing:
        return list(dict.fromkeys(covered[ds] for ds in wanted))
    refusals = _explain_missing(
        session, missing=missing, product_id=product_id, institution_id=institution_id, purpose=purpose, at=at
    )
    first = refusals[0]
    members = {k: v for k, v in first.items() if k not in ("error", "detail", "type")}
    more = f" ({len(refusals)} datasets lack a live grant, listed in errors)" if len(refusals) > 1 else ""
    raise first["error"](
        first["detail"] + more,
        errors=[
            {"location": r["dataset"], "problem": r["detail"]}
            | {k: v for k, v in r.items() if k not in ("error", "detail", "dataset")}
            for r in refusals
        ],
        **members,
    )


def _explain_missing(
    session: Session, *, missing: list[str], product_id: str, institution_id: int, purpose: str, at: datetime
) -> list[dict[str, Any]]:
    """For each dataset without a live grant: which grant of this scope was revoked or expired, if any."""
    past = list(
        session.scalars(
            sa.select(Grant)
            .where(
                Grant.datasets.overlap(missing),
                *_scope_covers(product_id=product_id, institution_id=institution_id, purpose=purpose),
            )
            .order_by(Grant.id)
        )
    )
    refusals: list[dict[str, Any]] = []
    for ds in missing:
        mine = [g for g in past if ds in g.datasets]
        base: dict[str, Any] = {"dataset": ds, "product": product_id, "purpose": purpose}
        revoked = sorted(
            (g for g in mine if g.revoked_at is not None and g.valid_from <= at),
            key=lambda g: g.revoked_at or at,
            reverse=True,
        )
        expired = sorted(
            (g for g in mine if g.revoked_at is None and g.valid_to <= at),
            key=lambda g: g.valid_to,
            reverse=True,
        )
        if revoked:
            g = revoked[0]
            assert g.revoked_at is not None
            refusals.append(
                {
                    **base,
                    "error": GrantRevoked,
                    "type": GrantRevoked.type,
                    "grant_id": g.id,
                    "department": g.department,
                    "revoked_at": g.revoked_at.isoformat(),
                    "detail": f"department {g.department} revoked grant {g.id} for dataset {ds} at "
                    f"{g.revoked_at.isoformat()}; product {product_id} cannot use it for {purpose} "
                    "until the department grants it again",
                }
            )
        elif expired:
            g = expired[0]
            refusals.append(
                {
                    **base,
                    "error": GrantExpired,
                    "type": GrantExpired.type,
                    "grant_id": g.id,
                    "department": g.department,
                    "valid_to": g.valid_to.isoformat(),
                    "detail": f"grant {g.id} of department {g.department} for dataset {ds} expired at "
                    f"{g.valid_to.isoformat()}; ask the department to renew it",
                }
            )
        else:
            try:
                department: str | None = dataset_service.get_dataset(session, dataset_id=ds).supplier_id
            except NotFound:
                department = None
            upcoming = [g for g in mine if g.revoked_at is None and g.valid_from > at]
            refusals.append(
                {
                    **base,
                    "error": GrantRequired,
                    "type": GrantRequired.type,
                    "department": department,
                    "detail": f"department {department or '(unknown)'} has not granted dataset {ds} "
                    f"for product {product_id}, purpose {purpose}, to this institution"
                    + (
                        f" (grant {upcoming[0].id} starts at {upcoming[0].valid_from.isoformat()})"
                        if upcoming
                        else "; ask the department for a grant"
                    ),
                }
            )
    return refusals


def grant_status(grant: Grant, *, at: datetime | None = None) -> str:
    """live, upcoming, expired or revoked at `at` (default now)."""
    when = at or _now()
    if grant.revoked_at is not None:
        return "revoked"
    if when < grant.valid_from:
        return "upcoming"
    if when >= grant.valid_to:
        return "expired"
    return "live"
