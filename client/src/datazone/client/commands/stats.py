"""`datazone-client stats`: WOE and IV of zone features against the bank's labels (joint statistics)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from datazone.client.commands import common
from datazone.client.commands.common import EXIT_BAD_INPUT, EXIT_REFUSED, err, fail, out, progress_bar
from datazone.client.errors import ConfigError, ZoneError
from datazone.client.sheets import InputFileError
from datazone.purposes import Purpose

app = typer.Typer()


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


@app.command()
def stats(
    ctx: typer.Context,
    purpose: Annotated[Purpose, typer.Option(help="why the institution asks (risk_modeling)")],
    labels: Annotated[Path, typer.Option(help="CSV uscc,label[,segment]: labels 0/1, segments 0-7")],
    features: Annotated[str, typer.Option(help="zone features, comma-separated")],
    product: Annotated[str, typer.Option(help="the joint-modeling product")] = "joint-modeling",
    bins: Annotated[
        int, typer.Option(min=2, max=20, help="quantile bins the zone makes over the sample")
    ] = 10,
    edges: Annotated[
        Path | None, typer.Option(help='JSON {"feature": [e1, e2, ...]}: declared edges instead of quantiles')
    ] = None,
    grouped: Annotated[
        str | None, typer.Option(help="features to count, sum and average by label/segment")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="directory for stats.csv, stats-<job>.json and the charts")] = Path(
        "stats"
    ),
) -> None:
    """WOE and IV of zone features against this bank's labels, which travel only encrypted.

    The labels file is checked line by line before anything is sent. Writes stats.csv and an
    SVG chart per feature (bars: enterprises per bin; line: WOE) to --out."""
    # here, not at the top, for start-up time: `--help` loads this module, and these load NumPy and HEU
    from datazone.client.stats import InvalidLabels, bin_bounds, read_labels, run_stats, write_report
    from datazone.privacy.joint_stats import MalformedResult

    try:
        sample = read_labels(labels)
        declared = json.loads(edges.read_text(encoding="utf-8")) if edges is not None else None
    except (InvalidLabels, InputFileError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    except (OSError, ValueError) as exc:
        fail(EXIT_BAD_INPUT, f"error: --edges cannot be read as JSON: {type(exc).__name__}")
    if declared is not None and not isinstance(declared, dict):
        fail(EXIT_BAD_INPUT, 'error: --edges must be a JSON object {"feature": [edges...]}')
    wanted = _names(features)
    if not wanted:
        fail(EXIT_BAD_INPUT, "error: --features names at least one zone feature")
    try:
        with common.zone_client(ctx) as zone, progress_bar() as bar:
            task = bar.add_task("joint statistics", total=None)
            report = run_stats(
                zone,
                sample,
                product=product,
                purpose=purpose.value,
                features=wanted,
                bins=bins,
                edges=declared,
                grouped=_names(grouped),
                progress=lambda phase, done, total: bar.update(
                    task, description=phase, completed=done, total=total or None
                ),
            )
    except ZoneError as exc:
        fail(EXIT_REFUSED, f"refused: {exc}")
    except MalformedResult as exc:
        fail(EXIT_REFUSED, f"the zone's result cannot be used: {exc}")
    except (ConfigError, ValueError) as exc:
        fail(EXIT_BAD_INPUT, f"error: {exc}")
    table = Table("feature", "IV", "bin", "range", "total", "WOE")
    for feature in report.by_iv():
        for b, (lower, upper) in enumerate(bin_bounds(feature.edges)):
            table.add_row(
                feature.name if b == 0 else "",
                f"{feature.iv:.4f}" if b == 0 else "",
                str(b),
                f"[{lower:g}, {upper:g})",
                str(feature.totals[b]),
                f"{feature.woe[b]:+.4f}",
            )
    out.print(table)
    for merge in report.merged:
        err.print(
            f"{merge['feature']}: {merge['from_bins']} bins merged into {merge['to_bins']}", markup=False
        )
    written = write_report(out_dir, report)
    err.print(f"written: {written[0]} and {len(written) - 1} SVG chart(s) in {out_dir}", markup=False)
