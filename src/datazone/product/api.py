"""The product catalog (any principal), its DCAT-AP export (public), and the curator's
routes to apply specs and move products through their lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from datazone.deps import CuratorDep, InstitutionDep, OperatorDep, PrincipalDep, SessionDep
from datazone.errors import Forbidden, InvalidSpec
from datazone.lifecycle.schemas import ReasonIn
from datazone.limits import DbId, QueryText, SinceQuery, UntilQuery, period_or_default
from datazone.openapi import content_responses
from datazone.product import catalog_dcat, demands, evaluation, service
from datazone.product.schemas import (
    AppliedOut,
    Category,
    DemandIn,
    DemandOut,
    FulfilIn,
    ProductOut,
    ProductState,
    RatingIn,
    RatingOut,
    RatingSummaryOut,
    Tier,
    TransitionIn,
    TransitionOut,
    UsageVolumeOut,
)

router = APIRouter(prefix="/v1", tags=["product catalog"])
# mounted by the app where the lifecycle routes were, so routes match in the same order
demands_router = APIRouter(prefix="/v1/demands", tags=["lifecycle: demands"])
ratings_router = APIRouter(prefix="/v1/products", tags=["lifecycle: ratings"])
usage_router = APIRouter(prefix="/v1/usage", tags=["lifecycle: usage"])

ProductId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


@router.get("/catalog/products", response_model=list[ProductOut])
def search_products(
    session: SessionDep,
    caller: PrincipalDep,
    category: Category | None = None,
    department: Annotated[str | None, Query(description="a supplier whose data the product reads")] = None,
    tier: Tier | None = None,
    q: Annotated[str | None, Query(max_length=200, description="words in the id, names, outputs")] = None,
    state: ProductState | None = None,
) -> list[ProductOut]:
    """Search the product catalog by category, department, tier, words and state; others than the operator
    see published and deprecated products only."""
    found = service.search_catalog(
        session,
        category=category,
        department=department,
        tier=tier,
        keyword=q,
        states=(state.value,) if state is not None else None,
        viewer=caller,
    )
    return service.catalog_entries(session, products=found)


@router.get("/catalog/products/{product_id}", response_model=ProductOut)
def get_catalog_product(product_id: ProductId, session: SessionDep, caller: PrincipalDep) -> ProductOut:
    """One product of the catalog: what it answers, from which data, at what price and for which purposes."""
    product = service.catalog_product(session, product_id=product_id, viewer=caller)
    return service.catalog_entries(session, products=[product])[0]


@router.get(
    "/catalog/dcat",
    response_class=Response,
    responses=content_responses(catalog_dcat.JSONLD, schema={"type": "object"}),
)
def dcat_catalog(request: Request, session: SessionDep) -> Response:
    """The catalog as DCAT-AP 3 JSON-LD, for harvesters (CKAN ckanext-dcat and others). Public."""
    base = str(request.base_url).rstrip("/")
    body = catalog_dcat.catalog_jsonld(session, base_url=base)
    return Response(body, media_type=catalog_dcat.JSONLD)


@router.put("/products/{product_id}", response_model=AppliedOut)
def apply_product(
    product_id: ProductId,
    session: SessionDep,
    caller: CuratorDep,
    response: Response,
    spec: Annotated[dict[str, Any], Body(description="a product spec, as in products/*.yaml")],
) -> AppliedOut:
    """Create or update a product from its spec (the curator): 201 when created, 200 when changed or unchanged."""
    parsed = service.parse_product_spec(spec, origin="the request body")
    if parsed.id != product_id:
        raise InvalidSpec(
            f"the spec's id {parsed.id!r} differs from the path's {product_id!r}: PUT a spec to its own id",
            errors=[{"location": "id", "problem": f"expected {product_id!r}"}],
        )
    product, result = service.apply_product(session, spec=parsed, by=caller, origin="the request body")
    if result == "created":
        response.status_code = 201
    return AppliedOut(product=service.catalog_entries(session, products=[product])[0], result=result)


def _entry(session: SessionDep, product: Any) -> ProductOut:
    return service.catalog_entries(session, products=[product])[0]


@router.post("/products/{product_id}/publish", response_model=ProductOut)
def publish(product_id: ProductId, body: TransitionIn, session: SessionDep, caller: CuratorDep) -> ProductOut:
    """Publish a draft product (the curator): institutions with a contract can then be granted and call it."""
    _no_successor(body, "publish")
    product = service.publish_product(session, product_id=product_id, by=caller, reason=body.reason)
    return _entry(session, product)


@router.post("/products/{product_id}/deprecate", response_model=ProductOut)
def deprecate(
    product_id: ProductId, body: TransitionIn, session: SessionDep, caller: CuratorDep
) -> ProductOut:
    """Deprecate a published product (the curator), optionally naming its successor; existing callers keep it
    until retired."""
    product = service.deprecate_product(
        session,
        product_id=product_id,
        successor_id=body.successor,
        seamless=body.seamless,
        by=caller,
        reason=body.reason,
    )
    return _entry(session, product)


@router.post("/products/{product_id}/reinstate", response_model=ProductOut)
def reinstate(
    product_id: ProductId, body: TransitionIn, session: SessionDep, caller: CuratorDep
) -> ProductOut:
    """Return a deprecated product to published (the curator)."""
    _no_successor(body, "reinstate")
    product = service.reinstate_product(session, product_id=product_id, by=caller, reason=body.reason)
    return _entry(session, product)


@router.post("/products/{product_id}/retire", response_model=ProductOut)
def retire(product_id: ProductId, body: TransitionIn, session: SessionDep, caller: CuratorDep) -> ProductOut:
    """Retire a product (the curator): no more calls are answered."""
    _no_successor(body, "retire")
    product = service.retire_product(session, product_id=product_id, by=caller, reason=body.reason)
    return _entry(session, product)


@router.get("/products/{product_id}/history", response_model=list[TransitionOut])
def product_history(product_id: ProductId, session: SessionDep, caller: OperatorDep) -> list[TransitionOut]:
    """Every lifecycle transition of a product: who, when, why (the operator)."""
    return [TransitionOut.model_validate(t) for t in service.history(session, product_id=product_id)]


def _no_successor(body: TransitionIn, action: str) -> None:
    # the successor is named when deprecating; elsewhere it would be silently ignored
    if body.successor is not None or body.seamless:
        raise InvalidSpec(
            f"'successor' and 'seamless' belong to deprecate, not {action}",
            errors=[{"location": "successor", "problem": f"not accepted by {action}"}],
        )


# --- demands (需求申请) ---------------------------------------------------------------------------


@demands_router.post("", response_model=DemandOut, status_code=201)
def file_demand(body: DemandIn, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """File a data demand: what data an institution or department needs and why; a curator decides."""
    d = demands.file_demand(
        session,
        by=principal,
        title=body.title,
        description=body.description,
        purposes=[p.value for p in body.purposes],
        wanted_fields=body.wanted_fields,
        wanted_departments=body.wanted_departments,
    )
    return DemandOut.model_validate(d)


@demands_router.get("", response_model=list[DemandOut])
def list_demands(
    session: SessionDep, principal: PrincipalDep, state: QueryText = None
) -> list[DemandOut]:
    """Data demands: the operator sees all, others the ones they filed."""
    if principal.kind == "department":
        raise Forbidden("demands are filed by institutions and the operator; a department has none to list")
    return [DemandOut.model_validate(d) for d in demands.list_demands(session, viewer=principal, state=state)]


@demands_router.get("/{demand_id}", response_model=DemandOut)
def get_demand(demand_id: DbId, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """One data demand with its state and decision."""
    return DemandOut.model_validate(demands.get_demand(session, demand_id=demand_id, viewer=principal))


@demands_router.post("/{demand_id}/accept", response_model=DemandOut)
def accept_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Accept a demand (a curator): the operator commits to source the data."""
    return DemandOut.model_validate(
        demands.accept_demand(session, demand_id=demand_id, by=by, reason=body.reason)
    )


@demands_router.post("/{demand_id}/decline", response_model=DemandOut)
def decline_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Decline a demand, with the reason (a curator)."""
    return DemandOut.model_validate(
        demands.decline_demand(session, demand_id=demand_id, by=by, reason=body.reason)
    )


@demands_router.post("/{demand_id}/fulfil", response_model=DemandOut)
def fulfil_demand(demand_id: DbId, body: FulfilIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Mark a demand fulfilled by the datasets and product that answer it (a curator)."""
    d = demands.fulfil_demand(
        session,
        demand_id=demand_id,
        by=by,
        reason=body.reason,
        dataset_ids=body.dataset_ids,
        product_id=body.product_id,
    )
    return DemandOut.model_validate(d)


@demands_router.post("/{demand_id}/cancel", response_model=DemandOut)
def cancel_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """Cancel a demand (who filed it, or a curator)."""
    if principal.kind == "operator" and "curator" not in principal.roles:
        raise Forbidden(
            "cancelling a demand needs an operator with the role curator, or the filing institution"
        )
    d = demands.cancel_demand(session, demand_id=demand_id, by=principal, reason=body.reason)
    return DemandOut.model_validate(d)


# --- ratings and usage volume ----------------------------------------------------------------------


@ratings_router.post("/{product_id}/ratings", response_model=RatingOut)
def rate_product(product_id: str, body: RatingIn, session: SessionDep, by: InstitutionDep) -> RatingOut:
    """Rate a product for a month (1 to 5, with a comment; default: this month); rating again replaces it."""
    rating = evaluation.rate_product(
        session, product_id=product_id, by=by, score=body.score, comment=body.comment, period=body.period
    )
    return RatingOut.model_validate(rating)


@ratings_router.get("/{product_id}/ratings", response_model=RatingSummaryOut)
def rating_summary(product_id: str, session: SessionDep, _: PrincipalDep) -> RatingSummaryOut:
    """A product's ratings: count, average and distribution."""
    return RatingSummaryOut.model_validate(evaluation.rating_summary(session, product_id=product_id))


@usage_router.get("/volume", response_model=list[UsageVolumeOut])
def usage_volume(
    session: SessionDep,
    _: OperatorDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    product: QueryText = None,
) -> list[UsageVolumeOut]:
    """Data accesses per product and Shanghai day."""
    start, end = period_or_default(since, until)
    return [
        UsageVolumeOut.model_validate(u)
        for u in evaluation.usage_volume(session, since=start, until=end, product_id=product)
    ]
