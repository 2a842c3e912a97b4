"""Calls over HTTP: the catalog, one lookup (or an anonymous one), a batch, the access token."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from datazone.client.commands import common
from datazone.client.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    SHANGHAI,
    UTC,
    err,
    exit_codes,
    fail,
    out,
    print_json,
    progress_bar,
)
from datazone.client.enterprises import find_invalid, flatten
from datazone.client.errors import ZoneError
from datazone.client.sheets import read_listed_codes, write_results
from datazone.purposes import Purpose

app = typer.Typer()


@app.command()
def products(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print the catalog entries as JSON")] = False,
) -> None:
    """The products this client may call."""
    with exit_codes(), common.zone_client(ctx) as zone:
        entries = zone.products()
    if as_json:
        print_json(entries)
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
    usccs: Annotated[
        list[str],
        typer.Argument(
            metavar="USCC", help="the enterprise's unified social credit code (several with --anonymous)"
        ),
    ],
    purpose: Annotated[Purpose, typer.Option(help="why the institution asks")],
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="anonymous query (匿踪查询): the zone learns only a bucket of at least k candidates",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole answer as JSON")] = False,
) -> None:
    """One enterprise's answer from a product (or several, anonymously, with --anonymous)."""
    if anonymous:
        _anonymous_lookup(ctx, product, usccs, purpose=purpose, as_json=as_json)
        return
    if len(usccs) != 1:
        fail(
            EXIT_BAD_INPUT,
            f"error: a lookup asks for one USCC, got {len(usccs)}; several go with --anonymous or batch",
        )
    (uscc,) = usccs
    bad = find_invalid([uscc])
    if bad:
        fail(EXIT_BAD_INPUT, f"error: {uscc!r} is not a valid USCC: {bad[0].reason}")
    with exit_codes(), common.zone_client(ctx) as zone:
        answer = zone.lookup(product, uscc, purpose=purpose)
    if as_json:
        print_json(answer)
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
        how = str(fields.get(name.split(".")[0], ""))
        table.add_row(name, _shown(value, withheld=how == "withheld"), how)
    out.print(table)


def _shown(value: object, *, withheld: bool = False) -> str:
    """A value as printed: a withheld field says so, and a missing value is not printed as None."""
    if withheld:
        return "withheld"
    if value is None:
        return "(no value)"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def _anonymous_lookup(
    ctx: typer.Context, product: str, usccs: list[str], *, purpose: Purpose, as_json: bool
) -> None:
    bad = find_invalid(usccs)
    if bad:
        lines = "\n".join(f"  #{b.position + 1} {b.code!r}: {b.reason}" for b in bad)
        fail(
            EXIT_BAD_INPUT, f"error: {len(bad)} of {len(usccs)} USCCs are invalid; nothing was sent:\n{lines}"
        )
    with exit_codes(), common.zone_client(ctx) as zone:
        looked_up = zone.anonymous_lookup(product, usccs, purpose=purpose)
    if as_json:
        print_json(
            {
                "product": looked_up.product,
                "answer": looked_up.answer_kind,
                "k": looked_up.k,
                "prefix_bits": looked_up.prefix_bits,
                "table": looked_up.table,
                "epoch": looked_up.epoch,
                "charged_fen": looked_up.charged_fen,
                "results": [dataclasses.asdict(r) for r in looked_up.results],
            }
        )
        return
    out.print(
        f"{product} · anonymous query · purpose {purpose.value} · k = {looked_up.k}"
        f" · prefix {looked_up.prefix_bits} bits · table {looked_up.table} (epoch {looked_up.epoch})",
        markup=False,
    )
    if looked_up.answer_kind == "existence":
        table = Table("uscc", "listed", "bucket", "candidates")
        for r in looked_up.results:
            table.add_row(r.uscc, "yes" if r.found else "no", str(r.bucket), str(r.candidates))
        out.print(table)
    else:
        for r in looked_up.results:
            head = f"{r.uscc} · bucket {r.bucket} of {r.candidates} candidates"
            if not r.found:
                out.print(f"{head} · not found", markup=False)
                continue
            out.print(head, markup=False)
            table = Table("field", "value")
            for name, value in flatten(r.answer or {}):
                table.add_row(name, _shown(value, withheld=name.split(".")[0] in r.withheld))
            out.print(table)
    if looked_up.charged_fen:
        err.print(f"charged {looked_up.charged_fen / 100:.2f} yuan", markup=False)


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
    with exit_codes():
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
        fail(
            EXIT_BAD_INPUT,
            f"error: {len(problems)} of {len(listed)} USCCs in {input_file} are invalid; nothing was sent:\n{lines}{more}",
        )
    if not listed:
        fail(EXIT_BAD_INPUT, f"error: {input_file} lists no USCCs")
    codes = [item.code for item in listed]
    results: list[dict[str, Any]] = []
    refused: ZoneError | None = None
    with (
        exit_codes(),
        common.zone_client(ctx) as zone,
        progress_bar() as bar,
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
        fail(
            EXIT_REFUSED,
            f"refused: {refused}\n{written} enterprises answered before the refusal"
            + (f" are in {output}" if written else "; nothing written"),
        )
    err.print(f"{written} enterprises ({found} found) written to {output}", markup=False)


@app.command()
def token(
    ctx: typer.Context,
    raw: Annotated[bool, typer.Option("--raw", help="print the access token itself (for curl)")] = False,
) -> None:
    """Fetch an access token and show its scopes and expiry (the token itself only with --raw)."""
    with exit_codes(), common.zone_client(ctx) as zone:
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
