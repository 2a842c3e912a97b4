"""Joint modeling, the bank's side (`datazone-client train`): its labels (and optionally its own
features) read and checked here, a train job created at the gateway, the institution's side of
the SPU training run on this machine, and the model written for secure scoring.

Files read:
- labels CSV: header `uscc,label`, one enterprise a line, label 0 or 1;
- own features CSV (optional): header `uscc,<name>,...`, numbers, one line per labelled enterprise.
Every problem is listed with its file and line; no message quotes a label or a feature value.

Files written to the output directory:
- model.json: the zone part, a `datazone-scoring-model/1` document for product
  secure-credit-score that `datazone-client model register` accepts as it is;
- own-features.json: the bank's own part (names, means, stds, weights), applied by the bank;
- metrics.json: hold-out AUC and KS, rows, seconds per phase, bytes each side sent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from datazone import uscc
from datazone.client.enterprises import normalize
from datazone.client.errors import ConfigError, ZoneError
from datazone.purposes import Purpose

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

PRODUCT = "joint-modeling"
SCORING_PRODUCT = "secure-credit-score"
_SHOWN_PROBLEMS = 20
_FAILED_SETTLE_S = 5.0

Progress = Callable[[str, int, int], None]  # (phase, done, total)


class TrainingInputError(ValueError):
    """The labels or own-features file has problems: `problems` lists (file, line, problem) for each."""

    def __init__(self, problems: list[tuple[str, int, str]]) -> None:
        self.problems = problems
        shown = "; ".join(
            f"{name} line {line}: {problem}" for name, line, problem in problems[:_SHOWN_PROBLEMS]
        )
        more = len(problems) - _SHOWN_PROBLEMS
        super().__init__(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )


class TrainingFailed(Exception):
    """The train job did not finish: our side's error and, when the zone said why, its reason."""

    def __init__(self, detail: str, *, job_id: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.job_id = job_id


@dataclass(frozen=True)
class TrainingSample:
    usccs: list[str]  # row order
    labels: npt.NDArray[np.int64]
    own_names: list[str]
    own: npt.NDArray[np.float64] | None  # rows in the order of usccs


@dataclass(frozen=True)
class Scorecard:
    """The scorecard form's inputs from a stats job: per zone feature its edges and WOE per bin."""

    stats_job: str
    edges: dict[str, list[float]]
    woe: dict[str, list[float]]


@dataclass(frozen=True)
class TrainingResult:
    job_id: str
    model_path: Path
    own_features_path: Path | None
    metrics_path: Path
    metrics: dict[str, Any]


def _rows(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line, fields) of a CSV; InputFileError-like TrainingInputError when unreadable."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problem = (
            "not UTF-8 text"
            if isinstance(exc, UnicodeDecodeError)
            else f"cannot be read ({type(exc).__name__})"
        )
        raise TrainingInputError([(str(path), 0, f"the {what} file {problem}")]) from None
    if header is None:
        raise TrainingInputError([(str(path), 1, f"the {what} file is empty: a header line is required")])
    return [cell.strip().lower() for cell in header], rows


def _code_problem(raw: str) -> str | None:
    code = normalize(raw)
    if not code:
        return "the uscc is empty"
    reason = uscc.explain_invalid(code)
    return None if reason is None else f"not a valid USCC ({reason})"


def _first_listing(
    name: str,
    line: int,
    row: list[str],
    fields: int,
    seen: dict[str, int],
    problems: list[tuple[str, int, str]],
    shape: str,
) -> str | None:
    """The line's USCC, normalized, if the line has `fields` fields and a valid code not seen on an
    earlier line (recorded in `seen`); else None, its problem added to `problems`."""
    if len(row) != fields:
        problems.append((name, line, f"{len(row)} fields; {shape}"))
        return None
    code_problem = _code_problem(row[0])
    if code_problem:
        problems.append((name, line, code_problem))
        return None
    code = normalize(row[0])
    if code in seen:
        problems.append((name, line, f"the uscc is listed again (first on line {seen[code]})"))
        return None
    seen[code] = line
    return code


def read_labels(path: Path) -> tuple[list[str], npt.NDArray[np.int64], list[int]]:
    """(USCCs, labels, file lines) from a `uscc,label` CSV; TrainingInputError lists every problem."""
    usccs, labels, lines, _, problems = _labels(path)
    if problems:
        raise TrainingInputError(problems)
    return usccs, labels, lines


def _labels(
    path: Path,
) -> tuple[list[str], npt.NDArray[np.int64], list[int], list[str], list[tuple[str, int, str]]]:
    """What `read_labels` gives, every distinct valid code listed (whatever its label), and the problems."""
    header, rows = _rows(path, "labels")
    name = str(path)
    if header != ["uscc", "label"]:
        raise TrainingInputError([(name, 1, "the header must be exactly: uscc,label")])
    problems: list[tuple[str, int, str]] = []
    usccs: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    first: dict[str, int] = {}
    for line, row in rows:
        code = _first_listing(name, line, row, 2, first, problems, "each line is uscc,label")
        if code is None:
            continue
        if row[1].strip() not in ("0", "1"):
            # never the value: it may be a real label
            problems.append((name, line, "the label must be 0 or 1"))
            continue
        usccs.append(code)
        labels.append(int(row[1].strip()))
        lines.append(line)
    if not rows:
        problems.append((name, 2, "no enterprise is listed"))
    elif not problems and len(set(labels)) < 2:
        problems.append((name, 0, "the labels need both classes (0 and 1) to train a model"))
    return usccs, np.array(labels, dtype=np.int64), lines, list(first), problems


def read_own_features(path: Path, usccs: list[str]) -> tuple[list[str], npt.NDArray[np.float64]]:
    """(feature names, matrix in the order of `usccs`) from a `uscc,f1,f2,...` CSV joined on uscc."""
    header, rows = _rows(path, "own features")
    name = str(path)
    problems: list[tuple[str, int, str]] = []
    names = header[1:]
    if not header or header[0] != "uscc" or not names:
        raise TrainingInputError([(name, 1, "the header must be uscc followed by at least one feature name")])
    blank = [i + 2 for i, n in enumerate(names) if not n]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if blank or repeated:
        detail = (f"columns {', '.join(map(str, blank))} have no name" if blank else "") + (
            ("; " if blank else "") + f"feature names appear twice: {', '.join(repeated)}" if repeated else ""
        )
        raise TrainingInputError([(name, 1, detail)])
    position = {code: i for i, code in enumerate(usccs)}
    matrix = np.full((len(usccs), len(names)), np.nan)
    seen: dict[str, int] = {}
    for line, row in rows:
        code = _first_listing(name, line, row, len(header), seen, problems, f"the header has {len(header)}")
        if code is None:
            continue
        if code not in position:
            problems.append((name, line, "the uscc is not in the labels file"))
            continue
        for column, cell in enumerate(row[1:]):
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                problems.append((name, line, f"{names[column]} is not a finite number"))
                continue
            matrix[position[code], column] = value
    missing = [code for code in usccs if code not in seen]
    if missing and len(missing) <= _SHOWN_PROBLEMS:
        problems.extend((name, 0, f"no line for {code}, which the labels file lists") for code in missing)
    elif missing:
        problems.append((name, 0, f"{len(missing)} enterprises of the labels file have no line here"))
    if problems:
        raise TrainingInputError(problems)
    return names, matrix


def read_training_sample(labels_path: Path, own_features_path: Path | None = None) -> TrainingSample:
    """Both files read and joined; the problems of both are listed together."""
    try:
        usccs, labels, _, listed, problems = _labels(labels_path)
    except TrainingInputError as exc:
        usccs, labels, listed, problems = [], np.zeros(0, dtype=np.int64), [], list(exc.problems)
    names: list[str] = []
    own: npt.NDArray[np.float64] | None = None
    if own_features_path is not None:
        try:
            # checked against every enterprise the labels file lists, even one whose label is wrong
            names, own = read_own_features(own_features_path, listed if problems else usccs)
        except TrainingInputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise TrainingInputError(problems)
    return TrainingSample(usccs=usccs, labels=labels, own_names=names, own=own)


def choose_holdout(rows: int, fraction: float, seed: int | None) -> npt.NDArray[np.bool_]:
    """The training mask: True for training rows, a random `fraction` of the rows False (held out)."""
    if not 0 < fraction < 1:
        raise ValueError("the hold-out fraction must be above 0 and below 1")
    held = max(1, round(rows * fraction))
    if held >= rows:
        raise ValueError(f"{rows} rows are too few to hold out {fraction:g} of them")
    mask = np.ones(rows, dtype=bool)
    mask[np.random.default_rng(seed).choice(rows, size=held, replace=False)] = False
    return mask


def _progress_of(phase: str | None, epochs: int) -> tuple[str, int]:
    """(phase for display, phases done) from the child's phase: exchange, compile, epochs, output."""
    if phase is None or not phase.startswith("training "):
        return (phase or "starting"), 0
    step = phase.removeprefix("training ")
    if step == "share exchange":
        return step, 0
    if step in ("compile", "WOE lookup"):
        return step, 1
    if step.startswith("epoch "):
        return step, 1 + int(step.split()[1].split("/")[0])
    return step, epochs + 2


def _feature_bounds(zone: ZoneClient, names: list[str], product: str) -> dict[str, Any]:
    from datazone.privacy.scoring import FeatureBounds  # the privacy libraries load only when training

    catalog = zone._call("GET", "/v1/joint/features", params={"product": product})
    listed = {f.get("name"): f for f in catalog.get("features", []) if isinstance(f, dict)}
    unknown = [n for n in names if n not in listed]
    if unknown:
        raise ConfigError(f"the zone's {product} product has no feature {', '.join(unknown)}")
    # `missing` matters only to plaintext scoring; the model file itself carries no bounds
    return {
        n: FeatureBounds(
            name=n,
            min=int(listed[n]["min"]),
            max=int(listed[n]["max"]),
            missing=int(listed[n]["missing"] if "missing" in listed[n] else listed[n]["min"]),
        )
        for n in names
    }


def train(
    zone: ZoneClient,
    *,
    purpose: Purpose,
    labels_path: Path,
    features: list[str],
    listen: str,
    out_dir: Path,
    own_features_path: Path | None = None,
    params: dict[str, Any] | None = None,
    scorecard: Scorecard | None = None,
    holdout: float = 0.2,
    seed: int | None = None,
    model_name: str = "joint-model",
    progress: Progress | None = None,
    product: str = PRODUCT,
    model_purpose: Purpose = Purpose.pre_loan,
) -> TrainingResult:
    """Create a train job for `features` over the labelled sample and run the bank's side here."""
    from datazone.privacy import engine, joint_model  # SPU and its link load only when training

    try:
        engine.require_installed()
    except engine.EngineNotInstalled as exc:
        raise ConfigError(str(exc)) from None
    sample = read_training_sample(labels_path, own_features_path)
    train_params = joint_model.TrainParams(**(params or {}))
    mask = choose_holdout(len(sample.usccs), holdout, seed)
    woe_tables: list[npt.NDArray[np.float64]] | None = None
    if scorecard is not None:
        absent = [f for f in features if f not in scorecard.woe or f not in scorecard.edges]
        if absent:
            raise ConfigError(f"the stats report has no bins for {', '.join(absent)}")
        single = [f for f in features if len(scorecard.woe[f]) < 2]
        if single:
            raise ConfigError(
                f"{', '.join(single)} fell into a single bin in the statistics: a scorecard has nothing to learn "
                "from it; leave it out"
            )
        woe_tables = [np.asarray(scorecard.woe[f], dtype=np.float64) for f in features]
    bounds = _feature_bounds(zone, features, product)
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="datazone-train-"))  # 0700: certificates, the engine's log
    try:
        certificate, private_key = engine.new_link_certificate(workdir / "tls", common_name="institution")
        body = {
            "kind": "train",
            "product": product,
            "purpose": purpose.value,
            "features": features,
            "sample": sample.usccs,
            "peer_address": listen,
            "institution_certificate_pem": certificate.read_text(encoding="ascii"),
            "own_features": len(sample.own_names),
            "epochs": train_params.epochs,
            "batch_size": train_params.batch_size,
            "learning_rate": train_params.learning_rate,
            "l2": train_params.l2,
            "sigmoid": train_params.sigmoid,
            "scorecard": scorecard is not None,
            "stats_job": scorecard.stats_job if scorecard is not None else None,
        }
        job = zone._call("POST", "/v1/joint/jobs", json=body)
        missing = [
            k for k in ("job_id", "ticket", "zone_address") if not isinstance(job, dict) or not job.get(k)
        ]
        if missing:
            raise ZoneError(
                None, {"type": "unexpected-answer", "detail": f"the train job lacks {', '.join(missing)}"}
            )
        job_id = str(job["job_id"])
        tls = None
        if job.get("zone_certificate_pem"):
            zone_ca = workdir / "zone.pem"
            zone_ca.write_text(str(job["zone_certificate_pem"]), encoding="ascii")
            tls = engine.TlsFiles(certificate=certificate, private_key=private_key, peer_ca=zone_ca)
        timeout = job.get("link_timeout_s")
        link = engine.LinkSpec(
            job_id=job_id,
            zone_address=str(job["zone_address"]),
            institution_address=listen,
            connect_timeout_s=float(timeout) if isinstance(timeout, int | float) else 60.0,
            tls=tls,
        )
        side = joint_model.InstitutionTrainProcess(
            link,
            ticket=str(job["ticket"]),
            labels=sample.labels,
            train_mask=mask,
            own_features=sample.own,
            zone_feature_count=len(features),
            params=train_params,
            woe=woe_tables,
            run_dir=workdir / "engine",
        )
        total = train_params.epochs + 3
        try:
            with side:
                side.start()
                while (report := side.wait(0.5)) is None:
                    if progress is not None:
                        phase, done = _progress_of(side.phase, train_params.epochs)
                        progress(phase, done, total)
        except engine.EngineError as exc:
            reason = _zone_reason(zone, job_id)
            raise TrainingFailed(
                f"train job {job_id}: {exc}" + (f"; the zone says: {reason}" if reason else ""), job_id=job_id
            ) from None
        if progress is not None:
            progress("done", total, total)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _write_outputs(
        report,
        job_id=job_id,
        sample=sample,
        features=features,
        bounds=bounds,
        scorecard=scorecard,
        purpose=model_purpose,
        model_name=model_name,
        out_dir=out_dir,
        params=train_params,
    )


def _zone_reason(zone: ZoneClient, job_id: str) -> str | None:
    """Why the zone says the job failed, once it has settled it (a few seconds at most)."""
    deadline = time.monotonic() + _FAILED_SETTLE_S
    path = f"/v1/joint/jobs/{quote(job_id, safe='')}"
    while True:
        try:
            status = zone._call("GET", path)
        except ZoneError:
            return None  # our side's error is the one to report
        if status.get("status") in ("failed", "expired", "succeeded") or time.monotonic() >= deadline:
            reason = status.get("reason")
            return str(reason) if reason else None
        time.sleep(0.2)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Written whole or not at all (mode 0600: a model is the bank's own)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=2)
        f.write("\n")
    partial.replace(path)


def _write_outputs(
    report: Any,
    *,
    job_id: str,
    sample: TrainingSample,
    features: list[str],
    bounds: dict[str, Any],
    scorecard: Scorecard | None,
    purpose: Purpose,
    model_name: str,
    out_dir: Path,
    params: Any,
) -> TrainingResult:
    from datazone.privacy import joint_model

    model = joint_model.scoring_model(
        report,
        feature_names=features,
        bounds=bounds,
        name=model_name,
        product=SCORING_PRODUCT,
        purpose=purpose.value,
        edges=None if scorecard is None else {f: scorecard.edges[f] for f in features},
        description=f"trained with the zone in joint-modeling job {job_id}",
    )
    model_path = out_dir / "model.json"
    _write_json(model_path, model)
    own_path: Path | None = None
    if sample.own_names:
        own_path = out_dir / "own-features.json"
        _write_json(own_path, joint_model.own_features_model(report, feature_names=sample.own_names))
    metrics = {
        "job_id": job_id,
        "kind": "scorecard" if scorecard is not None else "logistic",
        "rows": report.rows,
        "train_rows": report.train_rows,
        "holdout_rows": report.holdout_rows,
        "auc": round(report.holdout_auc, 6),
        "ks": round(report.holdout_ks, 6),
        "seconds": report.seconds,
        "bytes_sent": {"institution": report.bytes_sent, "zone": report.zone_bytes_sent},
        "params": asdict(params),
    }
    metrics_path = out_dir / "metrics.json"
    _write_json(metrics_path, metrics)
    return TrainingResult(
        job_id=job_id,
        model_path=model_path,
        own_features_path=own_path,
        metrics_path=metrics_path,
        metrics=metrics,
    )


def read_scorecard_report(path: Path, stats_job: str) -> Scorecard:
    """Edges and WOE per feature from a stats report JSON: {"features": [{"name", "edges", "woe"}]}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the stats report {path} cannot be read ({type(exc).__name__})") from None
    edges: dict[str, list[float]] = {}
    woe: dict[str, list[float]] = {}
    for at, feature in enumerate(doc.get("features", []) if isinstance(doc, dict) else []):
        ok = (
            isinstance(feature, dict)
            and isinstance(feature.get("name"), str)
            and isinstance(feature.get("edges"), list)
            and isinstance(feature.get("woe"), list)
            and len(feature["woe"]) == len(feature["edges"]) + 1
        )
        if not ok:
            raise ConfigError(f"the stats report {path}: features.{at} needs name, edges and one WOE per bin")
        edges[feature["name"]] = [float(e) for e in feature["edges"]]
        woe[feature["name"]] = [float(v) for v in feature["woe"]]
    return Scorecard(stats_job=stats_job, edges=edges, woe=woe)
