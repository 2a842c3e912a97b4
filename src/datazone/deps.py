"""FastAPI dependencies shared by the domain routers: the request's session and its principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from datazone.db import Database
from datazone.errors import Forbidden, Unauthorized
from datazone.principal import service as principal_service
from datazone.principal.models import Principal

_bearer = HTTPBearer(auto_error=False)


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: committed once at the end, rolled back on error."""
    with get_db(request).unit_of_work() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
DbDep = Annotated[Database, Depends(get_db)]


def current_principal(
    session: SessionDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None:
        raise Unauthorized("send 'Authorization: Bearer <key>'; keys come from `datazone principal create`")
    return principal_service.authenticate(session, token=creds.credentials)


def require_operator(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if principal.kind != "operator":
        raise Forbidden(f"only the zone's operator may do this; you are a {principal.kind}")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
OperatorDep = Annotated[Principal, Depends(require_operator)]
