"""`datazone scoring ...`: the operator reviews institutions' scoring models from the shell
(list those pending, approve, reject, retire), through the scoring service the API calls (a
review is made `--as` an operator with the reviewer role; see `datazone.shell`).

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone scoring --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from datazone.errors import DomainError
from datazone.shell import ActAs, AsJson, Reason, database, fail, out

app = typer.Typer(no_args_is_help=True, help="secure scoring: review institutions' models")

ModelId = Annotated[str, typer.Argument(metavar="MODEL")]


@app.command("models")
def models(
    state: Annotated[
        str | None, typer.Option("--state", help="pending_review, approved, rejected or retired")
    ] = None,
    pending: Annotated[bool, typer.Option("--pending", help="only those waiting for review")] = False,
    institution: Annotated[str | None, typer.Option("--institution", help="one institution's")] = None,
    as_json: AsJson = False,
) -> None:
    """Scoring models, newest first: their product, purpose, kind and features (never a weight)."""
    # here for start-up time (see the module docstring)
    from datazone.principal import service as principal_service
    from datazone.scoring import service

    db = database()
    try:
        with db.unit_of_work() as s:
            institution_id = (
                principal_service.named_principal(s, name=institution).id if institution is not None else None
            )
            names = {p.id: p.name for p in principal_service.list_principals(s, kind="institution")}
            rows: list[dict[str, Any]] = [
                service.model_view(m)
                for m in service.list_models(
                    s, institution_id=institution_id, state="pending_review" if pending else state
                )
            ]
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    t = Table("model", "institution", "name", "product", "purpose", "kind", "features", "state", "registered")
    for r in rows:
        t.add_row(
            r["id"],
            names.get(r["institution_id"], str(r["institution_id"])),
            r["name"],
            r["product"],
            r["purpose"],
            r["kind"],
            ", ".join(f["name"] for f in r["features"]),
            r["state"] + (f" ({r['review_reason']})" if r["review_reason"] else ""),
            r["created_at"][:16],
        )
    out.print(t)


def _review(model_id: str, act_as: str, reason: str, decision: str) -> None:
    # here for start-up time (see the module docstring)
    from datazone.principal import service as principal_service
    from datazone.scoring import service

    db = database()
    try:
        with db.unit_of_work() as s:
            by = principal_service.acting_principal(s, name=act_as)
            if decision == "retire":
                state = service.retire_model(s, model_id=model_id, by=by, reason=reason).state
            else:
                state = service.review_model(s, model_id=model_id, by=by, decision=decision, reason=reason).state
    except DomainError as exc:
        raise fail(exc) from None
    finally:
        db.dispose()
    out.print(f"scoring model {model_id}: {state}", highlight=False)


@app.command("approve")
def approve(model_id: ModelId, act_as: ActAs, reason: Reason) -> None:
    """Approve a model pending review: it scores from now on."""
    _review(model_id, act_as, reason, "approve")


@app.command("reject")
def reject(model_id: ModelId, act_as: ActAs, reason: Reason) -> None:
    """Reject a model pending review: it never scores; the institution sees the reason."""
    _review(model_id, act_as, reason, "reject")


@app.command("retire")
def retire(model_id: ModelId, act_as: ActAs, reason: Reason) -> None:
    """Retire a model: it scores no more, and its jobs stop at their next chunk."""
    _review(model_id, act_as, reason, "retire")
