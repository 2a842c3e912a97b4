"""Console tests: people signed in over HTTP(S) with a password and a TOTP code.

The app runs in-process behind TestClient on https://testserver, so the __Host- cookies
(Secure) travel as in a browser; the browser tests (test_browser*.py) drive real Chromium.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser

from datazone.app import create_app
from datazone.config import Settings
from datazone.console import service as console_service
from datazone.db import Database
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from tests.conftest import Server, synthetic_zone_settings, unique_id
from tests.console.browser import Visit, chromium
from tests.factories import ensure_department

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class PersonLogin:
    login: str
    password: str
    totp_secret: str | None
    principal_id: int
    principal_name: str

    def code(self, at: float | None = None) -> str:
        assert self.totp_secret is not None
        return pyotp.TOTP(self.totp_secret).at(at if at is not None else time.time())


def make_person(
    db: Database,
    settings: Settings,
    *,
    kind: str,
    roles: list[str],
    principal: Principal | str | None = None,
    department: str | None = None,
    second_factor: bool = True,
    principal_roles: list[str] | None = None,
) -> PersonLogin:
    """A committed principal (new unless given) and a person's account for it, with a TOTP secret set up."""
    login = unique_id("p").lower().replace("_", "-")[:40]
    password = "correct horse battery staple"
    with db.unit_of_work() as s:
        if principal is None:
            supplier_id = None
            if kind == "department":
                supplier_id = department or unique_id("dept").replace("_", "-")
                ensure_department(s, supplier_id)
            principal = principal_service.create_principal(
                s,
                kind=kind,
                name=unique_id(kind),
                supplier_id=supplier_id,
                roles=principal_roles or (["auditor", "curator", "reviewer"] if kind == "operator" else None),
            )
        elif isinstance(principal, str):
            found = principal_service.find_principal(s, name=principal)
            assert found is not None
            principal = found
        console_service.create_account(
            s,
            principal_name=principal.name,
            login=login,
            display_name=f"Person {login}",
            roles=roles,
            password=password,
            created_by="test",
        )
        secret = None
        if second_factor:
            secret = pyotp.random_base32()
            console_service.set_totp_secret(s, login=login, totp_secret=secret, settings=settings)
        return PersonLogin(login, password, secret, principal.id, principal.name)


@pytest.fixture
def browser_like(db: Database, settings: Settings) -> Iterator[TestClient]:
    """The console over HTTPS in-process; redirects are not followed, so each step can be checked."""
    with TestClient(
        create_app(db=db, settings=settings), base_url="https://testserver", follow_redirects=False
    ) as c:
        yield c


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no csrf field on the page"
    return found.group(1)


def sign_in(client: TestClient, person: PersonLogin, *, code: str | None = None) -> str:
    """Sign in with the password and the current code; returns the session's form token."""
    page = client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    r = client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "login": person.login, "password": person.password, "next": ""},
    )
    assert r.status_code == 303, r.text
    if r.headers["location"].startswith("/console/sign-in/code"):
        page = client.get("/console/sign-in/code")
        r = client.post(
            "/console/sign-in/code", data={"csrf": csrf_of(page.text), "code": code or person.code()}
        )
        assert r.status_code == 303, r.text
    home = client.get("/console/account")
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


# per module: Playwright's sync API runs an event loop in the main thread while it is started,
# which later tests' asyncio.run() would trip over; it stops with the module's last browser test
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="session")
def live_console(
    synthetic_zone: dict[str, Any], database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The real gateway over the demo zone on loopback, as a browser reaches it."""
    zone_settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "console")
    server = Server(zone_settings)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def visit(browser: Browser, live_console: Server, tmp_path: Path) -> Iterator[Callable[..., Visit]]:
    """Open a browser of one's own on the live console: visit() for a desktop, visit(viewport=TABLET)."""
    opened: list[Visit] = []

    def open_one(**kw: Any) -> Visit:
        v = Visit(browser, live_console.url, tmp_path, **kw)
        opened.append(v)
        return v

    yield open_one
    for v in opened:
        v.close()
