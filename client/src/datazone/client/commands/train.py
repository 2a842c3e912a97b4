"""`datazone-client train`: joint modeling with the zone on SecretFlow's SPU (the bank's side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datazone.client.commands import common
from datazone.client.commands.common import EXIT_BAD_INPUT, EXIT_REFUSED, err, fail, out, progress_bar
from datazone.client.errors import ConfigError, ZoneError
from datazone.purposes import Purpose

app = typer.Typer()

PRODUCT = "joint-modeling"  # the SDK's too (datazone.client.training), which loads NumPy: not for --help


@app.command()
def train(
    ctx: typer.Context,
    labels: Annotated[Path, typer.Option(help="CSV with the header uscc,label (label 0 or 1)")],
    features: Annotated[str, typer.Option(help="the zone features wanted, comma-separated")],
    listen: Annotated[
        str, typer.Option(help="host:port this machine's training engine listens on, for the zone's worker")
    ],
    purpose: Annotated[Purpose, typer.Option(help="why the bank trains, e.g. risk_modeling")],
    product: Annotated[str, typer.Option(help="the joint-modeling product")] = PRODUCT,
    model_purpose: Annotated[
        Purpose, typer.Option(help="what the trained model will score for (model.json's purpose), e.g. pre_loan")
    ] = Purpose.pre_loan,
    own_features: Annotated[
        Path | None, typer.Option(help="CSV with the header uscc,f1,f2,...: the bank's own features")
    ] = None,
    scorecard: Annotated[bool, typer.Option("--scorecard", help="train the WOE scorecard form")] = False,
    stats_job: Annotated[str | None, typer.Option(help="the stats job whose bins the scorecard uses")] = None,
    stats_report: Annotated[
        Path | None, typer.Option(help="the stats job's WOE report (default: OUT/stats-<job>.json)")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default: the engine's)")] = None,
    holdout: Annotated[float, typer.Option(help="the share of rows held out for AUC and KS")] = 0.2,
    seed: Annotated[int | None, typer.Option(help="seed of the hold-out choice, to repeat it")] = None,
    name: Annotated[str, typer.Option(help="the model's name in model.json")] = "joint-model",
    out_dir: Annotated[Path, typer.Option("--out", help="directory for model.json, metrics.json")] = Path(
        "."
    ),
) -> None:
    """Train a logistic model (or a WOE scorecard) with the zone: labels stay here, zone data there.

    Writes model.json (for `datazone-client model register`), own-features.json (the bank's own
    part, applied by the bank) and metrics.json (hold-out AUC and KS, seconds, bytes)."""
    # here, not at the top: NumPy and the SDK load only when the command runs (see cli.py)
    from datazone.client import training
    from datazone.client.training import TrainingFailed, TrainingInputError, read_scorecard_report

    wanted = [f.strip() for f in features.split(",") if f.strip()]
    if not wanted or len(set(wanted)) != len(wanted):
        fail(EXIT_BAD_INPUT, "error: --features needs distinct feature names, comma-separated")
    card = None
    if scorecard:
        if not stats_job:
            fail(EXIT_BAD_INPUT, "error: --scorecard needs --stats-job, the stats job whose bins it uses")
        try:
            card = read_scorecard_report(stats_report or out_dir / f"stats-{stats_job}.json", stats_job)
        except ConfigError as exc:
            fail(EXIT_BAD_INPUT, f"error: {exc}")
    params: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    try:
        with common.zone_client(ctx) as zone, progress_bar() as bar:
            task = bar.add_task("joint modeling", total=None)

            def show(phase: str, done: int, total: int) -> None:
                bar.update(task, description=f"joint modeling: {phase}", completed=done, total=total)

            result = training.train(
                zone,
                purpose=purpose,
                labels_path=labels,
                features=wanted,
                listen=listen,
                out_dir=out_dir,
                own_features_path=own_features,
                params=params,
                scorecard=card,
                holdout=holdout,
                seed=seed,
                model_name=name,
                progress=show,
                product=product,
                model_purpose=model_purpose,
            )
    except TrainingFailed as exc:
        fail(EXIT_REFUSED, f"failed: {exc.detail}")
    except ZoneError as exc:
        fail(EXIT_REFUSED, f"refused: {exc}")
    except (ConfigError, TrainingInputError, ValueError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    metrics = result.metrics
    out.print(
        f"job {result.job_id}: hold-out AUC {metrics['auc']:.4f}, KS {metrics['ks']:.4f} "
        f"over {metrics['holdout_rows']} rows",
        markup=False,
    )
    written = [result.model_path, result.own_features_path, result.metrics_path]
    err.print("written: " + ", ".join(str(p) for p in written if p is not None), markup=False)
