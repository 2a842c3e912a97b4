"""The product catalog (any principal), its DCAT-AP export (public), and the curator's
routes to apply specs and move products through their lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from datazone.deps import CuratorDep, OperatorDep, PrincipalDep, SessionDep
from datazone.errors import InvalidSpec, NotFound
from datazone.openapi import content_responses
from datazone.principal.models import Principal
from datazone.product import catalog_dcat, service
from datazone.product.schemas import (
    VISIBLE_STATES,
    AppliedOut,
    Category,
    ProductOut,
    ProductState,
    Tier,
    TransitionIn,
    TransitionOut,
)

router = APIRouter(prefix="/v1", tags=["product catalog"])

ProductId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$")]


def _visible_states(caller: Principal, state: ProductState | None) -> tuple[str, ...] | None:
    """The operator sees every state (or the one asked for); everyone else published and deprecated."""
    if caller.kind == "operator":
        return (state.value,) if state is not None else None
    if state is not None and state.value not in VISIBLE_STATES:
        return ()
    return (state.value,) if state is not None else VISIBLE_STATES


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
    states = _visible_states(caller, state)
    if states == ():
        return []
    found = service.search_catalog(
        session, category=category, department=department, tier=tier, keyword=q, states=states
    )
    return service.catalog_entries(session, products=found)


@router.get("/catalog/products/{product_id}", response_model=ProductOut)
def get_catalog_product(product_id: ProductId, session: SessionDep, caller: PrincipalDep) -> ProductOut:
    """One product of the catalog: what it answers, from which data, at what price and for which purposes."""
    product = service.get_product(session, product_id=product_id)
    if caller.kind != "operator" and product.state not in VISIBLE_STATES:
        # drafts and retired products are the operator's business: to others they do not exist
        raise NotFound(f"no product {product_id!r} in the catalog", product=product_id)
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
