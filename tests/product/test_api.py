"""The catalog API, the curator's product routes and the DCAT-AP export over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph

from datazone.app import create_app
from datazone.dataset import service as dataset_service
from datazone.db import Database
from tests.conftest import problem
from tests.factories import bearer, principal_key
from tests.product.zones import apply_demo_specs, fresh_database, load_product, zone_settings


@pytest.fixture(scope="module")
def api_db(database_url: str) -> Iterator[Database]:
    with fresh_database(database_url) as db:
        apply_demo_specs(db)
        # data admission is the lifecycle's business; here every dataset but one is simply admitted,
        # so the export shows it lists admitted datasets only
        with db.unit_of_work() as s:
            for ds in dataset_service.list_datasets(s):
                if ds.id != "ip_patent":
                    dataset_service.set_admission_state(s, dataset_id=ds.id, state="admitted")
        yield db


@pytest.fixture(scope="module")
def client(api_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = zone_settings(api_db, Path(tmp_path_factory.mktemp("api")))
    with TestClient(create_app(db=api_db, settings=settings)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(api_db: Database) -> dict[str, dict[str, str]]:
    return {
        "curator": bearer(principal_key(api_db, "operator")),
        "auditor": bearer(principal_key(api_db, "operator", roles=["auditor"])),
        "bank": bearer(principal_key(api_db, "institution")),
        "courts": bearer(principal_key(api_db, "department", supplier_id="courts")),
    }


def put(client: TestClient, headers: dict[str, str], name: str, **changes: Any) -> Any:
    spec = {**load_product(name), **changes}
    return client.put(f"/v1/products/{name}", json=spec, headers=headers)


def move(client: TestClient, headers: dict[str, str], product: str, action: str, **body: Any) -> Any:
    return client.post(f"/v1/products/{product}/{action}", json={"reason": "测试", **body}, headers=headers)


def ids(resp: Any) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [p["id"] for p in resp.json()]


def test_curators_apply_products_and_bad_specs_are_refused_whole(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    for name in ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"):
        r = put(client, keys["curator"], name)
        assert r.status_code == 201, r.text
        assert r.json()["result"] == "created" and r.json()["product"]["state"] == "draft"
    r = put(client, keys["curator"], "credit-basic")
    assert r.status_code == 200 and r.json()["result"] == "unchanged"

    r = client.put("/v1/products/credit-plus", json=load_product("credit-basic"), headers=keys["curator"])
    body = problem(r)
    assert r.status_code == 422 and "differs from the path's 'credit-plus'" in body["detail"]

    bad = load_product("risk-insight")
    bad["id"] = "risk-lite"
    bad["sources"]["court_judgment"] = ["filed_on", "role", "closed", "judge"]
    bad["sources"]["court_fines"] = ["amount"]
    r = client.put("/v1/products/risk-lite", json=bad, headers=keys["curator"])
    body = problem(r)
    assert r.status_code == 422 and body["type"].endswith("/invalid-spec")
    located = {e["location"]: e["problem"] for e in body["errors"]}
    assert "has no field 'judge'" in located["sources.court_judgment.3"]
    assert "unknown dataset 'court_fines'" in located["sources.court_fines"]
    assert problem(client.get("/v1/catalog/products/risk-lite", headers=keys["curator"]))["status"] == 404

    r = client.put("/v1/products/risk-lite", json={"id": "risk-lite"}, headers=keys["curator"])
    assert r.status_code == 422 and {"name", "logic", "sources"} <= {
        e["location"] for e in problem(r)["errors"]
    }

    for who in ("auditor", "bank", "courts"):
        r = put(client, keys[who], "credit-basic", description="被改动")
        assert r.status_code == 403, who
        assert problem(r)["type"].endswith("/forbidden")
    assert (
        problem(client.put("/v1/products/credit-basic", json=load_product("credit-basic")))["status"] == 401
    )


def test_catalog_visibility_search_and_lifecycle(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    bank, curator = keys["bank"], keys["curator"]
    for name in ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"):
        put(client, curator, name)
    # drafts are invisible to institutions, listed for the operator
    assert ids(client.get("/v1/catalog/products", headers=bank)) == []
    assert problem(client.get("/v1/catalog/products/credit-basic", headers=bank))["status"] == 404
    assert len(ids(client.get("/v1/catalog/products", headers=curator))) == 4
    assert ids(client.get("/v1/catalog/products?state=draft", headers=bank)) == []

    for name in ("credit-basic", "risk-insight", "enterprise-portrait"):
        r = move(client, curator, name, "publish")
        assert r.status_code == 200 and r.json()["state"] == "published", r.text
    assert ids(client.get("/v1/catalog/products", headers=bank)) == [
        "credit-basic",
        "enterprise-portrait",
        "risk-insight",
    ]
    assert ids(client.get("/v1/catalog/products?category=risk_insight", headers=bank)) == ["risk-insight"]
    assert ids(client.get("/v1/catalog/products?department=courts", headers=bank)) == ["risk-insight"]
    assert ids(client.get("/v1/catalog/products?tier=free", headers=bank)) == ["credit-basic"]
    assert ids(client.get("/v1/catalog/products?q=画像", headers=bank)) == ["enterprise-portrait"]
    assert ids(client.get("/v1/catalog/products?tier=paid&department=social-security", headers=bank)) == [
        "enterprise-portrait"
    ]
    r = client.get("/v1/catalog/products?category=credit", headers=bank)
    assert r.status_code == 422 and problem(r)["errors"][0]["location"] == "query.category"

    item = client.get("/v1/catalog/products/risk-insight", headers=keys["courts"]).json()
    assert item["category"] == "risk_insight" and item["category_name"] == "风险洞察"
    assert item["tier"] == "paid" and item["price_fen"] == 500 and item["consent_required"] is True
    assert item["departments"] == ["courts", "market-regulation", "tax"]
    assert "court_dishonest" in item["datasets"]
    outputs = {o["name"]: o for o in item["outputs"]}
    assert outputs["tax_arrears_fen"] == {
        "name": "tax_arrears_fen",
        "description": "最近一年末欠税余额",
        "from": ["tax_payment.arrears"],
        "grade": 3,
        "masking": "amount_band",
        "unit": "fen",
    }
    assert item["state"] == "published" and item["successor"] is None

    # deprecate with a seamless successor, then retire
    r = move(client, curator, "credit-basic", "deprecate", successor="risk-insight", seamless=True)
    assert r.status_code == 200 and (
        r.json()["state"],
        r.json()["successor"],
        r.json()["seamless_switch"],
    ) == (
        "deprecated",
        "risk-insight",
        True,
    )
    assert "credit-basic" in ids(client.get("/v1/catalog/products", headers=bank))  # still served
    r = move(client, curator, "credit-basic", "retire")
    assert r.status_code == 200 and r.json()["state"] == "retired" and r.json()["seamless_switch"] is True
    assert "credit-basic" not in ids(client.get("/v1/catalog/products", headers=bank))
    assert (
        client.get("/v1/catalog/products/credit-basic", headers=curator).json()["successor"] == "risk-insight"
    )

    # illegal moves: 409 problem+json naming what is allowed
    r = move(client, curator, "credit-basic", "publish")
    body = problem(r)
    assert r.status_code == 409 and body["type"].endswith("/illegal-transition")
    assert body["state"] == "retired" and body["allowed"] == []
    r = move(client, curator, "admission-analysis", "deprecate", successor="risk-insight")
    body = problem(r)
    assert r.status_code == 409 and body["allowed"] == ["published", "retired"]
    r = move(client, curator, "enterprise-portrait", "deprecate", successor="admission-analysis")
    assert r.status_code == 409 and "is draft" in problem(r)["detail"]
    r = move(client, curator, "enterprise-portrait", "publish", successor="risk-insight")
    assert r.status_code == 422 and "belong to deprecate" in problem(r)["detail"]
    r = client.post("/v1/products/enterprise-portrait/retire", json={}, headers=curator)
    assert r.status_code == 422 and problem(r)["errors"][0]["location"] == "body.reason"
    assert move(client, bank, "risk-insight", "deprecate").status_code == 403
    assert problem(move(client, curator, "no-such", "publish"))["status"] == 404

    history = client.get("/v1/products/credit-basic/history", headers=curator)
    assert [(h["from_state"], h["to_state"]) for h in history.json()] == [
        (None, "draft"),
        ("draft", "published"),
        ("published", "deprecated"),
        ("deprecated", "retired"),
    ]
    assert all(h["reason"] for h in history.json())
    assert client.get("/v1/products/credit-basic/history", headers=bank).status_code == 403


DCAT_QUERY = """
PREFIX dcat: <http://www.w3.org/ns/dcat#>
PREFIX dct: <http://purl.org/dc/terms/>
PREFIX foaf: <http://xmlns.com/foaf/0.1/>
"""


def test_dcat_export_is_public_json_ld_with_what_ckan_dcat_reads(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    curator = keys["curator"]
    for name in ("credit-basic", "risk-insight", "enterprise-portrait", "admission-analysis"):
        put(client, curator, name)
    r = client.get("/v1/catalog/dcat")  # no credentials: harvesters need it
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/ld+json")
    g = Graph().parse(data=r.text, format="json-ld")

    catalogs = list(g.query(DCAT_QUERY + "SELECT ?c WHERE { ?c a dcat:Catalog }"))
    assert len(catalogs) == 1

    # every dataset the way ckanext-dcat's DCAT-AP profile reads it
    rows = g.query(
        DCAT_QUERY
        + """
        SELECT ?id ?zh ?en ?publisher ?freq ?theme ?modified WHERE {
          ?cat dcat:dataset ?d .
          ?d a dcat:Dataset ; dct:identifier ?id ; dct:title ?zh ; dct:title ?en ;
             dct:publisher ?agent ; dct:accrualPeriodicity ?freq ; dcat:theme ?theme ; dct:modified ?modified .
          ?agent a foaf:Agent ; foaf:name ?publisher .
          FILTER (lang(?zh) = "zh" && lang(?en) = "en" && lang(?publisher) = "zh")
        }"""
    )
    datasets = {str(row[0]): row for row in rows}
    assert len(datasets) == 12 and "ip_patent" not in datasets  # still in intake: not listed
    reg = datasets["mr_registration"]
    assert str(reg[1]) == "企业登记基本信息" and str(reg[2]) == "Enterprise registration"
    assert str(reg[3]) == "北京市市场监督管理局"
    assert str(reg[4]) == "http://publications.europa.eu/resource/authority/frequency/DAILY"
    assert str(datasets["si_headcount"][4]).endswith("/frequency/MONTHLY")
    assert str(datasets["mr_penalty"][4]).endswith("/frequency/WEEKLY")
    assert (
        str(datasets["court_dishonest"][5])
        == "http://publications.europa.eu/resource/authority/data-theme/JUST"
    )

    # the earlier test may have moved products already: publish what is still a draft
    for name in ("risk-insight", "enterprise-portrait"):
        if client.get(f"/v1/catalog/products/{name}", headers=curator).json()["state"] == "draft":
            assert move(client, curator, name, "publish").status_code == 200
    g = Graph().parse(data=client.get("/v1/catalog/dcat").text, format="json-ld")
    services = g.query(
        DCAT_QUERY
        + """
        SELECT ?id ?title ?endpoint ?described ?rights (COUNT(DISTINCT ?ds) AS ?n) WHERE {
          ?cat dcat:service ?s .
          ?s a dcat:DataService ; dct:identifier ?id ; dct:title ?title ; dcat:endpointURL ?endpoint ;
             dcat:endpointDescription ?described ; dct:accessRights ?rights ; dcat:servesDataset ?ds .
          FILTER (lang(?title) = "zh")
        } GROUP BY ?id ?title ?endpoint ?described ?rights"""
    )
    by_id = {str(row[0]): row for row in services}
    # drafts and retired products are not listed
    assert set(by_id) == {"risk-insight", "enterprise-portrait"}
    risk = by_id["risk-insight"]
    assert str(risk[1]) == "企业风险洞察"
    assert str(risk[2]).endswith("/v1/products/risk-insight")
    assert str(risk[3]).endswith("/openapi.json")
    assert str(risk[4]).endswith("/access-right/RESTRICTED")
    assert int(risk[5]) == 7  # the seven datasets it reads
    assert int(by_id["enterprise-portrait"][5]) == 6  # seven, less ip_patent (not admitted)
    # ckanext-dcat finds data services through each dataset's distributions
    dist = g.query(
        DCAT_QUERY
        + """
        SELECT ?sid WHERE {
          ?d dct:identifier "court_dishonest" ; dcat:distribution ?x .
          ?x a dcat:Distribution ; dcat:accessURL ?url ; dcat:accessService ?s .
          ?s dct:identifier ?sid .
        }"""
    )
    assert [str(row[0]) for row in dist] == ["risk-insight"]
