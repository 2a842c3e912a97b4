"""`datazone lifecycle ...`: evaluate quality, admit a dataset, print a supplier's scorecard.

The commands drive dataset evaluation and admission (here, in dataset/) and the supplier
scorecard (supplier/scorecard.py); the group keeps its name from before they moved there.

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone lifecycle --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from datazone.errors import DomainError

if TYPE_CHECKING:
    from datazone.db import Database

app = typer.Typer(no_args_is_help=True, help="data lifecycle: admission, evaluation, scorecards")
out = Console()
err = Console(stderr=True)


def _db() -> Database:
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.db import Database

    return Database.from_settings(get_settings())


def _shell_actor() -> str:
    from datazone.principal.service import shell_actor  # here for start-up time

    return shell_actor()


def _fail(exc: DomainError) -> typer.Exit:
    err.print(f"error: {exc.detail}", highlight=False, markup=False)
    for e in exc.errors:
        err.print(f"  {e.get('location', '')}: {e.get('problem', '')}", highlight=False, markup=False)
    return typer.Exit(2)



@app.command("evaluate")
def evaluate(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compute quality figures for new dataset versions and refresh timeliness (the scheduler does this hourly)."""
    # here for start-up time (see the module docstring)
    from datazone.dataset import evaluation

    with _db().unit_of_work() as s:
        result = evaluation.evaluate_datasets(s, now=datetime.now(UTC))
    if as_json:
        print(json.dumps({"evaluated": result.evaluated, "refreshed": result.refreshed}))
        return
    out.print(
        f"evaluated {len(result.evaluated)} new versions, refreshed timeliness of {len(result.refreshed)}"
    )
    for dataset_id, version in result.evaluated:
        out.print(f"  {dataset_id} v{version}", highlight=False)


@app.command("admit-dataset")
def admit_dataset(
    dataset: str,
    reason: Annotated[str, typer.Option("--reason", help="why it is admitted: recorded with the transition")],
    override: Annotated[
        bool, typer.Option("--override", help="admit although the sample quality check fails")
    ] = False,
    run: Annotated[
        int | None, typer.Option("--run", help="review the version this ingest run brought")
    ] = None,
) -> None:
    """Review a dataset's latest version and admit it (intake or under_review -> admitted)."""
    # here for start-up time (see the module docstring)
    from datazone.dataset import admission

    try:
        with _db().unit_of_work() as s:
            review = admission.review_dataset(
                s,
                dataset_id=dataset,
                decision="admit",
                by=None,
                by_name=_shell_actor(),
                reason=reason,
                override=override,
                run_id=run,
            )
            figures: dict[str, Any] = review.figures
            passed, overridden = review.passed, review.override
    except DomainError as exc:
        raise _fail(exc) from None
    how = "sample passed" if passed else ("sample failed; admitted by override" if overridden else "")
    out.print(f"dataset {dataset}: admitted (version {figures.get('version')}, {how})", highlight=False)


@app.command("scorecard")
def scorecard(
    supplier: str,
    days: Annotated[int, typer.Option("--days", min=1, help="the period: this many days up to now")] = 30,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A supplier's scorecard over the last DAYS days."""
    # here for start-up time (see the module docstring)
    from datazone.supplier import scorecard as supplier_scorecard

    until = datetime.now(UTC)
    try:
        with _db().unit_of_work() as s:
            card = supplier_scorecard.supplier_scorecard(
                s, supplier_id=supplier, since=until - timedelta(days=days), until=until
            )
    except DomainError as exc:
        raise _fail(exc) from None
    data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(card).items()}
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    t = Table("figure", "value", title=f"scorecard of {supplier} ({days} days)")
    for k, v in data.items():
        t.add_row(k, "-" if v is None else str(v))
    out.print(t)
