"""`datazone grant ...`: departments' grants from the shell: the operator's view of them, and a
department's grant created or revoked through the grant service the API calls (`--as` the
department's principal, whose data it is; see `datazone.shell`).

The settings, the database and the grant service are imported in the command that uses them,
for start-up time (`datazone grant --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, Reason, database, fail, moment, now, when

app = typer.Typer(no_args_is_help=True, help="departments' grants of their data: list, create, revoke")
out = Console()


@app.command("list")
def list_grants(
    department: Annotated[str | None, typer.Option("--department", help="one department's grants")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset")] = None,
    live: Annotated[bool, typer.Option("--live", help="only grants in force now")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List grants, newest first."""
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database
    from datazone.grant import service
    from datazone.grant.schemas import GrantOut
    from datazone.principal.models import Principal

    # the shell is the operator's: it reads every grant, as an auditor would
    operator_shell = Principal(id=0, kind="operator", name="cli", roles=["auditor"])
    db = Database.from_settings(get_settings())
    with db.unit_of_work() as s:
        rows = []
        for g in service.list_grants(
            s, viewer=operator_shell, department=department, dataset=dataset, live=True if live else None
        ):
            row = GrantOut.model_validate(g)
            row.status = service.grant_status(g)
            rows.append(row.model_dump(mode="json"))
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    t = Table("grant", "department", "datasets", "purposes", "products", "institutions", "valid", "status")
    for r in rows:
        t.add_row(
            r["id"],
            r["department"],
            ", ".join(r["datasets"]),
            ", ".join(r["purposes"]),
            ", ".join(r["products"]) if r["products"] is not None else "any",
            ", ".join(str(i) for i in r["institutions"]) if r["institutions"] is not None else "all",
            f"{r['valid_from'][:10]} – {r['valid_to'][:10]}",
            r["status"],
        )
    out.print(t)


@app.command("create")
def create(
    act_as: ActAs,
    dataset: Annotated[list[str], typer.Option("--dataset", help="one of the department's datasets (repeat)")],
    purpose: Annotated[list[str], typer.Option("--purpose", help="a purpose it may be used for (repeat)")],
    valid_to: Annotated[
        datetime, typer.Option("--to", parser=moment, help="end: a date (midnight, Shanghai) or ISO 8601")
    ],
    valid_from: Annotated[
        datetime | None, typer.Option("--from", parser=moment, help="start (default: now)")
    ] = None,
    product: Annotated[
        list[str] | None, typer.Option("--product", help="a product it covers (repeat; default: any)")
    ] = None,
    institution: Annotated[
        list[str] | None, typer.Option("--institution", help="an institution it covers by name (repeat; default: all)")
    ] = None,
) -> None:
    """Grant the use of a department's datasets for purposes, products and institutions over a period."""
    # here for start-up time (see the module docstring)
    from datazone.grant import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            department = principal_service.acting_principal(s, name=act_as)
            institutions = (
                [principal_service.named_principal(s, name=n).id for n in institution] if institution else None
            )
            grant = service.create_grant(
                s,
                department=department.supplier_id or "",
                datasets=dataset,
                purposes=purpose,
                products=product or None,
                institutions=institutions,
                valid_from=valid_from or now(),
                valid_to=valid_to,
                by=department,
            )
            shown = (
                f"grant {grant.id} of {grant.department}: {service.grant_status(grant)}, "
                f"{when(grant.valid_from)} to {when(grant.valid_to)}"
            )
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(shown, highlight=False, soft_wrap=True)


@app.command("revoke")
def revoke(grant_id: Annotated[str, typer.Argument(metavar="ID")], act_as: ActAs, reason: Reason) -> None:
    """Revoke a department's grant: calls it covered are refused from the next one."""
    # here for start-up time (see the module docstring)
    from datazone.grant import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            department = principal_service.acting_principal(s, name=act_as)
            service.revoke_grant(s, grant_id=grant_id, by=department, reason=reason)
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(f"grant {grant_id}: revoked", highlight=False)
