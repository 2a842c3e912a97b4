"""One active token-signing key per algorithm (ES256, and RS256 when enabled), not one in all

Revision ID: 2026_12_07_0015
Revises: 2026_12_07_0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0015"
down_revision = "2026_12_07_0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("uq_oauth_signing_key_active", table_name="oauth_signing_key")
    op.create_index(
        "uq_oauth_signing_key_active",
        "oauth_signing_key",
        ["alg"],
        unique=True,
        postgresql_where=sa.text("retires_at IS NULL"),
    )


def downgrade() -> None:
    # one active key in all again: retire every active key but the newest (it stays published
    # until its tokens expire; the next token is signed with the newest)
    op.execute(
        """
        UPDATE oauth_signing_key SET retires_at = now() + interval '1 hour'
        WHERE retires_at IS NULL AND kid <> (
            SELECT kid FROM oauth_signing_key WHERE retires_at IS NULL ORDER BY created_at DESC LIMIT 1
        )
        """
    )
    op.drop_index("uq_oauth_signing_key_active", table_name="oauth_signing_key")
    op.create_index(
        "uq_oauth_signing_key_active",
        "oauth_signing_key",
        [sa.text("(retires_at IS NULL)")],
        unique=True,
        postgresql_where=sa.text("retires_at IS NULL"),
    )
