"""The bank's side of joint statistics (联合统计): WOE and IV of zone features against its labels.

    labels.csv   uscc,label[,segment]: every line checked here before anything is sent
    job          POST /v1/joint/jobs kind=stats with the sample, features, bins and the OU public key
    columns      PUT .../columns/label (and segment-<k>): the labels encrypted, HEU's serialization
    result       GET .../result once the zone's worker is done: sums decrypted here, WOE/IV built

The key pair lives only in memory for the run; no label, and no key, is written anywhere.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from datazone import uscc
from datazone.client.enterprises import normalize
from datazone.client.errors import ZoneError
from datazone.client.sheets import InputFileError
from datazone.privacy import joint_stats as js

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

StatsProgress = Callable[[str, int, int], None]  # (phase, done, total)
MAX_SEGMENTS = 8
POLL_INTERVAL_S = 1.0
HEADER = ("uscc", "label")


class InvalidLabels(ValueError):
    """The labels file has bad lines; each is named by its line number (never by its label)."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = "\n".join(f"  line {line}: {why}" for line, why in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} bad line(s), nothing was sent\n{shown}{more}")


class StatsJobFailed(ZoneError):
    def __init__(self, detail: str, *, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(None, {"type": "joint-job-failed", "title": "Joint job failed", "detail": detail})


@dataclass(frozen=True)
class LabeledSample:
    codes: list[str]
    labels: npt.NDArray[np.int64]  # int64 0/1, row order = codes
    segments: npt.NDArray[np.int64] | None  # int64 0..7, or None without a segment column
    source: str

    @property
    def segment_count(self) -> int:
        return 0 if self.segments is None else int(self.segments.max()) + 1


def read_labels(path: str | Path) -> LabeledSample:
    """The sample from `uscc,label[,segment]`; `InvalidLabels` lists every bad line."""
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{source} cannot be read: {type(exc).__name__}") from None
    if not rows:
        raise InputFileError(f"{source} is empty")
    header = [h.strip().lower() for h in rows[0]]
    if tuple(header[:2]) != HEADER or len(header) > 3 or (len(header) == 3 and header[2] != "segment"):
        raise InputFileError(f"{source}: the header must be uscc,label or uscc,label,segment")
    with_segment = len(header) == 3
    problems: list[tuple[int, str]] = []
    codes: list[str] = []
    labels: list[int] = []
    segments: list[int] = []
    first_line: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append((line, f"{len(row)} fields, {len(header)} expected"))
            continue
        code = normalize(row[0])
        why = uscc.explain_invalid(code)
        if why is not None:
            problems.append((line, why))
        elif code in first_line:
            problems.append((line, f"the enterprise is already on line {first_line[code]}"))
        else:
            first_line[code] = line
        if row[1].strip() not in ("0", "1"):
            problems.append((line, "the label is not exactly 0 or 1"))  # the value itself is not echoed
        if with_segment and row[2].strip() not in {str(k) for k in range(MAX_SEGMENTS)}:
            problems.append((line, f"the segment is not an integer 0 to {MAX_SEGMENTS - 1}"))
        if not problems or problems[-1][0] != line:
            codes.append(code)
            labels.append(int(row[1].strip()))
            segments.append(int(row[2].strip()) if with_segment else 0)
    if problems:
        raise InvalidLabels(source, problems)
    if not codes:
        raise InputFileError(f"{source} lists no enterprises")
    y = np.array(labels, dtype=np.int64)
    if y.min() == y.max():
        raise InputFileError(f"{source}: the labels are all the same; WOE needs both 0 and 1")
    return LabeledSample(codes, y, np.array(segments, dtype=np.int64) if with_segment else None, source)


def _unexpected(detail: str) -> ZoneError:
    return ZoneError(None, {"type": "unexpected-answer", "detail": detail})


def _job(body: Any, where: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("job_id"), str):
        raise _unexpected(f"{where} did not answer a joint job")
    return body


def run_stats(
    zone: ZoneClient,
    sample: LabeledSample,
    *,
    product: str,
    purpose: str,
    features: Sequence[str],
    bins: int = 10,
    edges: Mapping[str, Sequence[float]] | None = None,
    grouped: Sequence[str] = (),
    progress: StatsProgress | None = None,
    poll_interval: float = POLL_INTERVAL_S,
) -> js.StatsReport:
    """Create the stats job, upload the encrypted columns, wait for the zone, decrypt the result."""

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    key = js.LabelKey.generate()
    segments = sample.segment_count
    columns = {"label": sample.labels}
    if sample.segments is not None:
        columns |= {f"segment-{k}": (sample.segments == k).astype(np.int64) for k in range(segments)}
    body = {
        "kind": "stats",
        "product": product,
        "purpose": purpose,
        "features": list(features),
        "sample": sample.codes,
        "bins": bins,
        "edges": {k: list(v) for k, v in edges.items()} if edges else None,
        "grouped": list(grouped),
        "segments": segments,
        "public_key": js._b64(key.public_key_bytes()),
    }
    job = _job(zone._call("POST", "/v1/joint/jobs", json=body), "POST /v1/joint/jobs")
    job_path = f"/v1/joint/jobs/{quote(job['job_id'], safe='')}"
    for done, (name, values) in enumerate(columns.items()):
        report("upload", done, len(columns))
        resp = zone._exchange(
            "PUT",
            f"{job_path}/columns/{quote(name, safe='')}",
            content=key.encrypt_column(values),
            content_type="application/octet-stream",
        )
        job = _job(resp.json(), f"PUT {job_path}/columns/{name}")
    report("upload", len(columns), len(columns))
    while job.get("status") not in ("succeeded", "failed", "expired"):
        state = job.get("progress") or {}
        report(
            str(state.get("phase") or job.get("status")),
            int(state.get("done") or 0),
            int(state.get("total") or 0),
        )
        time.sleep(poll_interval)  # the real clock: the zone's worker computes the sums
        job = _job(zone._call("GET", job_path), f"GET {job_path}")
    if job.get("status") != "succeeded":
        raise StatsJobFailed(
            f"stats job {job['job_id']} {job.get('status')}: {job.get('reason') or 'no reason given'}",
            job_id=str(job["job_id"]),
        )
    result = zone._call("GET", f"{job_path}/result")
    if not isinstance(result, dict):
        raise _unexpected(f"GET {job_path}/result did not answer a JSON object")
    return js.build_report(result, key, positives=int(sample.labels.sum()), segments=segments)


# -- the report's files ----------------------------------------------------------------------------

CSV_HEADER = ["feature", "bin", "lower", "upper", "total", "positives", "negatives", "woe", "iv"]


def bin_bounds(edges: Sequence[float]) -> list[tuple[float, float]]:
    return list(zip([-math.inf, *edges], [*edges, math.inf], strict=True))


def write_stats_csv(path: Path, report: js.StatsReport) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for f in report.by_iv():
            for b, (lower, upper) in enumerate(bin_bounds(f.edges)):
                writer.writerow(
                    [
                        f.name,
                        b,
                        lower,
                        upper,
                        f.totals[b],
                        f.positives[b],
                        f.negatives[b],
                        f"{f.woe[b]:.6f}",
                        f"{f.iv:.6f}",
                    ]
                )


def feature_svg(feature: js.FeatureStats) -> str:
    """Bars of each bin's count and a line of its WOE (written by hand: no plotting library needed)."""
    width, height, pad = 640, 320, 40
    bins = len(feature.totals)
    slot = (width - 2 * pad) / bins
    top = max(feature.totals) or 1
    low, high = min(0.0, *feature.woe), max(0.0, *feature.woe)
    span = (high - low) or 1.0

    def woe_y(w: float) -> float:
        return pad + (height - 2 * pad) * (high - w) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<text x="{pad}" y="20">{_escape(feature.name)}: IV {feature.iv:.4f} (bars: enterprises per bin; line: WOE)</text>',
    ]
    points = []
    for b, total in enumerate(feature.totals):
        h = (height - 2 * pad) * total / top
        x = pad + b * slot
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{height - pad - h:.1f}" width="{slot - 4:.1f}" height="{h:.1f}" fill="#9ecae1"/>'
        )
        lower, upper = bin_bounds(feature.edges)[b]
        label = f"[{_short(lower)}, {_short(upper)})"
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{height - pad + 14}" text-anchor="middle">{label}</text>'
        )
        points.append(f"{x + slot / 2:.1f},{woe_y(feature.woe[b]):.1f}")
    parts.append(
        f'<line x1="{pad}" x2="{width - pad}" y1="{woe_y(0):.1f}" y2="{woe_y(0):.1f}" stroke="#999" stroke-dasharray="4"/>'
    )
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#d62728" stroke-width="2"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _short(value: float) -> str:
    return "-inf" if value == -math.inf else "inf" if value == math.inf else f"{value:g}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def report_json(report: js.StatsReport) -> dict[str, Any]:
    """The report as JSON: what `datazone-client train --scorecard` reads its bins and WOE from."""
    return {
        "job_id": report.job_id,
        "sample_size": report.sample_size,
        "features": [dataclasses.asdict(f) for f in report.features],
        "grouped": [
            {
                "name": g.name,
                "count": g.count,
                "sum": g.sum,
                "by_label": {str(k): {"count": v.count, "sum": v.sum, "mean": v.mean} for k, v in g.by_label.items()},
                "by_segment": {
                    str(k): {"count": v.count, "sum": v.sum, "mean": v.mean} for k, v in g.by_segment.items()
                },
            }
            for g in report.grouped
        ],
        "merged": report.merged,
    }


def write_report(directory: Path, report: js.StatsReport) -> list[Path]:
    """stats.csv, stats-<job>.json (the bins and WOE a scorecard trains on) and one SVG chart per
    feature in `directory`; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "stats.csv", directory / f"stats-{report.job_id or 'report'}.json"]
    write_stats_csv(written[0], report)
    written[1].write_text(json.dumps(report_json(report), indent=2, allow_nan=False), encoding="utf-8")
    for feature in report.features:
        path = directory / f"{feature.name}.svg"
        path.write_text(feature_svg(feature), encoding="utf-8")
        written.append(path)
    return written
