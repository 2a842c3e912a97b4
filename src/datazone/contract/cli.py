"""`datazone contract ...`: the operator signs, lists, suspends, resumes and terminates
institutions' contracts from the shell, through the contract service the API calls (a change is
made `--as` an operator with the curator role; see `datazone.shell`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone contract --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, AsJson, Reason, database, fail, moment, now, out, reader, when

app = typer.Typer(no_args_is_help=True, help="institutions' contracts: sign, list, suspend, resume, terminate")


@app.command("create")
def create(
    act_as: ActAs,
    institution: Annotated[str, typer.Option("--institution", help="the institution principal's name")],
    product: Annotated[list[str], typer.Option("--product", help="a product it covers (repeat for more)")],
    purpose: Annotated[list[str], typer.Option("--purpose", help="a purpose it covers (repeat for more)")],
    valid_to: Annotated[
        datetime, typer.Option("--to", parser=moment, help="end: a date (midnight, Shanghai) or ISO 8601")
    ],
    valid_from: Annotated[
        datetime | None, typer.Option("--from", parser=moment, help="start (default: now)")
    ] = None,
    clearance: Annotated[int, typer.Option("--clearance", help="fields of grade <= this show in clear (1..4)")] = 2,
    plan: Annotated[str | None, typer.Option("--plan", help="a public plan or the institution's own")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="enterprises in one batch lookup")] = 1000,
    psi_max_set: Annotated[int | None, typer.Option("--psi-max-set")] = None,
    scoring_max_batch: Annotated[int | None, typer.Option("--scoring-max-batch")] = None,
) -> None:
    """Sign a contract with an institution for products and purposes over a period (under a plan)."""
    # here for start-up time (see the module docstring)
    from datazone.contract import service
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            by = principal_service.acting_principal(s, name=act_as)
            bank = principal_service.named_principal(s, name=institution)
            contract = service.create_contract(
                s,
                institution_id=bank.id,
                purposes=purpose,
                products=product,
                clearance=clearance,
                valid_from=valid_from or now(),
                valid_to=valid_to,
                max_batch=max_batch,
                psi_max_set=psi_max_set,
                scoring_max_batch=scoring_max_batch,
                plan_id=plan,
                by=by,
            )
            shown = f"contract {contract.id} with {institution}: {contract.status}, plan {contract.plan_id}, " + (
                f"{when(contract.valid_from)} to {when(contract.valid_to)}"
            )
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(shown, highlight=False, soft_wrap=True)


@app.command("list")
def list_contracts(
    institution: Annotated[str | None, typer.Option("--institution", help="one institution's")] = None,
    status: Annotated[str | None, typer.Option("--status", help="active, suspended or terminated")] = None,
    as_json: AsJson = False,
) -> None:
    """Contracts, oldest first."""
    # here for start-up time (see the module docstring)
    from datazone.contract import service
    from datazone.contract.schemas import ContractOut
    from datazone.principal import service as principal_service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution_id = None
            if institution is not None:
                institution_id = principal_service.named_principal(s, name=institution).id
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            rows: list[dict[str, Any]] = [
                ContractOut.model_validate(c).model_dump(mode="json")
                for c in service.list_contracts(s, viewer=reader(), institution_id=institution_id, status=status)
            ]
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    t = Table("contract", "institution", "status", "plan", "products", "purposes", "clearance", "valid")
    for r in rows:
        t.add_row(
            str(r["id"]),
            names.get(r["institution_id"], str(r["institution_id"])),
            r["status"] + (f" ({r['status_reason']})" if r["status_reason"] else ""),
            r["plan_id"],
            ", ".join(r["products"]),
            ", ".join(r["purposes"]),
            str(r["clearance"]),
            f"{r['valid_from'][:10]} – {r['valid_to'][:10]}",
        )
    out.print(t)


def _change(contract_id: int, act_as: str, reason: str, move: str) -> None:
    # here for start-up time (see the module docstring)
    from datazone.contract import service
    from datazone.principal import service as principal_service

    change = {
        "suspend": service.suspend_contract,
        "resume": service.resume_contract,
        "terminate": service.terminate_contract,
    }[move]
    db = database()
    try:
        with db.unit_of_work() as s:
            by = principal_service.acting_principal(s, name=act_as)
            status = change(s, contract_id=contract_id, by=by, reason=reason).status
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(f"contract {contract_id}: {status}", highlight=False)


@app.command("suspend")
def suspend(contract_id: Annotated[int, typer.Argument(metavar="ID")], act_as: ActAs, reason: Reason) -> None:
    """Suspend a contract: its calls are refused from the next one until it is resumed."""
    _change(contract_id, act_as, reason, "suspend")


@app.command("resume")
def resume(contract_id: Annotated[int, typer.Argument(metavar="ID")], act_as: ActAs, reason: Reason) -> None:
    """Resume a suspended contract."""
    _change(contract_id, act_as, reason, "resume")


@app.command("terminate")
def terminate(contract_id: Annotated[int, typer.Argument(metavar="ID")], act_as: ActAs, reason: Reason) -> None:
    """Terminate a contract for good."""
    _change(contract_id, act_as, reason, "terminate")
