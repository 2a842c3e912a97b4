"""The resource side: checking an access token presented to the product API.

Signature keys come from the database (public halves cached a few seconds); revocation of
the token, of its client and suspension of its institution are read on every call, so each
holds from the next request on every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.util import to_bytes
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.errors import Forbidden, Unauthorized
from datazone.oauth import keys
from datazone.oauth import service as oauth_service
from datazone.principal.models import Principal

# clock skew tolerated on exp, iat and nbf
LEEWAY_SECONDS = 30
TOKEN_TYPES = ("at+jwt", "application/at+jwt")


class InvalidToken(Unauthorized):
    type = "invalid-token"
    title = "The access token is not valid"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, oauth_error="invalid_token", **extra)


class InsufficientScope(Forbidden):
    type = "insufficient-scope"
    title = "The access token lacks the scope this needs"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, oauth_error="insufficient_scope", **extra)


@dataclass(frozen=True)
class AccessGrant:
    """What a valid access token lets its bearer do."""

    client_id: str
    institution: Principal
    scopes: frozenset[str]
    jti: str
    expires_at: datetime


def _decode(session: Session, token: str) -> dict[str, Any]:
    try:
        compact = jws.extract_compact(to_bytes(token))
    except (JoseError, ValueError, UnicodeError) as e:
        raise InvalidToken("the access token is not a JWT; get one from POST /oauth/token") from e
    headers = compact.headers()
    if headers.get("typ") not in TOKEN_TYPES:
        raise InvalidToken(
            f"the token's typ is {headers.get('typ')!r}, not 'at+jwt': it is not an access token of this zone"
        )
    kid = headers.get("kid")
    key = keys.verification_key(session, kid=kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken(f"the token is signed with an unknown key (kid {kid!r}); get a new token")
    try:
        # algorithms pinned to the key's own: no downgrade to 'none' or HMAC
        decoded = jwt.decode(token, key, algorithms=[key.alg or keys.ALG])
    except BadSignatureError as e:
        raise InvalidToken(
            f"the token's signature does not verify with key {kid}; it was altered or forged"
        ) from e
    except (JoseError, ValueError) as e:
        raise InvalidToken(f"the token cannot be read: {e}") from e
    return dict(decoded.claims)


def _check_claims(claims: dict[str, Any], settings: Settings, now: datetime) -> None:
    registry = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()),
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": settings.issuer},
        aud={"essential": True, "value": settings.oauth_audience},
        exp={"essential": True},
        jti={"essential": True},
        client_id={"essential": True},
        institution_id={"essential": True},
    )
    try:
        registry.validate(claims)
    except ExpiredTokenError as e:
        exp = datetime.fromtimestamp(int(claims["exp"]), UTC)
        raise InvalidToken(
            f"the token expired at {exp.isoformat()}; get a new one", expired_at=exp.isoformat()
        ) from e
    except InvalidClaimError as e:
        if e.claim == "iss":
            raise InvalidToken(
                f"the token was issued by {claims.get('iss')!r}, not this zone ({settings.issuer})"
            ) from e
        if e.claim == "aud":
            raise InvalidToken(
                f"the token is for audience {claims.get('aud')!r}, not {settings.oauth_audience!r}"
            ) from e
        raise InvalidToken(f"the token's {e.claim} claim is not valid: {e.description}") from e
    except MissingClaimError as e:
        raise InvalidToken(f"the token lacks a claim: {e.description}") from e
    except JoseError as e:
        raise InvalidToken(f"the token's claims are not valid: {e.description}") from e


def authenticate_access_token(
    session: Session, *, token: str, settings: Settings, now: datetime | None = None
) -> AccessGrant:
    """Verify an access token: signature, type, issuer, audience, expiry (30 s leeway),
    revocation, its client and its institution. Raises `InvalidToken` saying what is wrong."""
    now = now or datetime.now(UTC)
    claims = _decode(session, token)
    _check_claims(claims, settings, now)
    jti = str(claims["jti"])
    holder = oauth_service.token_holder(session, jti=jti, client_id=str(claims["client_id"]))
    if holder.revoked:
        raise InvalidToken("the token was revoked; get a new one")
    client, institution = holder.client, holder.institution
    if client is None or institution is None or client.institution_id != claims["institution_id"]:
        raise InvalidToken("the token's client is unknown to this zone")
    if client.revoked_at is not None:
        raise InvalidToken(
            f"the token's client {client.client_id} was revoked at {client.revoked_at.isoformat()}"
        )
    if institution.suspended_at is not None:
        raise InvalidToken(
            f"institution {institution.name!r} is suspended since {institution.suspended_at.isoformat()}"
            + (f": {institution.suspend_reason}" if institution.suspend_reason else "")
        )
    scope = claims.get("scope") or ""
    return AccessGrant(
        client_id=client.client_id,
        institution=institution,
        scopes=frozenset(str(scope).split()),
        jti=jti,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def require_scope(grant: AccessGrant, product_id: str) -> None:
    """Refuse unless the token carries `product:<product_id>`."""
    needed = oauth_service.product_scope(product_id)
    if needed not in grant.scopes:
        held = ", ".join(sorted(grant.scopes)) or "none"
        raise InsufficientScope(
            f"this token lacks the scope {needed} (it holds {held}); request a token with scope={needed}",
            scope=needed,
        )
