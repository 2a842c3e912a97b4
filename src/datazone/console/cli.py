"""`datazone account ...`: people's console accounts from the operator's shell.

The shell creates the first operator's account; after that the console's people page does the
same through the same service. The settings, the database and the service are imported in the
command that uses them, for start-up time (as in the other domains' cli.py), not to dodge a cycle.
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="people's console accounts: create, list, reset a second factor")
out = Console()


@app.command("create")
def create(
    acts_for: Annotated[str, typer.Option("--for", help="the principal the person acts for (its name)")],
    login: Annotated[str, typer.Option("--login", help="3 to 64 of a-z, 0-9, '.', '_', '-'")],
    name: Annotated[str, typer.Option("--name", help="the person's name, as pages show it")],
    roles: Annotated[
        list[str],
        typer.Option(
            "--role", help="repeat for several: curator, reviewer, auditor; officer; admin, analyst"
        ),
    ],
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="read the initial password from "
            "standard input; without it one is generated and printed once",
        ),
    ] = False,
) -> None:
    """Create a person's account. Operator and department people set up their second factor at first sign-in."""
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.console import service
    from datazone.db import Database
    from datazone.errors import DomainError
    from datazone.principal.service import shell_actor

    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(15)
    db = Database.from_settings(get_settings())
    try:
        with db.unit_of_work() as s:
            account = service.create_account(
                s,
                principal_name=acts_for,
                login=login,
                display_name=name,
                roles=roles,
                password=password,
                created_by=shell_actor(),
            )
            login = account.login
    except DomainError as exc:
        out.print(f"[red]refused:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    out.print(f"account [bold]{login}[/bold] created for {acts_for}")
    if not password_stdin:
        # shown once; only its Argon2id hash is kept
        out.print(f"initial password (shown once): [bold]{password}[/bold]")


@app.command("list")
def list_accounts(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every account, with its principal, roles and state."""
    from datazone.config import get_settings
    from datazone.console import service
    from datazone.db import Database
    from datazone.principal.models import Principal

    operator_shell = Principal(id=0, kind="operator", name="cli", roles=["reviewer"])
    db = Database.from_settings(get_settings())
    with db.unit_of_work() as s:
        rows: list[dict[str, Any]] = [
            {
                "login": a.login,
                "name": a.display_name,
                "for": p.name,
                "kind": p.kind,
                "roles": a.roles,
                "second_factor": a.totp_confirmed_at is not None,
                "locked_until": a.locked_until.isoformat() if a.locked_until else None,
                "disabled": a.disabled_at is not None,
            }
            for a, p in service.list_accounts(s, viewer=operator_shell)
        ]
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("login", "name", "for", "roles", "second factor", "state")
    for r in rows:
        state = (
            "disabled"
            if r["disabled"]
            else (f"locked until {r['locked_until']}" if r["locked_until"] else "active")
        )
        table.add_row(
            r["login"],
            r["name"],
            f"{r['for']} ({r['kind']})",
            ", ".join(r["roles"]),
            "yes" if r["second_factor"] else "no",
            state,
        )
    out.print(table)


def _manage(login: str, what: str) -> None:
    from datazone.config import get_settings
    from datazone.console import service
    from datazone.db import Database
    from datazone.errors import DomainError

    db = Database.from_settings(get_settings())
    try:
        with db.unit_of_work() as s:
            if what == "reset":
                service.reset_second_factor(s, login=login, by=None)
            elif what == "unlock":
                service.unlock(s, login=login, by=None)
            else:
                service.set_disabled(s, login=login, disabled=what == "disable", by=None)
    except DomainError as exc:
        out.print(f"[red]refused:[/red] {exc.detail}")
        raise typer.Exit(1) from None


@app.command("reset-second-factor")
def reset_second_factor(login: str) -> None:
    """Clear a person's second factor: they set up a new one at their next sign-in; their sessions end."""
    _manage(login, "reset")
    out.print(f"second factor of {login} reset; they set up a new one at their next sign-in")


@app.command("unlock")
def unlock(login: str) -> None:
    """Lift a lock-out after repeated failed sign-ins."""
    _manage(login, "unlock")
    out.print(f"{login} unlocked")


@app.command("disable")
def disable(login: str) -> None:
    """Disable an account: its sessions end and it cannot sign in."""
    _manage(login, "disable")
    out.print(f"{login} disabled")


@app.command("enable")
def enable(login: str) -> None:
    _manage(login, "enable")
    out.print(f"{login} enabled")
