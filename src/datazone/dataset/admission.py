"""A dataset's admission and retirement: the sample quality check a reviewer decides on,
deprecation with a successor, retirement, and the use gate that lets only admitted data serve.

Every move is checked against the lifecycle state machine and recorded (who, when, why)
before the dataset's row changes; the sample figures come from the version's profile and
the ingest run that brought it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.dataset import quality, service
from datazone.dataset.models import DatasetReview
from datazone.errors import Conflict, Forbidden, InvalidSpec
from datazone.ingest import service as ingest_service
from datazone.lifecycle import service as lifecycle_service
from datazone.principal.models import Principal
from datazone.supplier import service as supplier_service

# --- the use gate --------------------------------------------------------------------------


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
    states = service.admission_states(session, dataset_ids=wanted)
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
        if st.state not in lifecycle_service.SERVING_STATES:
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
    ds = service.get_dataset(session, dataset_id=dataset_id, for_update=True)
    lifecycle_service.transition(
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
    service.set_admission_state(
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
    ds = service.get_dataset(session, dataset_id=dataset_id)
    spec = service.spec_of(ds)
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
    dv = service.get_version(session, dataset_id=dataset_id, version=version)
    run = ingest_service.get_run(session, run_id=dv.run_id)
    profile = service.profile_version(session, dataset_id=dataset_id, version=version)
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
    ds = service.get_dataset(session, dataset_id=dataset_id, for_update=True)
    to_state = "admitted" if decision == "admit" else "rejected"
    state = ds.admission_state
    if state != "intake" and to_state not in lifecycle_service.allowed("dataset", state):
        nexts = lifecycle_service.allowed("dataset", state)
        raise lifecycle_service.IllegalTransition(
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
    service.get_dataset(session, dataset_id=dataset_id)
    q = sa.select(DatasetReview).where(DatasetReview.dataset_id == dataset_id).order_by(DatasetReview.id)
    return list(session.scalars(q))


# --- retirement -------------------------------------------------------------------


def deprecate_dataset(
    session: Session, *, dataset_id: str, successor_id: str, by: Principal | None, reason: str
) -> None:
    """admitted -> deprecated, naming the dataset that replaces it (which must itself be serving)."""
    problems: list[dict[str, Any]] = []
    if successor_id == dataset_id:
        problems.append({"location": "successor", "problem": "a dataset cannot succeed itself"})
    else:
        st = service.admission_states(session, dataset_ids=[successor_id]).get(successor_id)
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
    ds = service.get_dataset(session, dataset_id=dataset_id)
    _dataset_move(
        session, dataset_id=dataset_id, to_state="retired", by=by, reason=reason, successor_id=ds.successor_id
    )


def reinstate_dataset(session: Session, *, dataset_id: str, by: Principal | None, reason: str) -> None:
    """deprecated -> admitted: the deprecation is withdrawn (and its successor forgotten)."""
    _dataset_move(session, dataset_id=dataset_id, to_state="admitted", by=by, reason=reason)
