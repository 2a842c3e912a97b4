"""Lifecycle of suppliers, datasets and products in the four stages banks' external-data
systems use (intake, use, evaluation, retirement): the allowed transitions, and a record
of each one with who, when and why.

The owning domain keeps the current state on its own row and calls `transition()` to
move it; an illegal move raises `IllegalTransition` (409 problem+json naming the allowed
moves) and nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.ingest import service as ingest_service
from datazone.lifecycle import quality
from datazone.lifecycle.models import (
    DatasetQuality,
    DatasetReview,
    DemandRequest,
    ProductRating,
    Transition,
)
from datazone.limits import check_figure_limit, day_window
from datazone.principal.models import Principal
from datazone.principal.service import a_kind
from datazone.supplier import service as supplier_service
from datazone.supplier.models import Supplier
from datazone.supplier.schemas import SupplierSpec

PERIOD = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")

# subject type -> state -> states it may move to
MACHINES: dict[str, dict[str, tuple[str, ...]]] = {
    "supplier": {
        "applied": ("admitted", "rejected"),
        "rejected": ("applied",),
        "admitted": ("blacklisted",),
        "blacklisted": ("admitted",),
    },
    "dataset": {
        "intake": ("under_review",),
        "under_review": ("admitted", "rejected"),
        "rejected": ("under_review",),
        "admitted": ("deprecated",),
        "deprecated": ("admitted", "retired"),
        "retired": (),
    },
    # a demand for data (需求申请); the filer may withdraw it before it is fulfilled
    "demand": {
        "submitted": ("accepted", "declined", "cancelled"),
        "accepted": ("fulfilled", "cancelled"),
        "declined": (),
        "fulfilled": (),
        "cancelled": (),
    },
    "product": {
        "draft": ("published", "retired"),
        "published": ("deprecated",),
        "deprecated": ("published", "retired"),
        "retired": (),
    },
}


class IllegalTransition(Conflict):
    type = "illegal-transition"
    title = "This lifecycle transition is not allowed"


def allowed(subject_type: str, state: str) -> tuple[str, ...]:
    return MACHINES[subject_type].get(state, ())


def transition(
    session: Session,
    *,
    subject_type: str,
    subject_id: str,
    from_state: str | None,
    to_state: str,
    by: Principal | None,
    reason: str,
    by_name: str | None = None,
    supplier_ids: Sequence[str] = (),
    institution_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> Transition:
    """Check and record one transition (from_state None: the subject is being created).

    The caller updates its own row's state after this returns, in the same transaction.
    """
    machine = MACHINES[subject_type]
    if not reason or not reason.strip():
        raise InvalidSpec(f"say why the {subject_type} {subject_id!r} moves to {to_state}: 'reason' is empty")
    if to_state not in machine:
        raise InvalidSpec(f"{to_state!r} is not a {subject_type} state; states: {', '.join(machine)}")
    if from_state is not None and to_state not in machine.get(from_state, ()):
        nexts = machine.get(from_state, ())
        raise IllegalTransition(
            f"{subject_type} {subject_id!r} is {from_state}; it cannot move to {to_state}"
            + (f" (it may move to: {', '.join(nexts)})" if nexts else f" ({from_state} is final)"),
            subject_type=subject_type,
            subject_id=subject_id,
            state=from_state,
            allowed=list(nexts),
        )
    t = Transition(
        subject_type=subject_type,
        subject_id=subject_id,
        from_state=from_state,
        to_state=to_state,
        by_id=by.id if by is not None else None,
        by_name=by.name if by is not None else (by_name or "system"),
        reason=reason.strip(),
    )
    session.add(t)
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action=f"{subject_type}.{to_state}",
        object_type=subject_type,
        object_id=subject_id,
        reason=reason.strip(),
        detail={"from": from_state, "to": to_state, **(detail or {})},
        supplier_ids=[*supplier_ids, *([subject_id] if subject_type == "supplier" else [])],
        institution_id=institution_id,
    )
    session.flush()
    return t


def history(session: Session, *, subject_type: str, subject_id: str) -> list[Transition]:
    q = (
        sa.select(Transition)
        .where(Transition.subject_type == subject_type, Transition.subject_id == subject_id)
        .order_by(Transition.id)
    )
    return list(session.scalars(q))


# --- use gate --------------------------------------------------------------------------

# dataset states whose data may be served: a deprecated dataset still serves until retired
SERVING_STATES = ("admitted", "deprecated")


class DataNotInUse(Forbidden):
    type = "data-not-in-use"
    title = "Data not in use"


def require_in_use(session: Session, *, dataset_ids: list[str]) -> dict[str, str]:
    """Refuse (403 data-not-in-use) unless every dataset is admitted or deprecated and its
    supplier is not blacklisted; the problem names each dataset that fails and why. Returns
    {dataset id: supplier id}: the departments whose data the call uses.

    Two primary-key lookups, nothing cached: a retirement or a blacklisting holds from
    the very next request on every replica.
    """
    wanted = list(dict.fromkeys(dataset_ids))
    states = dataset_service.admission_states(session, dataset_ids=wanted)
    suppliers = supplier_service.admission_statuses(
        session, supplier_ids=sorted({st.supplier_id for st in states.values()})
    )
    errors: list[dict[str, Any]] = []
    for dataset_id in wanted:
        st = states.get(dataset_id)
        if st is None:
            errors.append(
                {
                    "location": dataset_id,
                    "dataset_id": dataset_id,
                    "state": None,
                    "problem": "no such dataset",
                }
            )
            continue
        if st.state not in SERVING_STATES:
            problem = f"dataset {dataset_id!r} is {st.state}, not admitted"
            if st.successor_id:
                problem += f"; its successor is {st.successor_id!r}"
            errors.append(
                {
                    "location": dataset_id,
                    "dataset_id": dataset_id,
                    "state": st.state,
                    "successor_id": st.successor_id,
                    "problem": problem,
                }
            )
        status = suppliers.get(st.supplier_id)
        if status == "blacklisted":
            errors.append(
                {
                    "location": dataset_id,
                    "dataset_id": dataset_id,
                    "supplier_id": st.supplier_id,
                    "supplier_status": status,
                    "problem": f"its supplier {st.supplier_id!r} is blacklisted",
                }
            )
    if errors:
        refused = list(dict.fromkeys(e["dataset_id"] for e in errors))
        raise DataNotInUse(
            "data not in use: " + "; ".join(f"{e['dataset_id']}: {e['problem']}" for e in errors),
            errors=errors,
            dataset_ids=refused,
        )
    return {dataset_id: states[dataset_id].supplier_id for dataset_id in wanted}


# --- suppliers ---------------------------------------------------------------------------


def _supplier_move(
    session: Session,
    *,
    supplier_id: str,
    to_state: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
    by_name: str | None = None,
) -> Supplier:
    supplier = supplier_service.get_supplier(session, supplier_id=supplier_id, for_update=True)
    transition(
        session,
        subject_type="supplier",
        subject_id=supplier_id,
        from_state=supplier.admission_status,
        to_state=to_state,
        by=by,
        by_name=by_name,
        reason=reason,
        detail={"attachments": attachments} if attachments else None,
    )
    return supplier_service.set_admission_status(
        session, supplier_id=supplier_id, status=to_state, attachments=attachments
    )


def apply_for_admission(
    session: Session,
    *,
    spec: SupplierSpec,
    attachments: list[dict[str, Any]],
    by: Principal,
    reason: str = "applied for admission",
) -> Supplier:
    """A supplier applies (status applied); a reviewer then admits or rejects it."""
    transition(
        session,
        subject_type="supplier",
        subject_id=spec.id,
        from_state=None,
        to_state="applied",
        by=by,
        reason=reason,
        detail={"attachments": attachments} if attachments else None,
    )
    return supplier_service.create_applicant(session, spec=spec, attachments=attachments)


def admit_supplier(
    session: Session,
    *,
    supplier_id: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
) -> Supplier:
    return _supplier_move(
        session, supplier_id=supplier_id, to_state="admitted", by=by, reason=reason, attachments=attachments
    )


def reject_supplier(
    session: Session,
    *,
    supplier_id: str,
    by: Principal | None,
    reason: str,
    attachments: list[dict[str, Any]] | None = None,
) -> Supplier:
    return _supplier_move(
        session, supplier_id=supplier_id, to_state="rejected", by=by, reason=reason, attachments=attachments
    )


def blacklist_supplier(session: Session, *, supplier_id: str, by: Principal | None, reason: str) -> Supplier:
    """Blacklist a supplier: from the next request on, `require_in_use` refuses all its datasets."""
    return _supplier_move(session, supplier_id=supplier_id, to_state="blacklisted", by=by, reason=reason)


def reinstate_supplier(session: Session, *, supplier_id: str, by: Principal | None, reason: str) -> Supplier:
    supplier = supplier_service.get_supplier(session, supplier_id=supplier_id)
    if supplier.admission_status != "blacklisted":
        # reinstatement is only out of the blacklist; name the move that fits instead
        nexts = allowed("supplier", supplier.admission_status)
        raise IllegalTransition(
            f"supplier {supplier_id!r} is {supplier.admission_status}, not blacklisted: there is nothing to "
            "reinstate" + (f" (it may move to: {', '.join(nexts)})" if nexts else ""),
            subject_type="supplier",
            subject_id=supplier_id,
            state=supplier.admission_status,
            allowed=list(nexts),
        )
    return _supplier_move(session, supplier_id=supplier_id, to_state="admitted", by=by, reason=reason)


# --- data admission review ------------------------------------------------------------------


class SampleFailed(Conflict):
    type = "sample-quality-failed"
    title = "The sample quality check failed"


def _dataset_move(
    session: Session,
    *,
    dataset_id: str,
    to_state: str,
    by: Principal | None,
    reason: str,
    by_name: str | None = None,
    successor_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id, for_update=True)
    transition(
        session,
        subject_type="dataset",
        subject_id=dataset_id,
        from_state=ds.admission_state,
        to_state=to_state,
        by=by,
        by_name=by_name,
        reason=reason,
        supplier_ids=[ds.supplier_id],
        detail=detail,
    )
    dataset_service.set_admission_state(
        session, dataset_id=dataset_id, state=to_state, successor_id=successor_id
    )


def start_review(
    session: Session, *, dataset_id: str, by: Principal | None, reason: str, by_name: str | None = None
) -> str:
    """intake (or rejected, resubmitted) -> under_review. Returns the new state."""
    _dataset_move(
        session, dataset_id=dataset_id, to_state="under_review", by=by, by_name=by_name, reason=reason
    )
    return "under_review"


def sample_check(
    session: Session, *, dataset_id: str, run_id: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Quality figures of the dataset's latest loaded version (or of the version a given run
    brought) and the figures that miss their thresholds: (figures, failures)."""
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    spec = dataset_service.spec_of(ds)
    thresholds = quality.Thresholds.declared(ds.spec)
    if run_id is not None:
        run = ingest_service.get_run(session, run_id=run_id)
        if run.dataset_id != dataset_id:
            raise InvalidSpec(
                f"ingest run {run_id} loaded {run.dataset_id!r}, not {dataset_id!r}; name a run of this dataset"
            )
        if run.version is None or run.status != "succeeded":
            raise InvalidSpec(
                f"ingest run {run_id} applied no version ({run.status}"
                + (f": {run.error}" if run.error else "")
                + "); review a succeeded run, or the latest version by naming no run"
            )
        version: int | None = run.version
    else:
        version = ds.current_version
    if version is None:
        figures: dict[str, Any] = {"version": None, "thresholds": asdict(thresholds)}
        return figures, [
            {
                "location": "sample",
                "problem": f"dataset {dataset_id!r} has no loaded version to sample; ingest a delivery first",
            }
        ]
    dv = dataset_service.get_version(session, dataset_id=dataset_id, version=version)
    run = ingest_service.get_run(session, run_id=dv.run_id)
    profile = dataset_service.profile_version(session, dataset_id=dataset_id, version=version)
    # rows_rejected counts distinct lines; the run's reject records (count_rejects) may hold
    # several per line, one per failing value
    figures = {
        "version": version,
        "run_id": run.id,
        "rows": profile.rows,
        "rows_received": run.rows_read,
        "rows_rejected": run.rows_rejected,
        "reject_records": ingest_service.count_rejects(session, run_id=run.id),
        "completeness": quality.completeness(profile.non_null, profile.rows),
        "completeness_overall": quality.overall_completeness(profile.non_null, profile.rows),
        "validity": quality.validity(run.rows_read, run.rows_rejected),
        "duplicate_keys": profile.duplicate_keys,
        "key_unique": profile.duplicate_keys == 0,
        "distributions": quality.distributions(profile.enum_counts),
        "thresholds": asdict(thresholds),
    }
    required = {f.name for f in spec.fields if f.required}
    return figures, quality.sample_failures(figures, required=required, thresholds=thresholds)


def review_dataset(
    session: Session,
    *,
    dataset_id: str,
    decision: str,
    by: Principal | None,
    reason: str,
    override: bool = False,
    run_id: int | None = None,
    by_name: str | None = None,
) -> DatasetReview:
    """Decide a dataset's admission on a sample quality check: under_review -> admitted | rejected.

    A dataset still in intake is put under review first (both moves recorded). Admitting a
    sample that misses a threshold is refused (409 sample-quality-failed listing each
    failed figure) unless `override` is set; the reason then records why it was admitted anyway.
    """
    if decision not in ("admit", "reject"):
        raise InvalidSpec(f"decision must be 'admit' or 'reject', not {decision!r}")
    if not reason or not reason.strip():
        raise InvalidSpec(f"say why the dataset {dataset_id!r} is {decision}ed: 'reason' is empty")
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id, for_update=True)
    to_state = "admitted" if decision == "admit" else "rejected"
    state = ds.admission_state
    if state != "intake" and to_state not in allowed("dataset", state):
        nexts = allowed("dataset", state)
        raise IllegalTransition(
            f"dataset {dataset_id!r} is {state}; it cannot be {to_state} by a review"
            + (f" (it may move to: {', '.join(nexts)})" if nexts else f" ({state} is final)"),
            subject_type="dataset",
            subject_id=dataset_id,
            state=state,
            allowed=list(nexts),
        )
    figures, failures = sample_check(session, dataset_id=dataset_id, run_id=run_id)
    if decision == "admit" and failures and not override:
        raise SampleFailed(
            f"dataset {dataset_id!r} cannot be admitted: "
            + "; ".join(f["problem"] for f in failures)
            + ". Have the supplier fix and resend the data, or admit with override and a reason",
            errors=failures,
            dataset_id=dataset_id,
            figures=figures,
        )
    if state == "intake":
        start_review(
            session, dataset_id=dataset_id, by=by, by_name=by_name, reason="admission review started"
        )
    overridden = decision == "admit" and bool(failures) and override
    _dataset_move(
        session,
        dataset_id=dataset_id,
        to_state=to_state,
        by=by,
        by_name=by_name,
        reason=("override: " if overridden else "") + reason.strip(),
        detail={"version": figures.get("version"), "failed": [f["location"] for f in failures]},
    )
    review = DatasetReview(
        dataset_id=dataset_id,
        version=figures.get("version"),
        run_id=figures.get("run_id"),
        decision=decision,
        passed=not failures,
        override=overridden,
        reason=reason.strip(),
        figures=figures,
        failures=failures,
        by_id=by.id if by is not None else None,
        by_name=by.name if by is not None else (by_name or "system"),
    )
    session.add(review)
    session.flush()
    return review


def list_reviews(session: Session, *, dataset_id: str) -> list[DatasetReview]:
    dataset_service.get_dataset(session, dataset_id=dataset_id)
    q = sa.select(DatasetReview).where(DatasetReview.dataset_id == dataset_id).order_by(DatasetReview.id)
    return list(session.scalars(q))


# --- retirement of data -------------------------------------------------------------------


def deprecate_dataset(
    session: Session, *, dataset_id: str, successor_id: str, by: Principal | None, reason: str
) -> None:
    """admitted -> deprecated, naming the dataset that replaces it (which must itself be serving)."""
    problems: list[dict[str, Any]] = []
    if successor_id == dataset_id:
        problems.append({"location": "successor", "problem": "a dataset cannot succeed itself"})
    else:
        st = dataset_service.admission_states(session, dataset_ids=[successor_id]).get(successor_id)
        if st is None:
            problems.append({"location": "successor", "problem": f"no dataset {successor_id!r}"})
        elif st.state != "admitted":
            problems.append(
                {
                    "location": "successor",
                    "problem": f"successor {successor_id!r} is {st.state}; name an admitted dataset",
                }
            )
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    _dataset_move(
        session,
        dataset_id=dataset_id,
        to_state="deprecated",
        by=by,
        reason=reason,
        successor_id=successor_id,
        detail={"successor_id": successor_id},
    )


def retire_dataset(session: Session, *, dataset_id: str, by: Principal | None, reason: str) -> None:
    """deprecated -> retired: from the next request on, `require_in_use` refuses it."""
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    _dataset_move(
        session, dataset_id=dataset_id, to_state="retired", by=by, reason=reason, successor_id=ds.successor_id
    )


def reinstate_dataset(session: Session, *, dataset_id: str, by: Principal | None, reason: str) -> None:
    """deprecated -> admitted: the deprecation is withdrawn (and its successor forgotten)."""
    _dataset_move(session, dataset_id=dataset_id, to_state="admitted", by=by, reason=reason)


# --- intake: demand requests --------------------------------------------------------------


def _demand_visible(demand: DemandRequest, viewer: Principal) -> bool:
    if viewer.kind == "operator":
        return True
    return viewer.kind == "institution" and demand.institution_id == viewer.id


def get_demand(
    session: Session, *, demand_id: int, viewer: Principal, for_update: bool = False
) -> DemandRequest:
    """A demand the viewer may see: an institution sees its own only (404 for another's)."""
    demand = session.get(DemandRequest, demand_id, with_for_update=for_update)
    if demand is None or not _demand_visible(demand, viewer):
        raise NotFound(f"no demand request {demand_id}")
    return demand


def file_demand(
    session: Session,
    *,
    by: Principal,
    title: str,
    description: str = "",
    purposes: Sequence[str] = (),
    wanted_fields: Sequence[str] = (),
    wanted_departments: Sequence[str] = (),
) -> DemandRequest:
    """An institution (for itself) or the operator files a demand for data: state submitted."""
    if by.kind not in ("institution", "operator"):
        raise Forbidden(f"only an institution or the operator may file a demand; you are {a_kind(by.kind)}")
    problems: list[dict[str, Any]] = []
    if not title.strip():
        problems.append({"location": "title", "problem": "say what data is wanted: 'title' is empty"})
    depts = list(dict.fromkeys(wanted_departments))
    known = supplier_service.admission_statuses(session, supplier_ids=depts)
    for i, d in enumerate(depts):
        if d not in known:
            problems.append({"location": f"wanted_departments.{i}", "problem": f"no supplier {d!r}"})
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    demand = DemandRequest(
        title=title.strip(),
        description=description,
        purposes=list(dict.fromkeys(purposes)),
        wanted_fields=list(dict.fromkeys(wanted_fields)),
        wanted_departments=depts,
        state="submitted",
        filed_by_id=by.id,
        filed_by_name=by.name,
        institution_id=by.id if by.kind == "institution" else None,
        fulfilled_dataset_ids=[],
    )
    session.add(demand)
    session.flush()
    transition(
        session,
        subject_type="demand",
        subject_id=str(demand.id),
        from_state=None,
        to_state="submitted",
        by=by,
        reason="demand filed",
        supplier_ids=depts,
        institution_id=demand.institution_id,
    )
    return demand


def list_demands(session: Session, *, viewer: Principal, state: str | None = None) -> list[DemandRequest]:
    q = sa.select(DemandRequest).order_by(DemandRequest.id)
    if viewer.kind == "institution":
        q = q.where(DemandRequest.institution_id == viewer.id)
    elif viewer.kind != "operator":
        return []
    if state:
        q = q.where(DemandRequest.state == state)
    return list(session.scalars(q))


def _demand_move(
    session: Session, *, demand: DemandRequest, to_state: str, by: Principal, reason: str,
    detail: dict[str, Any] | None = None,
) -> DemandRequest:  # fmt: skip
    transition(
        session,
        subject_type="demand",
        subject_id=str(demand.id),
        from_state=demand.state,
        to_state=to_state,
        by=by,
        reason=reason,
        supplier_ids=demand.wanted_departments,
        institution_id=demand.institution_id,
        detail=detail,
    )
    demand.state = to_state
    session.flush()
    return demand


def accept_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="accepted", by=by, reason=reason)


def decline_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="declined", by=by, reason=reason)


def cancel_demand(session: Session, *, demand_id: int, by: Principal, reason: str) -> DemandRequest:
    """The filing institution withdraws its demand, or the operator cancels it."""
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    return _demand_move(session, demand=demand, to_state="cancelled", by=by, reason=reason)


def fulfil_demand(
    session: Session,
    *,
    demand_id: int,
    by: Principal,
    reason: str,
    dataset_ids: Sequence[str] = (),
    product_id: str | None = None,
) -> DemandRequest:
    """accepted -> fulfilled, linking the dataset(s) and/or product that satisfy the demand."""
    demand = get_demand(session, demand_id=demand_id, viewer=by, for_update=True)
    ids = list(dict.fromkeys(dataset_ids))
    problems: list[dict[str, Any]] = []
    if not ids and product_id is None:
        problems.append(
            {"location": "(body)", "problem": "name the dataset_ids or the product_id that fulfil the demand"}
        )
    known = dataset_service.admission_states(session, dataset_ids=ids)
    for i, d in enumerate(ids):
        if d not in known:
            problems.append({"location": f"dataset_ids.{i}", "problem": f"no dataset {d!r}"})
    if product_id is not None:
        from datazone.product import service as product_service  # written alongside; imported late

        try:
            product_service.get_product(session, product_id=product_id)
        except NotFound:
            problems.append({"location": "product_id", "problem": f"no product {product_id!r}"})
    if problems:
        raise InvalidSpec("; ".join(p["problem"] for p in problems), errors=problems)
    _demand_move(
        session,
        demand=demand,
        to_state="fulfilled",
        by=by,
        reason=reason,
        detail={"dataset_ids": ids, "product_id": product_id},
    )
    demand.fulfilled_dataset_ids = ids
    demand.fulfilled_product_id = product_id
    session.flush()
    return demand


# --- evaluation: quality figures per version ----------------------------------------------


def _version_figures(
    session: Session, *, dataset_id: str, version: int, version_at: datetime, run_id: int,
    frequency: str, next_at: datetime | None, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    profile = dataset_service.profile_version(session, dataset_id=dataset_id, version=version)
    run = ingest_service.get_run(session, run_id=run_id)
    t = quality.timeliness(frequency=frequency, version_at=version_at, until=next_at or now)
    return {
        "dataset_id": dataset_id,
        "version": version,
        "rows": profile.rows,
        "rows_received": run.rows_read,
        "rows_rejected": run.rows_rejected,
        "duplicate_keys": profile.duplicate_keys,
        "completeness": quality.completeness(profile.non_null, profile.rows),
        "completeness_overall": quality.overall_completeness(profile.non_null, profile.rows),
        "validity": quality.validity(run.rows_read, run.rows_rejected),
        "on_time": t.on_time,
        "age_hours": t.age_hours,
        "lag_hours": t.lag_hours,
        "version_at": version_at,
        "evaluated_at": now,
    }


@dataclass(frozen=True)
class EvaluationResult:
    evaluated: list[tuple[str, int]]  # (dataset, version) figures computed
    refreshed: list[tuple[str, int]]  # timeliness updated


def evaluate_datasets(
    session: Session, *, now: datetime, dataset_ids: Sequence[str] | None = None
) -> EvaluationResult:
    """Compute figures for versions that have none, and refresh timeliness where it can still change.

    A version's timeliness is final once a newer version exists; the latest version's is
    measured against `now`. Safe to run from two schedulers at once: each row is upserted.
    Retired datasets are no longer evaluated.
    """
    evaluated: list[tuple[str, int]] = []
    refreshed: list[tuple[str, int]] = []
    for ds in dataset_service.list_datasets(session):
        if dataset_ids is not None and ds.id not in dataset_ids:
            continue
        if ds.admission_state == "retired" or ds.current_version is None:
            continue
        frequency = dataset_service.spec_of(ds).frequency.value
        versions = sorted(dataset_service.list_versions(session, dataset_id=ds.id), key=lambda v: v.version)
        have = {
            q.version: q
            for q in session.scalars(sa.select(DatasetQuality).where(DatasetQuality.dataset_id == ds.id))
        }
        for i, v in enumerate(versions):
            next_at = versions[i + 1].created_at if i + 1 < len(versions) else None
            existing = have.get(v.version)
            if existing is None:
                values = _version_figures(
                    session, dataset_id=ds.id, version=v.version, version_at=v.created_at, run_id=v.run_id,
                    frequency=frequency, next_at=next_at, now=now,
                )  # fmt: skip
                stmt = pg_insert(DatasetQuality).values(**values)
                session.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[DatasetQuality.dataset_id, DatasetQuality.version],
                        set_={k: stmt.excluded[k] for k in values if k not in ("dataset_id", "version")},
                    )
                )
                evaluated.append((ds.id, v.version))
            else:
                # the latest version ages with `now`; an older one changes only once, when its
                # successor arrives after it was first evaluated
                t = quality.timeliness(frequency=frequency, version_at=v.created_at, until=next_at or now)
                if next_at is None or (existing.on_time, existing.age_hours) != (t.on_time, t.age_hours):
                    existing.on_time, existing.age_hours, existing.lag_hours = (
                        t.on_time,
                        t.age_hours,
                        t.lag_hours,
                    )
                    existing.evaluated_at = now
                    refreshed.append((ds.id, v.version))
    session.flush()
    return EvaluationResult(evaluated, refreshed)


def dataset_quality(session: Session, *, dataset_id: str) -> list[DatasetQuality]:
    dataset_service.get_dataset(session, dataset_id=dataset_id)
    q = (
        sa.select(DatasetQuality)
        .where(DatasetQuality.dataset_id == dataset_id)
        .order_by(DatasetQuality.version.desc())
    )
    return list(session.scalars(q))


@dataclass(frozen=True)
class VersionQuality:
    """The quality figures of one dataset version as evaluated (see `quality` for their meaning)."""

    dataset_id: str
    version: int
    version_at: datetime
    rows: int
    rows_received: int
    rows_rejected: int
    duplicate_keys: int
    completeness_overall: float
    validity: float
    on_time: bool
    lag_hours: float
    evaluated_at: datetime


def quality_per_version(
    session: Session,
    *,
    viewer: Principal,
    days: int,
    last_day: date | None = None,
    dataset_id: str | None = None,
    limit: int = 1000,
) -> list[VersionQuality]:
    """The evaluated quality of every version that arrived in the `days` Shanghai days ending with
    `last_day` (default today), by dataset then version, at most `limit` (1..1000): the operator's
    every dataset (or `dataset_id`), a department its own. One query."""
    window = day_window(days=days, last_day=last_day)
    check_figure_limit(limit)
    q = (
        sa.select(DatasetQuality)
        .where(DatasetQuality.version_at >= window.since, DatasetQuality.version_at < window.until)
        .order_by(DatasetQuality.dataset_id, DatasetQuality.version)
        .limit(limit)
    )
    if viewer.kind == "department" and viewer.supplier_id:
        own = [d.id for d in dataset_service.list_datasets(session, department=viewer.supplier_id)]
        q = q.where(DatasetQuality.dataset_id.in_(own))
    elif viewer.kind != "operator":
        raise Forbidden(f"data quality is seen by the operator and the supplying department, not {a_kind(viewer.kind)}")
    if dataset_id is not None:
        q = q.where(DatasetQuality.dataset_id == dataset_id)
    return [
        VersionQuality(
            dataset_id=r.dataset_id,
            version=r.version,
            version_at=r.version_at,
            rows=r.rows,
            rows_received=r.rows_received,
            rows_rejected=r.rows_rejected,
            duplicate_keys=r.duplicate_keys,
            completeness_overall=r.completeness_overall,
            validity=r.validity,
            on_time=r.on_time,
            lag_hours=r.lag_hours,
            evaluated_at=r.evaluated_at,
        )
        for r in session.scalars(q)
    ]


# --- evaluation: usage volume and ratings -----------------------------------------------------


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
    from datazone.product import service as product_service  # written alongside; imported late

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
    from datazone.product import service as product_service  # written alongside; imported late

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


# --- evaluation: supplier scorecard ---------------------------------------------------------


@dataclass(frozen=True)
class Scorecard:
    supplier_id: str
    admission_status: str
    since: datetime
    until: datetime
    datasets: int
    datasets_admitted: int  # admitted or deprecated: serving
    versions: int  # versions that arrived in the period and have been evaluated
    mean_completeness: float | None
    mean_validity: float | None
    on_time_share: float | None
    rows_rejected: int  # rows rejected by the supplier's ingest runs in the period
    failed_runs: int
    products: list[str]
    usage_calls: int
    usage_entities: int
    mean_rating: float | None
    score: float | None
    weights: dict[str, float]


def supplier_scorecard(session: Session, *, supplier_id: str, since: datetime, until: datetime) -> Scorecard:
    """How a supplier's data did over [since, until); see quality.py for the score's weights."""
    if until <= since:
        raise InvalidSpec(f"'until' ({until.isoformat()}) must be after 'since' ({since.isoformat()})")
    supplier = supplier_service.get_supplier(session, supplier_id=supplier_id)
    datasets = dataset_service.list_datasets(session, department=supplier_id)
    ids = [d.id for d in datasets]
    figures = list(
        session.scalars(
            sa.select(DatasetQuality).where(
                DatasetQuality.dataset_id.in_(ids),
                DatasetQuality.version_at >= since,
                DatasetQuality.version_at < until,
            )
        )
    ) if ids else []  # fmt: skip
    rejected = failed = 0
    for d in ids:
        for run in ingest_service.list_runs(session, dataset_id=d, limit=100_000):
            if since <= run.created_at < until:
                rejected += run.rows_rejected
                failed += run.status == "failed"
    from datazone.product import service as product_service  # written alongside; imported late

    # every state: a product retired since may still have been called in the period
    products = sorted(
        p.id for p in product_service.search_catalog(session, department=supplier_id, states=None)
    )
    calls = entities = 0
    for pid in products:
        for u in audit_service.usage_volume(session, since=since, until=until, product_id=pid):
            calls += u.calls
            entities += u.entities
    rating = mean_rating(session, product_ids=products, since=since, until=until)

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 6) if values else None

    completeness = mean([f.completeness_overall for f in figures])
    validity = mean([f.validity for f in figures])
    on_time = mean([1.0 if f.on_time else 0.0 for f in figures])
    score = quality.overall_score(
        {
            "completeness": completeness,
            "validity": validity,
            "timeliness": on_time,
            "rating": quality.rating_component(rating),
        }
    )
    return Scorecard(
        supplier_id=supplier_id,
        admission_status=supplier.admission_status,
        since=since,
        until=until,
        datasets=len(datasets),
        datasets_admitted=sum(d.admission_state in SERVING_STATES for d in datasets),
        versions=len(figures),
        mean_completeness=completeness,
        mean_validity=validity,
        on_time_share=on_time,
        rows_rejected=rejected,
        failed_runs=failed,
        products=products,
        usage_calls=calls,
        usage_entities=entities,
        mean_rating=None if rating is None else round(rating, 3),
        score=score,
        weights=dict(quality.SCORE_WEIGHTS),
    )


def require_history_visible(
    session: Session, *, subject_type: str, subject_id: str, viewer: Principal
) -> None:
    """Operators see every history; a department its own supplier's and datasets'; an
    institution its own demands'; products' histories are public to every principal.
    Anything else answers 404, so existence does not leak."""
    if viewer.kind == "operator" or subject_type == "product":
        return
    missing = NotFound(f"no {subject_type} {subject_id!r}")
    if subject_type == "supplier":
        if viewer.kind == "department" and viewer.supplier_id == subject_id:
            return
    elif subject_type == "dataset":
        st = dataset_service.admission_states(session, dataset_ids=[subject_id]).get(subject_id)
        if st is not None and viewer.kind == "department" and viewer.supplier_id == st.supplier_id:
            return
    elif subject_type == "demand" and subject_id.isdigit():
        get_demand(session, demand_id=int(subject_id), viewer=viewer)
        return
    raise missing
