"""`datazone plan ...`: the operator creates and lists price plans from the shell, through the
metering service the API calls (a plan is created `--as` an operator with the curator role; see
`datazone.shell`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone plan --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, AsJson, database, fail, out, reader

app = typer.Typer(no_args_is_help=True, help="price plans: create, list")


@app.command("create")
def create(
    plan_id: Annotated[str, typer.Argument(metavar="ID", help="a slug: a-z, 0-9 and '-'")],
    act_as: ActAs,
    name: Annotated[str, typer.Option("--name", help="what the institution sees, e.g. 标准版")],
    rate_per_second: Annotated[float, typer.Option("--rate", help="calls per second (the contract's rate limit)")],
    burst: Annotated[int, typer.Option("--burst", help="calls allowed at once above the rate")],
    institution: Annotated[
        str | None, typer.Option("--institution", help="a private plan for this institution (default: public)")
    ] = None,
    unit_price_fen: Annotated[
        int | None, typer.Option("--unit-price-fen", help="price of a unit (default: each product's own)")
    ] = None,
    free_units: Annotated[int, typer.Option("--free-units")] = 0,
    free_period: Annotated[str, typer.Option("--free-period", help="day or month")] = "day",
    quota_units: Annotated[int | None, typer.Option("--quota-units")] = None,
    quota_period: Annotated[str | None, typer.Option("--quota-period", help="day or month")] = None,
    monthly_cap_fen: Annotated[int | None, typer.Option("--monthly-cap-fen", help="spend cap a month")] = None,
) -> None:
    """Create a price plan: unit price, free units, quota, rate limit, monthly spend cap."""
    # here for start-up time (see the module docstring)
    from datazone.metering import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            by = principal_service.acting_principal(s, name=act_as)
            institution_id = (
                principal_service.named_principal(s, name=institution).id if institution is not None else None
            )
            plan = service.create_plan(
                s,
                plan_id=plan_id,
                name=name,
                institution_id=institution_id,
                free_units=free_units,
                free_period=free_period,
                unit_price_fen=unit_price_fen,
                monthly_cap_fen=monthly_cap_fen,
                quota_units=quota_units,
                quota_period=quota_period,
                rate_per_second=rate_per_second,
                burst=burst,
                by=by,
            )
            whose = f"private to {institution}" if institution is not None else "public"
            shown = f"plan {plan.id}: created ({whose})"
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(shown, highlight=False, soft_wrap=True)


@app.command("list")
def list_plans(
    institution: Annotated[
        str | None, typer.Option("--institution", help="the public plans and this institution's own")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Price plans: the public ones first, then each institution's own."""
    # here for start-up time (see the module docstring)
    from datazone.metering import service
    from datazone.metering.schemas import PlanOut
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution_id = (
                principal_service.named_principal(s, name=institution).id if institution is not None else None
            )
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            rows: list[dict[str, Any]] = [
                PlanOut.model_validate(p).model_dump(mode="json")
                for p in service.list_plans(s, viewer=reader(), institution_id=institution_id)
            ]
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return

    def maybe(value: object, unit: str = "") -> str:
        return "-" if value is None else f"{value}{unit}"

    t = Table("plan", "name", "institution", "unit price", "free", "quota", "rate/s", "burst", "monthly cap")
    for r in rows:
        t.add_row(
            r["id"],
            r["name"],
            names.get(r["institution_id"], "public") if r["institution_id"] is not None else "public",
            maybe(r["unit_price_fen"], " fen") if r["unit_price_fen"] is not None else "product's",
            f"{r['free_units']}/{r['free_period']}",
            f"{r['quota_units']}/{r['quota_period']}" if r["quota_units"] is not None else "-",
            str(r["rate_per_second"]),
            str(r["burst"]),
            maybe(r["monthly_cap_fen"], " fen"),
        )
    out.print(t)
