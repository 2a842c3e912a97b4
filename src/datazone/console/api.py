"""The console's own pages: signing in (password, then a TOTP code), the language, one's account,
and the operator's page of people (create accounts, reset a second factor, unlock, disable)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from datazone.console import service
from datazone.console.messages import LANGUAGES
from datazone.console.pages import (
    LANG_COOKIE,
    PREFIX,
    FormDep,
    PersonDep,
    csrf_protect,
    done,
    field,
    fields,
    person_with,
    presession_cookie,
    render,
    safe_next,
    session_cookie,
    session_secret,
    set_cookie,
)
from datazone.console.service import Person
from datazone.deps import SessionDep, SettingsDep
from datazone.errors import DomainError, NotFound
from datazone.principal import service as principal_service

router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(csrf_protect)])

HOME = {
    "operator": f"{PREFIX}/operator",
    "department": f"{PREFIX}/department",
    "institution": f"{PREFIX}/institution",
}
PeopleManager = Annotated[Person, Depends(person_with("operator", "reviewer"))]

# the People page sits in the operator's menu with the other set-up pages (console/onboarding.py)


@router.get("", response_class=HTMLResponse)
def home(person: PersonDep) -> Response:
    return RedirectResponse(HOME[person.kind], status_code=303)


def _sign_in_form(
    request: Request, settings: SettingsDep, *, status_code: int = 200, **context: Any
) -> Response:
    # the form's token comes from a cookie of its own until a session exists (double submit)
    secret = request.cookies.get(presession_cookie(settings)) or secrets.token_urlsafe(32)
    response = render(
        request,
        "sign_in.html",
        csrf=service.csrf_token(secret),
        status_code=status_code,
        next=safe_next(request.query_params.get("next")),
        **context,
    )
    set_cookie(response, settings, presession_cookie(settings), secret)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, settings: SettingsDep) -> Response:
    return _sign_in_form(request, settings)


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    login = field(form, "login")
    try:
        step = service.sign_in(
            session,
            login=login,
            password=field(form, "password"),
            settings=settings,
            client_address=request.client.host if request.client else None,
        )
    except DomainError as exc:
        # returned, not raised: the unit of work commits the refusal's audit entry and the failure count
        return _sign_in_form(request, settings, status_code=exc.status, refusal=exc, login=login)
    target = {
        "password": f"{PREFIX}/sign-in/code",
        "enroll": f"{PREFIX}/enroll",
        "signed-in": safe_next(field(form, "next"), HOME[step.kind]),
    }[step.stage]
    if step.stage == "password" and field(form, "next"):
        target += "?next=" + safe_next(field(form, "next"))
    response = RedirectResponse(target, status_code=303)
    set_cookie(
        response,
        settings,
        session_cookie(settings),
        step.secret,
        max_age=int(settings.console_absolute_hours * 3600),
    )
    response.delete_cookie(presession_cookie(settings), path="/")
    return response


@router.get("/sign-in/code", response_class=HTMLResponse)
def code_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    secret = session_secret(request, settings)
    service.stage_of(session, secret=secret, settings=settings)
    return render(
        request,
        "code.html",
        csrf=service.csrf_token(secret or ""),
        next=safe_next(request.query_params.get("next")),
    )


@router.post("/sign-in/code", response_class=HTMLResponse)
def code(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    secret = session_secret(request, settings)
    try:
        service.confirm_code(session, secret=secret, code=field(form, "code"), settings=settings)
    except service.SignInRequired:
        raise
    except DomainError as exc:
        return render(
            request,
            "code.html",
            csrf=service.csrf_token(secret or ""),
            refusal=exc,
            status_code=exc.status,
            next=safe_next(field(form, "next")),
        )
    return RedirectResponse(safe_next(field(form, "next")), status_code=303)


@router.get("/enroll", response_class=HTMLResponse)
def enroll_page(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    secret = session_secret(request, settings)
    enrollment = service.begin_enrollment(session, secret=secret, settings=settings)
    return render(request, "enroll.html", csrf=service.csrf_token(secret or ""), enrollment=enrollment)


@router.post("/enroll", response_class=HTMLResponse)
def enroll(request: Request, session: SessionDep, settings: SettingsDep, form: FormDep) -> Response:
    secret = session_secret(request, settings)
    try:
        service.confirm_enrollment(session, secret=secret, code=field(form, "code"), settings=settings)
    except service.SignInRequired:
        raise
    except DomainError as exc:
        return render(
            request,
            "enroll_failed.html",
            csrf=service.csrf_token(secret or ""),
            refusal=exc,
            status_code=exc.status,
        )
    return done(PREFIX, "notice.enrolled")


@router.post("/sign-out")
def sign_out(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    service.sign_out(session, secret=session_secret(request, settings))
    response = done(f"{PREFIX}/sign-in", "notice.signed-out")
    response.delete_cookie(session_cookie(settings), path="/")
    return response


@router.get("/language/{lang}")
def choose_language(
    request: Request,
    lang: str,
    settings: SettingsDep,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=365 * 24 * 3600,
            path="/",
            samesite="lax",
            secure=settings.console_secure_cookies,
        )
    return response


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, person: PersonDep) -> Response:
    return render(request, "account.html", person=person)


@router.post("/account/password", response_class=HTMLResponse)
def change_password(request: Request, session: SessionDep, person: PersonDep, form: FormDep) -> Response:
    if field(form, "new") != field(form, "repeat"):
        return render(request, "account.html", person=person, status_code=422, mismatch=True)
    try:
        service.change_password(
            session, person=person, current=field(form, "current"), new=field(form, "new")
        )
    except DomainError as exc:
        return render(request, "account.html", person=person, status_code=exc.status, refusal=exc)
    return done(f"{PREFIX}/account", "notice.password-changed")


@router.get("/people", response_class=HTMLResponse)
def people(request: Request, session: SessionDep, person: PeopleManager) -> Response:
    principals = principal_service.list_principals(session)
    return render(
        request,
        "people.html",
        person=person,
        accounts=service.list_accounts(session, viewer=person.principal),
        principals=principals,
        roles_by_kind=service.ROLES_BY_KIND,
    )


@router.post("/people", response_class=HTMLResponse)
def create_person(request: Request, session: SessionDep, person: PeopleManager, form: FormDep) -> Response:
    try:
        account = service.create_account(
            session,
            principal_name=field(form, "principal"),
            login=field(form, "login"),
            display_name=field(form, "display_name"),
            roles=fields(form, "roles"),
            password=field(form, "password"),
            created_by=person.account.login,
            by=person.principal,
        )
    except DomainError as exc:
        session.rollback()
        return render(
            request,
            "people.html",
            person=person,
            status_code=exc.status,
            refusal=exc,
            accounts=service.list_accounts(session, viewer=person.principal),
            principals=principal_service.list_principals(session),
            roles_by_kind=service.ROLES_BY_KIND,
        )
    return done(f"{PREFIX}/people", "notice.account-created", login=account.login)


@router.post("/people/{login}/{action}", response_class=HTMLResponse)
def manage_person(login: str, action: str, session: SessionDep, person: PeopleManager) -> Response:
    if action == "reset-second-factor":
        service.reset_second_factor(session, login=login, by=person)
    elif action == "unlock":
        service.unlock(session, login=login, by=person)
    elif action in ("disable", "enable"):
        service.set_disabled(session, login=login, disabled=action == "disable", by=person)
    else:
        raise NotFound(f"no action {action!r} on an account")
    return done(f"{PREFIX}/people", f"notice.account-{action}")
