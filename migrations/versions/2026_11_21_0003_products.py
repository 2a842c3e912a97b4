"""data products (catalog)

Revision ID: 2026_11_21_0003
Revises: 2026_11_21_0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "2026_11_21_0003"
down_revision = "2026_11_21_0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "product",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("spec", postgresql.JSONB, nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="draft"),
        sa.Column("successor_id", sa.String(63), sa.ForeignKey("product.id", name="fk_product_successor")),
        sa.Column("seamless_switch", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "state IN ('draft', 'published', 'deprecated', 'retired')", name="ck_product_state"
        ),
        sa.CheckConstraint(
            "successor_id IS NULL OR successor_id <> id", name="ck_product_successor_not_self"
        ),
        sa.CheckConstraint("NOT seamless_switch OR successor_id IS NOT NULL", name="ck_product_seamless"),
    )
    op.create_index("ix_product_state", "product", ["state"])
    op.create_index("ix_product_successor_id", "product", ["successor_id"])


def downgrade() -> None:
    op.drop_index("ix_product_successor_id", table_name="product")
    op.drop_index("ix_product_state", table_name="product")
    op.drop_table("product")
