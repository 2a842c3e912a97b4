"""`datazone-client stats`'s own parts, without a zone: the labels file is checked line by line
(no label value in a message), and a report is written as a table's CSV and SVG charts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from datazone import uscc
from datazone.client import stats
from datazone.client.cli import SUBCOMMANDS
from datazone.client.sheets import InputFileError
from datazone.privacy import joint_stats as js


def code(i: int) -> str:
    body = f"91110000{i:09d}"
    return body + uscc.check_character(body)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_good_file_is_read_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "l.csv",
        ["uscc,label,segment", f"{code(1)},1,0", f" {code(2).lower()} ,0,2", "", f"{code(3)},0,1"],
    )
    sample = stats.read_labels(path)
    assert sample.codes == [code(1), code(2), code(3)]
    assert sample.labels.tolist() == [1, 0, 0]
    assert sample.segments is not None and sample.segments.tolist() == [0, 2, 1]
    assert sample.segment_count == 3


def test_every_bad_line_is_named_without_its_label(tmp_path: Path) -> None:
    bad = code(5)[:-1] + ("0" if code(5)[-1] != "0" else "1")
    path = write(
        tmp_path / "l.csv",
        [
            "uscc,label,segment",
            f"{code(1)},1,0",
            f"{bad},0,0",
            f"{code(2)},0.7,0",
            f"{code(3)},yes,9",
            f"{code(1)},0,1",
            f"{code(4)},1",
        ],
    )
    with pytest.raises(stats.InvalidLabels) as refused:
        stats.read_labels(path)
    lines = [line for line, _ in refused.value.problems]
    assert lines == [3, 4, 5, 5, 6, 7]
    message = str(refused.value)
    assert "check character" in message and "already on line 2" in message and "segment" in message
    assert "0.7" not in message and "yes" not in message  # labels are never echoed


def test_the_header_and_a_single_label_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="header"):
        stats.read_labels(write(tmp_path / "a.csv", ["code,y", f"{code(1)},1"]))
    with pytest.raises(InputFileError, match="all the same"):
        stats.read_labels(write(tmp_path / "b.csv", ["uscc,label", f"{code(1)},1", f"{code(2)},1"]))


def test_report_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(-50, 50, (400, 2))
    labels = rng.integers(0, 2, 400)
    report = js.plain_stats(["a", "b<"], values, labels, bins=4, min_count=10)
    written = stats.write_report(tmp_path / "out", report)
    assert [p.name for p in written] == ["stats.csv", "stats-report.json", "a.svg", "b<.svg"]
    saved = json.loads(written[1].read_text(encoding="utf-8"))
    # what `datazone-client train --scorecard` reads: each feature's edges and one WOE per bin
    assert [f["name"] for f in saved["features"]] == ["a", "b<"]
    assert all(len(f["woe"]) == len(f["edges"]) + 1 for f in saved["features"])
    assert saved["features"][0]["woe"] == report.features[0].woe
    with open(written[0], encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == stats.CSV_HEADER
    assert len(rows) == sum(len(f.totals) for f in report.features)
    first = report.by_iv()[0]
    assert rows[0]["feature"] == first.name and rows[0]["lower"] == "-inf"
    assert [int(r["total"]) for r in rows if r["feature"] == first.name] == first.totals
    svg = written[3].read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "b&lt;" in svg and "<polyline" in svg


def test_the_command_is_registered() -> None:
    assert SUBCOMMANDS["stats"].module == "datazone.client.commands.stats"
