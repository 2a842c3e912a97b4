"""The operator's set-up pages: principals and their keys, price plans, department and dataset specs,
PSI key epochs, and the people page's place in the menu.

What the README's shell section does (`datazone principal|plan|department|dataset|psi ...`) can be
done here too, through the same services, with the person on the audit trail.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.console.pages import (
    PREFIX,
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
from datazone.deps import SessionDep, SettingsDep
from datazone.errors import DomainError, InvalidSpec
from datazone.metering import service as metering_service
from datazone.metering.schemas import PlanIn
from datazone.principal import service as principal_service
from datazone.psi import service as psi_service
from datazone.psi.schemas import RotateIn
from datazone.supplier import service as supplier_service
from datazone.supplier.schemas import SupplierSpec

HOME = f"{PREFIX}/operator"
router = APIRouter(prefix=HOME, include_in_schema=False, dependencies=[Depends(csrf_protect)])
Curator = Annotated[Person, Depends(person_with("operator", "curator"))]
Reviewer = Annotated[Person, Depends(person_with("operator", "reviewer"))]
MAX_SPEC = 200_000  # characters of a pasted spec; a form is bounded before it is parsed

register_nav(
    "operator",
    [
        NavItem(f"{HOME}/principals", "op.nav.principals", ("reviewer",)),
        NavItem(f"{HOME}/plans", "op.nav.plans", ("curator",)),
        NavItem(f"{HOME}/specs", "op.nav.specs", ("curator",)),
        NavItem(f"{HOME}/psi", "op.nav.psi", ("curator",)),
        NavItem(f"{PREFIX}/people", "nav.people", ("reviewer",)),
    ],
    group=1,
)


# ---------------------------------------------------------------- principals and their keys


def _principals_page(
    request: Request, session: Session, person: Person, *, status_code: int = 200, **context: Any
) -> Response:
    principals = principal_service.list_principals(session)
    keys = {p.id: principal_service.list_keys(session, principal=p) for p in principals}
    return render(
        request,
        "operator/principals.html",
        person=person,
        status_code=status_code,
        principals=principals,
        keys=keys,
        roles=principal_service.OPERATOR_ROLES,
        kinds=principal_service.KINDS,
        departments=supplier_service.list_suppliers(session),
        **context,
    )


@router.get("/principals", response_class=HTMLResponse)
def principals(request: Request, session: SessionDep, person: Reviewer) -> Response:
    return _principals_page(request, session, person)


@router.post("/principals", response_class=HTMLResponse)
def create_principal(request: Request, session: SessionDep, person: Reviewer, form: FormDep) -> Response:
    """A new principal and its first key, shown on this answer once (only its hash is kept)."""
    try:
        principal = principal_service.create_principal(
            session,
            kind=field(form, "kind"),
            name=field(form, "name"),
            roles=fields(form, "roles"),
            supplier_id=field(form, "department") or None,
        )
        issued = principal_service.issue_key(session, principal=principal)
        audit_service.record_principal_change(
            session, principal=principal, action="principal.create", by=person.principal, key_id=issued.key_id
        )
    except DomainError as exc:
        session.rollback()
        return _principals_page(
            request,
            session,
            person,
            status_code=exc.status,
            refusal=exc,
            asked={"kind": field(form, "kind"), "name": field(form, "name")},
        )
    return _principals_page(request, session, person, status_code=201, issued=issued)


@router.post("/principals/{name}/keys", response_class=HTMLResponse)
def issue_key(request: Request, name: str, session: SessionDep, person: Reviewer) -> Response:
    principal = principal_service.named_principal(session, name=name)
    issued = principal_service.issue_key(session, principal=principal)
    audit_service.record_principal_change(
        session, principal=principal, action="principal.key_issue", by=person.principal, key_id=issued.key_id
    )
    return _principals_page(request, session, person, status_code=201, issued=issued)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
def revoke_key(key_id: str, session: SessionDep, person: Reviewer) -> Response:
    key = principal_service.revoke_key(session, key_id=key_id)
    principal = principal_service.get_principal(session, principal_id=key.principal_id)
    audit_service.record_principal_change(
        session, principal=principal, action="principal.key_revoke", by=person.principal, key_id=key_id
    )
    return done(f"{HOME}/principals", "notice.op.key-revoked")


@router.post("/principals/{name}/suspend", response_class=HTMLResponse)
def suspend(request: Request, name: str, session: SessionDep, person: Reviewer, form: FormDep) -> Response:
    reason = field(form, "reason")
    principal = principal_service.suspend_principal(session, name=name, reason=reason)
    audit_service.record_principal_change(
        session, principal=principal, action="principal.suspend", by=person.principal, reason=reason
    )
    return done(f"{HOME}/principals", "notice.op.principal-suspended")


@router.post("/principals/{name}/reinstate", response_class=HTMLResponse)
def reinstate(request: Request, name: str, session: SessionDep, person: Reviewer, form: FormDep) -> Response:
    principal = principal_service.reinstate_principal(session, name=name)
    audit_service.record_principal_change(
        session,
        principal=principal,
        action="principal.reinstate",
        by=person.principal,
        reason=field(form, "reason") or None,
    )
    return done(f"{HOME}/principals", "notice.op.principal-reinstated")


# ---------------------------------------------------------------- price plans


def _plans_page(
    request: Request, session: Session, person: Person, *, status_code: int = 200, **context: Any
) -> Response:
    institutions = principal_service.list_principals(session, kind="institution")
    return render(
        request,
        "operator/plans.html",
        person=person,
        status_code=status_code,
        plans=metering_service.list_plans(session, viewer=person.principal),
        institutions=institutions,
        names={i.id: i.name for i in institutions},
        **context,
    )


@router.get("/plans", response_class=HTMLResponse)
def plans(request: Request, session: SessionDep, person: Curator) -> Response:
    return _plans_page(request, session, person)


def _optional_int(value: str) -> int | str | None:
    return None if value == "" else (int(value) if value.lstrip("-").isdigit() else value)


@router.post("/plans", response_class=HTMLResponse)
def create_plan(request: Request, session: SessionDep, person: Curator, form: FormDep) -> Response:
    """A plan from the form, read by the API's own body model, then created by the same service call."""
    asked = {name: field(form, name) for name in PlanIn.model_fields}
    try:
        body = PlanIn.model_validate(
            {
                **{k: v for k, v in asked.items() if v != ""},
                **{
                    k: _optional_int(asked[k])
                    for k in (
                        "institution_id",
                        "unit_price_fen",
                        "monthly_cap_fen",
                        "quota_units",
                        "free_units",
                        "burst",
                    )
                    if asked[k] != ""
                },
            }
        )
        plan = metering_service.create_plan(
            session, plan_id=body.id, **body.model_dump(exclude={"id"}), by=person.principal
        )
    except ValidationError as exc:
        problems = [
            {"location": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        refusal = InvalidSpec(
            "; ".join(f"{p['location']}: {p['problem']}" for p in problems), errors=problems
        )
        return _plans_page(request, session, person, status_code=422, refusal=refusal, asked=asked)
    except DomainError as exc:
        session.rollback()
        return _plans_page(request, session, person, status_code=exc.status, refusal=exc, asked=asked)
    return done(f"{HOME}/plans", "notice.op.plan-created", plan=plan.id)


# ---------------------------------------------------------------- department and dataset specs


def _documents(text: str) -> list[Any]:
    if len(text) > MAX_SPEC:
        raise InvalidSpec(f"a spec of at most {MAX_SPEC:,} characters; this one has {len(text):,}")
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"not YAML (or JSON): {exc}") from None


def _specs_page(request: Request, person: Person, *, status_code: int = 200, **context: Any) -> Response:
    return render(request, "operator/specs.html", person=person, status_code=status_code, **context)


@router.get("/specs", response_class=HTMLResponse)
def specs(request: Request, person: Curator) -> Response:
    return _specs_page(request, person)


@router.post("/specs/departments", response_class=HTMLResponse)
def apply_departments(request: Request, session: SessionDep, person: Curator, form: FormDep) -> Response:
    """Departments (suppliers) from a YAML list or documents, as `datazone department apply` takes them."""
    text = field(form, "spec")
    try:
        items = [item for doc in _documents(text) for item in (doc if isinstance(doc, list) else [doc])]
        if not items:
            raise InvalidSpec("the spec is empty: give one department or a list of them")
        try:
            parsed = [SupplierSpec.model_validate(item) for item in items]
        except ValidationError as exc:
            raise InvalidSpec(str(exc)) from None
        results = [
            supplier_service.apply_supplier(session, spec=spec, by=person.principal) for spec in parsed
        ]
    except DomainError as exc:
        session.rollback()
        return _specs_page(request, person, status_code=exc.status, refusal=exc, department_spec=text)
    applied = ", ".join(f"{s.id} ({'created' if created else 'updated'})" for s, created in results)
    return done(f"{HOME}/specs", "notice.op.departments-applied", applied=applied)


@router.post("/specs/datasets", response_class=HTMLResponse)
def apply_datasets(request: Request, session: SessionDep, person: Curator, form: FormDep) -> Response:
    """Dataset specs, one YAML document each, as `datazone dataset apply` takes them: all or none."""
    text = field(form, "spec")
    try:
        documents = _documents(text)
        if not documents:
            raise InvalidSpec("the spec is empty: give one dataset spec per YAML document")
        parsed = [
            dataset_service.parse_spec(doc, origin=f"document {i + 1}") for i, doc in enumerate(documents)
        ]
        results = [dataset_service.apply_dataset(session, spec=spec, by=person.principal) for spec in parsed]
    except DomainError as exc:
        session.rollback()
        return _specs_page(request, person, status_code=exc.status, refusal=exc, dataset_spec=text)
    applied = ", ".join(f"{ds.id} ({what})" for ds, what in results)
    return done(f"{HOME}/specs", "notice.op.datasets-applied", applied=applied)


# ---------------------------------------------------------------- PSI key epochs


def _psi_page(
    request: Request,
    session: Session,
    person: Person,
    settings: Settings,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    return render(
        request,
        "operator/psi.html",
        person=person,
        status_code=status_code,
        epochs=psi_service.list_epochs(session),
        rotation_days=settings.psi_key_rotation_days,
        **context,
    )


@router.get("/psi", response_class=HTMLResponse)
def psi(request: Request, session: SessionDep, settings: SettingsDep, person: Curator) -> Response:
    return _psi_page(request, session, person, settings)


@router.post("/psi/rotate", response_class=HTMLResponse)
def rotate_psi_key(
    request: Request, session: SessionDep, settings: SettingsDep, person: Curator, form: FormDep
) -> Response:
    """A new key epoch now, as POST /v1/psi/epochs does; the worker then precomputes every PSI product under it."""
    try:
        body = RotateIn.model_validate({"reason": field(form, "reason")})
        epoch = psi_service.rotate_key(session, settings=settings, by=person.principal, reason=body.reason)
    except ValidationError:
        refusal = InvalidSpec(
            "say why the key is rotated: the reason is empty or longer than 2,000 characters"
        )
        return _psi_page(request, session, person, settings, status_code=422, refusal=refusal)
    except DomainError as exc:
        session.rollback()
        return _psi_page(request, session, person, settings, status_code=exc.status, refusal=exc)
    return done(f"{HOME}/psi", "notice.op.psi-rotated", epoch=str(epoch.id))
