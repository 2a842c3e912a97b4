"""`datazone-client psi`: private set intersection of a list with a product's zone slice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from datazone.client.commands import common
from datazone.client.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    err,
    fail,
    out,
    progress_bar,
)
from datazone.client.commands.lists import institution_list
from datazone.client.enterprises import flatten
from datazone.client.errors import ConfigError, ZoneError, ZoneUnreachable
from datazone.client.psi import (
    EngineProtocol,
    PsiJobFailed,
    PsiMode,
    PsiStateError,
    default_state_path,
)
from datazone.client.sheets import InputFileError
from datazone.purposes import Purpose

app = typer.Typer()


@app.command()
def psi(
    ctx: typer.Context,
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="a .csv or .xlsx list of USCCs")],
    product: Annotated[str, typer.Option(help="the PSI product, e.g. dishonest-debtor-psi")],
    purpose: Annotated[Purpose, typer.Option(help="why the institution asks")],
    labeled: Annotated[
        bool, typer.Option("--labeled", help="also receive the product's fields for matched enterprises")
    ] = False,
    mode: Annotated[
        PsiMode, typer.Option(help="oprf: over HTTPS; engine: SecretFlow's engine; auto: by the list's size")
    ] = PsiMode.auto,
    peer: Annotated[
        str | None,
        typer.Option(help="host:port this machine's engine listens on, for the zone's worker (engine mode)"),
    ] = None,
    protocol: Annotated[
        EngineProtocol, typer.Option(help="the engine's protocol (engine mode)")
    ] = EngineProtocol.auto,
    column: Annotated[
        str | None, typer.Option(help="the USCC column's header (default: uscc or 统一社会信用代码)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="CSV to write: line, uscc, label fields (or the count)"),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(help="the resume state file (default: OUTPUT.psi-state.json, or next to INPUT)"),
    ] = None,
) -> None:
    """Private set intersection of a CSV or XLSX list with a product's zone slice.

    The zone never sees the list: every code is checked here first, then sent only blinded.
    After a dropped connection or an interrupted run, run the same command again: it
    continues where it stopped, and chunks already answered are not paid for twice."""
    if mode is PsiMode.engine and not peer:
        fail(
            EXIT_BAD_INPUT,
            "error: --mode engine needs --peer host:port, the address this machine's engine listens on"
            " and the zone's worker connects to",
        )
    listed = institution_list(input_file, column, once="joined once")
    state_path = state or default_state_path(output, input_file, product)
    try:
        with (
            common.zone_client(ctx) as zone,
            progress_bar() as bar,
        ):
            task = bar.add_task(f"PSI {product}", total=len(listed.codes))
            result = zone.psi(
                product,
                listed,
                purpose=purpose,
                mode=mode.value,
                labeled=labeled,
                output=output,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                state_path=state_path,
                peer_address=peer,
                protocol=protocol.value,
            )
    except PsiJobFailed as exc:
        fail(EXIT_REFUSED, f"failed: {exc.detail}")
    except ZoneUnreachable as exc:
        resume = (
            f"\nrun the same command again to continue (progress is kept in {state_path})"
            if state_path is not None and state_path.exists()
            else ""
        )
        fail(EXIT_REFUSED, f"refused: {exc}{resume}")
    except ZoneError as exc:
        fail(EXIT_REFUSED, f"refused: {exc}")
    except (ConfigError, PsiStateError, InputFileError, ValueError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    how = f"{result.mode}" + (f", {result.protocol}" if result.protocol else "")
    if result.from_receipt:
        how += f", as session {result.session_id} answered it before: nothing asked or charged again"
    elif result.resumed_chunks:
        how += f", continued after {result.resumed_chunks} chunks already answered"
    if result.result == "size":
        out.print(
            f"{result.size} of {result.items} enterprises are in {product}'s slice ({how})", markup=False
        )
    else:
        err.print(f"{result.size} of {result.items} enterprises matched ({how})", markup=False)
        if output is None:
            fields: dict[str, None] = {}
            flat = [dict(flatten(m.labels or {})) for m in result.matched]
            for labels in flat:
                fields.update(dict.fromkeys(labels))
            table = Table("line", "uscc", *fields)
            for match, labels in zip(result.matched, flat, strict=True):
                table.add_row(str(match.line), match.uscc, *(str(labels.get(f, "")) for f in fields))
            out.print(table)
    if output is not None:
        err.print(f"written to {output}", markup=False)
    if result.charged_fen:
        err.print(f"charged {result.charged_fen / 100:.2f} yuan", markup=False)
