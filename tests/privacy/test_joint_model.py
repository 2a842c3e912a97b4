"""Joint modeling on SPU CHEETAH: the bank's side and the zone's as separate processes on loopback,
mutual TLS, small synthetic data; checked against scikit-learn's plaintext logistic regression."""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from datazone.privacy import engine, joint_model
from datazone.privacy.joint_model import InstitutionTrainReport, TrainParams, ZoneTrainReport
from datazone.privacy.scoring import FeatureBounds, parse_model, plain_score

ROWS, OWN, ZONE = 3_000, 4, 6
ZONE_NAMES = [f"zone_feature_{i}" for i in range(ZONE)]
BOUNDS = {name: FeatureBounds(name=name, min=0, max=100, missing=50) for name in ZONE_NAMES}
TICKET = "ticket-" + "7" * 24
PARAMS = TrainParams(epochs=3, batch_size=1024, learning_rate=2.0)


def free_port() -> int:
    """A free port in 47000-47999 (this project's share of the machine's ports for these tests)."""
    for port in random.sample(range(47000, 48000), 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 47000-47999")


@dataclass(frozen=True)
class Links:
    zone: engine.LinkSpec
    institution: engine.LinkSpec


def new_links(directory: Path, *, connect_timeout_s: float = 20.0, recv_timeout_s: float = 20.0) -> Links:
    """Both sides' view of one link with mutual TLS: each trusts the other's self-signed certificate."""
    zone_cert, zone_key = engine.new_link_certificate(directory / "zone-tls", common_name="127.0.0.1")
    bank_cert, bank_key = engine.new_link_certificate(directory / "bank-tls", common_name="127.0.0.1")
    zone_port = free_port()
    bank_port = free_port()
    while bank_port == zone_port:
        bank_port = free_port()
    common: dict[str, Any] = {
        "job_id": f"train-{secrets.token_hex(4)}",
        "zone_address": f"127.0.0.1:{zone_port}",
        "institution_address": f"127.0.0.1:{bank_port}",
        "connect_timeout_s": connect_timeout_s,
        "recv_timeout_s": recv_timeout_s,
    }
    return Links(
        zone=engine.LinkSpec(**common, tls=engine.TlsFiles(zone_cert, zone_key, bank_cert)),
        institution=engine.LinkSpec(**common, tls=engine.TlsFiles(bank_cert, bank_key, zone_cert)),
    )


@dataclass(frozen=True)
class Sample:
    zone: np.ndarray  # clamped integer zone features
    own: np.ndarray
    labels: np.ndarray
    train_mask: np.ndarray


@pytest.fixture(scope="module")
def sample() -> Sample:
    """3,000 rows: a label from a logistic model of 4 bank and 6 zone features; a 20 % hold-out."""
    rng = np.random.default_rng(15)
    zone = np.clip(np.round(rng.normal(50, 18, size=(ROWS, ZONE))), 0, 100)
    own = rng.normal(size=(ROWS, OWN)) * [1.0, 3.0, 0.5, 10.0]
    logit = (
        -1.2
        + (own / [1.0, 3.0, 0.5, 10.0]) @ [0.8, -0.5, 0.3, 0.0]
        + (zone - 50) @ [0.04, -0.03, 0.02, 0.0, 0.01, -0.02]
    )
    labels = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return Sample(zone=zone, own=own, labels=labels, train_mask=rng.random(ROWS) >= 0.2)


def training_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "datazone.privacy.joint_model" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_training_process_survives() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while training_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert training_children() == []


class ZoneThread:
    """The zone's side, run (in its own child process) from a thread so the test can run the bank's."""

    def __init__(self, links: Links, directory: Path, *, ticket: str = TICKET, **kwargs: Any) -> None:
        self.report: ZoneTrainReport | None = None
        self.error: BaseException | None = None
        self.run_dir = directory / "zone"

        def run() -> None:
            try:
                self.report = joint_model.run_zone_side(
                    links.zone,
                    ticket_sha256=hashlib.sha256(ticket.encode()).digest(),
                    run_dir=self.run_dir,
                    **kwargs,
                )
            except BaseException as exc:  # handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(120)  # a hang detector only: the job itself takes seconds
        assert not self.thread.is_alive()


def train(
    sample: Sample,
    links: Links,
    directory: Path,
    *,
    zone_extra: dict[str, Any] | None = None,
    bank_extra: dict[str, Any] | None = None,
) -> tuple[InstitutionTrainReport, ZoneThread]:
    """Both sides on `sample`; the extras add the scorecard form's inputs."""
    zone = ZoneThread(links, directory, features=sample.zone, params=PARAMS, **(zone_extra or {}))
    report = joint_model.run_institution_side(
        links.institution,
        ticket=TICKET,
        labels=sample.labels,
        train_mask=sample.train_mask,
        own_features=sample.own,
        zone_feature_count=ZONE,
        params=PARAMS,
        run_dir=directory / "bank",
        **(bank_extra or {}),
    )
    zone.join()
    assert zone.error is None, zone.error
    return report, zone


@pytest.fixture(scope="module")
def trained(
    sample: Sample, tmp_path_factory: pytest.TempPathFactory
) -> tuple[InstitutionTrainReport, ZoneThread, Path]:
    directory = tmp_path_factory.mktemp("trained")
    report, zone = train(sample, new_links(directory), directory)
    return report, zone, directory


def test_auc_matches_scikit_learn_on_the_joined_data(
    sample: Sample, trained: tuple[InstitutionTrainReport, ZoneThread, Path]
) -> None:
    report, _, _ = trained
    joined = np.hstack([sample.zone, sample.own])
    train_rows, holdout = sample.train_mask, ~sample.train_mask
    reference = LogisticRegression(max_iter=2000).fit(joined[train_rows], sample.labels[train_rows])
    reference_auc = roc_auc_score(sample.labels[holdout], reference.decision_function(joined[holdout]))
    assert abs(report.holdout_auc - reference_auc) < 0.005
    assert report.holdout_auc == pytest.approx(roc_auc_score(sample.labels[holdout], report.holdout_logits))
    assert report.rows == ROWS and report.holdout_rows == int(holdout.sum())
    assert 0 < report.holdout_ks < 1
    assert {"link", "share_exchange", "compile", "epoch_1", "epoch_3", "model_output"} <= set(report.seconds)
    assert report.bytes_sent > 0 and report.zone_bytes_sent > 0


def test_the_zone_learns_no_weight_and_no_label(
    sample: Sample, trained: tuple[InstitutionTrainReport, ZoneThread, Path]
) -> None:
    report, zone, _ = trained
    assert zone.report is not None
    assert set(vars(zone.report)) == {"rows", "zone_features", "epochs", "seconds", "bytes_sent"}
    assert zone.report.rows == ROWS
    # its run directory (inputs, temporary files) is gone: only the engine's log is left
    assert sorted(p.name for p in zone.run_dir.iterdir()) == [engine.ENGINE_LOG]
    log = (zone.run_dir / engine.ENGINE_LOG).read_text()
    assert "[info]" in log  # SPU did log here, so the searches below mean something
    numbers = set(re.findall(r"-?\d+\.\d{4,}", log + json.dumps(vars(zone.report))))
    secrets_of_the_bank = [*report.zone_weights_std, *report.own_weights_std, report.intercept_std]
    for value in secrets_of_the_bank:
        assert f"{value:.6f}"[:-1] not in " ".join(numbers)
    assert "label" not in log.lower()
    assert "holdout" not in log.lower() and "hold-out" not in log.lower()


def test_the_scoring_model_file_gives_the_trained_logits(
    sample: Sample, trained: tuple[InstitutionTrainReport, ZoneThread, Path]
) -> None:
    report, _, _ = trained
    scale = 1_000_000
    doc = joint_model.scoring_model(
        report, feature_names=ZONE_NAMES, bounds=BOUNDS, name="joint-lr", purpose="risk_modeling", scale=scale
    )
    model = parse_model(json.loads(json.dumps(doc)))  # as `model register` would read the file
    assert model.kind == "logistic" and model.product == "secure-credit-score"
    own_part = joint_model.own_features_model(report, feature_names=[f"own_{i}" for i in range(OWN)])
    holdout_rows = np.flatnonzero(~sample.train_mask)
    for position, row in enumerate(holdout_rows[:200]):
        values = {name: int(sample.zone[row, i]) for i, name in enumerate(ZONE_NAMES)}
        secure_logit = plain_score(model, values, BOUNDS) / scale
        own_logit = own_part["offset"] + sum(
            feature["weight"] * sample.own[row, k] for k, feature in enumerate(own_part["features"])
        )
        # the MPC's fixed point (2^-18) against the model applied in plaintext
        assert secure_logit + own_logit == pytest.approx(report.holdout_logits[position], abs=2e-3)


def test_a_wrong_ticket_is_rejected_on_both_sides(sample: Sample, tmp_path: Path) -> None:
    links = new_links(tmp_path)
    zone = ZoneThread(links, tmp_path, ticket="the-job's-real-ticket", features=sample.zone, params=PARAMS)
    with pytest.raises(engine.TicketRejected, match="rejected the ticket"):
        joint_model.run_institution_side(
            links.institution,
            ticket=TICKET,
            labels=sample.labels,
            train_mask=sample.train_mask,
            own_features=None,
            zone_feature_count=ZONE,
            params=PARAMS,
            run_dir=tmp_path / "bank",
        )
    zone.join()
    assert isinstance(zone.error, engine.TicketRejected)
    assert TICKET not in str(zone.error)


def test_a_peer_that_never_connects_is_reported_within_the_connect_timeout(
    sample: Sample, tmp_path: Path
) -> None:
    links = new_links(tmp_path, connect_timeout_s=2.0, recv_timeout_s=5.0)
    with pytest.raises(engine.PeerNeverConnected, match="did not connect within 2 s"):
        joint_model.run_zone_side(
            links.zone,
            ticket_sha256=hashlib.sha256(TICKET.encode()).digest(),
            features=sample.zone,
            params=PARAMS,
            run_dir=tmp_path / "zone",
        )


def test_a_zone_killed_mid_training_gives_the_bank_link_dropped(sample: Sample, tmp_path: Path) -> None:
    links = new_links(tmp_path, recv_timeout_s=6.0)
    slow = TrainParams(epochs=30, batch_size=256, learning_rate=1.0)
    zone = joint_model.ZoneTrainProcess(
        links.zone,
        ticket_sha256=hashlib.sha256(TICKET.encode()).digest(),
        features=sample.zone,
        params=slow,
        run_dir=tmp_path / "zone",
    )
    bank = joint_model.InstitutionTrainProcess(
        links.institution,
        ticket=TICKET,
        labels=sample.labels,
        train_mask=sample.train_mask,
        own_features=sample.own,
        zone_feature_count=ZONE,
        params=slow,
        run_dir=tmp_path / "bank",
    )
    with zone, bank:
        zone.start()
        bank.start()
        deadline = time.monotonic() + 120  # a hang detector only
        while not (bank.phase or "").startswith("training epoch"):
            assert bank.wait(0.1) is None and time.monotonic() < deadline
        assert zone.cancel("the test kills the zone mid-training")
        with pytest.raises(engine.LinkDropped, match="dropped"):
            bank.wait(120)
    assert not zone.running and not bank.running


def test_the_scorecard_form_trains_on_woe_and_gives_points_per_bin(sample: Sample, tmp_path: Path) -> None:
    edges = {name: [35.0, 45.0, 55.0, 65.0] for name in ZONE_NAMES}
    bins = np.stack(
        [np.searchsorted(edges[name], sample.zone[:, i], side="right") for i, name in enumerate(ZONE_NAMES)],
        axis=1,
    )
    counts = [len(edges[name]) + 1 for name in ZONE_NAMES]
    # the bank's WOE per bin, as a stats job would give it (over the training rows, 0.5 for a zero count)
    train_rows = sample.train_mask
    y = sample.labels[train_rows]
    woe = []
    for i in range(ZONE):
        column = bins[train_rows, i]
        positives = np.array([(y[column == b] == 1).sum() for b in range(counts[i])], float)
        negatives = np.array([(y[column == b] == 0).sum() for b in range(counts[i])], float)
        positives[positives == 0] = 0.5
        negatives[negatives == 0] = 0.5
        woe.append(np.log((positives / y.sum()) / (negatives / (len(y) - y.sum()))))
    report, _ = train(
        sample,
        new_links(tmp_path),
        tmp_path,
        zone_extra={"bins": bins, "bin_counts": counts},
        bank_extra={"woe": woe},
    )
    assert report.scorecard and "woe_lookup" in report.seconds
    joined = np.hstack([np.stack([woe[i][bins[:, i]] for i in range(ZONE)], axis=1), sample.own])
    holdout = ~sample.train_mask
    reference = LogisticRegression(max_iter=2000).fit(joined[train_rows], sample.labels[train_rows])
    reference_auc = roc_auc_score(sample.labels[holdout], reference.decision_function(joined[holdout]))
    assert abs(report.holdout_auc - reference_auc) < 0.005
    doc = joint_model.scoring_model(
        report,
        feature_names=ZONE_NAMES,
        bounds=BOUNDS,
        name="joint-card",
        purpose="risk_modeling",
        edges=edges,
    )
    model = parse_model(doc)
    assert model.kind == "scorecard"
    own_part = joint_model.own_features_model(report, feature_names=[f"own_{i}" for i in range(OWN)])
    for position, row in enumerate(np.flatnonzero(holdout)[:100]):
        values = {name: int(sample.zone[row, i]) for i, name in enumerate(ZONE_NAMES)}
        own_logit = own_part["offset"] + sum(
            feature["weight"] * sample.own[row, k] for k, feature in enumerate(own_part["features"])
        )
        score = plain_score(model, values, BOUNDS) / model.scale
        assert score + own_logit == pytest.approx(report.holdout_logits[position], abs=2e-3)


def test_auc_and_ks_handle_ties_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = rng.integers(0, 8, 500).astype(float)  # many ties
    assert joint_model.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert joint_model.ks(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.5)
    assert joint_model.ks(np.array([0, 1]), np.array([0.5, 0.5])) == 0.0


def test_train_params_list_every_problem() -> None:
    with pytest.raises(ValueError) as raised:
        TrainParams(epochs=0, batch_size=3, learning_rate=-1, l2=-0.1, fxp_fraction_bits=40, sigmoid="exp")  # type: ignore[arg-type]
    message = str(raised.value)
    for word in ("epochs", "batch_size", "learning_rate", "l2", "fxp_fraction_bits", "sigmoid"):
        assert word in message
