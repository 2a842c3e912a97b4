from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Response

from datazone.deps import CuratorDep, PrincipalDep, SessionDep
from datazone.limits import QueryDbId, SinceQuery, UntilQuery, page_limit
from datazone.metering import service
from datazone.metering.schemas import PlanIn, PlanOut, UsageDayOut, UsageOut
from datazone.openapi import content_responses

router = APIRouter(prefix="/v1", tags=["metering"])


@router.post("/plans", status_code=201)
def create_plan(body: PlanIn, session: SessionDep, curator: CuratorDep) -> PlanOut:
    """Create a price plan for an institution and product (a curator): unit price, free units, quota, rate
    limit, spend cap."""
    plan = service.create_plan(
        session,
        plan_id=body.id,
        name=body.name,
        institution_id=body.institution_id,
        free_units=body.free_units,
        free_period=body.free_period,
        unit_price_fen=body.unit_price_fen,
        monthly_cap_fen=body.monthly_cap_fen,
        quota_units=body.quota_units,
        quota_period=body.quota_period,
        rate_per_second=body.rate_per_second,
        burst=body.burst,
        by=curator,
    )
    return PlanOut.model_validate(plan)


@router.get("/plans")
def list_plans(
    session: SessionDep, principal: PrincipalDep, institution_id: QueryDbId = None
) -> list[PlanOut]:
    """Price plans: an institution sees its own, the operator all."""
    plans = service.list_plans(session, viewer=principal, institution_id=institution_id)
    return [PlanOut.model_validate(p) for p in plans]


@router.get("/plans/{plan_id}")
def get_plan(plan_id: str, session: SessionDep, principal: PrincipalDep) -> PlanOut:
    """One price plan."""
    return PlanOut.model_validate(service.get_plan(session, plan_id=plan_id, viewer=principal))


@router.get("/usage")
def usage(
    session: SessionDep,
    principal: PrincipalDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    institution_id: QueryDbId = None,
) -> UsageOut:
    """Usage by institution, product and Shanghai day: calls, units, free units, charged fen
    (default window: this month so far). An institution sees its own."""
    start, end = service.usage_window(since, until)
    days = service.usage_by_day(
        session, viewer=principal, since=start, until=end, institution_id=institution_id
    )
    return UsageOut(
        since=start,
        until=end,
        days=[UsageDayOut.model_validate(d) for d in days],
        units=sum(d.units for d in days),
        free_units=sum(d.free_units for d in days),
        charged_fen=sum(d.charged_fen for d in days),
    )


@router.get(
    "/usage/events",
    response_class=Response,
    responses=content_responses(
        service.CLOUDEVENTS_BATCH, schema={"type": "array", "items": {"type": "object"}}
    ),
)
def usage_events(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    since: SinceQuery = None,
    after: uuid.UUID | None = None,
    limit: Annotated[int, page_limit(service.MAX_EVENTS_PAGE)] = 1000,
    institution_id: QueryDbId = None,
) -> Response:
    """Usage events as a CloudEvents 1.0 JSON batch, in time order; a full page links to the next."""
    events = service.list_usage_events(
        session, viewer=principal, since=since, after=after, limit=limit, institution_id=institution_id
    )
    headers: dict[str, str] = {}
    if len(events) == limit:
        nxt = request.url.remove_query_params(["after", "since"]).include_query_params(
            after=str(events[-1].id)
        )
        headers["Link"] = f'<{nxt}>; rel="next"'
    return Response(service.cloudevents_batch(events), media_type=service.CLOUDEVENTS_BATCH, headers=headers)
