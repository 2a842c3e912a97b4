"""The department's portal: its datasets with their versions and ingest runs (a run's rejects too),
its grants (created, revoked with one confirmed click), and every use of its data.

A page calls the services the API's routes call (dataset/, ingest/, grant/ and audit/api.py), with
the person's principal as the viewer or actor, so the API's scoping, refusals and audit entries
hold here as they do there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
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
from datazone.dataset import service as dataset_service
from datazone.dataset.models import Dataset, DatasetVersion
from datazone.deps import DbDep, SessionDep
from datazone.errors import DomainError, Forbidden, InvalidSpec
from datazone.grant import service as grant_service
from datazone.grant.models import Grant
from datazone.grant.schemas import GrantIn, RevokeIn
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.limits import MAX_FIGURE_DAYS, DbId, QueryDbId, QueryText, day_window
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.product import service as product_service
from datazone.product.models import Product
from datazone.purposes import Purpose

HOME = f"{PREFIX}/department"
GRANTS = f"{HOME}/grants"
USES = f"{HOME}/uses"

router = APIRouter(prefix=HOME, include_in_schema=False, dependencies=[Depends(csrf_protect)])
Officer = Annotated[Person, Depends(person_with("department", "officer"))]

register_nav(
    "department",
    [
        NavItem(HOME, "nav.department.home"),
        NavItem(GRANTS, "dept.nav.grants"),
        NavItem(USES, "dept.nav.uses"),
    ],
)

VERSIONS_SHOWN = 5  # a dataset's newest versions on the home page
RUNS_SHOWN = 5  # and its latest ingest runs
REJECTS_SHOWN = 100  # a run's rejects on its page (as the API's report); the CSV has them all
USES_PAGE = 50  # uses per page of the table
USES_DEFAULT_DAYS = 30  # the period the uses page opens on, ending today
GRANT_STATUSES = ("live", "upcoming", "expired", "revoked")


def department_of(person: Person) -> str:
    """The department (supplier id) the person acts for. A department principal always names one;
    without it a dataset listing would not be scoped, so refuse rather than show everything."""
    supplier_id = person.principal.supplier_id
    if not supplier_id:
        raise Forbidden(f"{person.principal.name} names no department", check="page")
    return supplier_id


def today_in_shanghai() -> date:
    return datetime.now(UTC).astimezone(SHANGHAI).date()


def shanghai_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=SHANGHAI)


# ---------------------------------------------------------------- datasets, versions, runs


@dataclass(frozen=True)
class DatasetShelf:
    """One of the department's datasets on its home page, with its newest versions and runs."""

    dataset: Dataset
    name: str
    versions: list[DatasetVersion]
    version_count: int
    runs: list[IngestRun]


@router.get("", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, person: Officer) -> Response:
    department = department_of(person)
    shelves = []
    for dataset in dataset_service.list_datasets(session, department=department):
        versions = dataset_service.list_versions(session, dataset_id=dataset.id)
        runs = ingest_service.list_runs(
            session, dataset_id=dataset.id, department=department, limit=RUNS_SHOWN
        )
        shelves.append(
            DatasetShelf(
                dataset=dataset,
                name=dataset_service.spec_of(dataset).name,
                versions=versions[:VERSIONS_SHOWN],
                version_count=len(versions),
                runs=runs,
            )
        )
    return render(request, "department/home.html", person=person, shelves=shelves)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_report(request: Request, run_id: DbId, session: SessionDep, person: Officer) -> Response:
    """A run's report as GET /v1/ingest/runs/{id} gives it: another department's run is 404."""
    run = ingest_service.get_visible_run(session, run_id=run_id, viewer=person.principal)
    rejects = ingest_service.list_rejects(session, run_id=run_id, limit=REJECTS_SHOWN)
    return render(
        request,
        "department/run.html",
        person=person,
        run=run,
        rejects=rejects,
        rejects_reported=ingest_service.count_rejects(session, run_id=run_id),
    )


@router.get("/runs/{run_id}/rejects.csv")
def download_rejects(run_id: DbId, session: SessionDep, db: DbDep, person: Officer) -> Response:
    """Every rejected row of the run (line, column, reason, value), streamed as the API streams it,
    after a byte order mark so that Excel reads the Chinese as UTF-8."""
    ingest_service.get_visible_run(session, run_id=run_id, viewer=person.principal)

    def pages() -> Iterator[str]:
        yield "\ufeff"
        # a session of its own: the request's session is closed before a streamed body is sent
        with db.unit_of_work() as report_session:
            yield from ingest_service.reject_report_csv(report_session, run_id=run_id)

    return StreamingResponse(
        pages(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ingest-run-{run_id}-rejects.csv"'},
    )


# ---------------------------------------------------------------- grants


@dataclass(frozen=True)
class GrantRow:
    grant: Grant
    status: str


def grant_choices(session: Session, department: str) -> dict[str, Any]:
    """What the grant form offers: the department's datasets, the purposes, the products that read
    its data (any state: a grant may precede publication) and the institutions of the zone."""
    datasets = dataset_service.list_datasets(session, department=department)
    products: list[Product] = product_service.search_catalog(session, department=department, states=None)
    institutions: list[Principal] = principal_service.list_principals(session, kind="institution")
    return {
        "datasets": [(d.id, dataset_service.spec_of(d).name) for d in datasets],
        "purposes": [p.value for p in Purpose],
        "products": products,
        "institutions": institutions,
        "institution_names": {p.id: p.name for p in institutions},
    }


def grants_page(
    request: Request,
    session: Session,
    person: Person,
    *,
    status: str | None = None,
    status_code: int = 200,
    refusal: DomainError | None = None,
    entered: dict[str, Any] | None = None,
) -> Response:
    department = department_of(person)
    grants = grant_service.list_grants(session, viewer=person.principal)
    rows = [GrantRow(g, grant_service.grant_status(g)) for g in grants]
    if status:
        rows = [r for r in rows if r.status == status]
    today = today_in_shanghai()
    return render(
        request,
        "department/grants.html",
        person=person,
        status_code=status_code,
        refusal=refusal,
        rows=rows,
        status=status or "",
        statuses=GRANT_STATUSES,
        entered=entered
        or {"valid_from": today.isoformat(), "valid_to": (today + timedelta(days=364)).isoformat()},
        **grant_choices(session, department),
    )


@router.get("/grants", response_class=HTMLResponse)
def grants(
    request: Request,
    session: SessionDep,
    person: Officer,
    status: Annotated[str | None, Query(pattern="^(live|upcoming|expired|revoked)?$")] = None,
) -> Response:
    return grants_page(request, session, person, status=status or None)


def form_day(form_value: str, location: str, problems: list[dict[str, str]]) -> date | None:
    if not form_value:
        problems.append({"location": location, "problem": "give a date"})
        return None
    try:
        return date.fromisoformat(form_value)
    except ValueError:
        problems.append({"location": location, "problem": f"{form_value!r} is not a date (YYYY-MM-DD)"})
        return None


def grant_request(form: dict[str, Any], department: str) -> GrantIn:
    """The posted form as the API's request body, checked by the same model: the term is of whole
    Shanghai days, from the start of the first to the end of the last."""
    problems: list[dict[str, str]] = []
    first = form_day(form["valid_from"], "valid_from", problems)
    last = form_day(form["valid_to"], "valid_to", problems)
    if problems or first is None or last is None:
        raise grant_service.InvalidGrant(
            "the grant is not valid, nothing was written: "
            + "; ".join(f"{p['location']}: {p['problem']}" for p in problems),
            errors=problems,
        )
    try:
        return GrantIn(
            department=department,
            datasets=form["datasets"],
            purposes=form["purposes"],
            products=form["products"] if form["products_scope"] == "listed" else None,
            institutions=form["institutions"] if form["institutions_scope"] == "listed" else None,
            valid_from=shanghai_midnight(first),
            valid_to=shanghai_midnight(last + timedelta(days=1)),
        )
    except (ValidationError, OverflowError) as exc:
        errors = (
            [{"location": ".".join(str(p) for p in e["loc"]), "problem": str(e["msg"])} for e in exc.errors()]
            if isinstance(exc, ValidationError)
            else [{"location": "valid_to", "problem": "lies outside the calendar"}]
        )
        raise grant_service.InvalidGrant(
            "the grant is not valid, nothing was written: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        ) from None


@router.post("/grants", response_class=HTMLResponse)
def create_grant(request: Request, session: SessionDep, person: Officer, form: FormDep) -> Response:
    department = department_of(person)
    entered: dict[str, Any] = {
        "datasets": fields(form, "datasets"),
        "purposes": fields(form, "purposes"),
        "products_scope": field(form, "products_scope", default="any"),
        "products": fields(form, "products"),
        "institutions_scope": field(form, "institutions_scope", default="all"),
        "institutions": fields(form, "institutions"),
        "valid_from": field(form, "valid_from"),
        "valid_to": field(form, "valid_to"),
    }
    try:
        body = grant_request(entered, department)
        # as grant/api.py's create_grant calls it
        grant = grant_service.create_grant(
            session,
            department=body.department or department,
            datasets=body.datasets,
            purposes=body.purposes,
            products=body.products,
            institutions=body.institutions,
            valid_from=body.valid_from,
            valid_to=body.valid_to,
            by=person.principal,
        )
    except DomainError as exc:
        session.rollback()
        return grants_page(request, session, person, status_code=exc.status, refusal=exc, entered=entered)
    return done(GRANTS, "dept.notice.grant-created", grant=grant.id)


@router.get("/grants/{grant_id}", response_class=HTMLResponse)
def grant_page(request: Request, grant_id: str, session: SessionDep, person: Officer) -> Response:
    """One grant: another department's answers 404, as GET /v1/grants/{id} does."""
    grant = grant_service.get_grant(session, grant_id=grant_id, viewer=person.principal)
    return render(
        request,
        "department/grant.html",
        person=person,
        grant=grant,
        status=grant_service.grant_status(grant),
        **grant_choices(session, department_of(person)),
    )


@router.post("/grants/{grant_id}/revoke", response_class=HTMLResponse)
def revoke_grant(
    request: Request, grant_id: str, session: SessionDep, person: Officer, form: FormDep
) -> Response:
    try:
        try:
            body = RevokeIn(reason=field(form, "reason"))
        except ValidationError as exc:
            errors = [{"location": "reason", "problem": str(e["msg"])} for e in exc.errors()]
            raise grant_service.InvalidGrant(
                f"say why grant {grant_id} is revoked: " + "; ".join(e["problem"] for e in errors),
                errors=errors,
            ) from None
        # as grant/api.py's revoke_grant calls it
        grant_service.revoke_grant(session, grant_id=grant_id, by=person.principal, reason=body.reason)
    except DomainError as exc:
        session.rollback()
        return grants_page(request, session, person, status_code=exc.status, refusal=exc)
    return done(GRANTS, "dept.notice.grant-revoked", grant=grant_id)


# ---------------------------------------------------------------- uses of its data


@dataclass(frozen=True)
class UseTotals:
    calls: int
    enterprises: int
    refused: int
    institutions: int


@router.get("/uses", response_class=HTMLResponse)
def uses(
    request: Request,
    session: SessionDep,
    person: Officer,
    first_day: Annotated[date | None, Query(alias="from")] = None,
    last_day: Annotated[date | None, Query(alias="to")] = None,
    product: QueryText = None,
    before: QueryDbId = None,
) -> Response:
    """Every use of the department's data in a period of Shanghai days: the chart per day
    (audit.uses_per_day) and the table (audit.list_uses), as GET /v1/audit/uses scopes them."""
    department = department_of(person)
    last = last_day or today_in_shanghai()
    first = first_day or last - timedelta(days=USES_DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidSpec(
            f"the period starts ({first}) after it ends ({last})",
            errors=[{"location": "from", "problem": "must not be after to"}],
        )
    days = (last - first).days + 1
    if days > MAX_FIGURE_DAYS:
        raise InvalidSpec(
            f"the period spans {days} days; at most {MAX_FIGURE_DAYS}",
            errors=[{"location": "from", "problem": f"at most {MAX_FIGURE_DAYS} days before to"}],
        )
    try:
        window = day_window(days=days, last_day=last)
    except OverflowError:
        raise InvalidSpec(
            f"{last} lies outside the zone's time",
            errors=[{"location": "to", "problem": "outside the zone's time"}],
        ) from None
    product_id = product or None
    per_day = audit_service.uses_per_day(
        session, viewer=person.principal, days=days, last_day=last, product_id=product_id
    )
    page = audit_service.list_uses(
        session,
        viewer=person.principal,
        since=window.since,
        until=window.until,
        product_id=product_id,
        limit=USES_PAGE,
        before_id=before,
    )
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    answered = dict.fromkeys(labels, 0)
    refused = dict.fromkeys(labels, 0)
    for row in per_day:
        answered[row.day.isoformat()] += row.calls
        refused[row.day.isoformat()] += row.refused
    totals = UseTotals(
        calls=sum(r.calls for r in per_day),
        enterprises=sum(r.enterprises for r in per_day),
        refused=sum(r.refused for r in per_day),
        institutions=len({r.institution_id for r in per_day if r.calls or r.refused}),
    )
    return render(
        request,
        "department/uses.html",
        person=person,
        first=first,
        last=last,
        product=product_id or "",
        products=product_service.search_catalog(session, department=department, states=None),
        page=page,
        older=page[-1].entry_id if len(page) == USES_PAGE else None,
        totals=totals,
        # the chart's series are named in the template, in the reader's language
        days_shown=labels,
        answered=list(answered.values()),
        refused=list(refused.values()),
    )
