"""The four products computed on a hand-built zone, with every figure worked out by hand.

The zone is loaded through the real ingest pipeline (hand-written CSV files) into a
database of its own; as_of is 2026-10-31, so "the last 24 months" starts 2024-10-31.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from datazone.db import Database
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.engine.logics import enterprise_scale, tax_cagr_pct
from datazone.product.engine.records import months_before, wan_to_fen, whole_years, yuan_to_fen
from tests.factories import make_uscc
from tests.product.zones import (
    apply_demo_specs,
    apply_products,
    fresh_database,
    ingest_file,
    write_rows,
    zone_settings,
)

AS_OF = date(2026, 10, 31)
CLEAN, TROUBLED, REVOKED, MEDIUMS, ABSENT, YOUNG = (make_uscc(900_000 + i) for i in range(6))

QUARTERS = [
    "2024-07-01",
    "2024-10-01",
    "2025-01-01",
    "2025-04-01",
    "2025-07-01",
    "2025-10-01",
    "2026-01-01",
    "2026-04-01",
    "2026-07-01",
]
MONTHS = [
    f"{y}-{m:02d}-01" for y, m in [(2025, 10), (2025, 11), (2025, 12)] + [(2026, m) for m in range(1, 10)]
]


def _reg(
    uscc: str,
    name: str,
    *,
    founded: str,
    status: str = "active",
    industry: str = "I6513",
    capital: str = "500",
) -> dict[str, Any]:
    return {
        "uscc": uscc,
        "name": name,
        "legal_rep": "张三",
        "reg_capital": capital,
        "founded": founded,
        "status": status,
        "industry_code": industry,
        "enterprise_type": "llc_natural_person",
        "district": "海淀区",
        "address": "北京市海淀区中关村大街1号",
    }


ZONE: dict[str, tuple[list[str], list[dict[str, Any]]]] = {
    "mr_registration": (
        [
            "uscc",
            "name",
            "legal_rep",
            "reg_capital",
            "founded",
            "status",
            "industry_code",
            "enterprise_type",
            "district",
            "address",
        ],
        [
            _reg(CLEAN, "北京清朗软件有限公司", founded="2015-03-10", capital="123.4567"),
            _reg(TROUBLED, "北京困顿商贸有限公司", founded="2020-06-01", industry="F5211"),
            _reg(REVOKED, "北京吊销科技有限公司", founded="2010-01-01", status="revoked"),
            _reg(MEDIUMS, "北京中庸餐饮有限公司", founded="2018-05-05", industry="H6210"),
            _reg(YOUNG, "北京新苗科技有限公司", founded="2025-12-01"),
        ],
    ),
    "tax_credit_grade": (
        ["uscc", "year", "grade"],
        [
            {"uscc": CLEAN, "year": 2023, "grade": "A"},
            {"uscc": CLEAN, "year": 2024, "grade": "A"},
            {"uscc": CLEAN, "year": 2025, "grade": "B"},
            {"uscc": TROUBLED, "year": 2024, "grade": "C"},
            {"uscc": TROUBLED, "year": 2025, "grade": "D"},
            {"uscc": YOUNG, "year": 2025, "grade": "M"},
        ],
    ),
    "tax_payment": (
        ["uscc", "year", "tax_paid", "arrears"],
        [
            {"uscc": CLEAN, "year": 2023, "tax_paid": "1000000.00", "arrears": "0"},
            {"uscc": CLEAN, "year": 2024, "tax_paid": "1100000.00", "arrears": "0"},
            {"uscc": CLEAN, "year": 2025, "tax_paid": "1210000.00", "arrears": "0"},
            # arrears in an earlier year do not count: only the latest year's balance
            {"uscc": MEDIUMS, "year": 2024, "tax_paid": "50000", "arrears": "900.00"},
            {"uscc": MEDIUMS, "year": 2025, "tax_paid": "52000", "arrears": "0"},
            {"uscc": TROUBLED, "year": 2024, "tax_paid": "80000", "arrears": "0"},
            {"uscc": TROUBLED, "year": 2025, "tax_paid": "20000", "arrears": "25000.00"},
        ],
    ),
    "court_judgment": (
        ["uscc", "case_no", "filed_on", "role", "cause", "amount", "closed"],
        [
            {
                "uscc": CLEAN,
                "case_no": "J1",
                "filed_on": "2025-06-01",
                "role": "defendant",
                "cause": "买卖合同纠纷",
                "amount": "1000",
                "closed": "是",
            },
            {
                "uscc": CLEAN,
                "case_no": "J2",
                "filed_on": "2026-01-01",
                "role": "plaintiff",
                "cause": "买卖合同纠纷",
                "amount": "1000",
                "closed": "否",
            },
            *[
                {
                    "uscc": TROUBLED,
                    "case_no": f"T{i}",
                    "filed_on": d,
                    "role": "defendant",
                    "cause": "借款合同纠纷",
                    "amount": "5000",
                    "closed": "否",
                }
                for i, d in enumerate(["2024-11-01", "2025-08-08", "2026-10-30"])
            ],
            # open but older than 24 months: not counted
            {
                "uscc": TROUBLED,
                "case_no": "T9",
                "filed_on": "2024-10-30",
                "role": "defendant",
                "cause": "借款合同纠纷",
                "amount": "5000",
                "closed": "否",
            },
            *[
                {
                    "uscc": MEDIUMS,
                    "case_no": f"M{i}",
                    "filed_on": d,
                    "role": "defendant",
                    "cause": "劳动争议",
                    "amount": "",
                    "closed": "否",
                }
                for i, d in enumerate(["2024-10-31", "2025-05-05", "2026-06-06"])
            ],
            {
                "uscc": ABSENT,
                "case_no": "A1",
                "filed_on": "2026-01-01",
                "role": "defendant",
                "cause": "劳动争议",
                "amount": "",
                "closed": "否",
            },
        ],
    ),
    "court_enforcement": (
        ["uscc", "case_no", "filed_on", "court", "amount"],
        [
            {
                "uscc": TROUBLED,
                "case_no": "E1",
                "filed_on": "2025-01-10",
                "court": "北京市朝阳区人民法院",
                "amount": "600000.50",
            },
            {
                "uscc": TROUBLED,
                "case_no": "E2",
                "filed_on": "2026-02-01",
                "court": "北京市朝阳区人民法院",
                "amount": "500000",
            },
            {
                "uscc": TROUBLED,
                "case_no": "E3",
                "filed_on": "2024-12-01",
                "court": "北京市朝阳区人民法院",
                "amount": "300000",
            },
            {
                "uscc": TROUBLED,
                "case_no": "E0",
                "filed_on": "2023-05-01",
                "court": "北京市朝阳区人民法院",
                "amount": "9000000",
            },
        ],
    ),
    "court_dishonest": (
        ["uscc", "case_no", "listed_on", "obligation", "performance", "conduct"],
        [
            {
                "uscc": TROUBLED,
                "case_no": "E1",
                "listed_on": "2026-03-01",
                "obligation": "支付款项",
                "performance": "unperformed",
                "conduct": "违反财产报告制度",
            },
        ],
    ),
    "mr_penalty": (
        ["uscc", "decision_no", "decided_on", "authority", "amount", "reason"],
        [
            {
                "uscc": CLEAN,
                "decision_no": "P0",
                "decided_on": "2022-01-05",
                "authority": "海淀区市场监督管理局",
                "amount": "5000",
                "reason": "虚假宣传",
            },
            {
                "uscc": TROUBLED,
                "decision_no": "P1",
                "decided_on": "2024-01-05",
                "authority": "朝阳区市场监督管理局",
                "amount": "5000",
                "reason": "未按规定明码标价",
            },
            {
                "uscc": TROUBLED,
                "decision_no": "P2",
                "decided_on": "2025-01-05",
                "authority": "朝阳区市场监督管理局",
                "amount": "",
                "reason": "未按规定公示年度报告信息",
            },
            *[
                {
                    "uscc": MEDIUMS,
                    "decision_no": f"MP{i}",
                    "decided_on": d,
                    "authority": "西城区市场监督管理局",
                    "amount": "20000",
                    "reason": "销售超过保质期的食品",
                }
                for i, d in enumerate(["2023-10-31", "2024-03-03", "2026-09-09"])
            ],
        ],
    ),
    "mr_abnormal_operation": (
        ["uscc", "listed_on", "reason", "authority", "removed_on"],
        [
            {
                "uscc": TROUBLED,
                "listed_on": "2023-01-01",
                "reason": "未按期公示年度报告",
                "authority": "朝阳区市场监督管理局",
                "removed_on": "2023-06-01",
            },
            {
                "uscc": TROUBLED,
                "listed_on": "2026-05-01",
                "reason": "通过登记的住所无法联系",
                "authority": "朝阳区市场监督管理局",
                "removed_on": "",
            },
            {
                "uscc": MEDIUMS,
                "listed_on": "2026-02-02",
                "reason": "未按期公示年度报告",
                "authority": "西城区市场监督管理局",
                "removed_on": "",
            },
            # removed before as_of: not listed
            {
                "uscc": CLEAN,
                "listed_on": "2024-02-02",
                "reason": "未按期公示年度报告",
                "authority": "海淀区市场监督管理局",
                "removed_on": "2024-09-01",
            },
        ],
    ),
    "si_headcount": (
        ["uscc", "period", "insured"],
        [
            # nine quarters on record: the portrait uses the last eight (100 .. 120)
            *[
                {"uscc": CLEAN, "period": q, "insured": n}
                for q, n in zip(QUARTERS, [90, 100, 103, 106, 109, 112, 115, 118, 120], strict=True)
            ],
            *[
                {"uscc": MEDIUMS, "period": q, "insured": n}
                for q, n in zip(QUARTERS[-4:], [40, 40, 39, 41], strict=True)
            ],
            {"uscc": YOUNG, "period": "2026-04-01", "insured": 3},
            {"uscc": YOUNG, "period": "2026-07-01", "insured": 2},
        ],
    ),
    "hf_contribution": (
        ["uscc", "period", "depositors", "amount"],
        [
            {"uscc": CLEAN, "period": "2026-04-01", "depositors": 80, "amount": "300000"},
            {"uscc": CLEAN, "period": "2026-07-01", "depositors": 85, "amount": "310000"},
        ],
    ),
    "utility_usage": (
        ["uscc", "period", "electricity_kwh", "water_t", "gas_m3"],
        [
            *[
                {
                    "uscc": CLEAN,
                    "period": m,
                    "electricity_kwh": "1200.4" if i >= 9 else "1000",
                    "water_t": "10",
                    "gas_m3": "",
                }
                for i, m in enumerate(MONTHS)
            ],
            *[
                {"uscc": MEDIUMS, "period": m, "electricity_kwh": "500", "water_t": "10", "gas_m3": "30"}
                for m in MONTHS[-4:]
            ],
        ],
    ),
    "sci_certification": (
        ["uscc", "cert_type", "cert_no", "issued_on", "expires_on"],
        [
            {
                "uscc": CLEAN,
                "cert_type": "high_tech",
                "cert_no": "GR202411000001",
                "issued_on": "2024-11-01",
                "expires_on": "2027-10-31",
            },
            {
                "uscc": CLEAN,
                "cert_type": "specialized_sme",
                "cert_no": "ZJTX2022001",
                "issued_on": "2022-11-01",
                "expires_on": "2025-10-31",
            },
            {
                "uscc": CLEAN,
                "cert_type": "little_giant",
                "cert_no": "XJR2026001",
                "issued_on": "2026-12-01",
                "expires_on": "2029-11-30",
            },
        ],
    ),
    "ip_patent": (
        ["uscc", "invention_patents", "utility_patents", "design_patents", "trademarks", "as_of"],
        [
            {
                "uscc": CLEAN,
                "invention_patents": 12,
                "utility_patents": 30,
                "design_patents": 2,
                "trademarks": 8,
                "as_of": "2026-10-25",
            }
        ],
    ),
}


@pytest.fixture(scope="module")
def zone(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    root: Path = tmp_path_factory.mktemp("hand_zone")
    with fresh_database(database_url) as db:
        settings = zone_settings(db, root)
        apply_demo_specs(db, plain_csv=True)
        for dataset_id, (fields, rows) in ZONE.items():
            ingest_file(db, settings, dataset_id, write_rows(settings, dataset_id, fields, rows))
        apply_products(db)
        yield db


def answers(db: Database, product_id: str, *usccs: str) -> engine.ProductAnswers:
    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id=product_id))
        return engine.compute(s, spec=spec, usccs=list(usccs), as_of=AS_OF)


def one(db: Database, product_id: str, uscc: str) -> dict[str, Any]:
    a = answers(db, product_id, uscc).answers[uscc]
    assert a is not None
    return a


# ---------------------------------------------------------------- conversions


def test_money_conversions_are_exact() -> None:
    assert yuan_to_fen("600000.50") == 60_000_050
    assert yuan_to_fen("0.015") == 2  # half up, in Decimal: 1.5 fen
    assert wan_to_fen("123.4567") == 123_456_700
    assert wan_to_fen(None) is None
    assert months_before(date(2026, 10, 31), 24) == date(2024, 10, 31)
    assert months_before(date(2024, 3, 31), 1) == date(2024, 2, 29)
    assert whole_years(date(2015, 3, 10), AS_OF) == 11
    assert whole_years(date(2015, 11, 1), AS_OF) == 10
    assert tax_cagr_pct(100, 121, 2) == 10.0
    assert tax_cagr_pct(0, 121, 2) is None


def test_scale_follows_the_2011_thresholds_by_industry() -> None:
    assert enterprise_scale("I6513", 120)[0] == "medium"  # software: 100-299 medium
    assert enterprise_scale("C3399", 120)[0] == "small"  # industry: 20-299 small
    assert enterprise_scale("F5132", 19)[0] == "small"  # wholesale: 5-19 small
    assert enterprise_scale("F5132", 200)[0] == "large"
    assert enterprise_scale("F5211", 49)[0] == "small"  # retail: 10-49 small
    assert enterprise_scale("K7020", 99)[0] == "micro"  # property management: under 100 micro
    assert enterprise_scale("M7320", 9)[0] == "micro"
    scale, basis = enterprise_scale("M7320", None)
    assert scale is None and "无社保参保记录" in basis


# ---------------------------------------------------------------- credit-basic


def test_credit_basic_figures(zone: Database) -> None:
    a = one(zone, "credit-basic", CLEAN)
    assert a == {
        "name": "北京清朗软件有限公司",
        "legal_rep": "张三",
        "reg_capital_fen": 123_456_700,
        "founded": "2015-03-10",
        "age_years": 11,
        "status": "active",
        "enterprise_type": "llc_natural_person",
        "industry_code": "I6513",
        "district": "海淀区",
        "address": "北京市海淀区中关村大街1号",
        "tax_credit_grade": "B",
        "tax_credit_year": 2025,
    }
    revoked = one(zone, "credit-basic", REVOKED)
    assert revoked["status"] == "revoked" and revoked["tax_credit_grade"] is None


def test_an_enterprise_not_in_the_zone_answers_none_and_versions_are_reported(zone: Database) -> None:
    result = answers(zone, "credit-basic", ABSENT, CLEAN, ABSENT)
    assert list(result.answers) == [ABSENT, CLEAN]  # repeated codes answered once
    assert result.answers[ABSENT] is None
    assert result.data_versions == {"mr_registration": 1, "tax_credit_grade": 1}
    # the absent firm has a court case, but no registration: still not in the zone
    assert answers(zone, "risk-insight", ABSENT).answers[ABSENT] is None


def test_a_batch_reads_each_source_dataset_once(zone: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from datazone.dataset import service as dataset_service

    calls: list[tuple[str, int]] = []
    real = dataset_service.read_current_records

    def counting(session: Any, *, dataset_id: str, usccs: list[str], fields: list[str] | None = None) -> Any:
        calls.append((dataset_id, len(usccs)))
        return real(session, dataset_id=dataset_id, usccs=usccs, fields=fields)

    monkeypatch.setattr(dataset_service, "read_current_records", counting)
    codes = [CLEAN, TROUBLED, REVOKED, MEDIUMS, ABSENT, YOUNG] + [make_uscc(950_000 + i) for i in range(994)]
    result = answers(zone, "enterprise-portrait", *codes)
    assert sorted(calls) == sorted((ds, 1000) for ds in result.data_versions)
    assert len(calls) == 7
    assert sum(1 for a in result.answers.values() if a is not None) == 5


# ---------------------------------------------------------------- risk-insight


def test_risk_insight_for_a_troubled_enterprise(zone: Database) -> None:
    a = one(zone, "risk-insight", TROUBLED)
    assert a["risk_level"] == "severe"
    assert [(s["code"], s["severity"]) for s in a["signals"]] == [
        ("DISHONEST_LISTED", "severe"),
        ("ENFORCEMENT_24M", "high"),
        ("TAX_ARREARS", "high"),
        ("ABNORMAL_OPERATION_LISTED", "medium"),
        ("LITIGATION_DEFENDANT_24M", "medium"),
        ("PENALTY_36M", "low"),
    ]
    reasons = {s["code"]: s["reason"] for s in a["signals"]}
    assert reasons["DISHONEST_LISTED"] == "列入失信被执行人名单1件，其中全部未履行1件"
    assert reasons["ENFORCEMENT_24M"] == "近24个月被执行案件3件，执行标的合计100万至1000万元"
    assert reasons["TAX_ARREARS"] == "2025年末欠税，金额1万至10万元"
    assert reasons["ABNORMAL_OPERATION_LISTED"] == "自2026-05-01起列入经营异常名录，尚未移出"
    assert reasons["LITIGATION_DEFENDANT_24M"] == "近24个月作为被告的未结诉讼3件"
    assert reasons["PENALTY_36M"] == "近36个月行政处罚2次，罚款合计1万元以下"
    # no reason carries an exact amount
    assert not any(ch in "".join(reasons.values()) for ch in ("600000", "25000", "5000"))
    assert a["enforcement_cases_24m"] == 3
    assert a["enforcement_amount_24m_fen"] == 140_000_050  # 600,000.50 + 500,000 + 300,000 yuan
    assert a["open_defendant_cases_24m"] == 3 and a["defendant_cases_24m"] == 3  # 2024-10-30 is outside
    assert (
        a["dishonest_listed"] is True and a["dishonest_cases"] == 1 and a["dishonest_unperformed_cases"] == 1
    )
    # P1 (2024-01-05, 5,000 yuan) and P2 (a warning, no fine) are both within 36 months
    assert a["penalties_36m"] == 2 and a["penalty_amount_36m_fen"] == 500_000
    assert a["tax_arrears_fen"] == 2_500_000 and a["tax_arrears_year"] == 2025
    assert a["abnormal_listed"] is True and a["abnormal_listed_on"] == "2026-05-01"
    assert a["registration_status"] == "active"


def test_risk_insight_penalty_window_and_escalation(zone: Database) -> None:
    a = one(zone, "risk-insight", MEDIUMS)
    # three medium signals escalate the level to high
    assert [(s["code"], s["severity"]) for s in a["signals"]] == [
        ("ABNORMAL_OPERATION_LISTED", "medium"),
        ("LITIGATION_DEFENDANT_24M", "medium"),
        ("PENALTY_36M", "medium"),
    ]
    assert a["risk_level"] == "high"
    # 2023-10-31 is exactly 36 months back: in the window; 2024-10-31 likewise for 24 months
    assert a["penalties_36m"] == 3 and a["penalty_amount_36m_fen"] == 6_000_000
    assert a["open_defendant_cases_24m"] == 3
    # arrears of 2024 were cleared by the end of 2025: no arrears signal
    assert a["tax_arrears_fen"] == 0


def test_risk_insight_for_clean_and_revoked(zone: Database) -> None:
    clean = one(zone, "risk-insight", CLEAN)
    assert clean["risk_level"] == "low" and clean["signals"] == []
    assert clean["defendant_cases_24m"] == 1 and clean["open_defendant_cases_24m"] == 0
    assert clean["penalties_36m"] == 0  # 2022 penalty is outside 36 months
    assert clean["abnormal_listed"] is False  # listed and removed in 2024
    revoked = one(zone, "risk-insight", REVOKED)
    assert revoked["risk_level"] == "severe"
    assert revoked["signals"] == [
        {"code": "REGISTRATION_REVOKED", "severity": "severe", "reason": "登记状态为吊销"}
    ]
    assert revoked["tax_arrears_fen"] is None


# ---------------------------------------------------------------- enterprise-portrait


def test_enterprise_portrait_figures(zone: Database) -> None:
    a = one(zone, "enterprise-portrait", CLEAN)
    assert a["scale"] == "medium" and "软件和信息技术服务业" in a["scale_basis"]
    assert a["headcount_periods"] == QUARTERS[1:]
    assert a["headcount_series"] == [100, 103, 106, 109, 112, 115, 118, 120]
    assert (a["headcount_first"], a["headcount_last"], a["headcount_change_pct"]) == (100, 120, 20.0)
    assert a["headcount_trend"] == "growing"
    assert a["tax_years"] == [2023, 2024, 2025]
    assert a["tax_paid_fen"] == [100_000_000, 110_000_000, 121_000_000]
    assert a["tax_paid_cagr_pct"] == 10.0 and a["tax_trend"] == "growing"
    assert a["electricity_months"] == 12
    # 9 months of 1,000 and 3 of 1,200.4 kWh
    assert a["electricity_12m_kwh"] == 12_601
    assert (a["electricity_last3_kwh"], a["electricity_prev3_kwh"]) == (3601, 3000)
    assert a["electricity_change_pct"] == 20.0 and a["electricity_trend"] == "growing"
    assert (a["hf_depositors_latest"], a["hf_period_latest"]) == (85, "2026-07-01")
    # specialized SME expired on 2025-10-31; the little giant is issued after as_of
    assert a["certifications"] == [
        {"type": "high_tech", "issued_on": "2024-11-01", "expires_on": "2027-10-31"}
    ]
    assert (a["high_tech"], a["specialized_sme"], a["little_giant"]) == (True, False, False)
    assert (a["invention_patents"], a["utility_patents"], a["design_patents"], a["trademarks"]) == (
        12,
        30,
        2,
        8,
    )
    assert a["ip_as_of"] == "2026-10-25" and a["years_since_founding"] == 11


def test_portrait_with_little_data(zone: Database) -> None:
    a = one(zone, "enterprise-portrait", MEDIUMS)
    assert a["scale"] == "small"  # catering: 10-99 small, 41 insured
    assert a["headcount_change_pct"] == 2.5 and a["headcount_trend"] == "stable"
    assert a["tax_paid_cagr_pct"] == 4.0  # 50,000 -> 52,000 in one year
    assert a["electricity_months"] == 4 and a["electricity_prev3_kwh"] is None
    assert a["electricity_change_pct"] is None and a["electricity_trend"] is None
    assert a["hf_depositors_latest"] is None and a["invention_patents"] is None
    assert a["certifications"] == [] and a["high_tech"] is False
    young = one(zone, "enterprise-portrait", YOUNG)
    assert young["scale"] == "micro" and young["headcount_trend"] == "shrinking"  # 3 -> 2
    assert young["tax_years"] == [] and young["tax_paid_cagr_pct"] is None


# ---------------------------------------------------------------- admission-analysis


def fired(a: dict[str, Any]) -> list[str]:
    return [r["id"] for r in a["rules_fired"]]


def test_admission_declines_with_every_rule_that_fired(zone: Database) -> None:
    a = one(zone, "admission-analysis", TROUBLED)
    assert a["decision"] == "decline"
    assert fired(a) == ["D02", "D03", "D04", "D05", "R03", "R04", "R05", "R07"]
    assert a["rules_not_evaluated"] == ["R08"]  # no social insurance: no latest headcount
    assert a["rules_evaluated"] == 12
    d04 = next(r for r in a["rules_fired"] if r["id"] == "D04")
    assert d04 == {
        "id": "D04",
        "description": "纳税信用等级为D级",
        "outcome": "decline",
        "fact": "tax_grade",
        "operator": "eq",
        "value": "D",
        "observed": "D",
    }
    assert next(r for r in a["rules_fired"] if r["id"] == "D05")["observed"] == 3


def test_admission_pass_refer_and_revoked(zone: Database) -> None:
    clean = one(zone, "admission-analysis", CLEAN)
    assert clean == {"decision": "pass", "rules_fired": [], "rules_not_evaluated": [], "rules_evaluated": 13}
    young = one(zone, "admission-analysis", YOUNG)
    assert young["decision"] == "refer" and fired(young) == ["R01", "R08"]
    r08 = young["rules_fired"][1]
    assert r08["observed"] == "10人以下"  # a headcount is shown as a band, never exactly
    assert young["rules_fired"][0]["observed"] == 0  # founded 2025-12-01
    revoked = one(zone, "admission-analysis", REVOKED)
    assert revoked["decision"] == "decline" and fired(revoked) == ["D01", "R07"]
    assert revoked["rules_fired"][0]["observed"] == "revoked"
    assert set(revoked["rules_not_evaluated"]) == {"D03", "D04", "R02", "R08"}


def test_risk_and_admission_agree_on_shared_facts(zone: Database) -> None:
    codes = [CLEAN, TROUBLED, REVOKED, MEDIUMS, YOUNG]
    risk = answers(zone, "risk-insight", *codes).answers
    adm = answers(zone, "admission-analysis", *codes).answers
    for code in codes:
        r, a = risk[code], adm[code]
        assert r is not None and a is not None
        assert r["dishonest_listed"] == ("D02" in fired(a))
        assert (r["enforcement_cases_24m"] >= 1) == ("R04" in fired(a))
        assert r["abnormal_listed"] == ("R03" in fired(a))


def test_answers_are_json_ready(zone: Database) -> None:
    import json

    for product in ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"):
        result = answers(zone, product, CLEAN, TROUBLED, YOUNG)
        json.dumps(result.answers)  # no Decimal, no date objects
        with zone.unit_of_work() as s:
            spec = product_service.spec_of(product_service.get_product(s, product_id=product))
        for a in result.answers.values():
            assert a is not None and set(a) == {o.name for o in spec.outputs}
