"""FastAPI dependencies shared by the domain routers: the settings, the request's session and principal.

Least privilege: every route names the kind of principal (and, for operator staff,
the role) it serves; the service then scopes what that principal may see to its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.db import Database
from datazone.errors import Forbidden, Unauthorized
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.principal.service import a_kind

_bearer = HTTPBearer(auto_error=False)


# async: an attribute read needs no worker thread (a sync dependency takes a hop to one)
async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (tests give each app its own)."""
    settings: Settings = request.app.state.settings
    return settings


def database_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_db(request: Request) -> Database:
    return database_of(request)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: committed once the handler returns, rolled back on error.

    Scope "function" (below) commits before the response is sent. FastAPI's default
    scope exits after sending, so a client could see 200 for a change that was not yet
    committed (or that then failed to commit), and its next request could miss it.
    """
    with database_of(request).unit_of_work() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(app_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
DbDep = Annotated[Database, Depends(get_db)]


def current_principal(
    session: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None:
        raise Unauthorized("send 'Authorization: Bearer <key>'; keys come from `datazone principal create`")
    return principal_service.authenticate(session, token=creds.credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_operator(principal: PrincipalDep) -> Principal:
    if principal.kind != "operator":
        raise Forbidden(f"only the zone's operator may do this; you are {a_kind(principal.kind)}")
    return principal


def require_role(*roles: str) -> Callable[[Principal], Principal]:
    """An operator holding one of `roles`."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.kind != "operator" or not set(roles) & set(principal.roles):
            held = ", ".join(principal.roles) if principal.kind == "operator" else principal.kind
            raise Forbidden(f"this needs an operator with the role {' or '.join(roles)}; you are {held}")
        return principal

    return check


def require_kind(kind: str) -> Callable[[Principal], Principal]:
    def check(principal: PrincipalDep) -> Principal:
        if principal.kind != kind:
            raise Forbidden(f"only {a_kind(kind)} may do this; you are {a_kind(principal.kind)}")
        return principal

    return check


OperatorDep = Annotated[Principal, Depends(require_operator)]
CuratorDep = Annotated[Principal, Depends(require_role("curator"))]
ReviewerDep = Annotated[Principal, Depends(require_role("reviewer"))]
AuditorDep = Annotated[Principal, Depends(require_role("auditor"))]
DepartmentDep = Annotated[Principal, Depends(require_kind("department"))]
InstitutionDep = Annotated[Principal, Depends(require_kind("institution"))]
