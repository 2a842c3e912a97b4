"""Token-signing keys: one active key per algorithm the zone signs with (ES256, and RS256 when
enabled), made at start-up, encrypted at rest, rotated, published as a JWK Set.

The private half of each key is encrypted with Fernet under a key derived from the
deployment's secret (`datazone.keyring`), which every issuing replica shares.
Rotation runs under a transaction-scoped advisory lock and a unique partial index allows one
active key per algorithm, so two replicas rotating at once cannot both add a key.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.config import Settings
from datazone.oauth.models import SigningKey

ALG = "ES256"
CURVE = "P-256"
# every algorithm a token of this zone may be signed with; a verifier accepts these only
ALGS = ("ES256", "RS256")
RSA_BITS = 2048
SigningJWK = ECKey | RSAKey
# a retired key stays published this long past the expiry of the last token it could have signed
PUBLISH_MARGIN = timedelta(seconds=60)
# the lock every rotation takes (a constant key, distinct from other domains' advisory locks)
_ROTATION_LOCK = 0x6F61757468_01  # "oauth" 01


def utcnow() -> datetime:
    return datetime.now(UTC)


def _fernet(settings: Settings) -> Fernet:
    return keyring.sealer(settings, info=b"datazone token-signing keys")


def _import(data: dict[str, Any], alg: str) -> SigningJWK:
    return RSAKey.import_key(data) if alg == "RS256" else ECKey.import_key(data)


def private_key(signing_key: SigningKey, settings: Settings) -> SigningJWK:
    """The decrypted private key, for signing; never logged, never returned to a caller."""
    raw = _fernet(settings).decrypt(signing_key.private_key_encrypted)
    return _import(json.loads(raw), signing_key.alg)


def public_key(signing_key: SigningKey) -> SigningJWK:
    return _import(signing_key.public_jwk, signing_key.alg)


def _generate(session: Session, settings: Settings, *, at: datetime, alg: str) -> SigningKey:
    kid = f"{at:%Y%m%d}-{alg.lower()}-{secrets.token_hex(6)}"
    parameters: KeyParameters = {"kid": kid, "alg": alg, "use": "sig"}
    key: SigningJWK = (
        RSAKey.generate_key(RSA_BITS, parameters=parameters)
        if alg == "RS256"
        else ECKey.generate_key(CURVE, parameters=parameters)
    )
    row = SigningKey(
        kid=kid,
        alg=alg,
        public_jwk=key.as_dict(private=False),
        private_key_encrypted=_fernet(settings).encrypt(json.dumps(key.as_dict(private=True)).encode()),
        created_at=at,
        retires_at=None,
    )
    session.add(row)
    session.flush()
    return row


def _active(session: Session, alg: str) -> SigningKey | None:
    return session.scalar(
        sa.select(SigningKey)
        .where(SigningKey.retires_at.is_(None), SigningKey.alg == alg)
        .execution_options(populate_existing=True)
    )


def _stale(key: SigningKey, settings: Settings, at: datetime) -> bool:
    return at - key.created_at >= timedelta(hours=settings.oauth_key_rotation_hours)


def current_signing_key(
    session: Session, settings: Settings, *, at: datetime | None = None, alg: str | None = None
) -> SigningKey:
    """The active signing key of `alg` (default: the one tokens are signed with): created on first
    use, rotated once older than the rotation period.

    The common case is one indexed read. Only when a key must be made is the rotation lock taken
    (until the end of the transaction), and the state read again under it.
    """
    at = at or utcnow()
    alg = alg or settings.signing_algs[0]
    key = _active(session, alg)
    if key is not None and not _stale(key, settings, at):
        return key
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(_ROTATION_LOCK)))
    key = _active(session, alg)
    if key is not None and not _stale(key, settings, at):
        return key  # another replica rotated while we waited
    if key is not None:
        key.retires_at = at + timedelta(seconds=settings.oauth_token_seconds) + PUBLISH_MARGIN
        session.flush()
    return _generate(session, settings, at=at, alg=alg)


def ensure_signing_keys(session: Session, settings: Settings, *, at: datetime | None = None) -> list[SigningKey]:
    """A current key for every configured algorithm, made now if missing or stale: the gateway calls
    this at start-up, so the JWKS holds the keys before the first token is issued. The active key of
    an algorithm no longer configured is retired, published until the tokens it signed expire."""
    at = at or utcnow()
    dropped = session.scalars(
        sa.select(SigningKey).where(SigningKey.retires_at.is_(None), SigningKey.alg.not_in(settings.signing_algs))
    ).all()
    for key in dropped:
        key.retires_at = at + timedelta(seconds=settings.oauth_token_seconds) + PUBLISH_MARGIN
    session.flush()
    return [current_signing_key(session, settings, at=at, alg=alg) for alg in settings.signing_algs]


def published_keys(session: Session, *, at: datetime | None = None) -> list[SigningKey]:
    """Every key that may still verify an unexpired token: the active one and the recently retired."""
    at = at or utcnow()
    return list(
        session.scalars(
            sa.select(SigningKey)
            .where(sa.or_(SigningKey.retires_at.is_(None), SigningKey.retires_at > at))
            .order_by(SigningKey.created_at.desc())
        )
    )


def jwks(session: Session, *, at: datetime | None = None) -> dict[str, Any]:
    return {"keys": [dict(k.public_jwk) for k in published_keys(session, at=at)]}


# kid -> (public key, when read); public keys only: revocation and suspension are never cached
_PUBLIC_CACHE: dict[str, tuple[SigningJWK, float]] = {}
_CACHE_SECONDS = 5.0


def verification_key(session: Session, *, kid: str) -> SigningJWK | None:
    """The public key named `kid`, from a few-seconds cache or the database; None if unknown or retired."""
    hit = _PUBLIC_CACHE.get(kid)
    if hit is not None and time.monotonic() - hit[1] < _CACHE_SECONDS:
        return hit[0]
    row = session.get(SigningKey, kid)
    if row is None or (row.retires_at is not None and row.retires_at <= utcnow()):
        _PUBLIC_CACHE.pop(kid, None)
        return None
    key = public_key(row)
    _PUBLIC_CACHE[kid] = (key, time.monotonic())
    return key
