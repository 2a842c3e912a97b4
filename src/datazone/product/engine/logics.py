"""The logics that compute products: one function per product kind, named in the product file.

Each logic states the answer fields it produces, the dataset fields it reads (a product
file must declare them in `sources`), the shape of its `params`, and computes one
enterprise's answer from its `FactSheet`. Answers are JSON-ready (ISO dates, integer
fen) and unmasked: the gateway's one masking engine applies each output's grade and
masking afterwards. Free text never carries a graded figure: reasons cite bands and counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datazone.product.engine.facts import (
    ABNORMAL,
    CERTIFICATION,
    DISHONEST,
    ENFORCEMENT,
    FACTS,
    HEADCOUNT,
    HOUSING_FUND,
    JUDGMENT,
    PATENT,
    PENALTY,
    REGISTRATION,
    TAX_GRADE,
    TAX_PAYMENT,
    UTILITY,
    FactSheet,
    display_value,
    needs_of,
)
from datazone.product.engine.records import EnterpriseRecords, amount_band_label, wan_to_fen

Needs = dict[str, set[str]]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Logic:
    name: str
    description: str
    outputs: tuple[str, ...]
    params_model: type[BaseModel]
    needs: Callable[[BaseModel], Needs]
    compute: Callable[[FactSheet, Any], dict[str, Any]]


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _fixed(needs: dict[str, tuple[str, ...]]) -> Callable[[BaseModel], Needs]:
    return lambda _params: {ds: set(fields) for ds, fields in needs.items()}


# ==================================================================== credit-basic

CREDIT_BASIC_NEEDS = {
    REGISTRATION: (
        "name",
        "legal_rep",
        "reg_capital",
        "founded",
        "status",
        "enterprise_type",
        "industry_code",
        "district",
        "address",
    ),
    TAX_GRADE: ("year", "grade"),
}


def credit_basic(sheet: FactSheet, _params: NoParams) -> dict[str, Any]:
    reg = sheet.registration or {}
    return {
        "name": reg.get("name"),
        "legal_rep": reg.get("legal_rep"),
        "reg_capital_fen": wan_to_fen(reg.get("reg_capital")),
        "founded": _iso(reg.get("founded")),
        "age_years": sheet.years_since_founding,
        "status": sheet.status,
        "enterprise_type": reg.get("enterprise_type"),
        "industry_code": reg.get("industry_code"),
        "district": reg.get("district"),
        "address": reg.get("address"),
        "tax_credit_grade": sheet.tax_grade,
        "tax_credit_year": sheet.tax_grade_year,
    }


# ==================================================================== risk-insight

Severity = Literal["low", "medium", "high", "severe"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "severe")
RANK = {s: i for i, s in enumerate(SEVERITIES)}


class Steps(BaseModel):
    """The least figure that raises each severity; a figure below every step raises nothing."""

    model_config = ConfigDict(extra="forbid")

    low: Annotated[int, Field(ge=1)] | None = None
    medium: Annotated[int, Field(ge=1)] | None = None
    high: Annotated[int, Field(ge=1)] | None = None
    severe: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _ascending(self) -> Steps:
        steps = [(s, getattr(self, s)) for s in SEVERITIES if getattr(self, s) is not None]
        if not steps:
            raise ValueError("state at least one of low, medium, high, severe")
        for (s1, v1), (s2, v2) in pairwise(steps):
            if v2 <= v1:
                raise ValueError(
                    f"{s2} ({v2}) must be above {s1} ({v1}): a worse severity needs a larger figure"
                )
        return self

    def severity(self, figure: int | None) -> Severity | None:
        found: Severity | None = None
        for s in SEVERITIES:
            step = getattr(self, s)
            if step is not None and figure is not None and figure >= step:
                found = s
        return found


class RiskThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    open_defendant_cases_24m: Steps
    enforcement_cases_24m: Steps
    enforcement_amount_24m_fen: Steps
    penalties_36m: Steps
    penalty_amount_36m_fen: Steps
    tax_arrears_fen: Steps


class RiskSeverities(BaseModel):
    """Severity of the listing signals, which have no figure to step on."""

    model_config = ConfigDict(extra="forbid")

    dishonest_unperformed: Severity
    dishonest_partially_performed: Severity
    abnormal_listed: Severity
    revoked: Severity
    deregistered: Severity


class RiskEscalation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # this many signals at high or worse make the level severe
    high_signals_to_severe: Annotated[int, Field(ge=2)]
    # this many signals at medium or worse make the level at least high
    medium_signals_to_high: Annotated[int, Field(ge=2)]


class RiskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    thresholds: RiskThresholds
    severities: RiskSeverities
    escalation: RiskEscalation


RISK_NEEDS = {
    REGISTRATION: ("status",),
    JUDGMENT: ("filed_on", "role", "closed"),
    ENFORCEMENT: ("filed_on", "amount"),
    DISHONEST: ("listed_on", "performance"),
    PENALTY: ("decided_on", "amount"),
    TAX_PAYMENT: ("year", "arrears"),
    ABNORMAL: ("listed_on", "removed_on"),
}

# the order signals are listed in when their severities tie: the most telling first
SIGNAL_ORDER = (
    "REGISTRATION_REVOKED",
    "REGISTRATION_DEREGISTERED",
    "DISHONEST_LISTED",
    "ENFORCEMENT_24M",
    "TAX_ARREARS",
    "ABNORMAL_OPERATION_LISTED",
    "LITIGATION_DEFENDANT_24M",
    "PENALTY_36M",
)


def _worse(a: Severity | None, b: Severity | None) -> Severity | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if RANK[a] >= RANK[b] else b


def risk_signals(sheet: FactSheet, params: RiskParams) -> list[dict[str, Any]]:
    """Every signal the enterprise raises: code, severity, reason; worst first."""
    t, sev = params.thresholds, params.severities
    signals: list[tuple[str, Severity, str]] = []
    if sheet.status == "revoked":
        signals.append(("REGISTRATION_REVOKED", sev.revoked, "登记状态为吊销"))
    elif sheet.status == "deregistered":
        signals.append(("REGISTRATION_DEREGISTERED", sev.deregistered, "登记状态为注销"))
    if sheet.dishonest_listed:
        n, unperformed = len(sheet.dishonest_rows), sheet.dishonest_unperformed_cases
        s = sev.dishonest_unperformed if unperformed else sev.dishonest_partially_performed
        signals.append(("DISHONEST_LISTED", s, f"列入失信被执行人名单{n}件，其中全部未履行{unperformed}件"))
    s_enf = _worse(
        t.enforcement_cases_24m.severity(sheet.enforcement_cases_24m),
        t.enforcement_amount_24m_fen.severity(sheet.enforcement_amount_24m_fen),
    )
    if s_enf is not None:
        signals.append(
            (
                "ENFORCEMENT_24M",
                s_enf,
                f"近24个月被执行案件{sheet.enforcement_cases_24m}件，"
                f"执行标的合计{amount_band_label(sheet.enforcement_amount_24m_fen)}",
            )
        )
    s_tax = t.tax_arrears_fen.severity(sheet.tax_arrears_fen)
    if s_tax is not None and sheet.tax_arrears_fen:
        signals.append(
            (
                "TAX_ARREARS",
                s_tax,
                f"{sheet.tax_arrears_year}年末欠税，金额{amount_band_label(sheet.tax_arrears_fen)}",
            )
        )
    if sheet.abnormal_current is not None:
        since = sheet.abnormal_current["listed_on"].isoformat()
        signals.append(
            ("ABNORMAL_OPERATION_LISTED", sev.abnormal_listed, f"自{since}起列入经营异常名录，尚未移出")
        )
    s_lit = t.open_defendant_cases_24m.severity(sheet.open_defendant_cases_24m)
    if s_lit is not None:
        signals.append(
            (
                "LITIGATION_DEFENDANT_24M",
                s_lit,
                f"近24个月作为被告的未结诉讼{sheet.open_defendant_cases_24m}件",
            )
        )
    s_pen = _worse(
        t.penalties_36m.severity(sheet.penalties_36m),
        t.penalty_amount_36m_fen.severity(sheet.penalty_amount_36m_fen),
    )
    if s_pen is not None:
        fine = (
            f"，罚款合计{amount_band_label(sheet.penalty_amount_36m_fen)}"
            if sheet.penalty_amount_36m_fen
            else ""
        )
        signals.append(("PENALTY_36M", s_pen, f"近36个月行政处罚{sheet.penalties_36m}次{fine}"))
    signals.sort(key=lambda x: (-RANK[x[1]], SIGNAL_ORDER.index(x[0])))
    return [{"code": c, "severity": s, "reason": r} for c, s, r in signals]


def risk_level(signals: list[dict[str, Any]], escalation: RiskEscalation) -> Severity:
    """The worst signal's severity, escalated when several serious signals coincide."""
    if not signals:
        return "low"
    level: Severity = max((s["severity"] for s in signals), key=lambda s: RANK[s])
    high_or_worse = sum(1 for s in signals if RANK[s["severity"]] >= RANK["high"])
    medium_or_worse = sum(1 for s in signals if RANK[s["severity"]] >= RANK["medium"])
    if high_or_worse >= escalation.high_signals_to_severe:
        return "severe"
    if medium_or_worse >= escalation.medium_signals_to_high and RANK[level] < RANK["high"]:
        return "high"
    return level


def risk_insight(sheet: FactSheet, params: RiskParams) -> dict[str, Any]:
    signals = risk_signals(sheet, params)
    abnormal = sheet.abnormal_current
    return {
        "risk_level": risk_level(signals, params.escalation),
        "signals": signals,
        "registration_status": sheet.status,
        "defendant_cases_24m": sheet.defendant_cases_24m,
        "open_defendant_cases_24m": sheet.open_defendant_cases_24m,
        "enforcement_cases_24m": sheet.enforcement_cases_24m,
        "enforcement_amount_24m_fen": sheet.enforcement_amount_24m_fen,
        "dishonest_listed": sheet.dishonest_listed,
        "dishonest_cases": len(sheet.dishonest_rows),
        "dishonest_unperformed_cases": sheet.dishonest_unperformed_cases,
        "penalties_36m": sheet.penalties_36m,
        "penalty_amount_36m_fen": sheet.penalty_amount_36m_fen,
        "tax_arrears_fen": sheet.tax_arrears_fen,
        "tax_arrears_year": sheet.tax_arrears_year,
        "abnormal_listed": abnormal is not None,
        "abnormal_listed_on": _iso(abnormal["listed_on"]) if abnormal else None,
    }


# ==================================================================== enterprise-portrait

# Enterprise scale by headcount per the 2011 SME classification (工信部联企业〔2011〕300号),
# simplified to headcount alone: the regulation also uses revenue (and total assets for
# construction and real estate), which the zone does not hold. Rows: (industry code
# prefixes, group, small from, medium from, large from); the first match wins.
SCALE_STEPS: tuple[tuple[tuple[str, ...], str, int, int, int], ...] = (
    (("F51",), "批发业", 5, 20, 200),
    (("F52",), "零售业", 10, 50, 300),
    (("G59",), "仓储业", 20, 100, 200),
    (("G",), "交通运输业、邮政业", 20, 300, 1000),
    (("B", "C", "D"), "工业", 20, 300, 1000),
    (("H61", "H62"), "住宿业、餐饮业", 10, 100, 300),
    (("I63", "I64"), "信息传输业", 10, 100, 2000),
    (("I65",), "软件和信息技术服务业", 10, 100, 300),
    (("K702",), "物业管理", 100, 300, 1000),
    (("L",), "租赁和商务服务业", 10, 100, 300),
    ((), "其他未列明行业", 10, 100, 300),
)


def enterprise_scale(industry_code: str | None, headcount: int | None) -> tuple[str | None, str]:
    """(micro|small|medium|large or None, the basis in words)."""
    code = industry_code or ""
    for prefixes, group, small, medium, large in SCALE_STEPS:
        if not prefixes or code.startswith(prefixes):
            basis = (
                f"{group}：从业人员{small}人以下为微型、{medium}人以下为小型、{large}人以下为中型、"
                f"{large}人及以上为大型（工信部联企业〔2011〕300号，仅按社保参保人数简化）"
            )
            if headcount is None:
                return None, "无社保参保记录，无法按从业人员划型；" + basis
            if headcount < small:
                return "micro", basis
            if headcount < medium:
                return "small", basis
            if headcount < large:
                return "medium", basis
            return "large", basis
    raise AssertionError("the last row matches every code")


class PortraitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # a change within +/- this many percent is 'stable'
    trend_band_pct: Annotated[float, Field(ge=0, le=100)] = 5.0


PORTRAIT_NEEDS = {
    REGISTRATION: ("name", "status", "founded", "industry_code"),
    HEADCOUNT: ("period", "insured"),
    TAX_PAYMENT: ("year", "tax_paid"),
    UTILITY: ("period", "electricity_kwh"),
    HOUSING_FUND: ("period", "depositors"),
    CERTIFICATION: ("cert_type", "issued_on", "expires_on"),
    PATENT: ("invention_patents", "utility_patents", "design_patents", "trademarks", "as_of"),
}


def _direction(change: float | None, band: float) -> str | None:
    if change is None:
        return None
    if change > band:
        return "growing"
    if change < -band:
        return "shrinking"
    return "stable"


def _kwh(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tax_cagr_pct(first: int, last: int, years: int) -> float | None:
    """Compound annual growth of tax paid, in percent with one decimal; None without a base."""
    if years < 1 or first <= 0 or last < 0:
        return None
    growth = (Decimal(last) / Decimal(first)) ** (Decimal(1) / Decimal(years)) - 1
    return float((growth * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def enterprise_portrait(sheet: FactSheet, params: PortraitParams) -> dict[str, Any]:
    reg = sheet.registration or {}
    scale, basis = enterprise_scale(reg.get("industry_code"), sheet.insured_latest)

    series = sheet.headcount_series
    hc_change = sheet.headcount_change_pct

    tax_years = [year for year, _ in sheet.tax_paid_years]
    tax_fen = [fen for _, fen in sheet.tax_paid_years]
    cagr = tax_cagr_pct(tax_fen[0], tax_fen[-1], tax_years[-1] - tax_years[0]) if tax_fen else None

    kwh = sheet.electricity_kwh_12m
    last3 = sum(kwh[-3:], Decimal(0)) if len(kwh) >= 3 else None
    prev3 = sum(kwh[-6:-3], Decimal(0)) if len(kwh) >= 6 else None

    hf = sheet.housing_fund_latest
    certs = sheet.certifications_live
    held = {r["cert_type"] for r in certs}
    ip = sheet.ip_latest

    return {
        "name": reg.get("name"),
        "status": sheet.status,
        "industry_code": reg.get("industry_code"),
        "years_since_founding": sheet.years_since_founding,
        "scale": scale,
        "scale_basis": basis,
        "headcount_periods": [p.isoformat() for p, _ in series],
        "headcount_series": [n for _, n in series],
        "headcount_first": series[0][1] if series else None,
        "headcount_last": series[-1][1] if series else None,
        "headcount_change_pct": hc_change,
        "headcount_trend": _direction(hc_change, params.trend_band_pct),
        "tax_years": tax_years,
        "tax_paid_fen": tax_fen,
        "tax_paid_cagr_pct": cagr,
        "tax_trend": _direction(cagr, params.trend_band_pct),
        "electricity_months": len(kwh),
        "electricity_12m_kwh": _kwh(sum(kwh, Decimal(0))) if kwh else None,
        "electricity_last3_kwh": _kwh(last3) if last3 is not None else None,
        "electricity_prev3_kwh": _kwh(prev3) if prev3 is not None else None,
        "electricity_change_pct": sheet.electricity_change_pct,
        "electricity_trend": _direction(sheet.electricity_change_pct, params.trend_band_pct),
        "hf_depositors_latest": int(hf["depositors"]) if hf else None,
        "hf_period_latest": _iso(hf["period"]) if hf else None,
        "certifications": [
            {"type": r["cert_type"], "issued_on": _iso(r["issued_on"]), "expires_on": _iso(r["expires_on"])}
            for r in certs
        ],
        "high_tech": "high_tech" in held,
        "specialized_sme": "specialized_sme" in held,
        "little_giant": "little_giant" in held,
        "invention_patents": int(ip["invention_patents"]) if ip else None,
        "utility_patents": int(ip["utility_patents"]) if ip else None,
        "design_patents": int(ip["design_patents"]) if ip else None,
        "trademarks": int(ip["trademarks"]) if ip else None,
        "ip_as_of": _iso(ip["as_of"]) if ip else None,
    }


# ==================================================================== admission-analysis

Operator = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "is_true", "is_false"]
Scalar = bool | int | float | str


class AdmissionRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")]
    description: Annotated[str, Field(min_length=1)]
    fact: str
    operator: Operator
    value: Scalar | list[Scalar] | None = None
    outcome: Literal["refer", "decline"]

    @field_validator("fact")
    @classmethod
    def _known_fact(cls, fact: str) -> str:
        if fact not in FACTS:
            raise ValueError(f"unknown fact {fact!r}; facts: {', '.join(FACTS)}")
        return fact

    @model_validator(mode="after")
    def _value_fits(self) -> AdmissionRule:
        fact = FACTS[self.fact]
        op, value = self.operator, self.value
        if op in ("is_true", "is_false"):
            if fact.kind != "bool":
                raise ValueError(f"{op} applies to yes/no facts; {self.fact} is {fact.kind}")
            if value is not None:
                raise ValueError(f"{op} takes no value")
            return self
        if value is None:
            raise ValueError(f"operator {op} needs a value")
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{op} needs a non-empty list of values")
            items = value
        elif isinstance(value, list):
            raise ValueError(f"{op} compares with one value, not a list")
        else:
            items = [value]
        if op in ("lt", "le", "gt", "ge") and fact.kind not in ("int", "number"):
            raise ValueError(f"{op} compares numbers; {self.fact} is {fact.kind}")
        for item in items:
            problem = _type_problem(fact.name, fact.kind, fact.values, item)
            if problem:
                raise ValueError(problem)
        return self

    def fires(self, observed: Any) -> bool:
        v = self.value
        match self.operator:
            case "is_true":
                return observed is True
            case "is_false":
                return observed is False
            case "eq":
                return bool(observed == v)
            case "ne":
                return bool(observed != v)
            case "lt":
                return bool(observed < v)
            case "le":
                return bool(observed <= v)
            case "gt":
                return bool(observed > v)
            case "ge":
                return bool(observed >= v)
            case "in":
                return observed in v  # type: ignore[operator]
            case "not_in":
                return observed not in v  # type: ignore[operator]
        raise AssertionError(self.operator)


def _type_problem(name: str, kind: str, values: tuple[str, ...] | None, item: Any) -> str | None:
    if kind == "bool" and not isinstance(item, bool):
        return f"{name} is yes/no: compare with true or false, not {item!r}"
    if kind in ("int", "number") and (isinstance(item, bool) or not isinstance(item, int | float)):
        return f"{name} is a number: compare with a number, not {item!r}"
    if kind == "str":
        if not isinstance(item, str):
            return f"{name} is text: compare with text, not {item!r}"
        if values is not None and item not in values:
            return f"{item!r} is not a value of {name}; values: {', '.join(values)}"
    return None


class AdmissionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: Annotated[list[AdmissionRule], Field(min_length=1)]

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[AdmissionRule]) -> list[AdmissionRule]:
        ids = [r.id for r in rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"rule ids used twice: {', '.join(dupes)}")
        return rules


def admission_needs(params: BaseModel) -> Needs:
    assert isinstance(params, AdmissionParams)
    needs = needs_of(sorted({r.fact for r in params.rules}))
    needs.setdefault(REGISTRATION, set()).add("status")
    return needs


def admission_analysis(sheet: FactSheet, params: AdmissionParams) -> dict[str, Any]:
    fired: list[dict[str, Any]] = []
    not_evaluated: list[str] = []
    for rule in params.rules:
        observed = sheet.value(rule.fact)
        if observed is None:
            # no data for the fact (say, no tax grade yet): the rule cannot fire; the bank sees which
            not_evaluated.append(rule.id)
            continue
        if rule.fires(observed):
            fired.append(
                {
                    "id": rule.id,
                    "description": rule.description,
                    "outcome": rule.outcome,
                    "fact": rule.fact,
                    "operator": rule.operator,
                    "value": rule.value,
                    "observed": display_value(FACTS[rule.fact], observed),
                }
            )
    outcomes = {f["outcome"] for f in fired}
    decision = "decline" if "decline" in outcomes else "refer" if "refer" in outcomes else "pass"
    # declines first, then refers, each in the order the product file states them
    fired.sort(key=lambda f: 0 if f["outcome"] == "decline" else 1)
    return {
        "decision": decision,
        "rules_fired": fired,
        "rules_not_evaluated": not_evaluated,
        "rules_evaluated": len(params.rules) - len(not_evaluated),
    }


# ==================================================================== dishonest listing (PSI labels)

DISHONEST_LISTING_NEEDS = {REGISTRATION: ("name",), DISHONEST: ("case_no", "listed_on", "performance")}


def dishonest_listing(sheet: FactSheet, _params: NoParams) -> dict[str, Any]:
    """An enterprise's live listings as a dishonest judgment debtor (失信被执行人): what a
    bank screening its customers needs to open a case with the court's own numbers."""
    rows = sheet.dishonest_rows
    dates = sorted(r["listed_on"] for r in rows)
    latest = max(rows, key=lambda r: (r["listed_on"], r["case_no"]), default=None)
    registration = sheet.registration
    return {
        "name": registration["name"] if registration else None,
        "listed_cases": len(rows),
        "unperformed_cases": sheet.dishonest_unperformed_cases,
        "first_listed_on": _iso(dates[0]) if dates else None,
        "latest_listed_on": _iso(dates[-1]) if dates else None,
        "latest_case_no": latest["case_no"] if latest else None,
    }


# ==================================================================== scoring features (secure scoring)

# 纳税信用等级 as a number, best highest; an enterprise with no grade yet has none (the catalog's
# `missing` stands in)
TAX_GRADE_CODES = {"A": 5, "B": 4, "M": 3, "C": 2, "D": 1}

SCORING_NEEDS = {
    REGISTRATION: ("status", "founded", "reg_capital"),
    TAX_GRADE: ("year", "grade"),
    TAX_PAYMENT: ("year", "tax_paid", "arrears"),
    JUDGMENT: ("filed_on", "role", "closed"),
    ENFORCEMENT: ("filed_on", "amount"),
    DISHONEST: ("listed_on", "performance"),
    PENALTY: ("decided_on", "amount"),
    ABNORMAL: ("listed_on", "removed_on"),
    HEADCOUNT: ("period", "insured"),
    UTILITY: ("period", "electricity_kwh"),
    HOUSING_FUND: ("period", "depositors"),
    CERTIFICATION: ("cert_type", "issued_on", "expires_on"),
    PATENT: ("invention_patents", "utility_patents", "design_patents", "trademarks", "as_of"),
}


def _whole(value: Decimal | float | int | None, per: int = 1) -> int | None:
    """`value / per` rounded half up to an integer (None stays None)."""
    if value is None:
        return None
    return int((Decimal(str(value)) / per).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


FEN_PER_WAN = 1_000_000


def scoring_features(sheet: FactSheet, _params: NoParams) -> dict[str, Any]:
    """The integer features an institution's encrypted model may weigh (never answered in clear:
    the zone only returns encrypted scores over them). None where the zone has no data; the
    product's scoring catalog says what stands in and clamps each to its [min, max]."""
    reg = sheet.registration or {}
    tax_paid = sheet.tax_paid_years
    tax_fen = [fen for _, fen in tax_paid]
    cagr = (
        tax_cagr_pct(tax_fen[0], tax_fen[-1], tax_paid[-1][0] - tax_paid[0][0]) if len(tax_paid) >= 2 else None
    )
    kwh = sheet.electricity_kwh_12m
    held = {r["cert_type"] for r in sheet.certifications_live}
    hf, ip = sheet.housing_fund_latest, sheet.ip_latest
    return {
        "years_since_founding": sheet.years_since_founding,
        "reg_capital_wan": _whole(reg.get("reg_capital")),
        "registration_active": None if sheet.status is None else int(sheet.status == "active"),
        "tax_grade_code": TAX_GRADE_CODES.get(sheet.tax_grade) if sheet.tax_grade else None,
        "has_tax_arrears": _flag(sheet.has_tax_arrears),
        "tax_arrears_wan": _whole(sheet.tax_arrears_fen, FEN_PER_WAN),
        "tax_paid_latest_wan": _whole(tax_fen[-1], FEN_PER_WAN) if tax_fen else None,
        "tax_paid_cagr_pct": _whole(cagr),
        "dishonest_listed": int(sheet.dishonest_listed),
        "dishonest_unperformed_cases": sheet.dishonest_unperformed_cases,
        "enforcement_cases_24m": sheet.enforcement_cases_24m,
        "enforcement_amount_24m_wan": _whole(sheet.enforcement_amount_24m_fen, FEN_PER_WAN),
        "defendant_cases_24m": sheet.defendant_cases_24m,
        "open_defendant_cases_24m": sheet.open_defendant_cases_24m,
        "penalties_36m": sheet.penalties_36m,
        "penalty_amount_36m_wan": _whole(sheet.penalty_amount_36m_fen, FEN_PER_WAN),
        "abnormal_listed": int(sheet.abnormal_listed),
        "has_social_insurance": int(sheet.has_social_insurance),
        "insured_latest": sheet.insured_latest,
        "headcount_change_pct": _whole(sheet.headcount_change_pct),
        "electricity_12m_mwh": _whole(sum(kwh, Decimal(0)), 1000) if kwh else None,
        "electricity_change_pct": _whole(sheet.electricity_change_pct),
        "hf_depositors_latest": int(hf["depositors"]) if hf else None,
        "certifications_live": len(sheet.certifications_live),
        "high_tech": int("high_tech" in held),
        "specialized_sme": int("specialized_sme" in held),
        "little_giant": int("little_giant" in held),
        "invention_patents": int(ip["invention_patents"]) if ip else None,
        "utility_patents": int(ip["utility_patents"]) if ip else None,
        "design_patents": int(ip["design_patents"]) if ip else None,
        "trademarks": int(ip["trademarks"]) if ip else None,
    }


# ==================================================================== registry


def _outputs(fn: Callable[..., dict[str, Any]], sample_params: BaseModel) -> tuple[str, ...]:
    """The answer fields a logic produces, read off an empty enterprise (one source of truth)."""
    empty = FactSheet(EnterpriseRecords(uscc="", by_dataset={}), as_of=date(2000, 1, 1))
    return tuple(fn(empty, sample_params))


_SAMPLE_RISK = RiskParams.model_validate(
    {
        "thresholds": {
            k: {"low": 1}
            for k in (
                "open_defendant_cases_24m",
                "enforcement_cases_24m",
                "enforcement_amount_24m_fen",
                "penalties_36m",
                "penalty_amount_36m_fen",
                "tax_arrears_fen",
            )
        },
        "severities": {
            k: "low"
            for k in (
                "dishonest_unperformed",
                "dishonest_partially_performed",
                "abnormal_listed",
                "revoked",
                "deregistered",
            )
        },
        "escalation": {"high_signals_to_severe": 2, "medium_signals_to_high": 3},
    }
)
_SAMPLE_ADMISSION = AdmissionParams.model_validate(
    {
        "rules": [
            {
                "id": "R",
                "description": "-",
                "fact": "status",
                "operator": "ne",
                "value": "active",
                "outcome": "refer",
            }
        ]
    }
)

LOGICS: dict[str, Logic] = {
    logic.name: logic
    for logic in (
        Logic(
            name="credit_basic",
            description="登记信息与纳税信用等级 registration facts and the latest tax credit grade",
            outputs=_outputs(credit_basic, NoParams()),
            params_model=NoParams,
            needs=_fixed(CREDIT_BASIC_NEEDS),
            compute=credit_basic,
        ),
        Logic(
            name="risk_insight",
            description="司法、执行、失信、处罚、欠税、经营异常信号与风险等级",
            outputs=_outputs(risk_insight, _SAMPLE_RISK),
            params_model=RiskParams,
            needs=_fixed(RISK_NEEDS),
            compute=risk_insight,
        ),
        Logic(
            name="enterprise_portrait",
            description="规模、参保人数趋势、纳税与用电趋势、资质认定、知识产权",
            outputs=_outputs(enterprise_portrait, PortraitParams()),
            params_model=PortraitParams,
            needs=_fixed(PORTRAIT_NEEDS),
            compute=enterprise_portrait,
        ),
        Logic(
            name="dishonest_listing",
            description="失信被执行人名单：在册案件数、未履行案件数、最早与最近发布日期、最近案号",
            outputs=_outputs(dishonest_listing, NoParams()),
            params_model=NoParams,
            needs=_fixed(DISHONEST_LISTING_NEEDS),
            compute=dishonest_listing,
        ),
        Logic(
            name="scoring_features",
            description="安全评分的整数特征：登记、纳税、司法、处罚、经营异常、社保、用电、公积金、资质与知识产权",
            outputs=_outputs(scoring_features, NoParams()),
            params_model=NoParams,
            needs=_fixed(SCORING_NEEDS),
            compute=scoring_features,
        ),
        Logic(
            name="admission_analysis",
            description="按准入规则给出通过/转人工/拒绝及触发的规则",
            outputs=_outputs(admission_analysis, _SAMPLE_ADMISSION),
            params_model=AdmissionParams,
            needs=admission_needs,
            compute=admission_analysis,
        ),
    )
}
