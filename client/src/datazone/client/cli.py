"""`datazone-client`: try the zone's products from a shell.

Credentials come from DATAZONE_URL, DATAZONE_CLIENT_ID and DATAZONE_CLIENT_SECRET (or
DATAZONE_CLIENT_KEY_FILE), or from a profile file (`--profile NAME`); there is no option
for a secret, so none ends up in shell history or a process list.

Exit codes: 0 ok, 1 the gateway refused (the problem is printed) or could not be reached,
2 bad input (invalid USCCs, unreadable file or model, missing or unsafe settings), 130 a
batch score interrupted (run it again to continue the same job).

This module is the root only: the commands live in datazone.client.commands, one module per
family, and a module is imported when one of its commands runs. `--help` lists the commands
from SUBCOMMANDS without importing any (tests/client/test_cli.py checks that each summary is
its command's own), so it starts in a fraction of the time the SDK's imports take.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command


@dataclass
class Options:
    """The root command's options (`datazone-client --profile NAME ...`), kept in the click context."""

    profile: str | None = None


@dataclass(frozen=True)
class Subcommand:
    module: str  # the datazone.client.commands module whose Typer app defines it
    summary: str  # the first line of its help, shown by `datazone-client --help`


SUBCOMMANDS: dict[str, Subcommand] = {
    "products": Subcommand("datazone.client.commands.calls", "The products this client may call."),
    "lookup": Subcommand(
        "datazone.client.commands.calls",
        "One enterprise's answer from a product (or several, anonymously, with --anonymous).",
    ),
    "batch": Subcommand(
        "datazone.client.commands.calls",
        "Many enterprises from a CSV or XLSX list; every code is checked before anything is sent.",
    ),
    "psi": Subcommand(
        "datazone.client.commands.psi",
        "Private set intersection of a CSV or XLSX list with a product's zone slice.",
    ),
    "model": Subcommand(
        "datazone.client.commands.scoring",
        "Secure scoring models: a Paillier key, registration, review state.",
    ),
    "score": Subcommand(
        "datazone.client.commands.scoring",
        "Score enterprises with a registered model: one online (--uscc), or a list as a batch job.",
    ),
    "stats": Subcommand(
        "datazone.client.commands.stats",
        "WOE and IV of zone features against this bank's labels, which travel only encrypted.",
    ),
    "train": Subcommand(
        "datazone.client.commands.train",
        "Train a logistic model (or a WOE scorecard) with the zone: labels stay here, zone data there.",
    ),
    "token": Subcommand(
        "datazone.client.commands.calls",
        "Fetch an access token and show its scopes and expiry (the token itself only with --raw).",
    ),
}


# Typer builds on a copy of click it keeps private (typer._click), so the click objects below are
# typed Any rather than through that private module.
def load_subcommand(name: str) -> Any:
    """The real command: its module imported now, its Typer app turned into click's objects."""
    loaded = get_command(importlib.import_module(SUBCOMMANDS[name].module).app)
    # an app of one command is that command; an app of several, a group holding it
    command = loaded.get_command(typer.Context(loaded), name) if isinstance(loaded, TyperGroup) else loaded
    if command is None:
        raise LookupError(f"{SUBCOMMANDS[name].module} defines no command {name!r}")
    return command


class LazySubcommands(TyperGroup):
    """Lists SUBCOMMANDS by their summaries; imports a command's module only to run it (or its --help)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> TyperCommand | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        # a stand-in for the listing: the name and summary, nothing to run
        return TyperCommand(name=cmd_name, help=SUBCOMMANDS[cmd_name].summary)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name is None or command is None:
            return name, command, rest
        return name, load_subcommand(name), rest


app = typer.Typer(
    name="datazone-client",
    help="Call the public-data zone's products with this institution's OAuth client.",
    cls=LazySubcommands,
    no_args_is_help=True,
    add_completion=False,
    # locals of a crashed frame may hold the client secret: never print them
    pretty_exceptions_show_locals=False,
)


@app.callback()
def options(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            help="profile name in the profile file (DATAZONE_PROFILE, default ~/.config/datazone/client.toml)"
        ),
    ] = None,
) -> None:
    ctx.obj = Options(profile=profile)


def main() -> None:
    app(prog_name="datazone-client")


if __name__ == "__main__":
    main()
