"""`datazone-client`: try the zone's products from a shell.

Credentials come from DATAZONE_URL, DATAZONE_CLIENT_ID and DATAZONE_CLIENT_SECRET (or
DATAZONE_CLIENT_KEY_FILE), or from a profile file (`--profile NAME`); there is no option
for a secret, so none ends up in shell history or a process list.

Exit codes: 0 ok, 1 the gateway refused (the problem is printed) or could not be reached,
2 bad input (invalid USCCs, unreadable file, missing or unsafe settings).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datazone.client.enterprises import find_invalid, flatten
from datazone.client.errors import ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.psi import (
    EngineProtocol,
    InvalidListedUSCCs,
    PsiJobFailed,
    PsiMode,
    PsiStateError,
    default_state_path,
    read_institution_list,
)
from datazone.client.sdk import ZoneClient
from datazone.client.sheets import InputFileError, read_listed_codes, write_results
from datazone.purposes import Purpose

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
SHANGHAI = ZoneInfo("Asia/Shanghai")

app = typer.Typer(
    name="datazone-client",
    help="Call the public-data zone's products with this institution's OAuth client.",
    no_args_is_help=True,
    add_completion=False,
    # locals of a crashed frame may hold the client secret: never print them
    pretty_exceptions_show_locals=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class Options:
    profile: str | None = None


def _fail(code: int, message: str) -> NoReturn:
    err.print(message, markup=False)
    raise typer.Exit(code)


@contextmanager
def _exit_codes() -> Iterator[None]:
    try:
        yield
    except ZoneError as exc:
        _fail(EXIT_REFUSED, f"refused: {exc}")
    except (ConfigError, InvalidUSCCs, InputFileError) as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")


def _client(ctx: typer.Context) -> ZoneClient:
    options: Options = ctx.obj or Options()
    return ZoneClient(profile=options.profile)


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


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, ensure_ascii=False, default=str))


@app.command()
def products(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the catalog entries as JSON")] = False,
) -> None:
    """The products this client may call."""
    with _exit_codes(), _client(ctx) as zone:
        entries = zone.products()
    if as_json:
        _print_json(entries)
        return
    table = Table("id", "name", "tier", "price (yuan/call)", "purposes", "consent")
    for p in entries:
        price = p.get("price_fen")
        table.add_row(
            str(p.get("id", "")),
            str(p.get("name", "")),
            str(p.get("tier", "")),
            f"{price / 100:.2f}" if isinstance(price, int) else "",
            ", ".join(map(str, p.get("purposes", []))),
            "required" if p.get("consent_required") else "",
        )
    out.print(table)


@app.command()
def lookup(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product id, e.g. credit-basic")],
    uscc: Annotated[str, typer.Argument(help="the enterprise's unified social credit code")],
    purpose: Annotated[Purpose, typer.Option(help="why the institution asks")],
    as_json: Annotated[bool, typer.Option("--json", help="print the whole answer as JSON")] = False,
) -> None:
    """One enterprise's answer from a product."""
    bad = find_invalid([uscc])
    if bad:
        _fail(EXIT_BAD_INPUT, f"error: {uscc!r} is not a valid USCC: {bad[0].reason}")
    with _exit_codes(), _client(ctx) as zone:
        answer = zone.lookup(product, uscc, purpose=purpose)
    if as_json:
        _print_json(answer)
        return
    served = answer.get("product", {})
    masking = answer.get("masking", {})
    out.print(
        f"{served.get('id', product)} · {answer.get('uscc', uscc)} · purpose {purpose.value}"
        f" · as of {answer.get('as_of', '?')} · data versions {answer.get('data_versions', {})}"
        f" · masking clearance {masking.get('clearance', '?')}",
        markup=False,
    )
    table = Table("field", "value", "masking")
    fields = masking.get("fields", {}) if isinstance(masking, dict) else {}
    for name, value in flatten(answer.get("answer") or {}):
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
        table.add_row(name, shown, str(fields.get(name.split(".")[0], "")))
    out.print(table)


@app.command()
def batch(
    ctx: typer.Context,
    product: Annotated[str, typer.Argument(help="product id, e.g. risk-insight")],
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="a .csv or .xlsx list of USCCs")],
    purpose: Annotated[Purpose, typer.Option(help="why the institution asks")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write, one row per enterprise")],
    column: Annotated[
        str | None, typer.Option(help="the USCC column's header (default: uscc or 统一社会信用代码)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, max=1000, help="USCCs per call")] = 1000,
) -> None:
    """Many enterprises from a CSV or XLSX list; every code is checked before anything is sent."""
    with _exit_codes():
        listed = read_listed_codes(input_file, column)
    problems = [(item.line, item.code, item.problem) for item in listed if item.problem]
    by_position = find_invalid([item.code for item in listed])
    problems += [
        (listed[b.position].line, b.code, b.reason) for b in by_position if not listed[b.position].problem
    ]
    if problems:
        problems.sort()
        lines = "\n".join(f"  line {line}: {code!r}: {why}" for line, code, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        _fail(
            EXIT_BAD_INPUT,
            f"error: {len(problems)} of {len(listed)} USCCs in {input_file} are invalid; nothing was sent:\n{lines}{more}",
        )
    if not listed:
        _fail(EXIT_BAD_INPUT, f"error: {input_file} lists no USCCs")
    codes = [item.code for item in listed]
    results: list[dict[str, Any]] = []
    refused: ZoneError | None = None
    with (
        _exit_codes(),
        _client(ctx) as zone,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=not err.is_terminal,
        ) as bar,
    ):
        task = bar.add_task(product, total=len(set(c.strip().upper() for c in codes)))
        try:
            for result in zone.batch(
                product,
                codes,
                purpose=purpose,
                chunk_size=chunk_size,
                progress=lambda done, total: bar.update(task, completed=done),
            ):
                results.append(result)
        except ZoneError as exc:
            refused = exc  # answers already paid for are still written below
    written = write_results(output, results) if results or refused is None else 0
    found = sum(1 for r in results if r.get("found"))
    if refused is not None:
        _fail(
            EXIT_REFUSED,
            f"refused: {refused}\n{written} enterprises answered before the refusal"
            + (f" are in {output}" if written else "; nothing written"),
        )
    err.print(f"{written} enterprises ({found} found) written to {output}", markup=False)


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
        _fail(
            EXIT_BAD_INPUT,
            "error: --mode engine needs --peer host:port, the address this machine's engine listens on"
            " and the zone's worker connects to",
        )
    try:
        listed = read_institution_list(input_file, column)
    except InvalidListedUSCCs as exc:
        problems = exc.problems
        lines = "\n".join(f"  line {line}: {why}" for line, why in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        _fail(
            EXIT_BAD_INPUT,
            f"error: {len(problems)} USCCs in {input_file} are invalid; nothing was sent:\n{lines}{more}",
        )
    except InputFileError as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")
    if listed.duplicates:
        shown = ", ".join(f"line {d.line} repeats line {d.first_line}" for d in listed.duplicates[:10])
        more = f", and {len(listed.duplicates) - 10} more" if len(listed.duplicates) > 10 else ""
        err.print(f"note: {len(listed.duplicates)} duplicate USCCs joined once ({shown}{more})", markup=False)
    state_path = state or default_state_path(output, input_file, product)
    try:
        with (
            _client(ctx) as zone,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=not err.is_terminal,
            ) as bar,
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
        _fail(EXIT_REFUSED, f"failed: {exc.detail}")
    except ZoneUnreachable as exc:
        resume = (
            f"\nrun the same command again to continue (progress is kept in {state_path})"
            if state_path is not None and state_path.exists()
            else ""
        )
        _fail(EXIT_REFUSED, f"refused: {exc}{resume}")
    except ZoneError as exc:
        _fail(EXIT_REFUSED, f"refused: {exc}")
    except (ConfigError, PsiStateError, InputFileError, ValueError) as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")
    how = f"{result.mode}" + (f", {result.protocol}" if result.protocol else "")
    if result.resumed_chunks:
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


@app.command()
def token(
    ctx: typer.Context,
    raw: Annotated[bool, typer.Option("--raw", help="print the access token itself (for curl)")] = False,
) -> None:
    """Fetch an access token and show its scopes and expiry (the token itself only with --raw)."""
    with _exit_codes(), _client(ctx) as zone:
        access = zone.token()
        client_id = zone.config.client_id
    if raw:
        sys.stdout.write(access.value + "\n")
        return
    claims = access.claims()
    expires = access.expires_at
    left = max(0, int((expires - datetime.now(UTC)).total_seconds()))
    table = Table("", "", show_header=False, box=None)
    table.add_row("client", client_id)
    if "institution_id" in claims:
        table.add_row("institution", str(claims["institution_id"]))
    table.add_row("scopes", "\n".join(access.scopes) or "(none)")
    table.add_row("expires", f"{expires.astimezone(SHANGHAI):%Y-%m-%d %H:%M:%S} Asia/Shanghai (in {left} s)")
    for claim in ("iss", "aud", "jti"):
        if claim in claims:
            table.add_row(claim, str(claims[claim]))
    out.print(table)


def main() -> None:
    app(prog_name="datazone-client")


if __name__ == "__main__":
    main()
