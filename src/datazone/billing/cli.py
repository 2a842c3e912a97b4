"""`datazone billing ...`: the operator reads the ledger and credits a charge from the shell,
through the billing service the API calls (a credit is made `--as` an operator with the curator
role; see `datazone.shell`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone billing --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, AsJson, Reason, database, fail, out, reader, when

app = typer.Typer(no_args_is_help=True, help="the ledger: list entries, credit a charge")


@app.command("ledger")
def ledger(
    institution: Annotated[str | None, typer.Option("--institution", help="one institution's")] = None,
    period: Annotated[str | None, typer.Option("--period", help="one month, YYYY-MM (Shanghai)")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 1000,
    as_json: AsJson = False,
) -> None:
    """Ledger entries (debits and credits), oldest first."""
    # here for start-up time (see the module docstring)
    from datazone.billing import service
    from datazone.billing.schemas import LedgerEntryOut
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution_id = (
                principal_service.named_principal(s, name=institution).id if institution is not None else None
            )
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            rows = [
                LedgerEntryOut.model_validate(e)
                for e in service.list_entries(
                    s, viewer=reader(), period=period, institution_id=institution_id, limit=limit
                )
            ]
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], ensure_ascii=False, indent=2))
        return
    t = Table("entry", "institution", "kind", "fen", "period", "product", "units", "reverses", "at", "memo")
    for r in rows:
        t.add_row(
            str(r.id),
            names.get(r.institution_id, str(r.institution_id)),
            r.kind,
            str(r.amount_fen),
            r.period,
            r.product_id or "",
            str(r.usage_count),
            str(r.reverses_id or ""),
            when(r.at),
            r.memo,
        )
    out.print(t)


@app.command("credit")
def credit(
    entry_id: Annotated[int, typer.Argument(metavar="DEBIT", help="the ledger debit to reverse")],
    act_as: ActAs,
    reason: Reason,
    amount_fen: Annotated[
        int | None, typer.Option("--amount-fen", help="part of it (default: all that remains)")
    ] = None,
) -> None:
    """Reverse a debit, wholly or in part: the credit nets its month's statement and spend cap."""
    # here for start-up time (see the module docstring)
    from datazone.billing import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            by = principal_service.acting_principal(s, name=act_as)
            entry = service.credit_entry(s, debit_id=entry_id, amount_fen=amount_fen, reason=reason, by=by)
            shown = f"ledger entry {entry.id}: credit of {entry.amount_fen} fen against debit {entry_id}"
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(shown, highlight=False)
