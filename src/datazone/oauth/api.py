"""OAuth2 endpoints (token, revocation, introspection, metadata, JWKS) and the institution's client registry.

The OAuth routes are sync `def`s: Authlib is synchronous, so they run in the threadpool with
the request's own Session; the urlencoded form is read (awaited) by `read_form` first.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl

from authlib.common.security import is_secure_transport
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.responses import Response

from datazone.config import Settings
from datazone.deps import InstitutionDep, SessionDep, SettingsDep
from datazone.errors import DomainError
from datazone.oauth import keys
from datazone.oauth import service as oauth_service
from datazone.oauth.schemas import ClientCreate, ClientCreated, ClientOut, ClientRevoke
from datazone.oauth.server import FormRequest, ZoneAuthorizationServer, metadata
from datazone.openapi import oauth_error_responses, problem_responses

FORM = "application/x-www-form-urlencoded"


async def read_form(request: Request) -> FormRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    form = FormRequest(method=request.method, path=request.url.path, headers=request.headers)
    if body and content_type != FORM:
        form.problem = (
            f"send the parameters as {FORM} (RFC 6749 section 3.2), not {content_type or 'untyped'}"
        )
        return form
    try:
        form.form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        form.problem = "the form is not UTF-8"
    return form


FormDep = Annotated[FormRequest, Depends(read_form)]


oauth_router = APIRouter(prefix="/oauth", tags=["oauth"])


class IssuerNotSecure(DomainError):
    status = 503
    type = "issuer-not-https"
    title = "The zone's OAuth issuer is not served over https"


def _server(form: FormRequest, session: Session, settings: Settings) -> ZoneAuthorizationServer | Response:
    """The request's authorization server, or the OAuth error answer (RFC 6749 section 5.2) to a bad body."""
    if form.problem:
        return JSONResponse(
            {"error": "invalid_request", "error_description": form.problem},
            status_code=400,
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )
    if not is_secure_transport(settings.issuer + form.path):
        # Authlib refuses plain http off loopback; say what to configure rather than fail obscurely
        raise IssuerNotSecure(
            f"the issuer {settings.issuer} is plain http on a non-loopback host; set DATAZONE_OAUTH_ISSUER "
            "to the https URL clients reach the zone at"
        )
    return ZoneAuthorizationServer(session, settings)


# RFC 6749 section 5.2: the OAuth endpoints answer OAuth errors (application/json), not problems
OAUTH_ERRORS = {**oauth_error_responses(400, 401), **problem_responses(503)}
_FORM_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {FORM: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }
}


@oauth_router.post("/token", responses=OAUTH_ERRORS, openapi_extra=_FORM_BODY)
def token(form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    """RFC 6749 client_credentials; clients authenticate with client_secret_basic or private_key_jwt."""
    server = _server(form, session, settings)
    if isinstance(server, Response):
        return server
    response: Response = server.create_token_response(form)
    return response


@oauth_router.post("/revoke", responses=OAUTH_ERRORS, openapi_extra=_FORM_BODY)
def revoke(form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    """RFC 7009: revoke one of your institution's access tokens (unknown tokens answer 200)."""
    server = _server(form, session, settings)
    if isinstance(server, Response):
        return server
    response: Response = server.create_endpoint_response("revocation", form)
    return response


@oauth_router.post("/introspect", responses=OAUTH_ERRORS, openapi_extra=_FORM_BODY)
def introspect(form: FormDep, session: SessionDep, settings: SettingsDep) -> Response:
    """RFC 7662: a token of your institution's and its claims, or {"active": false}."""
    server = _server(form, session, settings)
    if isinstance(server, Response):
        return server
    response: Response = server.create_endpoint_response("introspection", form)
    return response


@oauth_router.get("/jwks.json")
def jwks(session: SessionDep) -> JSONResponse:
    """The public keys that verify the zone's access tokens (current and recently retired)."""
    return JSONResponse(keys.jwks(session), headers={"Cache-Control": "public, max-age=60"})


clients_router = APIRouter(prefix="/v1/clients", tags=["oauth"])


@clients_router.post("", status_code=201, response_model=ClientCreated)
def create_client(body: ClientCreate, session: SessionDep, institution: InstitutionDep) -> ClientCreated:
    """Register an OAuth client of your institution; a client_secret is in this answer only."""
    client, secret = oauth_service.create_client(
        session,
        institution_id=institution.id,
        name=body.name,
        auth_method=body.auth_method,
        jwks=body.jwks,
        by_name=institution.name,
        by=institution,
    )
    return ClientCreated.model_validate(client).model_copy(update={"client_secret": secret})


@clients_router.get("", response_model=list[ClientOut])
def list_clients(session: SessionDep, institution: InstitutionDep) -> list[ClientOut]:
    """The institution's OAuth clients, revoked ones included; secrets are never shown again."""
    return [ClientOut.model_validate(c) for c in oauth_service.list_clients(session, viewer=institution)]


@clients_router.post("/{client_id}/revoke", response_model=ClientOut)
def revoke_client(
    client_id: str, session: SessionDep, institution: InstitutionDep, body: ClientRevoke | None = None
) -> ClientOut:
    """Revoke one of the institution's OAuth clients: its tokens stop working at once."""
    client = oauth_service.revoke_client(
        session,
        client_id=client_id,
        by_name=institution.name,
        by=institution,
        reason=body.reason if body else None,
    )
    return ClientOut.model_validate(client)


@clients_router.post("/{client_id}/rotate-secret", response_model=ClientCreated)
def rotate_client_secret(client_id: str, session: SessionDep, institution: InstitutionDep) -> ClientCreated:
    """Give one of the institution's clients a new client_secret, in this answer only; the old one
    is refused from the next token request."""
    client, secret = oauth_service.rotate_client_secret(
        session, client_id=client_id, by_name=institution.name, by=institution
    )
    return ClientCreated.model_validate(client).model_copy(update={"client_secret": secret})


router = APIRouter()
router.include_router(oauth_router)
router.include_router(clients_router)


@router.get("/.well-known/oauth-authorization-server", tags=["oauth"])
def authorization_server_metadata(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """RFC 8414 metadata."""
    doc = metadata(settings)
    doc["scopes_supported"] = oauth_service.published_scopes(session)
    return doc
