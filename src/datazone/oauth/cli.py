"""`datazone client ...`: the operator registers, lists and revokes institutions' OAuth clients.

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone client --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datazone.errors import DomainError

app = typer.Typer(no_args_is_help=True, help="institutions' OAuth2 clients")
out = Console()
err = Console(stderr=True)


def _fail(e: DomainError) -> typer.Exit:
    err.print(f"[red]error:[/red] {e.detail}")
    for item in e.errors:
        err.print(f"  - {item.get('location')}: {item.get('problem')}")
    return typer.Exit(2)


@app.command("create")
def create(
    institution: Annotated[str, typer.Option("--institution", help="the institution principal's name")],
    name: Annotated[str, typer.Option("--name", help="the application, e.g. loan-origination")] = "default",
    auth: Annotated[
        str, typer.Option("--auth", help="client_secret_basic (default) or private_key_jwt")
    ] = "client_secret_basic",
    jwks_file: Annotated[
        Path | None,
        typer.Option("--jwks", help="a JSON file with the client's PUBLIC keys (private_key_jwt)"),
    ] = None,
) -> None:
    """Register a client; its client_secret is printed this once and never stored."""
    jwks: dict[str, Any] | None = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as e:
            err.print(f"[red]error:[/red] cannot read {jwks_file} as JSON: {e}")
            raise typer.Exit(2) from e
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database
    from datazone.oauth import service
    from datazone.principal import service as principal_service

    db = Database.from_settings(get_settings())
    try:
        with db.unit_of_work() as s:
            principal = principal_service.find_principal(s, name=institution)
            if principal is None:
                err.print(f"[red]error:[/red] no principal named {institution!r}; `datazone principal list`")
                raise typer.Exit(2)
            client, secret = service.create_client(
                s,
                institution_id=principal.id,
                name=name,
                auth_method=auth,
                jwks=jwks,
                by_name=principal_service.shell_actor(),
            )
            client_id = client.client_id
    except DomainError as e:
        raise _fail(e) from e
    finally:
        db.dispose()
    print(f"client_id={client_id}")
    if secret is not None:
        print(f"client_secret={secret}")
        err.print("keep the secret now: only its hash is stored, it cannot be shown again")


@app.command("list")
def list_clients(
    institution: Annotated[str | None, typer.Option("--institution")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every client (or one institution's), oldest first."""
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database
    from datazone.oauth import service
    from datazone.oauth.schemas import ClientOut
    from datazone.principal import service as principal_service

    db = Database.from_settings(get_settings())
    try:
        with db.unit_of_work() as s:
            rows = service.list_clients(s, viewer=None)
            if institution is not None:
                principal = principal_service.find_principal(s, name=institution)
                rows = [r for r in rows if principal is not None and r.institution_id == principal.id]
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            data = [ClientOut.model_validate(r).model_dump(mode="json") for r in rows]
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    t = Table("client_id", "institution", "name", "auth", "created", "revoked")
    for r in data:
        t.add_row(
            r["client_id"],
            names.get(r["institution_id"], str(r["institution_id"])),
            r["name"],
            r["token_endpoint_auth_method"],
            r["created_at"][:19],
            (r["revoked_at"] or "")[:19],
        )
    out.print(t)


@app.command("revoke")
def revoke(
    client_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="why, for the audit trail")] = None,
) -> None:
    """Revoke a client: its tokens are refused from the next request."""
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database
    from datazone.oauth import service
    from datazone.principal import service as principal_service

    db = Database.from_settings(get_settings())
    try:
        with db.unit_of_work() as s:
            service.revoke_client(
                s, client_id=client_id, by_name=principal_service.shell_actor(), reason=reason
            )
    except DomainError as e:
        raise _fail(e) from e
    finally:
        db.dispose()
    print(f"revoked {client_id}")
