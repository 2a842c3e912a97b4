"""The operator's pages of the console: the dashboard, the catalog, admission and review, institutions,
ingest runs and the audit trail.

Each route calls the service functions the API's route for the same action calls, with the same
arguments; the person's principal is the `by`/`viewer`. A page is for the roles the API asks of
the action (curator, reviewer, auditor); the dashboard shows each figure to the roles that may read it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from datazone.anonymous import service as anonymous_service
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.console.pages import (
    PREFIX,
    SHANGHAI,
    FormDep,
    NavItem,
    csrf_protect,
    done,
    field,
    fields,
    person_with,
    register_nav,
    render,
)
from datazone.console.service import Person
from datazone.contract import service as contract_service
from datazone.dataset import admission as dataset_admission
from datazone.dataset import evaluation as dataset_evaluation
from datazone.dataset import service as dataset_service
from datazone.deps import SessionDep
from datazone.errors import DomainError, InvalidSpec, NotFound
from datazone.ingest import service as ingest_service
from datazone.joint import service as joint_service
from datazone.metering import service as metering_service
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.product import demands as demand_service
from datazone.product import service as product_service
from datazone.psi import service as psi_service
from datazone.purposes import Purpose
from datazone.scoring import service as scoring_service
from datazone.scoring.schemas import RetireIn
from datazone.supplier import service as supplier_service

HOME = f"{PREFIX}/operator"
router = APIRouter(prefix=HOME, include_in_schema=False, dependencies=[Depends(csrf_protect)])


Someone = Annotated[Person, Depends(person_with("operator"))]
# an account holds only roles its principal holds (console.service.create_account), so the
# services' own role checks on the principal agree with these
Curator = Annotated[Person, Depends(person_with("operator", "curator"))]
Reviewer = Annotated[Person, Depends(person_with("operator", "reviewer"))]
Auditor = Annotated[Person, Depends(person_with("operator", "auditor"))]

register_nav(
    "operator",
    [
        NavItem(HOME, "nav.operator.home"),
        NavItem(f"{HOME}/catalog", "op.nav.catalog", ("curator",)),
        NavItem(f"{HOME}/datasets", "op.nav.datasets", ("reviewer",)),
        NavItem(f"{HOME}/review", "op.nav.review", ("reviewer",)),
        NavItem(f"{HOME}/suppliers", "op.nav.suppliers", ("reviewer",)),
        NavItem(f"{HOME}/institutions", "op.nav.institutions", ("curator",)),
        NavItem(f"{HOME}/ingest", "op.nav.ingest", ("curator",)),
        NavItem(f"{HOME}/audit", "op.nav.audit", ("auditor",)),
    ],
)

PERIODS = (7, 30, 90)
PeriodQuery = Annotated[int, Query(description="days shown: 7, 30 or 90")]
AWAITING_ADMISSION = ("intake", "under_review")
INGEST_STATUSES = ("new", "running", "succeeded", "failed", "aborted")
AUDIT_OUTCOMES = ("ok", "refused", "failed", "below_k", "built")
REJECTS_SHOWN = 100  # as the API's report previews; the CSV holds every one
AUDIT_PAGE = 200
CLEARANCES = (1, 2, 3, 4)  # fields of grade <= clearance are shown in clear


def _period(days: int) -> int:
    return days if days in PERIODS else 30


def _today() -> date:
    return datetime.now(SHANGHAI).date()


def _day_labels(days: int, last_day: date) -> list[date]:
    return [last_day - timedelta(days=days - 1 - i) for i in range(days)]


def _refused(
    request: Request,
    person: Person,
    session: SessionDep,
    exc: DomainError,
    page: Callable[..., HTMLResponse],
    **values: Any,
) -> HTMLResponse:
    """A form's action refused: nothing it began is kept, and its page says why, in words."""
    session.rollback()
    return page(request, session, person, refusal=exc, status_code=exc.status, **values)


# --- 1. dashboard ---------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
def home(request: Request, person: Someone, session: SessionDep, days: PeriodQuery = 30) -> Response:
    """Figures of the zone over the period, each shown to the roles that may read it."""
    days = _period(days)
    last_day = _today()
    labels = _day_labels(days, last_day)
    viewer = person.principal
    ctx: dict[str, Any] = {"days": days, "periods": PERIODS}
    if person.has_role("auditor"):
        usage = metering_service.usage_per_product_day(session, viewer=viewer, days=days, last_day=last_day)
        products = sorted({u.product_id for u in usage})
        calls = {(u.product_id, u.day): u.calls for u in usage}
        ctx["usage_chart"] = {
            "labels": [d.isoformat() for d in labels],
            "series": [{"label": p, "values": [calls.get((p, d), 0) for d in labels]} for p in products],
            "stacked": True,
        }
        ctx["calls_total"] = sum(u.calls for u in usage)
        revenue = billing_service.revenue_per_day(session, viewer=viewer, days=days, last_day=last_day)
        net = {r.day: r.net_fen for r in revenue}
        ctx["revenue_chart"] = {
            "labels": [d.isoformat() for d in labels],
            "series": [{"label": "¥", "values": [net.get(d, 0) / 100 for d in labels]}],
        }
        ctx["revenue_total_fen"] = sum(r.net_fen for r in revenue)
        refusals = audit_service.refusals_by_check(session, viewer=viewer, days=days, last_day=last_day)
        ctx["refusals"] = refusals
        ctx["refusals_chart"] = {
            "labels": [r.check for r in refusals],
            "series": [{"label": "", "values": [r.refusals for r in refusals]}],
        }
    if person.has_role("curator", "reviewer"):
        runs = ingest_service.runs_per_day(session, viewer=viewer, days=days, last_day=last_day)
        statuses = sorted({r.status for r in runs})
        per_day = {(r.status, r.day): r.runs for r in runs}
        ctx["runs_chart"] = {
            "labels": [d.isoformat() for d in labels],
            "series": [{"label": s, "values": [per_day.get((s, d), 0) for d in labels]} for s in statuses],
            "stacked": True,
        }
        ctx["failed_runs"] = ingest_service.latest_failed_runs(session, viewer=viewer, limit=10)
        ctx["quality"] = dataset_evaluation.quality_per_version(
            session, viewer=viewer, days=days, last_day=last_day, limit=200
        )
    ctx["psi_queue"] = psi_service.job_queue(session, viewer=viewer)
    ctx["scoring_queue"] = scoring_service.job_queue(session, viewer=viewer)
    ctx["joint_queue"] = joint_service.job_queue(session, viewer=viewer)
    ctx["build_queue"] = anonymous_service.build_queue(session, viewer=viewer)
    return render(request, "operator/home.html", person=person, **ctx)


# --- 2. catalog -----------------------------------------------------------------------------------


def _catalog_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
    spec_text: str = "",
) -> HTMLResponse:
    products = product_service.catalog_entries(
        session, products=product_service.search_catalog(session, states=None)
    )
    return render(
        request,
        "operator/catalog.html",
        person=person,
        status_code=status_code,
        products=products,
        successors=[p.id for p in products if p.state == "published"],
        refusal=refusal,
        spec_text=spec_text,
    )


@router.get("/catalog", response_class=HTMLResponse)
def catalog(request: Request, person: Curator, session: SessionDep) -> Response:
    return _catalog_page(request, session, person)


def _spec_document(text: str) -> Any:
    """The spec as the CLI reads a product file (YAML, of which JSON is a part)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(
            f"the spec is neither YAML nor JSON: {exc}",
            errors=[{"location": "spec", "problem": str(exc).splitlines()[0]}],
        ) from exc


@router.post("/catalog/apply", response_class=HTMLResponse)
def apply_spec(request: Request, person: Curator, session: SessionDep, form: FormDep) -> Response:
    """Create or update a product from its spec, as PUT /v1/products/{id} does."""
    text = field(form, "spec")
    try:
        parsed = product_service.parse_product_spec(_spec_document(text), origin="the spec")
        product, result = product_service.apply_product(
            session, spec=parsed, by=person.principal, origin="the spec"
        )
    except DomainError as exc:
        return _refused(request, person, session, exc, _catalog_page, spec_text=text)
    return done(f"{HOME}/catalog", f"op.catalog.applied.{result}", product=product.id)


@router.post("/catalog/{product_id}/{move}", response_class=HTMLResponse)
def move_product(
    request: Request, product_id: str, move: str, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Publish, deprecate (with a successor, maybe seamlessly), reinstate or retire a product."""
    reason = field(form, "reason")
    try:
        if not reason:
            raise InvalidSpec(
                "say why: 'reason' is empty", errors=[{"location": "reason", "problem": "required"}]
            )
        by = person.principal
        if move == "publish":
            product_service.publish_product(session, product_id=product_id, by=by, reason=reason)
        elif move == "deprecate":
            product_service.deprecate_product(
                session,
                product_id=product_id,
                successor_id=field(form, "successor") or None,
                seamless=field(form, "seamless") == "on",
                by=by,
                reason=reason,
            )
        elif move == "reinstate":
            product_service.reinstate_product(session, product_id=product_id, by=by, reason=reason)
        elif move == "retire":
            product_service.retire_product(session, product_id=product_id, by=by, reason=reason)
        else:
            raise InvalidSpec(f"no product move {move!r}: publish, deprecate, reinstate or retire")
    except DomainError as exc:
        return _refused(request, person, session, exc, _catalog_page)
    return done(f"{HOME}/catalog", f"op.catalog.moved.{move}", product=product_id)


# --- 4. dataset admission -------------------------------------------------------------------------


@dataclass(frozen=True)
class Awaiting:
    """A dataset awaiting admission and its sample check, as the reviewer decides on it."""

    dataset_id: str
    supplier_id: str
    name: str
    state: str
    figures: dict[str, Any]
    failures: list[dict[str, Any]]


def _awaiting(session: SessionDep) -> list[Awaiting]:
    found: list[Awaiting] = []
    for ds in dataset_service.list_datasets(session):
        if ds.admission_state not in AWAITING_ADMISSION:
            continue
        figures, failures = dataset_admission.sample_check(session, dataset_id=ds.id)
        found.append(
            Awaiting(
                ds.id, ds.supplier_id, str(ds.spec.get("name", ds.id)), ds.admission_state, figures, failures
            )
        )
    return found


def _datasets_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "operator/datasets.html",
        person=person,
        status_code=status_code,
        awaiting=_awaiting(session),
        refusal=refusal,
    )


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request, person: Reviewer, session: SessionDep) -> Response:
    return _datasets_page(request, session, person)


@router.post("/datasets/{dataset_id}/admission", response_class=HTMLResponse)
def decide_admission(
    request: Request, dataset_id: str, person: Reviewer, session: SessionDep, form: FormDep
) -> Response:
    """Admit or reject a dataset on its sample check, as POST /v1/datasets/{id}/admission does."""
    decision = field(form, "decision")
    try:
        dataset_admission.review_dataset(
            session,
            dataset_id=dataset_id,
            decision=decision,
            by=person.principal,
            reason=field(form, "reason"),
            override=field(form, "override") == "on",
        )
    except DomainError as exc:
        return _refused(request, person, session, exc, _datasets_page)
    return done(f"{HOME}/datasets", f"op.datasets.decided.{decision}", dataset=dataset_id)


# --- 5. review queue: demands, datasets, scoring models --------------------------------------------


def _review_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "operator/review.html",
        person=person,
        status_code=status_code,
        demands=demand_service.list_demands(session, viewer=person.principal, state="submitted"),
        awaiting=[
            d for d in dataset_service.list_datasets(session) if d.admission_state in AWAITING_ADMISSION
        ],
        models=scoring_service.list_models(session, institution_id=None, state="pending_review"),
        approved=scoring_service.list_models(session, institution_id=None, state="approved"),
        institutions={p.id: p.name for p in principal_service.list_principals(session, kind="institution")},
        refusal=refusal,
    )


@router.get("/review", response_class=HTMLResponse)
def review(request: Request, person: Reviewer, session: SessionDep) -> Response:
    return _review_page(request, session, person)


@router.post("/models/{model_id}/review", response_class=HTMLResponse)
def review_model(
    request: Request, model_id: str, person: Reviewer, session: SessionDep, form: FormDep
) -> Response:
    """Approve or reject a registered scoring model, as POST /v1/scoring/models/{id}/review does."""
    decision = field(form, "decision")
    try:
        scoring_service.review_model(
            session, model_id=model_id, by=person.principal, decision=decision, reason=field(form, "reason")
        )
    except DomainError as exc:
        return _refused(request, person, session, exc, _review_page)
    return done(f"{HOME}/review", f"op.review.model.{decision}", model=model_id)


@router.post("/models/{model_id}/retire", response_class=HTMLResponse)
def retire_model(request: Request, model_id: str, person: Reviewer, session: SessionDep, form: FormDep) -> Response:
    """Retire an approved model (it scores no more; its jobs stop), as POST /v1/scoring/models/{id}/retire does."""
    try:
        body = RetireIn.model_validate({"reason": field(form, "reason")})
        scoring_service.retire_model(session, model_id=model_id, by=person.principal, reason=body.reason)
    except ValidationError:
        refusal = InvalidSpec("say why the model is retired: the reason is empty or too long")
        return _refused(request, person, session, refusal, _review_page)
    except DomainError as exc:
        return _refused(request, person, session, exc, _review_page)
    return done(f"{HOME}/review", "op.review.model.retired", model=model_id)


@router.post("/demands/{demand_id}/{decision}", response_class=HTMLResponse)
def decide_demand(
    request: Request, demand_id: int, decision: str, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Accept or decline a data demand (a curator), as the demands API does."""
    reason = field(form, "reason")
    try:
        if decision == "accept":
            demand_service.accept_demand(session, demand_id=demand_id, by=person.principal, reason=reason)
        elif decision == "decline":
            demand_service.decline_demand(session, demand_id=demand_id, by=person.principal, reason=reason)
        else:
            raise InvalidSpec(f"a demand is accepted or declined, not {decision!r}")
    except DomainError as exc:
        return _refused(request, person, session, exc, _review_page)
    return done(f"{HOME}/review", f"op.review.demand.{decision}")


# --- 3. suppliers ---------------------------------------------------------------------------------

SUPPLIER_MOVES = ("admit", "reject", "blacklist", "reinstate")


def _suppliers_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "operator/suppliers.html",
        person=person,
        status_code=status_code,
        suppliers=supplier_service.list_suppliers(session),
        refusal=refusal,
    )


@router.get("/suppliers", response_class=HTMLResponse)
def suppliers(request: Request, person: Reviewer, session: SessionDep) -> Response:
    return _suppliers_page(request, session, person)


@router.post("/suppliers/{supplier_id}/{move}", response_class=HTMLResponse)
def move_supplier(
    request: Request, supplier_id: str, move: str, person: Reviewer, session: SessionDep, form: FormDep
) -> Response:
    """Admit, reject, blacklist or reinstate a supplier (a reviewer), as the suppliers API does."""
    reason, by = field(form, "reason"), person.principal
    try:
        if not reason:
            raise InvalidSpec(
                "say why: 'reason' is empty", errors=[{"location": "reason", "problem": "required"}]
            )
        if move == "admit":
            supplier_service.admit_supplier(
                session, supplier_id=supplier_id, by=by, reason=reason, attachments=[]
            )
        elif move == "reject":
            supplier_service.reject_supplier(
                session, supplier_id=supplier_id, by=by, reason=reason, attachments=[]
            )
        elif move == "blacklist":
            supplier_service.blacklist_supplier(session, supplier_id=supplier_id, by=by, reason=reason)
        elif move == "reinstate":
            supplier_service.reinstate_supplier(session, supplier_id=supplier_id, by=by, reason=reason)
        else:
            raise InvalidSpec(f"no supplier move {move!r}: {', '.join(SUPPLIER_MOVES)}")
    except DomainError as exc:
        return _refused(request, person, session, exc, _suppliers_page)
    return done(f"{HOME}/suppliers", f"op.suppliers.moved.{move}", supplier=supplier_id)


# --- 6. institutions ------------------------------------------------------------------------------


def _institutions_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
    contract_form: dict[str, Any] | None = None,
) -> HTMLResponse:
    viewer = person.principal
    contracts: dict[int, list[Any]] = {}
    for c in contract_service.list_contracts(session, viewer=viewer):
        contracts.setdefault(c.institution_id, []).append(c)
    clients: dict[int, list[Any]] = {}
    for client in oauth_service.list_clients(session, viewer=viewer):
        clients.setdefault(client.institution_id, []).append(client)
    plans = metering_service.list_plans(session, viewer=viewer)
    today = _today()
    return render(
        request,
        "operator/institutions.html",
        person=person,
        status_code=status_code,
        institutions=principal_service.list_principals(session, kind="institution"),
        contracts=contracts,
        clients=clients,
        # an institution may sign a public plan (no institution) or its own
        plans=plans,
        default_plan=metering_service.default_plan_id(),
        products=product_service.list_products(session, states=["published", "deprecated"]),
        purposes=[p.value for p in Purpose],
        clearances=CLEARANCES,
        default_clearance=contract_service.DEFAULT_CLEARANCE,
        valid_from=today.isoformat(),
        valid_to=(today + timedelta(days=365)).isoformat(),
        contract_form=contract_form or {},
        refusal=refusal,
    )


@router.get("/institutions", response_class=HTMLResponse)
def institutions(request: Request, person: Curator, session: SessionDep) -> Response:
    return _institutions_page(request, session, person)


def _institution(session: SessionDep, institution_id: int) -> Principal:
    principal = principal_service.get_principal(session, principal_id=institution_id)
    if principal.kind != "institution":
        raise NotFound(f"no institution {institution_id}")
    return principal


@router.post("/institutions/{institution_id}/suspend", response_class=HTMLResponse)
def suspend_institution(
    request: Request, institution_id: int, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Suspend an institution with the reason: its keys, clients and tokens are refused from the next
    request. What `datazone principal suspend` does, and the same audit entry (with the person)."""
    reason = field(form, "reason")
    try:
        institution = principal_service.suspend_principal(
            session, name=_institution(session, institution_id).name, reason=reason
        )
        _record_suspension(session, person, institution, "principal.suspend", reason)
    except DomainError as exc:
        return _refused(request, person, session, exc, _institutions_page)
    return done(f"{HOME}/institutions", "op.institutions.moved.suspend-institution")


@router.post("/institutions/{institution_id}/reinstate", response_class=HTMLResponse)
def reinstate_institution(
    request: Request, institution_id: int, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Lift an institution's suspension, saying why (`datazone principal reinstate`)."""
    reason = field(form, "reason")
    try:
        if not reason:
            raise InvalidSpec(
                "say why the suspension is lifted: 'reason' is empty",
                errors=[{"location": "reason", "problem": "required"}],
            )
        institution = principal_service.reinstate_principal(
            session, name=_institution(session, institution_id).name
        )
        _record_suspension(session, person, institution, "principal.reinstate", reason)
    except DomainError as exc:
        return _refused(request, person, session, exc, _institutions_page)
    return done(f"{HOME}/institutions", "op.institutions.moved.reinstate-institution")


def _record_suspension(
    session: SessionDep, person: Person, institution: Principal, action: str, reason: str
) -> None:
    # the principal service leaves the entry to its caller (the CLI writes it the same way)
    audit_service.record_principal_change(
        session, principal=institution, action=action, by=person.principal, reason=reason
    )


def _day_start(value: str, name: str) -> datetime:
    """A date the form gives, as the start of that day in the zone's time."""
    try:
        return datetime.combine(date.fromisoformat(value), time(0), tzinfo=SHANGHAI)
    except ValueError as exc:
        raise InvalidSpec(
            f"{name}: {value!r} is not a date (YYYY-MM-DD)", errors=[{"location": name, "problem": "a date"}]
        ) from exc


def _clearance(value: str) -> int:
    if not value:
        return contract_service.DEFAULT_CLEARANCE
    if not value.isdigit():
        raise InvalidSpec(
            f"clearance: {value!r} is not a number", errors=[{"location": "clearance", "problem": "1 to 4"}]
        )
    return int(value)


@router.post("/institutions/{institution_id}/contracts", response_class=HTMLResponse)
def sign_contract(
    request: Request, institution_id: int, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Sign a contract for an institution under a plan (a curator), as POST /v1/contracts does."""
    plan, products, purposes = field(form, "plan"), fields(form, "products"), fields(form, "purposes")
    clearance, valid_from, valid_to = (
        field(form, "clearance"),
        field(form, "valid_from"),
        field(form, "valid_to"),
    )
    try:
        contract = contract_service.create_contract(
            session,
            institution_id=institution_id,
            purposes=purposes,
            products=products,
            clearance=_clearance(clearance),
            valid_from=_day_start(valid_from, "valid_from"),
            valid_to=_day_start(valid_to, "valid_to"),
            plan_id=plan or None,
            by=person.principal,
        )
    except DomainError as exc:
        # the form comes back as it was filled, to be corrected
        values = {
            "institution_id": institution_id,
            "plan": plan,
            "products": products,
            "purposes": purposes,
            "clearance": clearance,
            "valid_from": valid_from,
            "valid_to": valid_to,
        }
        return _refused(request, person, session, exc, _institutions_page, contract_form=values)
    return done(f"{HOME}/institutions", "op.institutions.signed", contract=str(contract.id))


@router.post("/contracts/{contract_id}/{move}", response_class=HTMLResponse)
def move_contract(
    request: Request, contract_id: int, move: str, person: Curator, session: SessionDep, form: FormDep
) -> Response:
    """Suspend, resume or terminate an institution's contract with the reason (a curator), as the contracts
    API does."""
    reason = field(form, "reason")
    try:
        if move == "suspend":
            contract_service.suspend_contract(
                session, contract_id=contract_id, by=person.principal, reason=reason
            )
        elif move == "resume":
            contract_service.resume_contract(
                session, contract_id=contract_id, by=person.principal, reason=reason
            )
        elif move == "terminate":
            contract_service.terminate_contract(
                session, contract_id=contract_id, by=person.principal, reason=reason
            )
        else:
            raise InvalidSpec(f"a contract is suspended, resumed or terminated here, not {move!r}")
    except DomainError as exc:
        return _refused(request, person, session, exc, _institutions_page)
    return done(f"{HOME}/institutions", f"op.institutions.moved.{move}")


# --- 7. ingest runs -------------------------------------------------------------------------------


def _ingest_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
    status: str | None = None,
    dataset: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        "operator/ingest.html",
        person=person,
        status_code=status_code,
        runs=ingest_service.list_runs(session, dataset_id=dataset, status=status, limit=200),
        datasets=dataset_service.list_datasets(session),
        statuses=INGEST_STATUSES,
        status=status or "",
        dataset=dataset or "",
        refusal=refusal,
    )


@router.get("/ingest", response_class=HTMLResponse)
def ingest_runs(
    request: Request,
    person: Curator,
    session: SessionDep,
    status: Annotated[str, Query(max_length=16)] = "",
    dataset: Annotated[str, Query(max_length=63)] = "",
) -> Response:
    return _ingest_page(
        request,
        session,
        person,
        status=status if status in INGEST_STATUSES else None,
        dataset=dataset or None,
    )


@router.post("/ingest/run", response_class=HTMLResponse)
def run_now(request: Request, person: Curator, session: SessionDep, form: FormDep) -> Response:
    """Queue a dataset's ingest now, as POST /v1/datasets/{id}/runs does."""
    try:
        run = ingest_service.request_run(
            session,
            dataset_id=field(form, "dataset"),
            trigger="manual",
            requested_by=person.principal.name,
            by=person.principal,
        )
    except DomainError as exc:
        return _refused(request, person, session, exc, _ingest_page)
    return done(f"{HOME}/ingest/{run.id}", "op.ingest.queued")


@router.get("/ingest/{run_id}", response_class=HTMLResponse)
def ingest_run(request: Request, run_id: int, person: Curator, session: SessionDep) -> Response:
    """A run's report: its counts and its first rejects (line, column, reason)."""
    run = ingest_service.get_visible_run(session, run_id=run_id, viewer=person.principal)
    return render(
        request,
        "operator/ingest_run.html",
        person=person,
        run=run,
        rejects=ingest_service.list_rejects(session, run_id=run_id, limit=REJECTS_SHOWN),
        rejects_reported=ingest_service.count_rejects(session, run_id=run_id),
    )


@router.get("/ingest/{run_id}/rejects.csv")
def ingest_rejects_csv(run_id: int, person: Curator, session: SessionDep) -> Response:
    """Every reject of a run, as the API's CSV, with a BOM so that Excel reads the Chinese."""
    ingest_service.get_visible_run(session, run_id=run_id, viewer=person.principal)
    text = "\ufeff" + "".join(ingest_service.reject_report_csv(session, run_id=run_id))
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ingest-run-{run_id}-rejects.csv"'},
    )


# --- 8. audit trail -------------------------------------------------------------------------------


def _audit_page(
    request: Request,
    session: SessionDep,
    person: Person,
    *,
    refusal: DomainError | None = None,
    status_code: int = 200,
    report: audit_service.ChainReport | None = None,
    roots_text: str = "",
    search: dict[str, str] | None = None,
) -> HTMLResponse:
    search = search or {}
    days = _period(int(search.get("days") or 30))
    since = datetime.now(UTC) - timedelta(days=days)
    entries = audit_service.list_entries(
        session,
        viewer=person.principal,
        action=search.get("action") or None,
        actor=search.get("actor") or None,
        object_id=search.get("object") or None,
        outcome=search.get("outcome") or None,
        since=since,
        limit=AUDIT_PAGE,
    )
    return render(
        request,
        "operator/audit.html",
        person=person,
        status_code=status_code,
        entries=entries,
        search=search,
        days=days,
        periods=PERIODS,
        outcomes=AUDIT_OUTCOMES,
        report=report,
        roots_text=roots_text,
        refusal=refusal,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_trail(
    request: Request,
    person: Auditor,
    session: SessionDep,
    action: Annotated[str, Query(max_length=63)] = "",
    actor: Annotated[str, Query(max_length=200)] = "",
    object: Annotated[str, Query(max_length=200)] = "",
    outcome: Annotated[str, Query(max_length=16)] = "",
    days: PeriodQuery = 30,
) -> Response:
    search = {"action": action, "actor": actor, "object": object, "outcome": outcome, "days": str(days)}
    return _audit_page(request, session, person, search=search)


@router.post("/audit/verify", response_class=HTMLResponse)
def verify_chain(request: Request, person: Auditor, session: SessionDep, form: FormDep) -> Response:
    """Verify the chain (and, given published roots, that each block is the one published), as the API does."""
    roots_text = field(form, "roots")
    try:
        roots: Sequence[Any] | None = None
        if roots_text:
            try:
                roots = json.loads(roots_text)
            except json.JSONDecodeError as exc:
                raise InvalidSpec(
                    f"the roots are not JSON: {exc}", errors=[{"location": "roots", "problem": str(exc)}]
                ) from exc
            if not isinstance(roots, list):
                raise InvalidSpec("the roots are a JSON list, as the exported roots file holds them")
        report = audit_service.verify_chain(session, roots=roots)
    except DomainError as exc:
        return _refused(request, person, session, exc, _audit_page, roots_text=roots_text)
    return _audit_page(request, session, person, report=report, roots_text=roots_text)


@router.get("/audit/roots.json")
def export_roots(person: Auditor, session: SessionDep) -> Response:
    """The published roots, as GET /v1/audit/blocks gives them: kept, they let the chain be checked later."""
    blocks = audit_service.list_blocks(session, from_height=0, limit=None)
    return Response(
        json.dumps(blocks, ensure_ascii=False, indent=1, default=str),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="audit-roots.json"'},
    )
