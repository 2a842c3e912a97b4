"""What the operator's domain commands share (`datazone contract|plan|consent|scoring|billing`,
`datazone grant create|revoke`): the database, the principal a change is made as, times typed at
the shell, and how a refusal is printed.

A change is made as a named principal (`--as NAME`), passed to the same service function the
API calls with that principal's key: the service checks its kind and roles and writes the same
audit entry, naming it. Reading needs no `--as`: the shell reads as the operator's auditor does.

Light at import (Typer and Rich): the settings, the database and the models are imported in
the functions that use them, for start-up time (every `--help` loads none of them).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from datazone.errors import DomainError

if TYPE_CHECKING:
    from datazone.db import Database
    from datazone.principal.models import Principal

# the zone's calendar: a date typed alone starts at its midnight here (as the API's date bounds do)
SHANGHAI = ZoneInfo("Asia/Shanghai")

out = Console()
err = Console(stderr=True)

ActAs = Annotated[
    str,
    typer.Option(
        "--as",
        metavar="PRINCIPAL",
        help="the principal this change is made as (its kind and roles are checked, and the audit names it)",
    ),
]
Reason = Annotated[str, typer.Option("--reason", help="why: recorded with the change and in the audit trail")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def database() -> Database:
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database

    return Database.from_settings(get_settings())


def reader() -> Principal:
    """Who the shell reads as: the operator's auditor, who sees every institution's records.
    A transient object, never stored (the shell holds the database credentials anyway)."""
    # here for start-up time (see the module docstring)
    from datazone.principal.models import Principal
    from datazone.principal.service import shell_actor

    return Principal(id=0, kind="operator", name=shell_actor(), roles=["auditor"])


def fail(exc: DomainError) -> typer.Exit:
    """Print a service's refusal, each listed problem on its own line; the command exits 2."""
    say(f"error: {exc.detail}")
    for e in exc.errors:
        say(f"  {e.get('location', '')}: {e.get('problem', '')}")
    return typer.Exit(2)


def say(text: str) -> None:
    """One line on stderr, as written: no markup, no wrapping (scripts and tests read it)."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def moment(text: str) -> datetime:
    """A time typed at the shell: ISO 8601 (with its offset; one without is passed on for the
    service to refuse with its own words), a date alone (its midnight in Shanghai), or `now`."""
    text = text.strip()
    if text == "now":
        return now()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.combine(date.fromisoformat(text), time(), SHANGHAI)
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a time: give a date (2027-01-01, midnight in Shanghai) or ISO 8601 "
            "with an offset (2027-01-01T09:00:00+08:00)"
        ) from None


def now() -> datetime:
    return datetime.now(SHANGHAI)


def when(value: datetime | None) -> str:
    """A stored time for a table: minutes, in Shanghai."""
    return f"{value.astimezone(SHANGHAI):%Y-%m-%d %H:%M}" if value is not None else ""
