"""OAuth2 clients of institutions, the scopes they may obtain, revoked tokens and used assertions.

A client secret is 256 random bits shown once; only its SHA-256 is stored and compared in
constant time. A scope is `product:<product_id>`; a client may obtain it while its institution
holds a contract covering the product and the departments' live grants cover the product's
datasets for the institution, for at least one of the contract's purposes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.contract import service as contract_service
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, NotFound
from datazone.grant import service as grant_service
from datazone.oauth.models import AUTH_METHODS, OAuthClient, RevokedToken, UsedAssertion
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.product import service as product_service

if TYPE_CHECKING:
    from joserfc.jwk import KeySetSerialization

SCOPE_PREFIX = "product:"
CLIENT_ID_PREFIX = "dzc_"


def utcnow() -> datetime:
    return datetime.now(UTC)


def product_scope(product_id: str) -> str:
    return SCOPE_PREFIX + product_id


def published_scopes(session: Session) -> list[str]:
    """The scopes of the products published now: what a token may be asked for."""
    return [product_scope(p.id) for p in product_service.list_products(session, states=["published"])]


def scope_product(scope: str) -> str | None:
    """The product a scope names, or None if it is not a product scope."""
    return (
        scope[len(SCOPE_PREFIX) :]
        if scope.startswith(SCOPE_PREFIX) and len(scope) > len(SCOPE_PREFIX)
        else None
    )


def _secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# ---------------------------------------------------------------- clients


def _jwks_problems(jwks: Any) -> list[str]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        return ['jwks must be a JWK Set: {"keys": [ {public key}, ... ]} with at least one key']
    problems: list[str] = []
    for i, key in enumerate(jwks["keys"]):
        if not isinstance(key, dict):
            problems.append(f"jwks.keys[{i}] is not a JSON object")
        elif any(member in key for member in ("d", "p", "q", "dp", "dq", "qi", "k")):
            problems.append(f"jwks.keys[{i}] holds private key material; register only the PUBLIC key")
    if not problems:
        try:
            KeySet.import_key_set(cast("KeySetSerialization", jwks))
        except (JoseError, ValueError, TypeError, KeyError) as e:
            problems.append(f"jwks is not a valid JWK Set: {e}")
    return problems


def create_client(
    session: Session,
    *,
    institution_id: int,
    name: str,
    auth_method: str = "client_secret_basic",
    jwks: dict[str, Any] | None = None,
    by_name: str,
    by: Principal | None = None,
) -> tuple[OAuthClient, str | None]:
    """Register a client for an institution: (client, secret). The secret (client_secret_basic
    only) is shown this once and never stored. Every problem is listed; nothing is written on any."""
    errors: list[dict[str, Any]] = []
    if by is not None and by.kind == "institution" and by.id != institution_id:
        raise Forbidden("an institution registers clients for itself only")
    if by is not None and by.kind == "department":
        raise Forbidden("departments do not hold OAuth clients; institutions do")
    problem = contract_service.institution_problem(session, institution_id=institution_id)
    if problem:
        errors.append({"location": "institution", "problem": problem})
    if not name.strip():
        errors.append({"location": "name", "problem": "name the application, e.g. 'loan-origination'"})
    if auth_method not in AUTH_METHODS:
        errors.append(
            {
                "location": "auth_method",
                "problem": f"must be one of {', '.join(AUTH_METHODS)}, not {auth_method!r}",
            }
        )
    elif auth_method == "private_key_jwt":
        if jwks is None:
            errors.append(
                {"location": "jwks", "problem": "private_key_jwt needs the client's public keys (jwks)"}
            )
        else:
            errors += [{"location": "jwks", "problem": p} for p in _jwks_problems(jwks)]
    elif jwks is not None:
        errors.append(
            {
                "location": "jwks",
                "problem": "client_secret_basic takes no jwks; use auth_method private_key_jwt",
            }
        )
    if errors:
        raise InvalidSpec(
            "the client cannot be registered: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
        )
    institution = principal_service.get_principal(session, principal_id=institution_id)
    principal_service.require_active(institution)
    secret = secrets.token_urlsafe(32) if auth_method == "client_secret_basic" else None
    client = OAuthClient(
        client_id=CLIENT_ID_PREFIX + secrets.token_urlsafe(16),
        institution_id=institution_id,
        name=name.strip(),
        token_endpoint_auth_method=auth_method,
        secret_sha256=_secret_digest(secret) if secret is not None else None,
        jwks=jwks,
        created_by=by.name if by is not None else by_name,
    )
    session.add(client)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action="client.create",
        object_type="oauth_client",
        object_id=client.client_id,
        institution_id=institution_id,
        detail={"name": client.name, "auth_method": auth_method},
    )
    return client, secret


def get_client(session: Session, *, client_id: str) -> OAuthClient | None:
    return session.get(OAuthClient, client_id)


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The OAuth clients the viewer may read, as a WHERE clause (every list and get of clients uses
    it): an institution its own, the operator all; a department none (403)."""
    if viewer.kind == "department":
        raise Forbidden("departments do not hold OAuth clients; institutions do")
    if viewer.kind == "institution":
        return OAuthClient.institution_id == viewer.id
    return sa.true()


def _visible_client(
    session: Session, *, client_id: str, viewer: Principal | None, lock: bool = False
) -> OAuthClient:
    q = sa.select(OAuthClient).where(OAuthClient.client_id == client_id)
    if viewer is not None:
        q = q.where(readable_by(viewer))
    if lock:
        q = q.with_for_update().execution_options(populate_existing=True)
    client = session.scalar(q)
    # another institution's client answers as unknown, so existence does not leak
    if client is None:
        raise NotFound(f"no client {client_id!r} of yours; GET /v1/clients lists them")
    return client


def revoke_client(
    session: Session,
    *,
    client_id: str,
    by_name: str,
    by: Principal | None = None,
    reason: str | None = None,
) -> OAuthClient:
    """Revoke a client: its next token request and every token it holds are refused from the next request."""
    client = _visible_client(session, client_id=client_id, viewer=by, lock=True)
    if client.revoked_at is not None:
        raise Conflict(f"client {client_id!r} was revoked at {client.revoked_at.isoformat()}")
    client.revoked_at = utcnow()
    client.revoke_reason = reason
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action="client.revoke",
        object_type="oauth_client",
        object_id=client.client_id,
        reason=reason,
        institution_id=client.institution_id,
    )
    return client


def rotate_client_secret(
    session: Session, *, client_id: str, by_name: str, by: Principal | None = None
) -> tuple[OAuthClient, str]:
    """Give a client_secret_basic client a new secret, shown this once: the old one stops working
    at the next token request (tokens already issued live out their short lifetime)."""
    client = _visible_client(session, client_id=client_id, viewer=by, lock=True)
    if client.revoked_at is not None:
        raise Conflict(f"client {client_id!r} was revoked at {client.revoked_at.isoformat()}; register a new one")
    if client.secret_sha256 is None:  # private_key_jwt: it proves itself with its own key
        raise Conflict(
            f"client {client_id!r} authenticates with {client.token_endpoint_auth_method}: it has no secret; "
            "register its new public key as a new client"
        )
    secret = secrets.token_urlsafe(32)
    client.secret_sha256 = _secret_digest(secret)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=by_name,
        action="client.rotate-secret",
        object_type="oauth_client",
        object_id=client.client_id,
        institution_id=client.institution_id,
    )
    return client, secret


def list_clients(session: Session, *, viewer: Principal | None) -> list[OAuthClient]:
    """An institution sees its own clients; the operator (or the shell, viewer None) sees all."""
    q = sa.select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.client_id)
    if viewer is not None:
        q = q.where(readable_by(viewer))
    return list(session.scalars(q))


def check_client_secret(client: OAuthClient, secret: str) -> bool:
    expected = client.secret_sha256 or b"\0" * 32
    # compare even without a stored hash, so timing does not tell the methods apart
    return hmac.compare_digest(_secret_digest(secret), expected) and client.secret_sha256 is not None


def client_problem(session: Session, client: OAuthClient) -> str | None:
    """Why an authenticated client may not get or use tokens now (revoked, institution suspended), or None."""
    if client.revoked_at is not None:
        return f"client {client.client_id} was revoked at {client.revoked_at.isoformat()}" + (
            f": {client.revoke_reason}" if client.revoke_reason else ""
        )
    institution = principal_service.get_principal(session, principal_id=client.institution_id)
    if institution.suspended_at is not None:
        return (
            f"institution {institution.name!r} is suspended since {institution.suspended_at.isoformat()}"
            + (f": {institution.suspend_reason}" if institution.suspend_reason else "")
        )
    return None


# ---------------------------------------------------------------- scopes


@dataclass
class ScopeDecision:
    """Which product scopes an institution may obtain now, and why each other one is refused."""

    allowed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def _product_refusal(
    session: Session, *, institution_id: int, product_id: str, purposes: Iterable[str], at: datetime
) -> str | None:
    try:
        product = product_service.get_product(session, product_id=product_id)
    except NotFound:
        return f"there is no product {product_id!r}; GET /v1/catalog lists them"
    datasets = sorted(product_service.spec_of(product).sources)
    reasons: list[str] = []
    for purpose in purposes:
        try:
            contract_service.require_contract(
                session, institution_id=institution_id, product_id=product_id, purpose=purpose, at=at
            )
            grant_service.require_grants(
                session,
                product_id=product_id,
                dataset_ids=datasets,
                institution_id=institution_id,
                purpose=purpose,
                at=at,
            )
        except DomainError as e:
            reasons.append(f"for {purpose}: {e.detail}")
            continue
        return None
    if not reasons:
        return f"no contract of yours covers product {product_id}; ask the operator to sign one"
    return "; ".join(reasons)


def decide_scopes(
    session: Session, *, institution_id: int, requested: Iterable[str] | None, at: datetime | None = None
) -> ScopeDecision:
    """Check each requested scope (None: every product of the institution's contracts)."""
    at = at or utcnow()
    contracts = contract_service.list_contracts(
        session, viewer=principal_service.get_principal(session, principal_id=institution_id)
    )
    purposes_by_product: dict[str, list[str]] = {}
    for contract in contracts:
        for covered in contract.products:
            known = purposes_by_product.setdefault(covered, [])
            known += [p for p in contract.purposes if p not in known]
    wanted = (
        list(dict.fromkeys(requested))
        if requested is not None
        else [product_scope(p) for p in sorted(purposes_by_product)]
    )
    decision = ScopeDecision()
    for scope in wanted:
        named = scope_product(scope)
        if named is None:
            decision.refused[scope] = f"unknown scope {scope!r}: scopes read 'product:<product id>'"
            continue
        product_id = named
        if product_id not in purposes_by_product:
            exists = True
            try:
                product_service.get_product(session, product_id=product_id)
            except NotFound:
                exists = False
            decision.refused[scope] = (
                f"no contract of yours covers product {product_id}; ask the operator to sign one"
                if exists
                else f"there is no product {product_id!r}"
            )
            continue
        why = _product_refusal(
            session,
            institution_id=institution_id,
            product_id=product_id,
            purposes=purposes_by_product[product_id],
            at=at,
        )
        if why is None:
            decision.allowed.append(scope)
        else:
            decision.refused[scope] = why
    return decision


# ---------------------------------------------------------------- revoked tokens, used assertions


def revoke_token(
    session: Session, *, jti: str, institution_id: int, client_id: str, expires_at: datetime, by_name: str
) -> None:
    """Remember a revoked, unexpired access token until it expires (idempotent)."""
    inserted = session.execute(
        insert(RevokedToken)
        .values(jti=jti, institution_id=institution_id, client_id=client_id, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["jti"])
        .returning(RevokedToken.jti)
    ).first()
    if inserted is not None:
        audit_service.record(
            session,
            actor=None,
            actor_name=by_name,
            action="token.revoke",
            object_type="access_token",
            object_id=jti,
            institution_id=institution_id,
            detail={"client_id": client_id, "expires_at": expires_at.isoformat()},
        )


def is_token_revoked(session: Session, *, jti: str) -> bool:
    return session.scalar(sa.select(sa.exists().where(RevokedToken.jti == jti))) is True


@dataclass(frozen=True)
class TokenHolder:
    """What an access token's use rests on, read fresh on every call: whether the token was revoked,
    its client and the client's institution (None when the client is unknown)."""

    revoked: bool
    client: OAuthClient | None
    institution: Principal | None


def token_holder(session: Session, *, jti: str, client_id: str) -> TokenHolder:
    """The token's revocation, client and institution in one query (every product call asks)."""
    revoked = sa.exists().where(RevokedToken.jti == jti).label("revoked")
    row = session.execute(
        sa.select(OAuthClient, Principal, revoked)
        .join(Principal, Principal.id == OAuthClient.institution_id)
        .where(OAuthClient.client_id == client_id)
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        return TokenHolder(is_token_revoked(session, jti=jti), None, None)
    return TokenHolder(bool(row.revoked), row.OAuthClient, row.Principal)


def use_assertion(session: Session, *, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record a client assertion's jti; False when it was used before (a replay)."""
    inserted = session.execute(
        insert(UsedAssertion)
        .values(client_id=client_id, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["client_id", "jti"])
        .returning(UsedAssertion.jti)
    ).first()
    return inserted is not None


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Drop used assertions and revoked tokens past their expiry (they can no longer be presented)."""
    now = now or utcnow()
    dropped = 0
    for table in (UsedAssertion, RevokedToken):
        result = cast("sa.CursorResult[Any]", session.execute(sa.delete(table).where(table.expires_at < now)))
        dropped += result.rowcount
    return dropped
