"""Admission as one short autonomous statement: `meter_admit` decides the rate limit, quota, free
units and spend cap and counts the call, in its own transaction, so an institution's concurrent calls
wait on each other for that one statement only, not until each other's commit.

The reservation runs on a connection of its own, outside the caller's transaction, and so cannot see a
contract or institution that transaction created: the meter tables keep no foreign keys (their rows are
keyed by ids the caller has already checked). The per-institution lock row `meter` is no longer used.

Revision ID: 2026_12_07_0016
Revises: 2026_12_07_0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_07_0016"
down_revision = "2026_12_07_0015"
branch_labels = None
depends_on = None

# Written in PL/pgSQL because the decision and the counting must happen under the rows' locks in one
# round trip: as separate statements from Python the locks would be held across network waits.
METER_ADMIT = """
CREATE FUNCTION meter_admit(
    p_institution bigint, p_contract bigint, p_interval interval, p_window interval,
    p_day text, p_month text, p_units bigint, p_price bigint,
    p_quota bigint, p_quota_period text, p_free_units bigint, p_free_period text, p_cap bigint,
    OUT outcome text, OUT next_tat timestamptz, OUT clock timestamptz,
    OUT used bigint, OUT free_taken bigint, OUT spent bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_tat timestamptz;
    d_units bigint; d_free bigint; m_units bigint; m_free bigint; m_fen bigint;
    v_charged bigint;
BEGIN
    -- the rate limit (GCRA per contract): move the theoretical arrival time one interval on, if
    -- that stays within the burst's window of the database's clock (one clock for every replica)
    INSERT INTO meter_rate (contract_id, tat) VALUES (p_contract, NULL) ON CONFLICT (contract_id) DO NOTHING;
    SELECT r.tat INTO v_tat FROM meter_rate r WHERE r.contract_id = p_contract FOR UPDATE;
    clock := clock_timestamp();
    next_tat := GREATEST(COALESCE(v_tat, clock), clock) + p_interval;
    IF next_tat > clock + p_window THEN
        outcome := 'rate_limit';
        next_tat := COALESCE(v_tat, clock);
        RETURN;
    END IF;
    -- the institution's counters of the day and the month, locked in that order by every caller
    INSERT INTO meter_count (institution_id, period) VALUES (p_institution, p_day), (p_institution, p_month)
        ON CONFLICT (institution_id, period) DO NOTHING;
    SELECT c.units, c.free_units INTO d_units, d_free FROM meter_count c
        WHERE c.institution_id = p_institution AND c.period = p_day FOR UPDATE;
    SELECT c.units, c.free_units, c.charged_fen INTO m_units, m_free, m_fen FROM meter_count c
        WHERE c.institution_id = p_institution AND c.period = p_month FOR UPDATE;
    used := CASE WHEN p_quota_period = 'day' THEN d_units ELSE m_units END;
    spent := m_fen;
    free_taken := 0;
    IF p_quota IS NOT NULL AND p_units > GREATEST(0, p_quota - used) THEN
        outcome := 'quota';
        RETURN;
    END IF;
    -- the free allowance is for paid units: a free product does not use it up
    IF p_price > 0 THEN
        free_taken := LEAST(p_units, GREATEST(0,
            p_free_units - CASE WHEN p_free_period = 'day' THEN d_free ELSE m_free END));
    END IF;
    v_charged := p_price * (p_units - free_taken);
    IF p_cap IS NOT NULL AND v_charged > 0 AND m_fen + v_charged > p_cap THEN
        outcome := 'cap';
        RETURN;
    END IF;
    UPDATE meter_rate SET tat = next_tat WHERE contract_id = p_contract;
    UPDATE meter_count c SET units = c.units + p_units, free_units = c.free_units + free_taken,
        charged_fen = c.charged_fen + v_charged
        WHERE c.institution_id = p_institution AND c.period IN (p_day, p_month);
    outcome := 'admitted';
END
$$
"""

ADMIT_SIGNATURE = (
    "meter_admit(bigint, bigint, interval, interval, text, text, bigint, bigint, bigint, text, bigint, text, bigint)"
)


def upgrade() -> None:
    op.drop_constraint("meter_rate_contract_id_fkey", "meter_rate", type_="foreignkey")
    op.drop_constraint("meter_count_institution_id_fkey", "meter_count", type_="foreignkey")
    op.drop_table("meter")
    op.execute(METER_ADMIT)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {ADMIT_SIGNATURE}")
    op.create_table(
        "meter",
        sa.Column("institution_id", sa.BigInteger, sa.ForeignKey("principal.id"), primary_key=True),
    )
    op.execute("DELETE FROM meter_count WHERE institution_id NOT IN (SELECT id FROM principal)")
    op.execute("INSERT INTO meter (institution_id) SELECT DISTINCT institution_id FROM meter_count")
    op.create_foreign_key(
        "meter_count_institution_id_fkey", "meter_count", "principal", ["institution_id"], ["id"]
    )
    op.execute("DELETE FROM meter_rate WHERE contract_id NOT IN (SELECT id FROM contract)")
    op.create_foreign_key(
        "meter_rate_contract_id_fkey", "meter_rate", "contract", ["contract_id"], ["id"], ondelete="CASCADE"
    )
