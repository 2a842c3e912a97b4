"""Problem types: every `type` the code can answer with resolves to a page (HTML and JSON), the list
is generated from the error classes, and the base URI is the gateway's own unless configured."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import datazone
from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from datazone.errors import RESERVED_MEMBERS, Conflict, DomainError
from datazone.problems.catalog import problem_types

SRC = Path(datazone.__file__).parent


def _types_in_source() -> set[str]:
    """Every problem type named in the code: `type = "..."` in an error class, the handlers' own
    `_problem(status, "type", ...)` calls, and the per-problem types of scoring registrations."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if "client" in path.relative_to(SRC).parts:
            continue  # the SDK reads problems, it does not answer them
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and [getattr(t, "id", None) for t in stmt.targets] == ["type"]
                        and isinstance(stmt.value, ast.Constant)
                        and isinstance(stmt.value.value, str)
                    ):
                        found.add(stmt.value.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_problem" and len(node.args) >= 2:
                kind = node.args[1]
                if isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                    found.add(kind.value)
    return found


def test_every_type_in_the_code_has_a_page() -> None:
    settings = Settings()
    # imports every domain, as the running gateway does (the pages need no database: no lifespan)
    pages = TestClient(create_app(settings=settings))
    named = _types_in_source()
    assert {"invalid-request", "not-found", "invalid-token", "too-few-features"} <= named
    assert named - set(problem_types()) == set()
    for name in sorted(named):
        page = pages.get(f"/problems/{name}")
        assert page.status_code == 200, name
        assert page.json()["type"] == f"{settings.issuer}/problems/{name}"


def test_a_new_error_class_gets_its_page_without_editing_a_list() -> None:
    class RiverFlooded(DomainError):
        """The zone's river flooded; this is a test of the page list."""

        status = 503
        type = "test-river-flooded"
        title = "The river flooded"

    pages = problem_types()
    assert pages["test-river-flooded"].status == 503
    assert pages["test-river-flooded"].meaning == "The zone's river flooded; this is a test of the page list."
    assert "Retry-After" in pages["test-river-flooded"].remedy


def test_no_error_is_raised_with_a_member_that_would_shadow_rfc_9457s() -> None:
    """`Conflict(..., status="active")` once answered `"status": "active"` in a 409 (found by fuzzing)."""
    create_app(settings=Settings())
    error_classes = {c.__name__ for c in [DomainError, *_all_subclasses(DomainError)]}
    shadowing = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in error_classes:
                    shadowing += [
                        f"{path.name}:{node.lineno} {name}({k.arg}=...)"
                        for k in node.keywords
                        if k.arg in RESERVED_MEMBERS
                    ]
    assert shadowing == []
    body = Conflict("it is active", status="active", contract_status="active").problem("/x")
    assert body["status"] == 409 and body["contract_status"] == "active"


def _all_subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    return [s for sub in cls.__subclasses__() for s in (sub, *_all_subclasses(sub))]


@pytest.fixture
def api(db: Database, settings: Settings) -> TestClient:
    return TestClient(create_app(db=db, settings=settings))


def test_answers_point_at_pages_the_gateway_serves(api: TestClient, settings: Settings) -> None:
    with api:
        refused = api.get("/v1/datasets")
        assert refused.status_code == 401
        type_uri = refused.json()["type"]
        assert type_uri == f"{settings.issuer}/problems/unauthorized"
        page = api.get(type_uri.removeprefix(settings.issuer))
        assert page.status_code == 200
        assert page.json() == {
            "type": type_uri,
            "name": "unauthorized",
            "title": "Authentication required",
            "status": 401,
            "meaning": page.json()["meaning"],
            "remedy": page.json()["remedy"],
        }
        assert "datazone key" in page.json()["remedy"]
        html = api.get("/problems/unauthorized", headers={"Accept": "text/html"})
        assert html.headers["content-type"].startswith("text/html")
        assert "<h1>Authentication required</h1>" in html.text and "What to do" in html.text
        wrong_method = api.delete("/problems")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET"
        assert wrong_method.json()["type"].endswith("/problems/method-not-allowed")
        unknown = api.get("/problems/no-such-type")
        assert unknown.status_code == 404
        assert unknown.json()["type"].endswith("/problems/unknown-problem-type")


def test_list_of_types(api: TestClient) -> None:
    with api:
        listed = api.get("/problems").json()
        names = [t["name"] for t in listed]
        assert names == sorted(names) and len(names) == len(set(names))
        assert {"invalid-request", "body-too-large", "internal-error", "insufficient-scope", "gateway-busy", "not-ready"} <= set(names)
        assert all(t["meaning"] and t["remedy"] and 400 <= t["status"] <= 599 for t in listed)
        html = api.get("/problems", headers={"Accept": "text/html"}).text
        assert '<a href="/problems/insufficient-scope">insufficient-scope</a>' in html


def test_configured_base_uri(db: Database, settings: Settings) -> None:
    moved = settings.model_copy(update={"problem_base_uri": "https://docs.zone.example.cn/errors"})
    with TestClient(create_app(db=db, settings=moved)) as api:
        assert api.get("/v1/datasets").json()["type"] == "https://docs.zone.example.cn/errors/unauthorized"
        assert api.get("/nowhere").json()["type"] == "https://docs.zone.example.cn/errors/not-found"
        assert api.get("/problems/not-found").json()["type"] == "https://docs.zone.example.cn/errors/not-found"
