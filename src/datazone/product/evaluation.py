"""How products are judged in use: institutions' monthly ratings, and the volume of calls per
product and day (the evaluation stage of the lifecycle)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset.schemas import SHANGHAI
from datazone.errors import Forbidden, InvalidSpec
from datazone.principal.models import Principal
from datazone.principal.service import a_kind
from datazone.product import service as product_service
from datazone.product.models import ProductRating

PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")


def usage_volume(
    session: Session, *, since: datetime, until: datetime, product_id: str | None = None
) -> list[audit_service.UsageVolume]:
    if until <= since:
        raise InvalidSpec(f"'until' ({until.isoformat()}) must be after 'since' ({since.isoformat()})")
    return audit_service.usage_volume(session, since=since, until=until, product_id=product_id)


def current_period(now: datetime) -> str:
    return now.astimezone(SHANGHAI).strftime("%Y-%m")


def rate_product(
    session: Session,
    *,
    product_id: str,
    by: Principal,
    score: int,
    comment: str = "",
    period: str | None = None,
    now: datetime | None = None,
) -> ProductRating:
    """An institution rates a product for a month (default: this month); rating again replaces it."""
    if by.kind != "institution":
        raise Forbidden(f"only an institution rates products; you are {a_kind(by.kind)}")
    problems: list[dict[str, Any]] = []
    if not 1 <= score <= 5:
        problems.append({"location": "score", "problem": f"score must be 1 to 5, not {score}"})
    month = period or current_period(now or datetime.now(UTC))
    if not PERIOD.match(month):
        problems.append({"location": "period", "problem": f"period must be a month YYYY-MM, not {month!r}"})
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    product_service.get_product(session, product_id=product_id)
    stmt = pg_insert(ProductRating).values(
        institution_id=by.id, product_id=product_id, period=month, score=score, comment=comment
    )
    rating_id = session.execute(
        stmt.on_conflict_do_update(
            constraint="uq_product_rating_month",
            set_={
                "score": stmt.excluded.score,
                "comment": stmt.excluded.comment,
                "updated_at": sa.func.now(),
            },
        ).returning(ProductRating.id)
    ).scalar_one()
    audit_service.record(
        session,
        actor=by,
        action="product.rate",
        object_type="product",
        object_id=product_id,
        detail={"period": month, "score": score},
    )
    rating = session.get(ProductRating, rating_id, populate_existing=True)
    assert rating is not None
    return rating


@dataclass(frozen=True)
class RatingSummary:
    product_id: str
    count: int
    mean: float | None
    by_score: dict[int, int]
    by_period: dict[str, float]  # month -> mean


def rating_summary(session: Session, *, product_id: str) -> RatingSummary:
    product_service.get_product(session, product_id=product_id)
    rows = session.execute(
        sa.select(ProductRating.period, ProductRating.score).where(ProductRating.product_id == product_id)
    ).all()
    by_score = {s: 0 for s in range(1, 6)}
    per_period: dict[str, list[int]] = {}
    for period, score in rows:
        by_score[score] += 1
        per_period.setdefault(period, []).append(score)
    scores = [score for _, score in rows]
    return RatingSummary(
        product_id=product_id,
        count=len(scores),
        mean=round(sum(scores) / len(scores), 3) if scores else None,
        by_score=by_score,
        by_period={p: round(sum(v) / len(v), 3) for p, v in sorted(per_period.items())},
    )


def mean_rating(
    session: Session, *, product_ids: Sequence[str], since: datetime, until: datetime
) -> float | None:
    """Mean score of the products' ratings in the months that overlap [since, until)."""
    if not product_ids:
        return None
    first, last = current_period(since), current_period(until - timedelta(microseconds=1))
    value = session.scalar(
        sa.select(sa.func.avg(ProductRating.score)).where(
            ProductRating.product_id.in_(list(product_ids)),
            ProductRating.period >= first,
            ProductRating.period <= last,
        )
    )
    return None if value is None else float(value)
