"""OAuth2: clients, signing keys, revoked tokens, used client assertions

Revision ID: 2026_11_21_0007
Revises: 2026_11_21_0006
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0007"
down_revision = "2026_11_21_0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(32)),
        sa.Column("jwks", postgresql.JSONB),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", TS),
        sa.Column("revoke_reason", sa.Text),
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
    op.create_index("ix_oauth_client_institution_id", "oauth_client", ["institution_id"])
    op.create_table(
        "oauth_signing_key",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB, nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retires_at", TS),
    )
    # at most one active key, even when two replicas rotate at once
    op.create_index(
        "uq_oauth_signing_key_active",
        "oauth_signing_key",
        [sa.text("(retires_at IS NULL)")],
        unique=True,
        postgresql_where=sa.text("retires_at IS NULL"),
    )
    op.create_table(
        "oauth_revoked_token",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("institution_id", sa.BigInteger, nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_oauth_revoked_token_expires_at", "oauth_revoked_token", ["expires_at"])
    op.create_table(
        "oauth_used_assertion",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_oauth_used_assertion_expires_at", "oauth_used_assertion", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oauth_used_assertion")
    op.drop_table("oauth_revoked_token")
    op.drop_table("oauth_signing_key")
    op.drop_table("oauth_client")
