"""Product specs checked against the zone, apply, catalog search and lifecycle moves, on the
service layer (each test in a transaction rolled back afterwards)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit.models import AuditEntry
from datazone.db import Database
from datazone.errors import Conflict, InvalidSpec, NotFound
from datazone.lifecycle.service import IllegalTransition
from datazone.product import service
from datazone.product.models import Product
from tests.product.zones import apply_demo_specs, fresh_database, load_product

PRODUCTS = ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis")


@pytest.fixture(scope="module")
def catalog_db(database_url: str) -> Iterator[Database]:
    with fresh_database(database_url) as db:
        apply_demo_specs(db)
        yield db


@pytest.fixture
def s(catalog_db: Database) -> Iterator[Session]:
    conn = catalog_db.engine.connect()
    trans = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        trans.rollback()
        conn.close()


def raw(name: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(load_product(name))
    data.update(changes)
    return data


def apply(s: Session, data: dict[str, Any]) -> tuple[Product, str]:
    return service.apply_product(s, spec=service.parse_product_spec(data), by=None, by_name="test")


def problems(exc: pytest.ExceptionInfo[InvalidSpec]) -> dict[str, str]:
    return {e["location"]: e["problem"] for e in exc.value.errors}


def count_products(s: Session) -> int:
    return s.scalar(sa.select(sa.func.count()).select_from(Product)) or 0


# ---------------------------------------------------------------- apply


def test_the_four_product_files_apply_as_drafts_and_reapply_unchanged(s: Session) -> None:
    for name in PRODUCTS:
        product, result = apply(s, raw(name))
        assert (product.id, result, product.state) == (name, "created", "draft")
        assert apply(s, raw(name))[1] == "unchanged"
    product, result = apply(s, raw("credit-basic", description="企业登记信息与纳税信用等级。"))
    assert result == "updated" and product.state == "draft"
    entries = s.scalars(
        sa.select(AuditEntry).where(AuditEntry.action == "product.apply").order_by(AuditEntry.id)
    ).all()
    assert [(e.object_id, e.detail["result"]) for e in entries] == [
        *[(n, "created") for n in PRODUCTS],
        ("credit-basic", "updated"),
    ]
    assert entries[0].actor_name == "test"
    assert entries[0].supplier_ids == ["market-regulation", "tax"]
    history = service.history(s, product_id="credit-basic")
    assert [(t.from_state, t.to_state) for t in history] == [(None, "draft")]


def test_grades_and_masking_default_to_the_single_source_field(s: Session) -> None:
    product, _ = apply(s, raw("credit-basic"))
    spec = service.spec_of(product)
    assert (spec.output("legal_rep").grade, spec.output("legal_rep").masking) == (3, "person_name")
    assert (spec.output("address").grade, spec.output("address").masking) == (2, "address")
    # stated masking kept, grade from the source
    assert (spec.output("reg_capital_fen").grade, spec.output("reg_capital_fen").masking) == (
        2,
        "amount_band",
    )
    assert product.spec["outputs"][0]["from"] == ["mr_registration.name"]
    risk = service.spec_of(apply(s, raw("risk-insight"))[0])
    assert (risk.output("tax_arrears_fen").grade, risk.output("tax_arrears_fen").masking) == (
        3,
        "amount_band",
    )
    assert (risk.output("risk_level").grade, risk.output("risk_level").masking) == (2, "none")


def test_a_file_with_fields_its_datasets_do_not_have_lists_every_problem_and_writes_nothing(
    s: Session,
) -> None:
    data = raw("credit-basic")
    data["sources"] = {
        "mr_registration": [*data["sources"]["mr_registration"], "phone"],  # no such field
        "tax_credit_grade": ["year", "grade"],
        "mr_branches": ["uscc"],  # no such dataset
    }
    data["outputs"] = [
        *data["outputs"],
        {"name": "tax_credit_year2", "from": ["tax_payment.year"]},  # not a declared source, not produced
        {"name": "summary", "from": ["mr_registration.name", "mr_registration.status"]},  # no grade/masking
    ]
    data["outputs"][1] = {"name": "legal_rep", "from": ["mr_registration.legal_rep"], "grade": 1}
    del data["outputs"][10]  # tax_credit_grade: produced by the logic but now undeclared
    before = count_products(s)
    with pytest.raises(InvalidSpec) as exc:
        apply(s, data)
    found = problems(exc)
    assert "has no field 'phone'" in found["sources.mr_registration.9"]
    assert "unknown dataset 'mr_branches'" in found["sources.mr_branches"]
    assert "not among the declared sources" in found["outputs.11.from.0"]
    assert "add 'year' to sources.tax_payment" in found["outputs.11.from.0"]
    assert "does not produce 'tax_credit_year2'" in found["outputs.11.name"]
    assert "does not produce 'summary'" in found["outputs.12.name"]
    assert found["outputs.12.grade"] == "state the grade: 'from' names more than one field"
    assert found["outputs.12.masking"] == "state the masking: 'from' names more than one field"
    assert "below the grade 3 of mr_registration.legal_rep" in found["outputs.1.grade"]
    assert "also produces tax_credit_grade" in found["outputs"]
    assert len(exc.value.errors) == len(found) == 9
    assert exc.value.status == 422 and "9 problems" in exc.value.detail
    assert count_products(s) == before
    with pytest.raises(NotFound):
        service.get_product(s, product_id="credit-basic")


def test_the_logic_must_find_every_field_it_reads_declared(s: Session) -> None:
    data = raw("risk-insight")
    data["sources"]["court_judgment"] = ["filed_on", "role"]  # 'closed' is read by the logic
    with pytest.raises(InvalidSpec) as exc:
        apply(s, data)
    found = problems(exc)
    assert "reads court_judgment.closed" in found["sources.court_judgment"]
    # the outputs citing it are refused too, each at its own place
    assert "'court_judgment.closed' is not among the declared sources" in found["outputs.0.from.0"]


def test_unknown_logic(s: Session) -> None:
    with pytest.raises(InvalidSpec) as exc:
        apply(s, raw("credit-basic", logic="credit_scorecard"))
    assert "unknown logic 'credit_scorecard'" in problems(exc)["logic"]
    assert "credit_basic" in problems(exc)["logic"]


def test_bad_admission_rules_are_each_located(s: Session) -> None:
    data = raw("admission-analysis")
    rules = data["params"]["rules"]
    rules[0] = {**rules[0], "fact": "credit_score"}  # unknown fact
    rules[1] = {**rules[1], "operator": "matches"}  # unknown operator
    rules[2] = {**rules[2], "operator": "gt", "value": 1}  # gt on a yes/no fact
    rules[3] = {**rules[3], "value": "E"}  # not a tax grade
    rules[4] = {**rules[4], "value": "three"}  # a number compared with text
    rules[5] = {**rules[5], "outcome": "approve"}
    with pytest.raises(InvalidSpec) as exc:
        apply(s, data)
    found = problems(exc)
    assert "unknown fact 'credit_score'" in found["params.rules.0.fact"]
    assert "years_since_founding" in found["params.rules.0.fact"]  # names the facts there are
    assert "params.rules.1.operator" in found
    assert "gt compares numbers; has_tax_arrears is bool" in found["params.rules.2"]
    assert "'E' is not a value of tax_grade" in found["params.rules.3"]
    assert "enforcement_cases_24m is a number" in found["params.rules.4"]
    assert "params.rules.5.outcome" in found
    assert count_products(s) == 0


def test_admission_rule_ids_are_unique(s: Session) -> None:
    data = raw("admission-analysis")
    data["params"]["rules"].append({**data["params"]["rules"][6], "id": "R01"})
    with pytest.raises(InvalidSpec) as exc:
        apply(s, data)
    assert "rule ids used twice: R01" in problems(exc)["params.rules"]


def test_bad_risk_params(s: Session) -> None:
    data = raw("risk-insight")
    data["params"]["thresholds"]["enforcement_cases_24m"] = {"medium": 3, "high": 1}
    del data["params"]["severities"]["revoked"]
    data["params"]["escalation"]["sometimes"] = 1
    with pytest.raises(InvalidSpec) as exc:
        apply(s, data)
    found = problems(exc)
    assert "high (1) must be above medium (3)" in found["params.thresholds.enforcement_cases_24m"]
    assert "params.severities.revoked" in found
    assert "params.escalation.sometimes" in found


@pytest.mark.parametrize(
    ("changes", "location", "words"),
    [
        ({"price_fen": 100}, "(document)", "a free product costs 0 fen"),
        ({"tier": "paid", "price_fen": 0}, "(document)", "needs a price_fen above 0"),
        ({"price_fen": -1}, "price_fen", "greater than or equal to 0"),
        ({"purposes": []}, "purposes", "at least 1"),
        ({"purposes": ["pre_loan", "lending"]}, "purposes.1", "pre_loan"),
        ({"category": "credit"}, "category", "credit_lookup"),
        ({"id": "Credit Basic"}, "id", "pattern"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
        ({"sources": {}}, "sources", "at least 1"),
    ],
)
def test_spec_shape_problems(changes: dict[str, Any], location: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        service.parse_product_spec(raw("credit-basic", **changes), origin="products/x.yaml")
    found = problems(exc)
    assert words in found[location], found
    assert exc.value.detail.startswith("products/x.yaml is not a valid product spec")


def test_negotiated_products_may_be_priced_per_contract() -> None:
    spec = service.parse_product_spec(raw("risk-insight", tier="negotiated", price_fen=0))
    assert spec.price_fen == 0


# ---------------------------------------------------------------- catalog search


def _publish_all(s: Session) -> None:
    for name in PRODUCTS:
        apply(s, raw(name))
    for name in ("credit-basic", "risk-insight", "enterprise-portrait"):
        service.publish_product(s, product_id=name, by=None, by_name="test", reason="ready")


def ids(products: list[Product]) -> list[str]:
    return [p.id for p in products]


def test_catalog_search_by_category_department_tier_and_keyword(s: Session) -> None:
    _publish_all(s)
    # admission-analysis is still a draft: not in the public catalog
    assert ids(service.search_catalog(s)) == ["credit-basic", "enterprise-portrait", "risk-insight"]
    assert ids(service.search_catalog(s, states=None)) == sorted(PRODUCTS)
    assert ids(service.search_catalog(s, category="risk_insight")) == ["risk-insight"]
    assert ids(service.search_catalog(s, tier="free")) == ["credit-basic"]
    assert ids(service.search_catalog(s, tier="paid")) == ["enterprise-portrait", "risk-insight"]
    assert ids(service.search_catalog(s, department="courts")) == ["risk-insight"]
    assert ids(service.search_catalog(s, department="utilities")) == ["enterprise-portrait"]
    assert ids(service.search_catalog(s, department="tax")) == [
        "credit-basic",
        "enterprise-portrait",
        "risk-insight",
    ]
    assert ids(service.search_catalog(s, department="courts", states=None)) == [
        "admission-analysis",
        "risk-insight",
    ]
    assert ids(service.search_catalog(s, keyword="画像")) == ["enterprise-portrait"]
    assert ids(service.search_catalog(s, keyword="DISHONEST")) == ["risk-insight"]  # in its description
    assert ids(service.search_catalog(s, keyword="tax_arrears_fen")) == ["risk-insight"]  # an output name
    assert ids(service.search_catalog(s, keyword="ENTERPRISE CREDIT")) == ["credit-basic"]  # name_en
    assert ids(service.search_catalog(s, keyword="专精特新", tier="free")) == []
    assert ids(service.search_catalog(s, category="trust_analysis")) == []
    entry = service.catalog_entries(s, products=[service.get_product(s, product_id="risk-insight")])[0]
    assert entry.category_name == "风险洞察" and entry.tier == "paid" and entry.price_fen == 500
    assert entry.departments == ["courts", "market-regulation", "tax"]
    assert entry.consent_required is True and entry.state == "published"
    out = {o.name: o for o in entry.outputs}
    assert (out["enforcement_amount_24m_fen"].grade, out["enforcement_amount_24m_fen"].masking) == (
        2,
        "amount_band",
    )
    assert service.product_departments(
        s, product=service.get_product(s, product_id="enterprise-portrait")
    ) == [
        "housing-fund",
        "intellectual-property",
        "market-regulation",
        "science-technology",
        "social-security",
        "tax",
        "utilities",
    ]


# ---------------------------------------------------------------- lifecycle


def test_publish_deprecate_with_seamless_successor_then_retire(s: Session) -> None:
    apply(s, raw("credit-basic"))
    apply(s, raw("risk-insight"))
    service.publish_product(s, product_id="credit-basic", by=None, by_name="curator-a", reason="上线")
    service.publish_product(s, product_id="risk-insight", by=None, by_name="curator-a", reason="上线")
    p = service.deprecate_product(
        s,
        product_id="credit-basic",
        successor_id="risk-insight",
        seamless=True,
        by=None,
        by_name="curator-b",
        reason="由风险洞察替代",
    )
    assert (p.state, p.successor_id, p.seamless_switch) == ("deprecated", "risk-insight", True)
    p = service.retire_product(s, product_id="credit-basic", by=None, by_name="curator-b", reason="下线")
    assert (p.state, p.successor_id, p.seamless_switch) == ("retired", "risk-insight", True)
    history = service.history(s, product_id="credit-basic")
    assert [(t.from_state, t.to_state, t.by_name, t.reason) for t in history] == [
        (None, "draft", "test", "product spec applied"),
        ("draft", "published", "curator-a", "上线"),
        ("published", "deprecated", "curator-b", "由风险洞察替代"),
        ("deprecated", "retired", "curator-b", "下线"),
    ]
    succ = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "product.successor")).one()
    assert succ.detail == {"successor": "risk-insight", "seamless": True}
    # retired is final, and a retired product cannot be changed by applying its file
    with pytest.raises(IllegalTransition) as exc:
        service.publish_product(s, product_id="credit-basic", by=None, by_name="x", reason="again")
    assert exc.value.extra["allowed"] == [] and "retired is final" in exc.value.detail
    with pytest.raises(Conflict, match="retired and cannot change"):
        apply(s, raw("credit-basic", description="changed"))


def test_illegal_moves_name_the_allowed_ones_and_write_nothing(s: Session) -> None:
    apply(s, raw("credit-basic"))
    before = len(service.history(s, product_id="credit-basic"))
    with pytest.raises(IllegalTransition) as exc:
        service.deprecate_product(
            s, product_id="credit-basic", successor_id=None, seamless=False, by=None, by_name="x", reason="r"
        )
    assert exc.value.status == 409
    assert exc.value.extra["allowed"] == ["published", "retired"]
    assert "it may move to: published, retired" in exc.value.detail
    with pytest.raises(IllegalTransition, match="only a deprecated product can be reinstated"):
        service.reinstate_product(s, product_id="credit-basic", by=None, by_name="x", reason="r")
    with pytest.raises(InvalidSpec, match="'reason' is empty"):
        service.publish_product(s, product_id="credit-basic", by=None, by_name="x", reason="  ")
    assert len(service.history(s, product_id="credit-basic")) == before
    assert service.get_product(s, product_id="credit-basic").state == "draft"
    with pytest.raises(NotFound):
        service.publish_product(s, product_id="no-such-product", by=None, by_name="x", reason="r")


def test_successor_rules(s: Session) -> None:
    for name in PRODUCTS:
        apply(s, raw(name))
    for name in ("credit-basic", "risk-insight"):
        service.publish_product(s, product_id=name, by=None, by_name="x", reason="r")

    def deprecate(successor: str | None, seamless: bool = False) -> Product:
        return service.deprecate_product(
            s,
            product_id="credit-basic",
            successor_id=successor,
            seamless=seamless,
            by=None,
            by_name="x",
            reason="r",
        )

    with pytest.raises(InvalidSpec, match="cannot be its own successor"):
        deprecate("credit-basic")
    with pytest.raises(Conflict, match="successor 'admission-analysis' is draft"):
        deprecate("admission-analysis")
    with pytest.raises(NotFound):
        deprecate("credit-plus")
    with pytest.raises(InvalidSpec, match="seamless switch needs a successor"):
        deprecate(None, seamless=True)
    assert service.get_product(s, product_id="credit-basic").state == "published"
    # deprecated without a successor: retiring is refused until one is named
    deprecate(None)
    with pytest.raises(Conflict, match="deprecated without a successor"):
        service.retire_product(s, product_id="credit-basic", by=None, by_name="x", reason="r")
    p = service.reinstate_product(s, product_id="credit-basic", by=None, by_name="x", reason="back")
    assert (p.state, p.successor_id, p.seamless_switch) == ("published", None, False)
    p = deprecate("risk-insight", seamless=False)
    assert (p.successor_id, p.seamless_switch) == ("risk-insight", False)
    # the successor cannot point back: risk-insight may not name credit-basic (deprecated, not published)
    with pytest.raises(Conflict, match="is deprecated"):
        service.deprecate_product(
            s,
            product_id="risk-insight",
            successor_id="credit-basic",
            seamless=True,
            by=None,
            by_name="x",
            reason="r",
        )
    # a draft may be retired directly
    assert (
        service.retire_product(s, product_id="admission-analysis", by=None, by_name="x", reason="r").state
        == "retired"
    )


def test_the_database_refuses_a_seamless_switch_without_successor(s: Session) -> None:
    apply(s, raw("credit-basic"))
    with pytest.raises(sa.exc.IntegrityError), s.begin_nested():
        s.execute(sa.update(Product).where(Product.id == "credit-basic").values(seamless_switch=True))
