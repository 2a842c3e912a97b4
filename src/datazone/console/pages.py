"""What every console page shares: the signed-in person, the form token, rendering and the headers.

A page is a thin view: its route reads the person (`PersonDep` or `person_with`), calls the same
domain services the API calls, and renders a template. Forms are posted with the session's token
(`csrf_protect`, on every console router); a refusal from a service is shown in the page, in words.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datazone.config import Settings
from datazone.console import messages
from datazone.console.service import Person, SignInRequired, check_csrf
from datazone.console.service import resume as resume_person
from datazone.deps import SessionDep, SettingsDep
from datazone.errors import DomainError, Forbidden

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
SHANGHAI = ZoneInfo("Asia/Shanghai")
LANG_COOKIE = "dz_lang"
# no inline script or style anywhere: every script and style is a file of the package
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def session_cookie(settings: Settings) -> str:
    # __Host-: the browser keeps it only from a secure origin, for this host and path / alone
    return "__Host-dz_session" if settings.console_secure_cookies else "dz_session"


def presession_cookie(settings: Settings) -> str:
    return "__Host-dz_form" if settings.console_secure_cookies else "dz_form"


def set_cookie(
    response: Response, settings: Settings, name: str, value: str, *, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.console_secure_cookies,
    )


def session_secret(request: Request, settings: Settings) -> str | None:
    return request.cookies.get(session_cookie(settings))


class ConsoleHeaders:
    """The content security policy and the other browser protections on every console answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [
                    (n, v)
                    for n, v in SECURITY_HEADERS
                    if n not in names and not (static and n == b"cache-control")
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def csrf_protect(request: Request, settings: SettingsDep) -> None:
    """Every form posted to the console carries the token of the session that showed it."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    # the sign-in form is posted before a session exists (or beside one that timed out): its token
    # belongs to a cookie of its own (double submit); every other form's to the session's secret
    if request.url.path == PREFIX + "/sign-in":
        secret = request.cookies.get(presession_cookie(settings))
    else:
        secret = session_secret(request, settings)
    form = await request.form()
    token = form.get("csrf")
    check_csrf(secret or "", token if isinstance(token, str) else None)


@dataclass(frozen=True)
class Viewer:
    """Who the page's header shows, copied out of the session's rows: a refusal page is rendered
    after its unit of work rolled back, when those rows can no longer be read."""

    login: str
    display_name: str
    principal_name: str
    kind: str
    roles: tuple[str, ...]
    csrf_token: str

    @classmethod
    def of(cls, person: Person) -> Viewer:
        return cls(
            person.account.login,
            person.account.display_name,
            person.principal.name,
            person.kind,
            tuple(person.account.roles),
            person.csrf_token,
        )

    def has_role(self, *roles: str) -> bool:
        return bool(set(roles) & set(self.roles))


def current_person(request: Request, session: SessionDep, settings: SettingsDep) -> Person:
    person = resume_person(session, secret=session_secret(request, settings), settings=settings)
    request.state.viewer = Viewer.of(person)
    return person


PersonDep = Annotated[Person, Depends(current_person)]


def person_with(kind: str, *roles: str) -> Callable[[Person], Person]:
    """A dependency: the signed-in person, who must act for a `kind` principal and hold one of `roles`."""

    def check(person: PersonDep) -> Person:
        if person.kind != kind:
            raise Forbidden(
                f"this page is for {kind} accounts; you sign in for {person.principal.name}", check="page"
            )
        if roles and not person.has_role(*roles):
            raise Forbidden(
                f"this page needs the role {' or '.join(roles)}; you hold {', '.join(person.account.roles)}",
                check="role",
            )
        return person

    return check


async def form_of(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(form_of)]


def field(form: FormData, name: str, *, default: str = "") -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else default


def fields(form: FormData, name: str) -> list[str]:
    return [v.strip() for v in form.getlist(name) if isinstance(v, str) and v.strip()]


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # a catalogue key
    roles: tuple[str, ...] = ()  # empty: everyone of the portal's kind


_NAV: dict[str, list[tuple[int, NavItem]]] = {}


def register_nav(kind: str, items: Iterable[NavItem], *, group: int = 0) -> None:
    """A portal names its pages in the menu (each page module calls this once, at import); a higher
    `group` comes later in the menu, whichever module was imported first."""
    entries = _NAV.setdefault(kind, [])
    known_paths = {item.path for _, item in entries}
    entries.extend((group, item) for item in items if item.path not in known_paths)
    entries.sort(key=lambda entry: entry[0])  # stable: a group keeps its own order


def nav_for(viewer: Viewer) -> list[NavItem]:
    return [item for _, item in _NAV.get(viewer.kind, []) if not item.roles or viewer.has_role(*item.roles)]


def language(request: Request) -> str:
    return messages.language_of(request.cookies.get(LANG_COOKIE))


def local_time(value: datetime | date | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time as people in the zone read it: Asia/Shanghai."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(SHANGHAI).strftime(fmt)
    return value.isoformat()


def yuan(fen: int | None) -> str:
    """Money is kept in fen; people read yuan."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def chart_data(data: Mapping[str, Any] | list[Any]) -> Markup:
    """A chart's data as a JSON block the page's script reads (not run: CSP allows no inline script)."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    # `</` cannot end the block early; & and < are escaped as JSON unicode escapes
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - JSON with <, > and & escaped


def safe_next(target: str | None, default: str = PREFIX) -> str:
    """Only a path of the console itself: a sign-in link cannot send a person elsewhere."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def render(
    request: Request, template: str, *, person: Person | None = None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    lang = language(request)

    def t(key: str, /, **values: Any) -> str:
        return messages.text(lang, key, **values)

    notice = request.query_params.get("notice")
    viewer: Viewer | None = (
        Viewer.of(person) if person is not None else getattr(request.state, "viewer", None)
    )
    csrf = context.pop("csrf", "")
    nav = nav_for(viewer) if viewer is not None else []
    response = templates.TemplateResponse(
        request,
        template,
        {
            "t": t,
            "lang": lang,
            "person": person,
            "viewer": viewer,
            "csrf": viewer.csrf_token if viewer is not None else csrf,
            "nav": nav,
            # the menu item this page belongs to: the longest path it lies under (a portal's home is
            # a prefix of all its pages)
            "current": max(
                (
                    i.path
                    for i in nav
                    if request.url.path == i.path or request.url.path.startswith(i.path + "/")
                ),
                key=len,
                default=None,
            ),
            "path": request.url.path,
            "here": quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe=""),
            # a notice is a catalogue key: a link cannot make the page say arbitrary words
            "notice": notice if notice and messages.known(notice) else None,
            "known": messages.known,
            "local_time": local_time,
            "yuan": yuan,
            "chart_data": chart_data,
            **context,
        },
        status_code=status_code,
    )
    return response


def done(path: str, notice: str, **params: str) -> RedirectResponse:
    """After a form: back to a page (303, so a reload does not post again), with a notice to show."""
    query = urlencode({"notice": notice, **params})
    return RedirectResponse(f"{path}?{query}", status_code=303)


def refusal_page(request: Request, exc: DomainError) -> Response:
    """A refusal on a console path, as a page: sign-in for a missing session, otherwise the words of the refusal."""
    if isinstance(exc, SignInRequired):
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{PREFIX}/sign-in?{urlencode({'next': target})}", status_code=303)
        request.state.viewer = None
    return render(request, "refused.html", status_code=exc.status, refusal=exc)
