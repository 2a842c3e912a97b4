"""The OAuth2 authorization server: Authlib's framework-agnostic classes adapted to FastAPI.

Authlib is synchronous; the routes in api.py are plain `def`s (run in the threadpool) and
build one `ZoneAuthorizationServer` per request around that request's Session, so no state
is shared between requests or threads. The form body is read (awaited) by the route's
dependency before Authlib sees it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from authlib.oauth2 import rfc6749
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidScopeError,
    OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonPayload, JsonRequest
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.limits import MAX_DETAIL, excerpt
from datazone.oauth import keys
from datazone.oauth import service as oauth_service
from datazone.oauth.models import OAuthClient
from datazone.oauth.resource import AccessGrant, InvalidToken, authenticate_access_token

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

log = logging.getLogger(__name__)

AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]
# what the client-assertion check accepts (joserfc's recommended asymmetric algorithms), at every
# endpoint that authenticates clients
ASSERTION_ALGS = ["ES256", "RS256"]
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path
REVOKE_PATH = "/oauth/revoke"
INTROSPECT_PATH = "/oauth/introspect"
JWKS_PATH = "/oauth/jwks.json"
# an assertion may live this long at most: its jti is stored until then
MAX_ASSERTION_SECONDS = 3600
# a client id as the registry issues them (dzc_...): anything else names no client
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,100}")
_NOT_ERROR_TEXT = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]+')


def error_text(text: str, limit: int = 500) -> str:
    """`text` as an OAuth error_description may carry it (RFC 6749 section 5.2: printable ASCII
    without '"' and '\\'): each run of other characters becomes '?', at most `limit` characters.
    Reasons the zone writes in Chinese keep their readable form in `error_detail`."""
    ascii_text = _NOT_ERROR_TEXT.sub("?", text.replace('"', "'").replace("\\", "/"))
    return ascii_text if len(ascii_text) <= limit else ascii_text[: limit - 3] + "..."


class ScopeRefused(InvalidScopeError):  # type: ignore[misc]
    """invalid_scope whose reasons may be in any language: the description is their ASCII form,
    `error_detail` the reasons as written (JSON carries UTF-8 fine)."""

    def __init__(self, reasons: str) -> None:
        super().__init__(description=error_text(reasons))
        self.reasons = excerpt(reasons, MAX_DETAIL)

    def get_body(self) -> list[tuple[str, Any]]:
        body: list[tuple[str, Any]] = super().get_body()
        if self.reasons != self.description:
            body.append(("error_detail", self.reasons))
        return body


@dataclass
class FormRequest:
    """The parts of an HTTP request Authlib reads, with the form already awaited."""

    method: str
    path: str
    headers: Mapping[str, str]
    form: dict[str, str] = field(default_factory=dict)
    # why the body could not be read as a form, if it could not
    problem: str | None = None


class ZoneClient(ClientMixin):  # type: ignore[misc]
    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_client_secret(self, client_secret: str) -> bool:
        return oauth_service.check_client_secret(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.token_endpoint_auth_method

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class ZoneToken(TokenMixin):  # type: ignore[misc]
    """An access token presented to /oauth/revoke or /oauth/introspect, already verified."""

    def __init__(self, grant: AccessGrant | None, claims: dict[str, Any]) -> None:
        self.grant = grant
        self.claims = claims

    def check_client(self, client: ZoneClient) -> bool:
        return self.claims.get("institution_id") == client.row.institution_id

    def get_scope(self) -> str:
        return str(self.claims.get("scope", ""))

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"]) - int(datetime.now(UTC).timestamp()))

    def is_expired(self) -> bool:
        # the issuer's own answer takes no clock-skew leeway: expired is expired
        return self.grant is None or int(self.claims["exp"]) <= int(datetime.now(UTC).timestamp())

    def is_revoked(self) -> bool:
        return self.grant is None


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, req: FormRequest, uri: str) -> None:
        # Starlette's Headers: case-insensitive, as Authlib's `headers.get("Authorization")` needs
        super().__init__(req.method, uri, headers=req.headers)
        self._form = req.form
        self.payload = BasicOAuth2Payload(req.form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class ZoneAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, session: Session, settings: Settings) -> None:
        super().__init__(scopes_supported=None)
        self.session = session
        self.settings = settings
        self.register_grant(ZoneClientCredentialsGrant)
        self.register_token_generator("default", ZoneTokenGenerator(self))
        self.register_client_auth_method("client_secret_basic", self._authenticate_secret_basic)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWTAuthentication(self))
        self.register_endpoint(ZoneRevocationEndpoint(self))
        self.register_endpoint(ZoneIntrospectionEndpoint(self))

    # -- the hooks Authlib leaves to the framework

    def query_client(self, client_id: str) -> ZoneClient | None:
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            return None  # no registered id looks like this (and text with NUL cannot be looked up)
        row = oauth_service.get_client(self.session, client_id=client_id)
        return ZoneClient(row) if row is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        # JWTs are self-contained: nothing to store but the audit entry of the issuance
        client: ZoneClient = request.client
        claims = jwt.decode(token["access_token"], self.published_keyset()).claims
        audit_service.record(
            self.session,
            actor=None,
            actor_name=f"client:{client.row.client_id}",
            action="token.issue",
            object_type="access_token",
            object_id=str(claims["jti"]),
            institution_id=client.row.institution_id,
            detail={"client_id": client.row.client_id, "scope": token.get("scope", ""), "exp": claims["exp"]},
        )

    def create_oauth2_request(self, request: FormRequest | OAuth2Request) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        # the issuer's URL (not the socket's) names the endpoint, as clients and proxies see it
        return _Request(request, self.settings.issuer + request.path)

    def create_json_request(self, request: FormRequest) -> JsonRequest:
        json_request = JsonRequest(request.method, self.settings.issuer + request.path, request.headers)
        json_request.payload = _JsonPayload(dict(request.form))
        return json_request

    def handle_response(self, status: int, body: Any, headers: Any) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=dict(headers or []))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        log.debug("oauth signal %s", name)

    # -- client authentication

    def refuse_unusable(self, client: ZoneClient) -> ZoneClient:
        problem = oauth_service.client_problem(self.session, client.row)
        if problem:
            raise InvalidClientError(status_code=401, description=error_text(problem))
        return client

    def _authenticate_secret_basic(self, query_client: Any, request: OAuth2Request) -> ZoneClient | None:
        try:
            client_id, client_secret = extract_basic_authorization(request.headers)
        except ValueError:  # not ASCII base64, or not UTF-8 once decoded
            raise InvalidClientError(
                status_code=401,
                description="the Basic credentials are not base64 of UTF-8 'client_id:client_secret' (RFC 6749 2.3.1)",
            ) from None
        if not client_id:
            return None
        client = query_client(client_id)
        if client is None:
            raise InvalidClientError(
                status_code=401, description=error_text(f"no client '{excerpt(client_id)}' in this zone")
            )
        if client.row.token_endpoint_auth_method != AUTH_METHODS[0]:
            raise InvalidClientError(
                status_code=401,
                description=f"client {client_id} authenticates with {client.row.token_endpoint_auth_method}",
            )
        if not client_secret or not client.check_client_secret(client_secret):
            raise InvalidClientError(status_code=401, description="the client secret is wrong")
        return self.refuse_unusable(client)

    def published_keyset(self) -> KeySet:
        return KeySet([keys.public_key(k) for k in keys.published_keys(self.session)])

    @property
    def token_endpoint(self) -> str:
        return self.settings.issuer + TOKEN_PATH


class PrivateKeyJWTAuthentication(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 client authentication; each assertion's jti is accepted once."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: ZoneAuthorizationServer) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.server = server

    def __call__(self, query_client: Any, request: OAuth2Request) -> ZoneClient | None:
        try:
            client: ZoneClient | None = super().__call__(query_client, request)
        except InvalidClientError as e:
            # one status for every failed client authentication, whichever method was tried
            e.status_code = 401
            if e.description and "signature" in e.description.lower():
                e.description = (
                    "the client assertion's signature does not verify with the client's registered keys"
                )
            raise
        return client

    def get_audiences(self) -> list[str]:
        return [self.server.token_endpoint, self.server.settings.issuer]

    def resolve_client_public_key(self, client: ZoneClient) -> KeySet:
        if not client.row.jwks:
            raise InvalidClientError(
                status_code=401,
                description=f"client {client.row.client_id} has no registered keys; it uses client_secret_basic",
            )
        return KeySet.import_key_set(cast("KeySetSerialization", client.row.jwks))

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp - datetime.now(UTC).timestamp() > MAX_ASSERTION_SECONDS:
            raise InvalidClientError(
                status_code=401,
                description=f"the assertion lives too long: exp must be at most {MAX_ASSERTION_SECONDS} s ahead",
            )
        try:
            super().verify_claims(claims)
        except InvalidClientError as e:
            e.status_code = 401
            if e.description and "exp" in e.description.lower() and "expired" in e.description.lower():
                e.description = "the client assertion has expired; sign a fresh one"
            raise

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidClientError(
                status_code=401, description="the assertion's jti must be a string of 1-256 characters"
            )
        fresh = oauth_service.use_assertion(
            self.server.session,
            client_id=str(claims["sub"]),
            jti=jti,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
        if not fresh:
            raise InvalidClientError(
                status_code=401, description="assertion jti already used; sign a new assertion"
            )
        return True

    def authenticate_client(self, client: ZoneClient) -> ZoneClient:
        if client.row.token_endpoint_auth_method != self.CLIENT_AUTH_METHOD:
            raise InvalidClientError(
                status_code=401,
                description=f"client {client.row.client_id} authenticates with {client.row.token_endpoint_auth_method}",
            )
        return self.server.refuse_unusable(client)


class ZoneClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """Only products the institution may use now (contract and live grants); no scope asked: all of them."""
        client: ZoneClient = self.request.client
        raw = self.request.payload.scope
        requested = rfc6749.scope_to_list(raw) if raw else None
        decision = oauth_service.decide_scopes(
            self.server.session, institution_id=client.row.institution_id, requested=requested
        )
        if requested is None and not decision.allowed:
            why = "; ".join(f"{s}: {r}" for s, r in decision.refused.items())
            raise ScopeRefused(
                "no product is open to your institution now"
                + (f" ({why})" if why else ": it holds no contract; ask the operator for one")
            )
        if decision.refused and requested is not None:
            raise ScopeRefused("; ".join(f"scope {s} refused: {r}" for s, r in decision.refused.items()))
        self.request.scope = " ".join(decision.allowed)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(scope=self.request.scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class ZoneTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens signed with the zone's current key of the configured algorithm
    (DATAZONE_OAUTH_SIGNING_ALGS, the first one), its kid in the header."""

    def __init__(self, server: ZoneAuthorizationServer) -> None:
        super().__init__(
            issuer=server.settings.issuer,
            alg=server.settings.signing_algs[0],
            expires_generator=lambda client, grant_type: server.settings.oauth_token_seconds,
        )
        self.server = server

    def get_jwks(self) -> KeySet:
        signing = keys.current_signing_key(self.server.session, self.server.settings)
        return KeySet([keys.private_key(signing, self.server.settings)])

    def get_audiences(self, client: ZoneClient, user: Any, scope: str) -> str:
        return self.server.settings.oauth_audience

    def get_extra_claims(self, client: ZoneClient, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        return {"institution_id": client.row.institution_id}


def _presented_token(server: ZoneAuthorizationServer, token_string: str) -> ZoneToken | None:
    """A token of this zone, verified; `grant` None when it is no longer active (expired, revoked...)."""
    try:
        grant = authenticate_access_token(server.session, token=token_string, settings=server.settings)
    except InvalidToken:
        grant = None
    try:
        # the signature must hold even for an inactive token, or anyone could have any jti revoked
        claims = dict(jwt.decode(token_string, server.published_keyset(), algorithms=list(keys.ALGS)).claims)
    except Exception:  # any unreadable token is simply unknown (RFC 7009 / 7662)
        return None
    return ZoneToken(grant, claims)


class ZoneRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> ZoneToken | None:
        return _presented_token(self.server, token_string)

    def authenticate_token(self, request: OAuth2Request, client: ZoneClient) -> ZoneToken | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        # another institution's token answers as unknown (200, nothing done), so nothing leaks
        if token is None or not token.check_client(client):
            return None
        return token

    def revoke_token(self, token: ZoneToken, request: OAuth2Request) -> None:
        if token.grant is None:
            return  # expired or already refused: nothing left to revoke
        client: ZoneClient = request.client
        oauth_service.revoke_token(
            self.server.session,
            jti=token.grant.jti,
            institution_id=token.grant.institution.id,
            client_id=token.grant.client_id,
            expires_at=token.grant.expires_at,
            by_name=f"client:{client.row.client_id}",
        )


class ZoneIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> ZoneToken | None:
        return _presented_token(self.server, token_string)

    def check_permission(self, token: ZoneToken, client: ZoneClient, request: OAuth2Request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token: ZoneToken) -> dict[str, Any]:
        c = token.claims
        return {
            "active": True,
            "scope": c.get("scope", ""),
            "client_id": c["client_id"],
            "token_type": "Bearer",
            "exp": c["exp"],
            "iat": c["iat"],
            "sub": c["sub"],
            "aud": c["aud"],
            "iss": c["iss"],
            "jti": c["jti"],
            "institution_id": c["institution_id"],
        }


def metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8414 authorization server metadata."""
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "token_endpoint": issuer + TOKEN_PATH,
        "revocation_endpoint": issuer + REVOKE_PATH,
        "introspection_endpoint": issuer + INTROSPECT_PATH,
        "jwks_uri": issuer + JWKS_PATH,
        "grant_types_supported": ["client_credentials"],
        # RFC 8414 requires a non-empty list. The zone has no authorization endpoint (client
        # credentials only), so it issues nothing there: "none" (OAuth 2.0 Multiple Response Type
        # Encoding Practices, section 4, in IANA's response-type registry) says exactly that, where
        # "code" or "token" would promise an authorization-code or implicit flow that does not exist
        "response_types_supported": ["none"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": [],  # filled by the route from the catalog
    }
