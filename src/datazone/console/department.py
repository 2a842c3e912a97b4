"""The department's pages of the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from datazone.console.pages import PREFIX, NavItem, csrf_protect, person_with, register_nav, render
from datazone.console.service import Person

router = APIRouter(
    prefix=f"{PREFIX}/department", include_in_schema=False, dependencies=[Depends(csrf_protect)]
)
Someone = Annotated[Person, Depends(person_with("department"))]

register_nav("department", [NavItem(f"{PREFIX}/department", "nav.department.home")])


@router.get("", response_class=HTMLResponse)
def home(request: Request, person: Someone) -> Response:
    return render(request, "department/home.html", person=person)
