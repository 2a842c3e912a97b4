"""The problem-type pages: `GET /problems` lists every type, `GET /problems/{type}` says what one
means and what to do, as HTML for a browser and JSON for a program (by the Accept header).
A problem answer's `type` URI points here unless DATAZONE_PROBLEM_BASE_URI says otherwise.
"""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from datazone.deps import SettingsDep
from datazone.errors import NotFound
from datazone.openapi import problem_responses
from datazone.problems.catalog import ProblemPage, problem_types

router = APIRouter(prefix="/problems", tags=["problem types"])

TypeName = Annotated[
    str, Path(description="the problem type's name: the last segment of a problem's `type` URI", max_length=100)
]
_HTML_ONLY = {"text/html": {"schema": {"type": "string"}}}


class ProblemTypeOut(BaseModel):
    type: str = Field(description="the type's URI, as problem answers carry it")
    name: str = Field(description="the type's name")
    title: str = Field(description="the title problem answers of this type carry")
    status: int = Field(description="the HTTP status answers of this type have")
    meaning: str = Field(description="what an answer of this type means")
    remedy: str = Field(description="what the caller can do about it")


class UnknownProblemType(NotFound):
    """The problem-type page asked for does not exist: no answer of the gateway carries that type."""

    type = "unknown-problem-type"
    title = "No such problem type"


def _out(page: ProblemPage, base: str) -> ProblemTypeOut:
    return ProblemTypeOut(
        type=base + page.type, name=page.type, title=page.title, status=page.status,
        meaning=page.meaning, remedy=page.remedy,
    )


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def _html(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
        f"</head><body>{body}</body></html>"
    )


@router.get(
    "",
    response_model=list[ProblemTypeOut],
    responses={200: {"content": _HTML_ONLY}},
)
def list_problem_types(request: Request, settings: SettingsDep) -> Any:
    """Every problem type the gateway answers with, generated from its error classes: JSON, or an
    HTML page for a browser (`Accept: text/html`)."""
    pages = [_out(p, settings.problem_base) for p in problem_types().values()]
    if not _wants_html(request):
        return pages
    rows = "".join(
        f"<tr><td><a href=\"/problems/{escape(p.name)}\">{escape(p.name)}</a></td><td>{p.status}</td>"
        f"<td>{escape(p.title)}</td></tr>"
        for p in pages
    )
    return _html(
        "Problem types",
        "<h1>Problem types</h1><p>Every error of the gateway is RFC 9457 <code>application/problem+json"
        "</code> with one of these types.</p><table><tr><th>type</th><th>status</th><th>title</th></tr>"
        f"{rows}</table>",
    )


@router.get(
    "/{type_name}",
    response_model=ProblemTypeOut,
    responses={200: {"content": _HTML_ONLY}, **problem_responses(404)},
)
def get_problem_type(type_name: TypeName, request: Request, settings: SettingsDep) -> Response:
    """What one problem type means and what to do about it: JSON, or HTML for a browser."""
    page = problem_types().get(type_name)
    if page is None:
        raise UnknownProblemType(f"no problem type {type_name[:100]!r}; GET /problems lists them")
    out = _out(page, settings.problem_base)
    if not _wants_html(request):
        return JSONResponse(out.model_dump())
    return _html(
        out.title,
        f"<h1>{escape(out.title)}</h1><p><code>{escape(out.type)}</code> &middot; HTTP {out.status}</p>"
        f"<h2>What it means</h2><p>{escape(out.meaning)}</p><h2>What to do</h2><p>{escape(out.remedy)}</p>"
        "<p><a href=\"/problems\">All problem types</a></p>",
    )
