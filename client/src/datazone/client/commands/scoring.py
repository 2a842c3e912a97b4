"""`datazone-client model ...` and `score`: secure scoring with the bank's Paillier key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from datazone.client import scoring
from datazone.client.commands import common
from datazone.client.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    SHANGHAI,
    err,
    exit_codes,
    fail,
    out,
    print_json,
    progress_bar,
)
from datazone.client.commands.lists import institution_list
from datazone.client.enterprises import find_invalid
from datazone.client.errors import ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.scoring import (
    ModelDoesNotFit,
    ModelFileError,
    ModelNotRegistered,
    RegistrationMismatch,
    ScoringJobFailed,
    ScoringStateError,
)
from datazone.client.sheets import InputFileError
from datazone.privacy.scoring import InvalidModel

app = typer.Typer()
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
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    except InvalidModel as exc:
        lines = "\n".join(f"  {e.get('location', '?')}: {e.get('problem', '')}" for e in exc.errors)
        fail(
            EXIT_BAD_INPUT,
            f"error: the model is invalid ({len(exc.errors)} problems); nothing was sent:\n{lines}",
        )
    except ModelDoesNotFit as exc:
        lines = "\n".join(f"  {e['location']}: {e['problem']}" for e in exc.errors)
        fail(
            EXIT_BAD_INPUT,
            f"error: the model does not fit {exc.product}'s scoring catalog; nothing was sent:\n{lines}",
        )
    except (ModelFileError, ModelNotRegistered, RegistrationMismatch, ScoringStateError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")


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
    # Python 3.10's fromisoformat does not read the "Z" that ends the gateway's UTC times
    stamp = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        return f"{datetime.fromisoformat(stamp).astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
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
    with exit_codes(), _scoring_errors():
        model = scoring.read_model_file(model_path)
        key = scoring.read_key_file(key_path)
        with common.zone_client(ctx) as zone:
            view = zone.register_model(model_path, key)
    if as_json:
        print_json(view)
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
    with exit_codes(), _scoring_errors(), common.zone_client(ctx) as zone:
        views = [zone.model(model_id)] if model_id else zone.models(state=state)
    if as_json:
        print_json(views[0] if model_id else views)
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
    with exit_codes(), _scoring_errors(), common.zone_client(ctx) as zone:
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
        fail(
            EXIT_BAD_INPUT,
            "error: give either INPUT (a list to score) or --uscc CODE (one enterprise), not both",
        )
    if uscc is not None:
        bad = find_invalid([uscc])
        if bad:
            fail(EXIT_BAD_INPUT, f"error: {uscc!r} is not a valid USCC: {bad[0].reason}")
        with exit_codes(), _scoring_errors():
            model, key, _ = scoring.resolve_model_and_key(model_path, key_path)
            with common.zone_client(ctx) as zone:
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
    listed = institution_list(input_file, column, once="scored once")
    target = output or scoring.default_output_path(input_file)
    state_path = state or scoring.default_state_path(target)
    try:
        with _scoring_errors():
            model, key, _ = scoring.resolve_model_and_key(model_path, key_path)
            with common.zone_client(ctx) as zone, progress_bar("{task.description:<9}") as bar:
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
        fail(EXIT_REFUSED, f"failed: {exc.detail}")
    except KeyboardInterrupt:
        if state_path.exists():
            fail(
                EXIT_INTERRUPTED,
                f"interrupted; run the same command again to continue the same job (kept in {state_path})",
            )
        fail(EXIT_INTERRUPTED, "interrupted before a job was created; nothing was billed")
    except ZoneUnreachable as exc:
        resume = (
            f"\nrun the same command again to continue the same job (kept in {state_path})"
            if state_path.exists()
            else ""
        )
        fail(EXIT_REFUSED, f"refused: {exc}{resume}")
    except ZoneError as exc:
        fail(EXIT_REFUSED, f"refused: {exc}")
    how = f"job {result.job_id}" + (", continued from an earlier run" if result.resumed else "")
    err.print(
        f"{result.items} enterprises scored with {model.name} ({result.found} found, {how}); written to {target}",
        markup=False,
    )
    if result.charged_fen:
        err.print(f"charged {result.charged_fen / 100:.2f} yuan", markup=False)
