"""The four products on the synthetic zone: figures recomputed independently with pandas
from the generated department files agree with the engine's answers, and the risk
picture follows the zone's latent health the way a credit analyst would expect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from datazone.db import Database
from datazone.demo.generate import enterprise_codes, generate_zone
from datazone.product import engine
from datazone.product import service as product_service
from tests.product.zones import apply_demo_specs, apply_products, fresh_database, ingest_file, zone_settings

ENTITIES = 4000
AS_OF = date(2026, 10, 31)
WINDOW_24M = pd.Timestamp("2024-10-31")


@dataclass
class Zone:
    db: Database
    files: dict[str, Path]
    codes: list[str]
    answers: dict[str, dict[str, dict[str, Any] | None]]  # product -> uscc -> answer


def compute_all(db: Database, product_id: str, codes: list[str]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    with db.unit_of_work() as s:
        spec = product_service.spec_of(product_service.get_product(s, product_id=product_id))
        for i in range(0, len(codes), 1000):  # the product API's largest batch
            out.update(engine.compute(s, spec=spec, usccs=codes[i : i + 1000], as_of=AS_OF).answers)
    return out


@pytest.fixture(scope="module")
def zone(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    root = tmp_path_factory.mktemp("synthetic_zone")
    with fresh_database(database_url) as db:
        settings = zone_settings(db, root)
        files = generate_zone(settings.drop_path, entities=ENTITIES, as_of=AS_OF)
        apply_demo_specs(db)
        for f in files:
            ingest_file(db, settings, f.dataset_id, f.path)
        apply_products(db)
        codes = [str(c) for c in enterprise_codes(ENTITIES, 20240101, as_of=AS_OF)]
        answers = {
            p: compute_all(db, p, codes)
            for p in ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis")
        }
        yield Zone(db=db, files={f.dataset_id: f.path for f in files}, codes=codes, answers=answers)


def read_csv(path: Path, encoding: str) -> pd.DataFrame:
    return pd.read_csv(path, encoding=encoding, dtype=str, keep_default_na=False)


def fen(yuan: str) -> int:
    return int(Decimal(yuan) * 100)


def present(zone: Zone, product: str) -> dict[str, dict[str, Any]]:
    return {u: a for u, a in zone.answers[product].items() if a is not None}


def test_every_registered_enterprise_is_answered(zone: Zone) -> None:
    for product, answers in zone.answers.items():
        assert len(answers) == ENTITIES, product
        assert all(a is not None for a in answers.values()), product
        json.dumps(answers)  # JSON-ready throughout


def test_registration_figures_match_the_file(zone: Zone) -> None:
    reg = read_csv(zone.files["mr_registration"], "gb18030").set_index("统一社会信用代码")
    basic = present(zone, "credit-basic")
    status = {
        "存续": "active",
        "在业": "active",
        "吊销": "revoked",
        "吊销，未注销": "revoked",
        "注销": "deregistered",
    }
    for code, a in basic.items():
        row = reg.loc[code]
        assert a["name"] == row["企业名称"]
        assert a["status"] == status[row["登记状态"]]
        capital = row["注册资本(万元)"].replace(",", "")  # the department writes thousands separators
        assert a["reg_capital_fen"] == (int(Decimal(capital) * 1_000_000) if capital else None)
    assert {a["status"] for a in basic.values()} == {"active", "revoked", "deregistered"}


def test_court_figures_match_the_files(zone: Zone) -> None:
    enf = read_csv(zone.files["court_enforcement"], "utf-8")
    enf["filed"] = pd.to_datetime(enf["立案日期"])
    recent = enf[(enf["filed"] >= WINDOW_24M) & (enf["filed"] <= pd.Timestamp(AS_OF))]
    counts = recent.groupby("被执行人统一社会信用代码").size().to_dict()
    amounts = (
        recent.groupby("被执行人统一社会信用代码")["执行标的(元)"]
        .agg(lambda s: sum(fen(v) for v in s))
        .to_dict()
    )
    dishonest = set(read_csv(zone.files["court_dishonest"], "utf-8")["失信被执行人统一社会信用代码"])
    risk = present(zone, "risk-insight")
    assert sum(counts.values()) > 10 and len(dishonest) > 5  # the zone has court records worth checking
    for code, a in risk.items():
        assert a["enforcement_cases_24m"] == counts.get(code, 0), code
        assert a["enforcement_amount_24m_fen"] == amounts.get(code, 0), code
        assert a["dishonest_listed"] == (code in dishonest), code


def test_tax_arrears_and_abnormal_listing_match_the_files(zone: Zone) -> None:
    lines = zone.files["tax_payment"].read_text(encoding="utf-8").splitlines()
    tax = pd.DataFrame([json.loads(line, parse_float=Decimal) for line in lines if line])
    latest = tax.sort_values("year").groupby("uscc").tail(1).set_index("uscc")
    abnormal = read_csv(zone.files["mr_abnormal_operation"], "utf-8")
    listed = set(abnormal[abnormal["移出日期"] == ""]["统一社会信用代码"])
    risk = present(zone, "risk-insight")
    with_arrears = 0
    for code, a in risk.items():
        if code in latest.index:
            expected = int(latest.loc[code, "arrears"] * 100)
            assert a["tax_arrears_fen"] == expected and a["tax_arrears_year"] == int(latest.loc[code, "year"])
            with_arrears += expected > 0
        else:
            assert a["tax_arrears_fen"] is None
        assert a["abnormal_listed"] == (code in listed), code
    assert with_arrears > 5


def test_headcount_and_certifications_match_the_files(zone: Zone) -> None:
    si = read_csv(zone.files["si_headcount"], "utf-8-sig")
    latest = si.sort_values("所属期").groupby("统一社会信用代码").tail(1).set_index("统一社会信用代码")
    certs = pd.read_excel(
        zone.files["sci_certification"], sheet_name="认定企业名单", dtype={"统一社会信用代码": str}
    )
    at = pd.Timestamp(AS_OF)
    valid = certs[(pd.to_datetime(certs["发证日期"]) <= at) & (pd.to_datetime(certs["有效期至"]) >= at)]
    high_tech = set(valid[valid["认定类型"] == "高新技术企业"]["统一社会信用代码"])
    portrait = present(zone, "enterprise-portrait")
    for code, a in portrait.items():
        expected = int(latest.loc[code, "参保人数"]) if code in latest.index else None
        assert a["headcount_last"] == expected, code
        assert a["high_tech"] == (code in high_tech), code
    assert sum(a["high_tech"] for a in portrait.values()) == len(high_tech & set(portrait)) > 10


def test_risk_levels_follow_the_signals_and_the_zone_s_health(zone: Zone) -> None:
    risk = present(zone, "risk-insight")
    levels = pd.Series({u: a["risk_level"] for u, a in risk.items()})
    # every dishonest-listed enterprise is high or severe; revoked and deregistered ones severe
    for a in risk.values():
        if a["dishonest_listed"]:
            assert a["risk_level"] in ("high", "severe")
        if a["registration_status"] in ("revoked", "deregistered"):
            assert a["risk_level"] == "severe"
        if a["signals"]:
            worst = a["signals"][0]["severity"]
            order = ["low", "medium", "high", "severe"]
            assert order.index(a["risk_level"]) >= order.index(worst)
            assert [order.index(s["severity"]) for s in a["signals"]] == sorted(
                (order.index(s["severity"]) for s in a["signals"]), reverse=True
            )
        else:
            assert a["risk_level"] == "low"
    # most active firms are low risk; the tax grade (drawn from the same health) tracks the level
    basic = present(zone, "credit-basic")
    grade = pd.Series({u: basic[u]["tax_credit_grade"] for u in risk})
    share_low = (levels[grade == "A"] == "low").mean()
    assert share_low > 0.9
    assert (levels[grade == "D"] == "low").mean() < share_low
    assert (levels == "low").mean() > 0.6


def test_admission_decisions_follow_the_rules(zone: Zone) -> None:
    adm = present(zone, "admission-analysis")
    risk = present(zone, "risk-insight")
    basic = present(zone, "credit-basic")
    decisions = pd.Series({u: a["decision"] for u, a in adm.items()})
    status = pd.Series({u: basic[u]["status"] for u in adm})
    # a revoked or deregistered enterprise is always declined
    assert (decisions[status != "active"] == "decline").all()
    assert (status != "active").sum() > 100
    for code, a in adm.items():
        fired = {r["id"] for r in a["rules_fired"]}
        outcomes = {r["outcome"] for r in a["rules_fired"]}
        expected = "decline" if "decline" in outcomes else "refer" if "refer" in outcomes else "pass"
        assert a["decision"] == expected
        # the same facts as risk-insight
        assert ("D02" in fired) == risk[code]["dishonest_listed"]
        assert ("D05" in fired) == (risk[code]["enforcement_cases_24m"] >= 3)
        assert ("D03" in fired) == bool(risk[code]["tax_arrears_fen"])
        if basic[code]["tax_credit_grade"] == "D":
            assert a["decision"] == "decline"
    assert set(decisions) == {"pass", "refer", "decline"}
    # healthy firms pass more often than the zone at large
    grade = pd.Series({u: basic[u]["tax_credit_grade"] for u in adm})
    assert (decisions[grade == "A"] == "pass").mean() > (decisions == "pass").mean()
