"""The scoring features the product engine computes, against the same figures counted in SQL
straight from the zone tables (the synthetic zone, every registered enterprise)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from datazone.dataset.schemas import SHANGHAI
from datazone.db import Database
from datazone.product import service as product_service
from datazone.product.engine.logics import TAX_GRADE_CODES
from tests.scoring.conftest import PRODUCT, features_of


def _sql(db: Database, query: str, **params: Any) -> dict[str, Any]:
    with db.engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(sa.text(query), params)}


def _whole_years(start: date, end: date) -> int:
    return max(0, end.year - start.year - ((end.month, end.day) < (start.month, start.day)))


def test_features_match_the_zone_tables(synthetic_zone: dict[str, Any], db: Database) -> None:
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id=PRODUCT))
    with db.engine.connect() as conn:
        registration = {
            u: (status, founded, capital)
            for u, status, founded, capital in conn.execute(
                sa.text(
                    "SELECT uscc, status, founded, reg_capital FROM zone.mr_registration WHERE _vto IS NULL"
                )
            )
        }
    codes = sorted(registration)
    features = {}
    for start in range(0, len(codes), 1000):
        features.update(features_of(db, spec, codes[start : start + 1000], today))

    grade = _sql(
        db,
        "SELECT DISTINCT ON (uscc) uscc, grade FROM zone.tax_credit_grade WHERE _vto IS NULL AND year <= :y"
        " ORDER BY uscc, year DESC",
        y=today.year,
    )
    arrears = _sql(
        db,
        "SELECT DISTINCT ON (uscc) uscc, arrears FROM zone.tax_payment WHERE _vto IS NULL AND year <= :y"
        " ORDER BY uscc, year DESC",
        y=today.year,
    )
    dishonest = _sql(
        db,
        "SELECT uscc, count(*) FILTER (WHERE performance = 'unperformed') FROM zone.court_dishonest"
        " WHERE _vto IS NULL AND listed_on <= :d GROUP BY uscc",
        d=today,
    )
    abnormal = _sql(
        db,
        "SELECT DISTINCT uscc, true FROM zone.mr_abnormal_operation WHERE _vto IS NULL AND listed_on <= :d"
        " AND (removed_on IS NULL OR removed_on > :d)",
        d=today,
    )
    penalties = _sql(
        db,
        "SELECT uscc, count(*) FROM zone.mr_penalty WHERE _vto IS NULL"
        " AND decided_on BETWEEN CAST(:d AS date) - interval '36 months' AND :d GROUP BY uscc",
        d=today,
    )
    insured = _sql(
        db,
        "SELECT DISTINCT ON (uscc) uscc, insured FROM zone.si_headcount WHERE _vto IS NULL AND period <= :d"
        " ORDER BY uscc, period DESC",
        d=today,
    )
    patents = _sql(
        db,
        "SELECT DISTINCT ON (uscc) uscc, invention_patents FROM zone.ip_patent WHERE _vto IS NULL"
        " ORDER BY uscc, as_of DESC",
    )
    high_tech = _sql(
        db,
        "SELECT DISTINCT uscc, true FROM zone.sci_certification WHERE _vto IS NULL AND cert_type = 'high_tech'"
        " AND issued_on <= :d AND expires_on >= :d",
        d=today,
    )
    electricity = _sql(
        db,
        "SELECT uscc, round(sum(electricity_kwh) / 1000) FROM ("
        "  SELECT uscc, electricity_kwh, row_number() OVER (PARTITION BY uscc ORDER BY period DESC) AS k"
        "  FROM zone.utility_usage WHERE _vto IS NULL AND period <= :d AND electricity_kwh IS NOT NULL"
        ") last12 WHERE k <= 12 GROUP BY uscc",
        d=today,
    )

    for code in codes:
        f = features[code]
        assert all(v is None or type(v) is int for v in f.values()), f
        status, founded, capital = registration[code]
        assert f["registration_active"] == int(status == "active")
        assert f["years_since_founding"] == _whole_years(founded, today)
        assert f["reg_capital_wan"] == (
            None if capital is None else int(Decimal(capital).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        )
        assert f["tax_grade_code"] == (TAX_GRADE_CODES[grade[code]] if code in grade else None)
        assert f["has_tax_arrears"] == (int(arrears[code] > 0) if code in arrears else None)
        assert f["dishonest_listed"] == int(code in dishonest)
        assert f["dishonest_unperformed_cases"] == dishonest.get(code, 0)
        assert f["abnormal_listed"] == int(code in abnormal)
        assert f["penalties_36m"] == penalties.get(code, 0)
        assert f["insured_latest"] == insured.get(code)
        assert f["has_social_insurance"] == int(code in insured)
        assert f["invention_patents"] == patents.get(code)
        assert f["high_tech"] == int(code in high_tech)
        assert f["electricity_12m_mwh"] == (int(electricity[code]) if code in electricity else None)

    # the zone is varied enough that each compared feature was exercised both ways
    for name in (
        "dishonest_listed",
        "abnormal_listed",
        "high_tech",
        "has_tax_arrears",
        "registration_active",
    ):
        assert {0, 1} <= {features[c][name] for c in codes}, name
    assert len({features[c]["tax_grade_code"] for c in codes}) >= 4
    assert any(features[c]["insured_latest"] is None for c in codes)
