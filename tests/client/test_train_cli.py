"""`datazone-client train`'s input files: labels and own features read, joined and checked, every
problem listed with its line and no label or feature value in any message; the hold-out choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datazone.client.training import (
    TrainingInputError,
    choose_holdout,
    read_labels,
    read_own_features,
    read_training_sample,
)
from tests.client.codes import bad_check, make_uscc

CODES = [make_uscc(n) for n in range(1, 7)]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def labels_file(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    return write(tmp_path / "labels.csv", "uscc,label\n" + "".join(f"{c},{y}\n" for c, y in rows))


def test_labels_are_read_in_file_order_with_their_lines(tmp_path: Path) -> None:
    path = labels_file(tmp_path, [(CODES[0], "1"), (CODES[1].lower(), "0"), (" " + CODES[2], "0")])
    usccs, labels, lines = read_labels(path)
    assert usccs == CODES[:3]  # normalized: blanks dropped, upper case
    assert labels.tolist() == [1, 0, 0] and lines == [2, 3, 4]


def test_every_problem_of_the_labels_file_is_listed_with_its_line_and_no_label(tmp_path: Path) -> None:
    path = labels_file(
        tmp_path,
        [
            (CODES[0], "1"),
            (bad_check(CODES[1]), "0"),  # line 3
            (CODES[0], "0"),  # line 4: again
            (CODES[2], "yes-defaulted-7"),  # line 5: not 0/1
            (CODES[3], "0,extra"),  # line 6: three fields
            (CODES[4], "0"),
        ],
    )
    with pytest.raises(TrainingInputError) as raised:
        read_labels(path)
    by_line = {line: problem for _, line, problem in raised.value.problems}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert "not a valid USCC" in by_line[3]
    assert "first on line 2" in by_line[4]
    assert by_line[5] == "the label must be 0 or 1"
    assert "3 fields" in by_line[6]
    assert "yes-defaulted-7" not in str(raised.value)


def test_labels_need_the_header_and_both_classes(tmp_path: Path) -> None:
    with pytest.raises(TrainingInputError, match="line 1: the header must be exactly: uscc,label"):
        read_labels(write(tmp_path / "a.csv", "code,target\n" + f"{CODES[0]},1\n"))
    with pytest.raises(TrainingInputError, match="both classes"):
        read_labels(labels_file(tmp_path, [(CODES[0], "1"), (CODES[1], "1")]))
    with pytest.raises(TrainingInputError, match="empty"):
        read_labels(write(tmp_path / "empty.csv", ""))
    with pytest.raises(TrainingInputError, match="cannot be read"):
        read_labels(tmp_path / "absent.csv")


def test_own_features_are_joined_on_uscc_in_the_labels_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "own.csv",
        "uscc,Deposits,overdue_days\n" + f"{CODES[2]},3.5,0\n{CODES[0]},-1e3,12\n{CODES[1]},0,4\n",
    )
    names, matrix = read_own_features(path, CODES[:3])
    assert names == ["deposits", "overdue_days"]
    assert matrix.tolist() == [[-1000.0, 12.0], [0.0, 4.0], [3.5, 0.0]]


def test_every_problem_of_the_own_features_file_is_listed_without_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "own.csv",
        "uscc,deposits,overdue_days\n"
        + f"{CODES[0]},12345.678,NaN\n"  # line 2: not finite
        + f"{CODES[1]},secret-value-99,1\n"  # line 3: not a number
        + f"{CODES[5]},1,1\n"  # line 4: not in the labels
        + f"{CODES[0]},1,1\n"  # line 5: again
        + f"{CODES[2]},1\n",  # line 6: too few fields
    )
    with pytest.raises(TrainingInputError) as raised:
        read_own_features(path, CODES[:4])
    problems = raised.value.problems
    lines = [line for _, line, _ in problems]
    assert lines == [2, 3, 4, 5, 6, 0, 0]
    text = str(raised.value)
    assert "overdue_days is not a finite number" in text and "deposits is not a finite number" in text
    assert "not in the labels file" in text and "first on line 2" in text and "2 fields" in text
    assert f"no line for {CODES[2]}" in text and f"no line for {CODES[3]}" in text
    assert "secret-value-99" not in text and "12345" not in text


def test_own_feature_names_must_be_distinct_and_present(tmp_path: Path) -> None:
    with pytest.raises(TrainingInputError, match="appear twice: a"):
        read_own_features(write(tmp_path / "o.csv", f"uscc,a,a\n{CODES[0]},1,2\n"), CODES[:1])
    with pytest.raises(TrainingInputError, match="at least one feature"):
        read_own_features(write(tmp_path / "p.csv", f"uscc\n{CODES[0]}\n"), CODES[:1])


def test_both_files_problems_come_together(tmp_path: Path) -> None:
    labels = labels_file(tmp_path, [(CODES[0], "1"), (CODES[1], "2")])
    own = write(tmp_path / "own.csv", f"uscc,x\n{CODES[0]},1\n{CODES[1]},oops\n")
    with pytest.raises(TrainingInputError) as raised:
        read_training_sample(labels, own)
    files = {Path(name).name for name, _, _ in raised.value.problems}
    assert files == {"labels.csv", "own.csv"}


def test_a_good_sample_reads_whole(tmp_path: Path) -> None:
    labels = labels_file(tmp_path, [(CODES[0], "1"), (CODES[1], "0")])
    own = write(tmp_path / "own.csv", f"uscc,x\n{CODES[1]},2\n{CODES[0]},1\n")
    sample = read_training_sample(labels, own)
    assert sample.usccs == CODES[:2] and sample.labels.tolist() == [1, 0]
    assert sample.own_names == ["x"] and sample.own is not None and sample.own[:, 0].tolist() == [1.0, 2.0]
    assert read_training_sample(labels).own is None


def test_the_holdout_is_the_asked_share_and_repeats_with_its_seed() -> None:
    mask = choose_holdout(1000, 0.2, seed=7)
    assert mask.dtype == bool and int((~mask).sum()) == 200
    assert np.array_equal(mask, choose_holdout(1000, 0.2, seed=7))
    assert not np.array_equal(mask, choose_holdout(1000, 0.2, seed=8))
    with pytest.raises(ValueError, match="above 0 and below 1"):
        choose_holdout(10, 1.0, seed=1)
