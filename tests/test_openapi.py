"""The OpenAPI document is the contract: every operation and parameter described, every error
answer documented as problem+json with the one Problem schema, and the security each route takes."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from datazone.openapi import PROBLEM_MEDIA_TYPE

# RFC 6749 section 5.2: these answer OAuth errors (application/json), not problems
OAUTH_ENDPOINTS = {"/oauth/token", "/oauth/revoke", "/oauth/introspect"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(settings=Settings()).openapi()


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def test_every_operation_and_parameter_has_a_description(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) > 100
    undescribed = [f"{m.upper()} {p}" for p, m, op in operations if not (op.get("description") or "").strip()]
    assert undescribed == []
    bare = [
        f"{m.upper()} {p}: {prm['in']} {prm['name']}"
        for p, m, op in operations
        for prm in op.get("parameters", [])
        if not (prm.get("description") or "").strip()
    ]
    assert bare == []


def test_every_error_answer_is_a_problem(document: dict[str, Any]) -> None:
    not_problems = []
    for path, method, op in _operations(document):
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            content = response.get("content", {})
            if path in OAUTH_ENDPOINTS and status in ("400", "401"):
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuthError"}
                continue
            if content.get(PROBLEM_MEDIA_TYPE, {}).get("schema") != {"$ref": "#/components/schemas/Problem"}:
                not_problems.append(f"{method.upper()} {path} {status}")
    assert not_problems == []
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert {"type", "title", "status", "detail"} <= set(schemas["Problem"]["required"])
    assert {"instance", "check", "errors", "incident"} <= set(schemas["Problem"]["properties"])


def test_error_answers_follow_what_each_route_does(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # a product call: token refusals, unknown product, bad input, the pipeline's own refusals
    assert {"401", "403", "404", "422", "429", "503"} <= statuses("/v1/products/{product_id}/enterprises/{uscc}", "get")
    # a body that can be too large; a state change that can conflict
    assert {"401", "403", "404", "409", "413", "422"} <= statuses("/v1/contracts/{contract_id}/suspend", "post")
    # a public read with no parameters cannot be refused
    assert statuses("/healthz", "get") == {"200"}
    assert "401" not in statuses("/.well-known/oauth-authorization-server", "get")
    # the audit proof is a read that answers 409 until the entry is sealed
    assert "409" in statuses("/v1/audit/entries/{entry_id}/proof", "get")
    product_call = paths["/v1/products/{product_id}/enterprises/{uscc}"]["get"]["responses"]
    assert "Retry-After" in product_call["429"]["headers"] and "Retry-After" in product_call["503"]["headers"]
    # no 500 is documented per operation
    assert not any("500" in op["responses"] for _, _, op in _operations(document))


def test_security_schemes_and_who_may_call_what(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    flow = schemes["productToken"]["flows"]["clientCredentials"]
    assert schemes["productToken"]["type"] == "oauth2" and flow["tokenUrl"] == "/oauth/token"
    assert {"operatorKey", "departmentKey", "institutionKey"} <= set(schemes)
    assert "HTTPBearer" not in schemes
    paths = document["paths"]
    assert paths["/v1/products/{product_id}/enterprises"]["post"]["security"] == [{"productToken": []}]
    assert paths["/v1/grants"]["post"]["security"] == [{"departmentKey": []}]
    assert paths["/v1/contracts"]["post"]["security"] == [{"operatorKey": []}]
    assert paths["/v1/contracts"]["post"]["description"].endswith("Needs an operator key with the role curator.")
    assert paths["/v1/audit/verify"]["get"]["description"].endswith("with the role auditor.")
    assert paths["/v1/clients"]["post"]["security"] == [{"institutionKey": []}]
    # any principal: all three keys
    assert len(paths["/v1/datasets"]["get"]["security"]) == 3
    # scoring models: an institution's token, or operator staff with a key
    assert paths["/v1/scoring/models"]["get"]["security"] == [
        {"productToken": []}, {"operatorKey": []}, {"institutionKey": []}
    ]
    assert "security" not in paths["/oauth/jwks.json"]["get"]


def test_served_document_lists_the_published_product_scopes(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any]
) -> None:
    with TestClient(create_app(db=db, settings=settings)) as c:
        doc = c.get("/openapi.json").json()
        published = c.get("/.well-known/oauth-authorization-server").json()["scopes_supported"]
    scopes = doc["components"]["securitySchemes"]["productToken"]["flows"]["clientCredentials"]["scopes"]
    assert published and set(published) <= set(scopes)
    assert "product:credit-basic" in scopes


def test_real_error_answers_match_the_problem_schema(db: Database, settings: Settings) -> None:
    with TestClient(create_app(db=db, settings=settings)) as c:
        doc = c.get("/openapi.json").json()
        answers: list[httpx.Response] = [
            c.get("/v1/datasets"),  # 401: no key
            c.get("/v1/consents", params={"limit": "many"}, headers={"Authorization": "Bearer dzk_nope"}),
            c.post("/v1/products/credit-basic/enterprises", json={"usccs": []}),  # 401: no token
            c.get("/no/such/path"),  # 404
        ]
    # the document's own Problem schema, its references resolved within the document
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/Problem", "components": doc["components"]}
    )
    for resp in answers:
        assert resp.status_code >= 400
        assert resp.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
        validator.validate(resp.json())
    # and a body that is not a problem does not pass it
    assert not validator.is_valid({"error": "invalid_request"})


def test_answers_that_are_not_json_document_their_media_type(document: dict[str, Any]) -> None:
    def ok_content(path: str, method: str = "get") -> dict[str, Any]:
        content: dict[str, Any] = document["paths"][path][method]["responses"]["200"]["content"]
        return content

    assert set(ok_content("/v1/statements/{period}")) == {"application/json", "text/csv"}
    assert set(ok_content("/v1/ingest/runs/{run_id}/rejects.csv")) == {"text/csv"}
    assert ok_content("/v1/usage/events")["application/cloudevents-batch+json"]["schema"]["type"] == "array"
    assert ok_content("/v1/catalog/dcat")["application/ld+json"]["schema"] == {"type": "object"}
    assert set(ok_content("/v1/psi/sessions/{session_id}/chunks/{index}", "put")) == {"application/x-protobuf"}
    assert set(ok_content("/problems/{type_name}")) == {"application/json", "text/html"}
