"""`datazone zone ...`: the zone tables' layout, and native hash partitioning on the enterprise key.

The settings, the database and the services are imported in the commands that use them, for
start-up time (`datazone zone --help` loads none of them), not to dodge an import cycle.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, NoReturn

import typer

app = typer.Typer(no_args_is_help=True, help="zone tables: layout and native partitioning")


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _rebuild(datasets: list[str] | None, *, partitions: int | None, method: str) -> None:
    # imported here, as every command does, so `datazone --help` stays quick
    from datazone.config import get_settings
    from datazone.dataset import partitioning
    from datazone.dataset import service as dataset_service
    from datazone.db import Database
    from datazone.errors import DomainError
    from datazone.principal.service import shell_actor

    try:
        partitioning.check_choice(method=method, partitions=partitions)
        db = Database.from_settings(get_settings())
        with db.unit_of_work() as session:
            ids = datasets or [d.id for d in dataset_service.list_datasets(session)]
            for dataset_id in ids:  # every id exists before any table is touched
                dataset_service.get_dataset(session, dataset_id=dataset_id)
        # one transaction a table: each is rebuilt whole or not at all, and a large zone
        # does not hold every table's lock until the last one is done
        for dataset_id in ids:
            with db.unit_of_work() as session:
                done = partitioning.partition(
                    session,
                    dataset_id=dataset_id,
                    partitions=partitions,
                    method=method,
                    by_name=shell_actor(),
                )
            shape = f"{done.layout.partitions} hash partitions" if done.layout.partitions else "a plain table"
            print(
                f"zone.{dataset_id}: {done.outcome}, {shape} on {done.layout.entity_key}, {done.layout.rows:,} rows"
            )
    except DomainError as exc:
        _fail(exc.detail)


@app.command("partition")
def partition(
    partitions: Annotated[int, typer.Option("--partitions", help="how many hash partitions (2 to 256)")],
    by: Annotated[str, typer.Option("--by", help="the method: hash, on the enterprise key")] = "hash",
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="this dataset's table (repeatable); default: all")
    ] = None,
) -> None:
    """Rebuild zone tables as hash partitions on the enterprise key (undo with `unpartition`)."""
    _rebuild(dataset, partitions=partitions, method=by)


@app.command("unpartition")
def unpartition(
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="this dataset's table (repeatable); default: all")
    ] = None,
) -> None:
    """Rebuild partitioned zone tables as plain tables."""
    _rebuild(dataset, partitions=None, method="hash")


@app.command("layout")
def layout(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each zone table: its enterprise key, partitions and rows."""
    # here for start-up time (see the module docstring)
    from datazone.config import get_settings
    from datazone.dataset import partitioning
    from datazone.db import Database

    with Database.from_settings(get_settings()).unit_of_work() as session:
        tables = partitioning.layouts(session)
    if as_json:
        print(json.dumps([t.__dict__ for t in tables], indent=2))
        return
    for t in tables:
        shape = f"{t.partitions} hash partitions" if t.partitions else "plain"
        print(f"zone.{t.dataset_id:32} {shape:20} key {t.entity_key:12} {t.rows:>12,} rows")
