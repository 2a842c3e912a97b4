"""The root of the `datazone` command: it names every sub-command and loads the module of the
one being run only when it is run.

The sub-commands live next to what they drive (`datazone.cli` for datasets, departments,
ingest, principals and the processes; each domain's `cli.py` for its own), and those modules
import SQLAlchemy, the services and numpy. Loaded eagerly they made every `datazone --help`
take well over a second; loaded on demand, `--help` costs Typer and Rich alone.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

# Typer (0.29+) runs on its own copy of Click: its classes, not click's
from typer._click.core import Command, Context
from typer.core import TyperCommand, TyperGroup

from datazone.errors import DomainError

# sub-command groups: name -> (module, its Typer app, the one-line help shown by `datazone --help`)
GROUPS: dict[str, tuple[str, str, str]] = {
    "dataset": ("datazone.cli", "dataset_app", "dataset specs"),
    "department": ("datazone.cli", "department_app", "departments and other suppliers"),
    "ingest": ("datazone.cli", "ingest_app", "ingest runs"),
    "principal": ("datazone.cli", "principal_app", "operators, departments and institutions, and their keys"),
    "product": ("datazone.product.cli", "app", "data products: apply, list, publish, deprecate, retire"),
    "grant": ("datazone.grant.cli", "app", "departments' grants of their data: list, create, revoke"),
    "contract": ("datazone.contract.cli", "app", "institutions' contracts: sign, list, suspend, resume, terminate"),
    "plan": ("datazone.metering.cli", "app", "price plans: create, list"),
    "consent": ("datazone.consent.cli", "app", "institutions' enterprise consents: register from CSV, list, revoke"),
    "scoring": ("datazone.scoring.cli", "app", "secure scoring: review institutions' models"),
    "billing": ("datazone.billing.cli", "app", "the ledger: list entries, credit a charge"),
    "lifecycle": ("datazone.dataset.lifecycle_cli", "app", "data lifecycle: admission, evaluation, scorecards"),
    "audit": ("datazone.audit.cli", "app", "the audit trail: verify, seal, export roots"),
    "client": ("datazone.oauth.cli", "app", "institutions' OAuth2 clients"),
    "psi": ("datazone.psi.cli", "app", "private set intersection: key epochs and precomputed slices"),
    "zone": ("datazone.dataset.cli", "app", "zone tables' layout: native partitioning by enterprise"),
    "account": ("datazone.console.cli", "app", "people's console accounts: create, list, reset a second factor"),
}
# single commands of datazone.cli's own Typer app: name -> one-line help
COMMANDS: dict[str, str] = {
    "migrate": "Apply database migrations.",
    "serve": "Serve the gateway's HTTP API.",
    "worker": "Run the zone's heavy work: PSI, anonymous-query tables, scoring jobs.",
    "scheduler": "Run ingestion schedules (one such process per zone; a second one is harmless).",
    "demo": "Generate (or reuse) a synthetic zone, load it through the pipeline, and serve the gateway.",
}


def _load(name: str) -> Command | None:
    if name in GROUPS:
        module, attribute, _ = GROUPS[name]
        # mounted under a root of its own, as add_typer would: a group even with one command
        root = typer.Typer()
        root.add_typer(getattr(importlib.import_module(module), attribute), name=name)
        shell = typer.main.get_command(root)
    else:
        shell = typer.main.get_command(importlib.import_module("datazone.cli").app)
    assert isinstance(shell, TyperGroup)
    return shell.commands.get(name)


class LazyCommands(TyperGroup):
    """A Typer group whose sub-commands are imported when invoked; the help lists them from
    the names and one-liners above, importing nothing."""

    listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return [*GROUPS, *COMMANDS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if self.listing:
            short = GROUPS[cmd_name][2] if cmd_name in GROUPS else COMMANDS.get(cmd_name)
            return TyperCommand(cmd_name, help=short, short_help=short) if short is not None else None
        return _load(cmd_name)

    def format_help(self, ctx: Context, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    cls=LazyCommands,
    no_args_is_help=True,
    add_completion=False,
    help="datazone: the gateway of a public-data zone",
)


@app.callback()
def root() -> None:
    """datazone: the gateway of a public-data zone"""


def main() -> None:
    try:
        app()
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        sys.exit(2)
