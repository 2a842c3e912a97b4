"""The bank's commands against the real gateway, as the README's tour runs them: `datazone-client
stats` writes the report, `datazone-client train --scorecard` trains on its bins and writes a
scorecard that secure scoring's parser takes as it is. Bad input is refused before anything is sent."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from datazone.privacy import scoring as circuits
from tests.conftest import free_port
from tests.joint.conftest import SMALL, JointZone

CLIENT = Path(sys.executable).with_name("datazone-client")
FEATURES = "reg_capital_wan,tax_grade_code,years_since_founding"


def client(zone: JointZone, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAZONE_")}
    env.update(
        DATAZONE_URL=zone.url,
        DATAZONE_CLIENT_ID=zone.client_id,
        DATAZONE_CLIENT_SECRET=zone.client_secret,
        DATAZONE_PROFILE=str(Path(os.devnull)),
    )
    return subprocess.run([str(CLIENT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_stats_then_a_scorecard_from_the_command_line(joint_zone: JointZone, tmp_path: Path) -> None:
    codes = joint_zone.sample(600)
    values = joint_zone.plain_features(codes, FEATURES.split(","))
    rng = np.random.default_rng(23)
    spread = values.std(axis=0)
    standard = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    risk = standard @ np.array([0.8, -0.9, -0.5]) + rng.normal(0, 1, len(codes))
    labels = (risk > np.quantile(risk, 0.7)).astype(int)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("uscc,label\n" + "".join(f"{c},{y}\n" for c, y in zip(codes, labels, strict=True)))
    out = tmp_path / "out"
    with joint_zone.worker():
        stats = client(
            joint_zone, "stats", "--product", SMALL, "--purpose", "risk_modeling", "--labels", str(labels_csv),
            "--features", FEATURES, "--bins", "4", "--out", str(out),
        )
        assert stats.returncode == 0, stats.stderr
        [report_path] = out.glob("stats-joint_*.json")
        report = json.loads(report_path.read_text())
        job_id = report["job_id"]
        with open(out / "stats.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert {r["feature"] for r in rows} == set(FEATURES.split(","))
        assert sum(int(r["total"]) for r in rows if r["feature"] == "tax_grade_code") == len(codes)
        assert sum(int(r["positives"]) for r in rows if r["feature"] == "tax_grade_code") == labels.sum()
        assert (out / "tax_grade_code.svg").read_text().startswith("<svg")

        train = client(
            joint_zone, "train", "--product", SMALL, "--purpose", "risk_modeling", "--labels", str(labels_csv),
            "--features", FEATURES, "--listen", f"127.0.0.1:{free_port()}", "--scorecard", "--stats-job", job_id,
            "--epochs", "3", "--seed", "5", "--out", str(out),
        )
        assert train.returncode == 0, train.stderr + train.stdout
    assert "hold-out AUC" in train.stdout
    model = json.loads((out / "model.json").read_text())
    parsed = circuits.parse_model(model)
    assert parsed.kind == "scorecard" and model["product"] == "secure-credit-score"
    for feature in model["features"]:
        binned = next(f for f in report["features"] if f["name"] == feature["name"])
        assert feature["bins"] == binned["edges"] and len(feature["points"]) == len(binned["edges"]) + 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "scorecard" and 0.5 < metrics["auc"] <= 1.0


def test_labels_that_are_not_bits_are_refused_before_anything_is_sent(joint_zone: JointZone, tmp_path: Path) -> None:
    codes = joint_zone.sample(300)
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("uscc,label\n" + "".join(f"{c},{2 if i == 7 else i % 2}\n" for i, c in enumerate(codes)))
    stats = client(
        joint_zone, "stats", "--product", SMALL, "--purpose", "risk_modeling", "--labels", str(labels_csv),
        "--features", FEATURES,
    )
    assert stats.returncode == 2
    assert "line 9" in stats.stderr and ",2" not in stats.stderr
