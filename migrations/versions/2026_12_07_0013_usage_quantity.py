"""Usage events carry a quantity: the units of a call that name no enterprise (the items of a PSI
set, anonymous queries) are one event of N units at one price instead of N rows.

Revision ID: 2026_12_07_0013
Revises: 2026_12_07_0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0013"
down_revision = "2026_12_07_0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_event", sa.Column("quantity", sa.BigInteger, nullable=False, server_default="1"))
    op.create_check_constraint("ck_usage_event_quantity", "usage_event", "quantity >= 1")
    # an event naming an enterprise is that one enterprise: one unit
    op.create_check_constraint("ck_usage_event_named_unit", "usage_event", "uscc IS NULL OR quantity = 1")


def downgrade() -> None:
    # back to one row per unit: an event of N units becomes N events (new ids, same call and key)
    op.execute(
        "INSERT INTO usage_event (id, call_id, at, institution_id, client_id, contract_id, plan_id,"
        " product_id, purpose, uscc, price_fen, free, idempotency_key, debit_id)"
        " SELECT gen_random_uuid(), call_id, at, institution_id, client_id, contract_id, plan_id,"
        " product_id, purpose, uscc, price_fen, free, idempotency_key, debit_id"
        " FROM usage_event, generate_series(2, quantity) WHERE quantity > 1"
    )
    op.drop_constraint("ck_usage_event_named_unit", "usage_event")
    op.drop_constraint("ck_usage_event_quantity", "usage_event")
    op.drop_column("usage_event", "quantity")
