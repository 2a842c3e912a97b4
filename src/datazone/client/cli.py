"""`datazone-client`: try the zone's products from a shell.

Credentials come from DATAZONE_URL, DATAZONE_CLIENT_ID and DATAZONE_CLIENT_SECRET (or
DATAZONE_CLIENT_KEY_FILE), or from a profile file (`--profile NAME`); there is no option
for a secret, so none ends up in shell history or a process list.

Exit codes: 0 ok, 1 the gateway refused (the problem is printed) or could not be reached,
2 bad input (invalid USCCs, unreadable file or model, missing or unsafe settings), 130 a
batch score interrupted (run it again to continue the same job).
"""

from __future__ import annotations

import dataclasses
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

from datazone.client import scoring
from datazone.client.enterprises import find_invalid, flatten
from datazone.client.errors import ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.psi import (
    EngineProtocol,
    InstitutionList,
    InvalidListedUSCCs,
    PsiJobFailed,
    PsiMode,
    PsiStateError,
    default_state_path,
    read_institution_list,
)
from datazone.client.scoring import (
    ModelDoesNotFit,
    ModelFileError,
    ModelNotRegistered,
    RegistrationMismatch,
    ScoringJobFailed,
    ScoringStateError,
)
from datazone.client.sdk import ZoneClient
from datazone.client.sheets import InputFileError, read_listed_codes, write_results
from datazone.privacy.scoring import InvalidModel
from datazone.purposes import Purpose

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C
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


def _progress_bar(description: str = "{task.description}") -> Progress:
    """A progress bar on stderr (left on screen only on a terminal), so stdout stays the answer."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=not err.is_terminal,
    )


def _institution_list(input_file: Path, column: str | None, *, once: str) -> InstitutionList:
    """A CSV/XLSX list of USCCs, every code checked here first: invalid lines exit 2 (nothing is
    sent); repeated codes are noted on stderr (`once`: what becomes of them)."""
    try:
        listed = read_institution_list(input_file, column)
    except InvalidListedUSCCs as exc:
        lines = "\n".join(f"  line {line}: {why}" for line, why in exc.problems[:50])
        more = f"\n  ... and {len(exc.problems) - 50} more" if len(exc.problems) > 50 else ""
        _fail(
            EXIT_BAD_INPUT,
            f"error: {len(exc.problems)} USCCs in {input_file} are invalid; nothing was sent:\n{lines}{more}",
        )
    except InputFileError as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")
    if listed.duplicates:
        shown = ", ".join(f"line {d.line} repeats line {d.first_line}" for d in listed.duplicates[:10])
        more = f", and {len(listed.duplicates) - 10} more" if len(listed.duplicates) > 10 else ""
        err.print(f"note: {len(listed.duplicates)} duplicate USCCs {once} ({shown}{more})", markup=False)
    return listed


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
        _fail(
            EXIT_BAD_INPUT,
            f"error: a lookup asks for one USCC, got {len(usccs)}; several go with --anonymous or batch",
        )
    (uscc,) = usccs
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
        _fail(
            EXIT_BAD_INPUT, f"error: {len(bad)} of {len(usccs)} USCCs are invalid; nothing was sent:\n{lines}"
        )
    with _exit_codes(), _client(ctx) as zone:
        looked_up = zone.anonymous_lookup(product, usccs, purpose=purpose)
    if as_json:
        _print_json(
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
        _progress_bar() as bar,
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
    listed = _institution_list(input_file, column, once="joined once")
    state_path = state or default_state_path(output, input_file, product)
    try:
        with (
            _client(ctx) as zone,
            _progress_bar() as bar,
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


# -- secure scoring ------------------------------------------------------------------------------

model_app = typer.Typer(
    help="Secure scoring models: a Paillier key, registration, review state.", no_args_is_help=True
)
app.add_typer(model_app, name="model")


@contextmanager
def _scoring_errors() -> Iterator[None]:
    """Bad model files, keys, lists and state files exit 2, naming every problem."""
    try:
        yield
    except (ConfigError, InvalidUSCCs, InputFileError) as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")
    except InvalidModel as exc:
        lines = "\n".join(f"  {e.get('location', '?')}: {e.get('problem', '')}" for e in exc.errors)
        _fail(
            EXIT_BAD_INPUT,
            f"error: the model is invalid ({len(exc.errors)} problems); nothing was sent:\n{lines}",
        )
    except ModelDoesNotFit as exc:
        lines = "\n".join(f"  {e['location']}: {e['problem']}" for e in exc.errors)
        _fail(
            EXIT_BAD_INPUT,
            f"error: the model does not fit {exc.product}'s scoring catalog; nothing was sent:\n{lines}",
        )
    except (ModelFileError, ModelNotRegistered, RegistrationMismatch, ScoringStateError) as exc:
        _fail(EXIT_BAD_INPUT, f"error: {exc}")


@model_app.command("keygen")
def model_keygen(
    out_path: Annotated[Path, typer.Option("--out", help="the key file to write (never overwritten)")],
    bits: Annotated[int, typer.Option(min=2048, max=4096, help="the Paillier modulus size")] = 2048,
) -> None:
    """A new Paillier key pair in a private key file (mode 0600). Keep it: it decrypts the scores."""
    with _scoring_errors():
        key = scoring.generate_key_file(out_path, bits=bits)
    out.print(
        f"{key.public.bits}-bit key written to {out_path} (mode 0600), fingerprint {key.fingerprint}",
        markup=False,
    )


def _model_table(views: list[dict[str, Any]]) -> Table:
    """One row a model, narrow enough for 80 columns; `model status ID` shows one in full."""
    table = Table(box=None, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("features", justify="right", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for v in views:
        table.add_row(
            str(v.get("id", "")),
            str(v.get("name", "")),
            str(v.get("kind", "")),
            str(v.get("state", "")),
            str(len(v.get("features") or [])),
            _local_time(v.get("created_at"))[:10],
        )
    return table


def _model_card(view: dict[str, Any]) -> Table:
    """One model in full: what the zone holds of it (never a weight)."""
    table = Table("", "", show_header=False, box=None, pad_edge=False)
    features = [f for f in view.get("features") or [] if isinstance(f, dict)]
    rows = [
        ("id", view.get("id")),
        ("name", view.get("name")),
        ("product", f"{view.get('product', '')} (purpose {view.get('purpose', '')})"),
        ("kind", f"{view.get('kind', '')}, scale {view.get('scale', '')}"),
        ("state", view.get("state")),
        (
            "features",
            ", ".join(
                str(f.get("name")) + (f" (bins {f['bins']})" if f.get("bins") else "") for f in features
            ),
        ),
        ("key", f"{view.get('key_bits', '?')}-bit, fingerprint {view.get('key_fingerprint', '')}"),
        (
            "scores",
            f"{view.get('slots', '?')} to a ciphertext, rounded to {view.get('resolution', '?')} units",
        ),
        ("created", _local_time(view.get("created_at"))),
        ("reviewed", f"{_local_time(view.get('reviewed_at'))} {view.get('review_reason') or ''}".strip()),
        ("retired", f"{_local_time(view.get('retired_at'))} {view.get('retire_reason') or ''}".strip()),
    ]
    for name, value in rows:
        if value not in (None, ""):
            table.add_row(name, str(value))
    return table


def _local_time(value: object) -> str:
    if not isinstance(value, str) or not value:
        return ""
    try:
        return f"{datetime.fromisoformat(value).astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
    except ValueError:
        return value


@model_app.command("register")
def model_register(
    ctx: typer.Context,
    model_path: Annotated[Path, typer.Option("--model", help="the model file (JSON, written by hand)")],
    key_path: Annotated[Path, typer.Option("--key", help="the key file from `model keygen`")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print the zone's view of the model as JSON")
    ] = False,
) -> None:
    """Register a model: its weights or bin points go encrypted, the bins and features in the clear."""
    with _exit_codes(), _scoring_errors():
        model = scoring.read_model_file(model_path)
        key = scoring.read_key_file(key_path)
        with _client(ctx) as zone:
            view = zone.register_model(model_path, key)
    if as_json:
        _print_json(view)
        return
    out.print(_model_card(view))
    err.print(
        f"registered as {view.get('id')} ({model.name}, {len(model.features)} features), state"
        f" {view.get('state')}; recorded in {scoring.registration_path(model_path)}."
        + (
            " An operator's reviewer approves it before it scores."
            if view.get("state") == "pending_review"
            else ""
        ),
        markup=False,
    )


@model_app.command("status")
def model_status(
    ctx: typer.Context,
    model_id: Annotated[str | None, typer.Argument(metavar="ID", help="one model's id (mdl_...)")] = None,
    state: Annotated[
        str | None,
        typer.Option(help="only models in this state (pending_review, approved, rejected, retired)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the zone's views as JSON")] = False,
) -> None:
    """The institution's registered models and their review state (one, with its ID)."""
    with _exit_codes(), _scoring_errors(), _client(ctx) as zone:
        views = [zone.model(model_id)] if model_id else zone.models(state=state)
    if as_json:
        _print_json(views[0] if model_id else views)
        return
    if model_id:
        out.print(_model_card(views[0]))
        return
    if not views:
        err.print("no models registered" + (f" in state {state}" if state else ""), markup=False)
        return
    out.print(_model_table(views))


@model_app.command("retire")
def model_retire(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(metavar="ID", help="the model's id (mdl_...)")],
    reason: Annotated[str, typer.Option(help="why it no longer scores")],
) -> None:
    """Retire a model: it scores no more, and its name is free again."""
    with _exit_codes(), _scoring_errors(), _client(ctx) as zone:
        view = zone.retire_model(model_id, reason=reason)
    out.print(_model_card(view))


@app.command()
def score(
    ctx: typer.Context,
    model_path: Annotated[Path, typer.Option("--model", help="the registered model's file")],
    input_file: Annotated[
        Path | None,
        typer.Argument(metavar="INPUT", help="a .csv or .xlsx list of USCCs to score in one job"),
    ] = None,
    key_path: Annotated[
        Path | None, typer.Option("--key", help="the key file (default: the one recorded at registration)")
    ] = None,
    uscc: Annotated[str | None, typer.Option(help="score one enterprise online instead of a list")] = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="the CSV to write (default: INPUT.scores.csv)")
    ] = None,
    column: Annotated[
        str | None, typer.Option(help="the USCC column's header (default: uscc or 统一社会信用代码)")
    ] = None,
    state: Annotated[
        Path | None, typer.Option(help="the resume state file (default: OUT.scoring-state.json)")
    ] = None,
) -> None:
    """Score enterprises with a registered model: one online (--uscc), or a list as a batch job.

    The zone computes on the encrypted weights; this machine decrypts. After a crash or a dropped
    connection, run the same command again: it continues the same job, billed once."""
    if (input_file is None) == (uscc is None):
        _fail(
            EXIT_BAD_INPUT,
            "error: give either INPUT (a list to score) or --uscc CODE (one enterprise), not both",
        )
    if uscc is not None:
        bad = find_invalid([uscc])
        if bad:
            _fail(EXIT_BAD_INPUT, f"error: {uscc!r} is not a valid USCC: {bad[0].reason}")
        with _exit_codes(), _scoring_errors():
            model, key, _ = scoring.resolve_model_and_key(model_path, key_path)
            with _client(ctx) as zone:
                single = zone.score(model_path, uscc, key=key)
        scored = single.enterprise
        if not scored.found:
            out.print(f"{scored.uscc}: not in the zone (not billed)", markup=False)
            return
        table = Table("", "", show_header=False, box=None)
        table.add_row("enterprise", scored.uscc)
        table.add_row("model", f"{model.name} ({single.model_id}, {model.kind})")
        if model.kind == "logistic":
            table.add_row("logit", f"{scored.score:.{scoring.score_decimals(model.scale)}f}")
            table.add_row("probability", f"{scored.probability:.6f}")
        else:
            table.add_row("points", f"{scored.score:.{scoring.score_decimals(model.scale)}f}")
        table.add_row("as of", str(single.as_of or "?"))
        table.add_row("data versions", json.dumps(single.data_versions, ensure_ascii=False))
        out.print(table)
        if single.charged_fen:
            err.print(f"charged {single.charged_fen / 100:.2f} yuan", markup=False)
        return
    assert input_file is not None
    listed = _institution_list(input_file, column, once="scored once")
    target = output or scoring.default_output_path(input_file)
    state_path = state or scoring.default_state_path(target)
    try:
        with _scoring_errors():
            model, key, _ = scoring.resolve_model_and_key(model_path, key_path)
            with _client(ctx) as zone, _progress_bar("{task.description:<9}") as bar:
                tasks = {
                    "upload": bar.add_task("upload", total=len(listed.codes)),
                    "compute": bar.add_task("compute", total=None),
                    "download": bar.add_task("download", total=None),
                }

                def progress(phase: str, done: int, total: int) -> None:
                    bar.update(tasks[phase], completed=done, total=total)

                result = zone.score_batch(
                    model_path, listed, key=key, output=target, state_path=state_path, progress=progress
                )
    except ScoringJobFailed as exc:
        _fail(EXIT_REFUSED, f"failed: {exc.detail}")
    except KeyboardInterrupt:
        if state_path.exists():
            _fail(
                EXIT_INTERRUPTED,
                f"interrupted; run the same command again to continue the same job (kept in {state_path})",
            )
        _fail(EXIT_INTERRUPTED, "interrupted before a job was created; nothing was billed")
    except ZoneUnreachable as exc:
        resume = (
            f"\nrun the same command again to continue the same job (kept in {state_path})"
            if state_path.exists()
            else ""
        )
        _fail(EXIT_REFUSED, f"refused: {exc}{resume}")
    except ZoneError as exc:
        _fail(EXIT_REFUSED, f"refused: {exc}")
    how = f"job {result.job_id}" + (", continued from an earlier run" if result.resumed else "")
    err.print(
        f"{result.items} enterprises scored with {model.name} ({result.found} found, {how}); written to {target}",
        markup=False,
    )
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
