"""`datazone grant ...`: the operator's view of departments' grants from the shell.

The settings, the database and the grant service are imported in the command that uses them,
for start-up time (`datazone grant --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="departments' grants of their data")
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
