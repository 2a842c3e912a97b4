"""OAuth2 tables: institutions' clients, the token-signing keys, revoked tokens, used client assertions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

AUTH_METHODS = ("client_secret_basic", "private_key_jwt")


class OAuthClient(Base):
    """An institution's application. Only SHA-256 of a client secret is kept: the secret is
    256 random bits, so a fast hash is enough and no stretching is needed."""

    __tablename__ = "oauth_client"
    __table_args__ = (
        sa.CheckConstraint(
            "token_endpoint_auth_method IN ('client_secret_basic', 'private_key_jwt')",
            name="ck_oauth_client_auth_method",
        ),
        sa.CheckConstraint(
            "(token_endpoint_auth_method = 'client_secret_basic' AND secret_sha256 IS NOT NULL)"
            " OR (token_endpoint_auth_method = 'private_key_jwt' AND jwks IS NOT NULL)",
            name="ck_oauth_client_credentials",
        ),
    )

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id"), index=True)
    name: Mapped[str] = mapped_column(sa.Text)
    token_endpoint_auth_method: Mapped[str] = mapped_column(sa.String(32))
    secret_sha256: Mapped[bytes | None] = mapped_column(sa.LargeBinary(32))
    # the client's PUBLIC keys (a JWK Set), for private_key_jwt
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_by: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)


class SigningKey(Base):
    """A token-signing key pair. The private half is encrypted (Fernet, key derived from the
    signing-key secret). `retires_at` is NULL for the one active key of each algorithm; a superseded key keeps
    being published until `retires_at` (its last token's expiry plus a margin)."""

    __tablename__ = "oauth_signing_key"
    __table_args__ = (
        # at most one active key per algorithm, whatever two replicas rotating at once might try
        sa.Index(
            "uq_oauth_signing_key_active",
            "alg",
            unique=True,
            postgresql_where=sa.text("retires_at IS NULL"),
        ),
    )

    kid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(sa.String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    private_key_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    retires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class RevokedToken(Base):
    """A JWT access token revoked before its expiry (RFC 7009); kept until it would have expired."""

    __tablename__ = "oauth_revoked_token"

    jti: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    institution_id: Mapped[int] = mapped_column(sa.BigInteger)
    client_id: Mapped[str] = mapped_column(sa.String(64))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class UsedAssertion(Base):
    """A private_key_jwt client assertion already used; kept until it expires, so it cannot be replayed."""

    __tablename__ = "oauth_used_assertion"

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
