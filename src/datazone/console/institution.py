"""The institution's pages of the console: its catalog, contracts, OAuth clients, usage and statements,
consents, a single-enterprise query and its privacy jobs.

Each page calls the services the institution's API calls, with the person's institution as the
caller; the query page runs the lookup channel through the one call pipeline, under a grant made
for the person (`access.service.console_grant`), so it is checked, metered, billed and audited
exactly as GET /v1/products/{id}/enterprises/{uscc}.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUpload

from datazone.access import pipeline
from datazone.access import service as access_service
from datazone.billing import service as billing_service
from datazone.consent import service as consent_service
from datazone.consent.schemas import ConsentIn
from datazone.console.pages import (
    PREFIX,
    FormDep,
    NavItem,
    csrf_protect,
    done,
    field,
    person_with,
    register_nav,
    render,
)
from datazone.console.service import Person
from datazone.contract import service as contract_service
from datazone.deps import DbDep, SessionDep
from datazone.errors import DomainError, InvalidSpec, NotFound
from datazone.joint import service as joint_service
from datazone.limits import day_window
from datazone.metering import service as metering_service
from datazone.oauth import service as oauth_service
from datazone.principal.models import Principal
from datazone.product import service as product_service
from datazone.product.schemas import VISIBLE_STATES, Category, ProductOut, Tier
from datazone.psi import service as psi_service
from datazone.purposes import Purpose
from datazone.scoring import service as scoring_service

HERE = f"{PREFIX}/institution"
router = APIRouter(prefix=HERE, include_in_schema=False, dependencies=[Depends(csrf_protect)])
# analysts read and query; only an admin manages the clients and the consents
Someone = Annotated[Person, Depends(person_with("institution", "admin", "analyst"))]
Admin = Annotated[Person, Depends(person_with("institution", "admin"))]

register_nav(
    "institution",
    [
        NavItem(HERE, "nav.institution.home"),
        NavItem(f"{HERE}/catalog", "inst.nav.catalog"),
        NavItem(f"{HERE}/contracts", "inst.nav.contracts"),
        NavItem(f"{HERE}/query", "inst.nav.query"),
        NavItem(f"{HERE}/usage", "inst.nav.usage"),
        NavItem(f"{HERE}/jobs", "inst.nav.jobs"),
        NavItem(f"{HERE}/clients", "inst.nav.clients", ("admin",)),
        NavItem(f"{HERE}/consents", "inst.nav.consents", ("admin",)),
    ],
)

# the usage page's window, in Shanghai days
USAGE_DAYS = 30
CONSENT_COLUMNS = consent_service.CSV_COLUMNS
# a CSV's first line is its header: item i of the upload is line i + 2
FIRST_DATA_LINE = 2
# ample for the service's 1,000 consents a batch (a line is about 250 bytes)
MAX_UPLOAD_BYTES = 1024 * 1024
# so Excel reads the Chinese of a download as UTF-8
BOM = "\ufeff"


def _csv_download(text: str, filename: str) -> Response:
    return Response(
        BOM + text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _allowed_scopes(session: Session, institution: Principal) -> set[str]:
    """The product scopes the token endpoint would grant the institution now (contract and live grants)."""
    return set(oauth_service.decide_scopes(session, institution_id=institution.id, requested=None).allowed)


def _usable_products(
    session: Session, institution: Principal, *, allowed: set[str] | None = None, **filters: Any
) -> list[ProductOut]:
    """What GET /v1/products lists for a token of this institution: the catalog's products whose
    scope it may obtain, narrowed by `filters` (search_catalog's)."""
    allowed = _allowed_scopes(session, institution) if allowed is None else allowed
    found = product_service.search_catalog(session, **filters)
    usable = [p for p in found if oauth_service.product_scope(p.id) in allowed]
    return product_service.catalog_entries(session, products=usable)


# ---------------------------------------------------------------- home


@router.get("", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, person: Someone) -> Response:
    allowances = contract_service.remaining_quota(session, viewer=person.principal)
    return render(request, "institution/home.html", person=person, allowances=allowances)


# ---------------------------------------------------------------- catalog


@router.get("/catalog", response_class=HTMLResponse)
def catalog(
    request: Request,
    session: SessionDep,
    person: Someone,
    category: Annotated[str, Query(max_length=64)] = "",
    department: Annotated[str, Query(max_length=64)] = "",
    tier: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    problems = [
        {"location": name, "problem": f"{value!r} is not one of {', '.join(choices)}"}
        for name, value, choices in (
            ("category", category, [c.value for c in Category]),
            ("tier", tier, [t.value for t in Tier]),
        )
        if value and value not in choices
    ]
    if problems:
        raise InvalidSpec("the search cannot be run: " + "; ".join(p["problem"] for p in problems), errors=problems)
    allowed = _allowed_scopes(session, person.principal)
    everything = _usable_products(session, person.principal, allowed=allowed)
    products = _usable_products(
        session,
        person.principal,
        allowed=allowed,
        category=category or None,
        department=department or None,
        tier=tier or None,
        keyword=q or None,
    )
    return render(
        request,
        "institution/catalog.html",
        person=person,
        products=products,
        categories=list(Category),
        tiers=list(Tier),
        departments=sorted({d for p in everything for d in p.departments}),
        chosen={"category": category, "department": department, "tier": tier, "q": q},
    )


@router.get("/catalog/{product_id}", response_class=HTMLResponse)
def product_page(request: Request, session: SessionDep, person: Someone, product_id: str) -> Response:
    product = product_service.get_product(session, product_id=product_id)
    # as GET /v1/catalog/products/{id}: drafts and retired products are the operator's business
    if product.state not in VISIBLE_STATES:
        raise NotFound(f"no product {product_id!r} in the catalog", product=product_id)
    entry = product_service.catalog_entries(session, products=[product])[0]
    usable = {p.id for p in _usable_products(session, person.principal)}
    return render(
        request, "institution/product.html", person=person, product=entry, usable=product_id in usable
    )


# ---------------------------------------------------------------- contracts


@router.get("/contracts", response_class=HTMLResponse)
def contracts(request: Request, session: SessionDep, person: Someone) -> Response:
    mine = contract_service.list_contracts(session, viewer=person.principal)
    allowances = {a.contract_id: a.allowance for a in contract_service.remaining_quota(session, viewer=person.principal)}
    plans = {
        plan_id: metering_service.plan_terms(metering_service.get_plan(session, plan_id=plan_id, viewer=person.principal))
        for plan_id in sorted({c.plan_id for c in mine})
    }
    return render(
        request, "institution/contracts.html", person=person, contracts=mine, allowances=allowances, plans=plans
    )


# ---------------------------------------------------------------- OAuth clients


def _clients_page(
    request: Request, session: Session, person: Person, *, status_code: int = 200, **context: Any
) -> Response:
    return render(
        request,
        "institution/clients.html",
        person=person,
        status_code=status_code,
        clients=oauth_service.list_clients(session, viewer=person.principal),
        **context,
    )


@router.get("/clients", response_class=HTMLResponse)
def clients(request: Request, session: SessionDep, person: Admin) -> Response:
    return _clients_page(request, session, person)


@router.post("/clients", response_class=HTMLResponse)
def create_client(request: Request, session: SessionDep, person: Admin, form: FormDep) -> Response:
    try:
        client, secret = oauth_service.create_client(
            session,
            institution_id=person.principal.id,
            name=field(form, "name"),
            by_name=person.principal.name,
            by=person.principal,
        )
    except DomainError as exc:
        session.rollback()
        return _clients_page(request, session, person, status_code=exc.status, refusal=exc)
    # the secret is in this answer only (not after a redirect): only its hash is kept
    return render(
        request, "institution/client_secret.html", person=person, client=client, secret=secret, created=True
    )


@router.post("/clients/{client_id}/rotate", response_class=HTMLResponse)
def rotate_client_secret(request: Request, session: SessionDep, person: Admin, client_id: str) -> Response:
    try:
        client, secret = oauth_service.rotate_client_secret(
            session, client_id=client_id, by_name=person.principal.name, by=person.principal
        )
    except DomainError as exc:
        session.rollback()
        return _clients_page(request, session, person, status_code=exc.status, refusal=exc)
    return render(
        request, "institution/client_secret.html", person=person, client=client, secret=secret, created=False
    )


@router.post("/clients/{client_id}/revoke", response_class=HTMLResponse)
def revoke_client(request: Request, session: SessionDep, person: Admin, client_id: str, form: FormDep) -> Response:
    try:
        oauth_service.revoke_client(
            session,
            client_id=client_id,
            by_name=person.principal.name,
            by=person.principal,
            reason=field(form, "reason") or None,
        )
    except DomainError as exc:
        session.rollback()
        return _clients_page(request, session, person, status_code=exc.status, refusal=exc)
    return done(f"{HERE}/clients", "inst.notice.client-revoked")


# ---------------------------------------------------------------- usage and statements


def _usage_charts(rows: list[metering_service.ProductDay], days: list[date]) -> dict[str, Any]:
    """Units and fen per day, one series per product, for Chart.js."""
    products = sorted({r.product_id for r in rows})
    by_key = {(r.day, r.product_id): r for r in rows}
    labels = [d.isoformat() for d in days]

    def series(value: str) -> list[dict[str, Any]]:
        return [
            {"label": p, "values": [getattr(by_key[(d, p)], value) if (d, p) in by_key else 0 for d in days]}
            for p in products
        ]

    return {
        "units": {"labels": labels, "series": series("units"), "stacked": True},
        "yuan": {
            "labels": labels,
            "series": [
                {"label": s["label"], "values": [v / 100 for v in s["values"]]} for s in series("charged_fen")
            ],
            "stacked": True,
        },
    }


@dataclass(frozen=True)
class UsageTotals:
    calls: int
    units: int
    free_units: int
    charged_fen: int


@router.get("/usage", response_class=HTMLResponse)
def usage(
    request: Request,
    session: SessionDep,
    person: Someone,
    days: int = USAGE_DAYS,
    period: Annotated[str, Query(max_length=7)] = "",
) -> Response:
    window = day_window(days=days)
    rows = metering_service.usage_per_product_day(session, viewer=person.principal, days=days, last_day=window.last)
    day_list = [window.first + timedelta(days=i) for i in range(days)]
    month = period or metering_service.month_of(datetime.now(UTC))
    statement = billing_service.statement(session, period=month, viewer=person.principal)
    totals = UsageTotals(
        calls=sum(r.calls for r in rows),
        units=sum(r.units for r in rows),
        free_units=sum(r.free_units for r in rows),
        charged_fen=sum(r.charged_fen for r in rows),
    )
    return render(
        request,
        "institution/usage.html",
        person=person,
        rows=rows,
        days=days,
        charts=_usage_charts(rows, day_list),
        totals=totals,
        statement=statement,
        period=month,
    )


@router.get("/usage.csv")
def usage_csv(session: SessionDep, person: Someone, days: int = USAGE_DAYS) -> Response:
    rows = metering_service.usage_per_product_day(session, viewer=person.principal, days=days)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("day", "product_id", "calls", "units", "free_units", "charged_fen", "charged_yuan"))
    for r in rows:
        writer.writerow(
            (r.day.isoformat(), r.product_id, r.calls, r.units, r.free_units, r.charged_fen, billing_service.yuan(r.charged_fen))
        )
    return _csv_download(out.getvalue(), f"usage-{person.principal.name}-{days}d.csv")


@router.get("/statements/{period}.csv")
def statement_csv(session: SessionDep, person: Someone, period: str) -> Response:
    st = billing_service.statement(session, period=period, viewer=person.principal)
    return _csv_download(billing_service.statement_csv(st), f"statement-{st.institution_id}-{st.period}.csv")


# ---------------------------------------------------------------- consents


@dataclass(frozen=True)
class LineProblem:
    """What is wrong with one line of an upload: the service's or the parser's words (`problem`),
    or the page's own, as a catalogue key (`key`, `values`)."""

    line: int
    column: str
    problem: str = ""
    key: str | None = None
    values: dict[str, Any] = dataclass_field(default_factory=dict)


def _consent_items(text: str) -> tuple[list[ConsentIn], list[LineProblem]]:
    """The CSV's rows as the API's consent bodies (read by the consent service, as the CLI reads a
    file), and what is wrong with each line that cannot be one."""
    items, problems = consent_service.read_consents_csv(text)
    in_words: dict[str, tuple[str, dict[str, Any]]] = {
        "header": ("inst.consents.no-header", {"columns": ",".join(CONSENT_COLUMNS)}),
        "empty": ("inst.consents.empty", {}),
    }
    return items, [
        LineProblem(p.line, p.column, p.problem, *in_words[p.code]) if p.code in in_words
        else LineProblem(p.line, p.column, p.problem)
        for p in problems
    ]


def _consents_page(
    request: Request, session: Session, person: Person, *, status_code: int = 200, **context: Any
) -> Response:
    live = consent_service.list_consents(
        session, viewer=person.principal, live=True, limit=consent_service.MAX_BATCH, newest_first=True
    )
    return render(
        request,
        "institution/consents.html",
        person=person,
        status_code=status_code,
        consents=live,
        columns=CONSENT_COLUMNS,
        **context,
    )


@router.get("/consents", response_class=HTMLResponse)
def consents(request: Request, session: SessionDep, person: Admin) -> Response:
    return _consents_page(request, session, person)


@router.post("/consents", response_class=HTMLResponse)
def upload_consents(request: Request, session: SessionDep, person: Admin, form: FormDep) -> Response:
    upload = form.get("file")
    raw = upload.file.read(MAX_UPLOAD_BYTES + 1) if isinstance(upload, StarletteUpload) else b""
    if len(raw) > MAX_UPLOAD_BYTES:
        too_big = LineProblem(
            1, "-", key="inst.consents.too-big", values={"kib": MAX_UPLOAD_BYTES // 1024, "most": consent_service.MAX_BATCH}
        )
        return _consents_page(request, session, person, status_code=413, problems=[too_big])
    try:
        text = raw.decode("utf-8-sig")  # with or without Excel's BOM
    except UnicodeDecodeError:
        return _consents_page(
            request, session, person, status_code=422, problems=[LineProblem(1, "-", key="inst.consents.not-utf8")]
        )
    items, problems = _consent_items(text)
    if problems:
        # nothing is registered while any line is wrong, as the service does with its own checks
        return _consents_page(request, session, person, status_code=422, problems=problems)
    try:
        registered = consent_service.register_consents(session, institution=person.principal, items=items)
    except DomainError as exc:
        session.rollback()
        listed = [
            LineProblem(FIRST_DATA_LINE + e["index"], str(e["location"]).split(".", 1)[-1], str(e["problem"]))
            for e in exc.errors or []
            if isinstance(e.get("index"), int)
        ]
        return _consents_page(
            # a refusal per line is shown as lines; a refusal of the whole batch in words
            request, session, person, status_code=exc.status, refusal=None if listed else exc, problems=listed
        )
    return done(f"{HERE}/consents", "inst.notice.consents-registered", count=str(len(registered)))


@router.post("/consents/{consent_id}/revoke", response_class=HTMLResponse)
def revoke_consent(
    request: Request, session: SessionDep, person: Admin, consent_id: int, form: FormDep
) -> Response:
    try:
        consent_service.revoke_consent(
            session, consent_id=consent_id, by=person.principal, reason=field(form, "reason")
        )
    except DomainError as exc:
        session.rollback()
        return _consents_page(request, session, person, status_code=exc.status, refusal=exc)
    return done(f"{HERE}/consents", "inst.notice.consent-revoked")


# ---------------------------------------------------------------- query


def _query_page(
    request: Request, session: Session, person: Person, *, status_code: int = 200, **context: Any
) -> Response:
    return render(
        request,
        "institution/query.html",
        person=person,
        status_code=status_code,
        products=_usable_products(session, person.principal),
        purposes=list(Purpose),
        **context,
    )


@router.get("/query", response_class=HTMLResponse)
def query_page(
    request: Request,
    session: SessionDep,
    person: Someone,
    product: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    return _query_page(request, session, person, asked={"product": product, "uscc": "", "purpose": ""})


@router.post("/query", response_class=HTMLResponse)
def run_query(request: Request, session: SessionDep, db: DbDep, person: Someone, form: FormDep) -> Response:
    asked = {name: field(form, name) for name in ("product", "uscc", "purpose")}
    grant = access_service.console_grant(
        person_login=person.account.login, institution=person.principal, product_id=asked["product"]
    )
    try:
        purpose = Purpose(asked["purpose"])
    except ValueError:
        refusal = InvalidSpec(
            f"purpose is one of {', '.join(p.value for p in Purpose)}, not {asked['purpose']!r}",
            errors=[{"location": "purpose", "problem": "choose a purpose"}],
        )
        return _query_page(request, session, person, status_code=refusal.status, refusal=refusal, asked=asked)
    try:
        # the API's own channel and pipeline: every gate, the meter, the ledger and the audit entry
        served = pipeline.run_audited(
            db,
            session,
            pipeline.Call(grant, datetime.now(UTC)),
            access_service.Lookup(product_id=asked["product"], usccs=[asked["uscc"]], purpose=purpose, single=True),
        )
    except DomainError as exc:
        session.rollback()
        return _query_page(request, session, person, status_code=exc.status, refusal=exc, asked=asked)
    # the answer, its usage event and its audit entry are committed before the page shows it
    session.commit()
    return _query_page(request, session, person, answer=served.body, asked=asked)


# ---------------------------------------------------------------- jobs


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, session: SessionDep, person: Someone) -> Response:
    return render(
        request,
        "institution/jobs.html",
        person=person,
        # each job with the API's own view of it (its progress), the row for its times
        psi_jobs=[(j, psi_service.job_body(j)) for j in psi_service.list_jobs(session, viewer=person.principal)],
        scoring_jobs=[
            (j, scoring_service.job_view(j)) for j in scoring_service.list_jobs(session, viewer=person.principal)
        ],
        joint_jobs=[(j, joint_service.job_body(j)) for j in joint_service.list_jobs(session, viewer=person.principal)],
    )
