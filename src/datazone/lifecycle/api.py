"""Lifecycle routes: intake (demands, supplier and data admission), evaluation (quality,
ratings, scorecards, usage volume) and retirement. Thin: each route names who may call
it and hands over to the lifecycle service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from datazone.dataset import service as dataset_service
from datazone.deps import CuratorDep, InstitutionDep, OperatorDep, PrincipalDep, ReviewerDep, SessionDep
from datazone.errors import Forbidden, NotFound
from datazone.lifecycle import service
from datazone.lifecycle.schemas import (
    AdmissionIn,
    DatasetQualityOut,
    DatasetReviewOut,
    DatasetStateOut,
    DemandIn,
    DemandOut,
    DeprecateIn,
    FulfilIn,
    RatingIn,
    RatingOut,
    RatingSummaryOut,
    ReasonIn,
    ScorecardOut,
    SupplierApplicationIn,
    SupplierDecisionIn,
    TransitionOut,
    UsageVolumeOut,
)
from datazone.limits import DbId, QueryText, SinceQuery, UntilQuery
from datazone.principal.models import Principal
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierAdmissionOut, SupplierSpec

router = APIRouter()
demands = APIRouter(prefix="/v1/demands", tags=["lifecycle: demands"])
suppliers = APIRouter(prefix="/v1/suppliers", tags=["lifecycle: suppliers"])
datasets = APIRouter(prefix="/v1/datasets", tags=["lifecycle: datasets"])
ratings = APIRouter(prefix="/v1/products", tags=["lifecycle: ratings"])
lifecycle = APIRouter(prefix="/v1/lifecycle", tags=["lifecycle"])
usage = APIRouter(prefix="/v1/usage", tags=["lifecycle: usage"])

DEFAULT_PERIOD = timedelta(days=30)


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    end = until or datetime.now(UTC)
    return since or end - DEFAULT_PERIOD, end


def _own_supplier(principal: Principal, supplier_id: str) -> None:
    """Operators see every supplier; a department only itself (404, so existence does not leak)."""
    if principal.kind == "operator":
        return
    if principal.kind == "department" and principal.supplier_id == supplier_id:
        return
    raise NotFound(f"no supplier {supplier_id!r}")


def _own_dataset(session: SessionDep, principal: Principal, dataset_id: str) -> None:
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    if principal.kind == "operator":
        return
    if principal.kind == "department" and principal.supplier_id == ds.supplier_id:
        return
    raise NotFound(f"no dataset {dataset_id!r}")


def _state(session: SessionDep, dataset_id: str) -> DatasetStateOut:
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    return DatasetStateOut(dataset_id=ds.id, admission_state=ds.admission_state, successor_id=ds.successor_id)


# --- demands ----------------------------------------------------------------------------------


@demands.post("", response_model=DemandOut, status_code=201)
def file_demand(body: DemandIn, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """File a data demand: what data an institution or department needs and why; a curator decides."""
    d = service.file_demand(
        session,
        by=principal,
        title=body.title,
        description=body.description,
        purposes=[p.value for p in body.purposes],
        wanted_fields=body.wanted_fields,
        wanted_departments=body.wanted_departments,
    )
    return DemandOut.model_validate(d)


@demands.get("", response_model=list[DemandOut])
def list_demands(
    session: SessionDep, principal: PrincipalDep, state: QueryText = None
) -> list[DemandOut]:
    """Data demands: the operator sees all, others the ones they filed."""
    if principal.kind == "department":
        raise Forbidden("demands are filed by institutions and the operator; a department has none to list")
    return [DemandOut.model_validate(d) for d in service.list_demands(session, viewer=principal, state=state)]


@demands.get("/{demand_id}", response_model=DemandOut)
def get_demand(demand_id: DbId, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """One data demand with its state and decision."""
    return DemandOut.model_validate(service.get_demand(session, demand_id=demand_id, viewer=principal))


@demands.post("/{demand_id}/accept", response_model=DemandOut)
def accept_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Accept a demand (a curator): the operator commits to source the data."""
    return DemandOut.model_validate(
        service.accept_demand(session, demand_id=demand_id, by=by, reason=body.reason)
    )


@demands.post("/{demand_id}/decline", response_model=DemandOut)
def decline_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Decline a demand, with the reason (a curator)."""
    return DemandOut.model_validate(
        service.decline_demand(session, demand_id=demand_id, by=by, reason=body.reason)
    )


@demands.post("/{demand_id}/fulfil", response_model=DemandOut)
def fulfil_demand(demand_id: DbId, body: FulfilIn, session: SessionDep, by: CuratorDep) -> DemandOut:
    """Mark a demand fulfilled by the datasets and product that answer it (a curator)."""
    d = service.fulfil_demand(
        session,
        demand_id=demand_id,
        by=by,
        reason=body.reason,
        dataset_ids=body.dataset_ids,
        product_id=body.product_id,
    )
    return DemandOut.model_validate(d)


@demands.post("/{demand_id}/cancel", response_model=DemandOut)
def cancel_demand(demand_id: DbId, body: ReasonIn, session: SessionDep, principal: PrincipalDep) -> DemandOut:
    """Cancel a demand (who filed it, or a curator)."""
    if principal.kind == "operator" and "curator" not in principal.roles:
        raise Forbidden(
            "cancelling a demand needs an operator with the role curator, or the filing institution"
        )
    d = service.cancel_demand(session, demand_id=demand_id, by=principal, reason=body.reason)
    return DemandOut.model_validate(d)


# --- suppliers ----------------------------------------------------------------------------------


@suppliers.post("", response_model=SupplierAdmissionOut, status_code=201)
def apply_supplier(body: SupplierApplicationIn, session: SessionDep, by: OperatorDep) -> SupplierAdmissionOut:
    """File a supplier's application (status applied) with its documents; a reviewer decides."""
    spec = SupplierSpec(id=body.id, name=body.name, name_en=body.name_en, kind=body.kind)
    s = service.apply_for_admission(
        session,
        spec=spec,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
        by=by,
        reason=body.reason,
    )
    return SupplierAdmissionOut.model_validate(s)


@suppliers.get("", response_model=list[SupplierAdmissionOut])
def list_suppliers(
    session: SessionDep, _: OperatorDep, status: QueryText = None
) -> list[SupplierAdmissionOut]:
    """Supplier applications and admitted suppliers, optionally by status (the operator)."""
    return [
        SupplierAdmissionOut.model_validate(s)
        for s in supplier_service.list_suppliers(session, status=status)
    ]


@suppliers.get("/{supplier_id}", response_model=SupplierAdmissionOut)
def get_supplier(supplier_id: str, session: SessionDep, principal: PrincipalDep) -> SupplierAdmissionOut:
    """One supplier's admission record (the operator, or the department itself)."""
    _own_supplier(principal, supplier_id)
    return SupplierAdmissionOut.model_validate(
        supplier_service.get_supplier(session, supplier_id=supplier_id)
    )


@suppliers.post("/{supplier_id}/admit", response_model=SupplierAdmissionOut)
def admit_supplier(
    supplier_id: str, body: SupplierDecisionIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Admit an applied supplier (a reviewer): it may then publish datasets."""
    s = service.admit_supplier(
        session,
        supplier_id=supplier_id,
        by=by,
        reason=body.reason,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
    )
    return SupplierAdmissionOut.model_validate(s)


@suppliers.post("/{supplier_id}/reject", response_model=SupplierAdmissionOut)
def reject_supplier(
    supplier_id: str, body: SupplierDecisionIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Reject a supplier's application, with the reason (a reviewer)."""
    s = service.reject_supplier(
        session,
        supplier_id=supplier_id,
        by=by,
        reason=body.reason,
        attachments=[a.model_dump(exclude_none=True) for a in body.attachments],
    )
    return SupplierAdmissionOut.model_validate(s)


@suppliers.post("/{supplier_id}/blacklist", response_model=SupplierAdmissionOut)
def blacklist_supplier(
    supplier_id: str, body: ReasonIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Blacklist a supplier (a reviewer): its datasets stop serving."""
    return SupplierAdmissionOut.model_validate(
        service.blacklist_supplier(session, supplier_id=supplier_id, by=by, reason=body.reason)
    )


@suppliers.post("/{supplier_id}/reinstate", response_model=SupplierAdmissionOut)
def reinstate_supplier(
    supplier_id: str, body: ReasonIn, session: SessionDep, by: ReviewerDep
) -> SupplierAdmissionOut:
    """Lift a blacklisting (a reviewer)."""
    return SupplierAdmissionOut.model_validate(
        service.reinstate_supplier(session, supplier_id=supplier_id, by=by, reason=body.reason)
    )


@suppliers.get("/{supplier_id}/scorecard", response_model=ScorecardOut)
def supplier_scorecard(
    supplier_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> ScorecardOut:
    """A supplier's scorecard over a window: timeliness, quality and usage of its datasets."""
    _own_supplier(principal, supplier_id)
    start, end = _window(since, until)
    card = service.supplier_scorecard(session, supplier_id=supplier_id, since=start, until=end)
    return ScorecardOut.model_validate(card)


# --- datasets: admission, quality, retirement ----------------------------------------------------


@datasets.post("/{dataset_id}/review", response_model=DatasetStateOut)
def start_review(dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DatasetStateOut:
    """Submit a dataset for admission review (a curator)."""
    service.start_review(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@datasets.post("/{dataset_id}/admission", response_model=DatasetReviewOut)
def decide_admission(
    dataset_id: str, body: AdmissionIn, session: SessionDep, by: ReviewerDep
) -> DatasetReviewOut:
    """Admit or reject a dataset under review, with the reason (a reviewer)."""
    review = service.review_dataset(
        session,
        dataset_id=dataset_id,
        decision=body.decision,
        by=by,
        reason=body.reason,
        override=body.override,
        run_id=body.run_id,
    )
    return DatasetReviewOut.model_validate(review)


@datasets.get("/{dataset_id}/reviews", response_model=list[DatasetReviewOut])
def list_reviews(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> list[DatasetReviewOut]:
    """Every admission review of a dataset (the operator, or its department)."""
    _own_dataset(session, principal, dataset_id)
    return [DatasetReviewOut.model_validate(r) for r in service.list_reviews(session, dataset_id=dataset_id)]


@datasets.post("/{dataset_id}/deprecate", response_model=DatasetStateOut)
def deprecate_dataset(
    dataset_id: str, body: DeprecateIn, session: SessionDep, by: CuratorDep
) -> DatasetStateOut:
    """Deprecate a dataset (a curator), optionally naming its successor."""
    service.deprecate_dataset(
        session, dataset_id=dataset_id, successor_id=body.successor, by=by, reason=body.reason
    )
    return _state(session, dataset_id)


@datasets.post("/{dataset_id}/retire", response_model=DatasetStateOut)
def retire_dataset(dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep) -> DatasetStateOut:
    """Retire a dataset (a curator): products stop reading it."""
    service.retire_dataset(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@datasets.post("/{dataset_id}/reinstate", response_model=DatasetStateOut)
def reinstate_dataset(
    dataset_id: str, body: ReasonIn, session: SessionDep, by: CuratorDep
) -> DatasetStateOut:
    """Return a deprecated dataset to service (a curator)."""
    service.reinstate_dataset(session, dataset_id=dataset_id, by=by, reason=body.reason)
    return _state(session, dataset_id)


@datasets.get("/{dataset_id}/quality", response_model=list[DatasetQualityOut])
def dataset_quality(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> list[DatasetQualityOut]:
    """Quality figures per version, newest first (evaluated hourly by the scheduler)."""
    _own_dataset(session, principal, dataset_id)
    return [
        DatasetQualityOut.model_validate(q) for q in service.dataset_quality(session, dataset_id=dataset_id)
    ]


# --- products: ratings --------------------------------------------------------------------------


@ratings.post("/{product_id}/ratings", response_model=RatingOut)
def rate_product(product_id: str, body: RatingIn, session: SessionDep, by: InstitutionDep) -> RatingOut:
    """Rate a product for a month (1 to 5, with a comment; default: this month); rating again replaces it."""
    rating = service.rate_product(
        session, product_id=product_id, by=by, score=body.score, comment=body.comment, period=body.period
    )
    return RatingOut.model_validate(rating)


@ratings.get("/{product_id}/ratings", response_model=RatingSummaryOut)
def rating_summary(product_id: str, session: SessionDep, _: PrincipalDep) -> RatingSummaryOut:
    """A product's ratings: count, average and distribution."""
    return RatingSummaryOut.model_validate(service.rating_summary(session, product_id=product_id))


# --- history and usage ----------------------------------------------------------------------------


@lifecycle.get("/{subject_type}/{subject_id}/history", response_model=list[TransitionOut])
def history(
    subject_type: str, subject_id: str, session: SessionDep, principal: PrincipalDep
) -> list[TransitionOut]:
    """Every transition of a supplier, dataset, product or demand: who, when, why."""
    if subject_type not in service.MACHINES:
        raise NotFound(f"no lifecycle {subject_type!r}; subjects: {', '.join(service.MACHINES)}")
    service.require_history_visible(
        session, subject_type=subject_type, subject_id=subject_id, viewer=principal
    )
    return [
        TransitionOut.model_validate(t)
        for t in service.history(session, subject_type=subject_type, subject_id=subject_id)
    ]


@usage.get("/volume", response_model=list[UsageVolumeOut])
def usage_volume(
    session: SessionDep,
    _: OperatorDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    product: QueryText = None,
) -> list[UsageVolumeOut]:
    """Data accesses per product and Shanghai day."""
    start, end = _window(since, until)
    return [
        UsageVolumeOut.model_validate(u)
        for u in service.usage_volume(session, since=start, until=end, product_id=product)
    ]


for sub in (demands, suppliers, datasets, ratings, lifecycle, usage):
    router.include_router(sub)
