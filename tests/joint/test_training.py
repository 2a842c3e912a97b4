"""Joint modeling end to end: the bank's side (the SDK, in a child process) and the zone's worker
(its side in a child process of its own) train a logistic regression over the engine link with
mutual TLS, under the gateway's job. The bank's hold-out AUC is within 0.005 of scikit-learn's on
the same joined data; the zone keeps nothing of the model; the model file registers for secure
scoring as it is, and the scores the zone computes under encryption match the model applied in
plaintext. A bank side that never comes expires the job and credits it; one killed mid-training
fails it (the link dropped), credits it, and its orphaned engine stops."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from datazone.client import training
from datazone.client.scoring import ScoringKey
from datazone.joint import worker as joint_worker
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.purposes import Purpose
from tests.conftest import free_port
from tests.joint.conftest import SCORING, SMALL, JointZone

FEATURES = ["years_since_founding", "reg_capital_wan", "tax_grade_code", "enforcement_cases_24m", "registration_active"]
ROWS = 1200
HOLDOUT, SEED = 0.25, 3


def synthetic_labels(zone: JointZone, codes: list[str], tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels that depend on zone features and on three features of the bank's own, written as
    the bank's two CSV files; returns (zone features, own features, labels)."""
    values = zone.plain_features(codes, FEATURES).astype(np.float64)
    rng = np.random.default_rng(17)
    own = rng.normal(size=(len(codes), 3))
    spread = values.std(axis=0)
    standard = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    logit = standard @ np.array([0.9, 0.5, -0.8, 0.6, 0.4]) + own @ np.array([1.0, -0.7, 0.5]) - 0.6
    labels = (rng.random(len(codes)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    (tmp / "labels.csv").write_text("uscc,label\n" + "".join(f"{c},{y}\n" for c, y in zip(codes, labels, strict=True)))
    (tmp / "own.csv").write_text(
        "uscc,f1,f2,f3\n" + "".join(f"{c},{a:.6f},{b:.6f},{d:.6f}\n" for c, (a, b, d) in zip(codes, own, strict=True))
    )
    return values, own, labels


def test_a_model_trained_with_the_zone_matches_plaintext_and_scores(
    joint_zone: JointZone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    codes = joint_zone.sample(ROWS)
    values, own, labels = synthetic_labels(joint_zone, codes, tmp_path)
    phases: list[str] = []
    sent: list[bytes] = []
    with joint_zone.worker(), joint_zone.sdk() as zone:
        zone._http.event_hooks["request"].append(lambda request: sent.append(request.read()))
        result = training.train(
            zone,
            purpose=Purpose.risk_modeling,
            labels_path=tmp_path / "labels.csv",
            own_features_path=tmp_path / "own.csv",
            features=FEATURES,
            listen=f"127.0.0.1:{free_port()}",
            out_dir=tmp_path / "out",
            params={"epochs": 8},
            holdout=HOLDOUT,
            seed=SEED,
            product=SMALL,
            progress=lambda phase, done, total: phases.append(phase),
        )
    metrics = json.loads(result.metrics_path.read_text())
    assert any(p.startswith("epoch") for p in phases) and phases[-1] == "done"
    # scikit-learn's logistic regression on the same joined data and the same hold-out
    train_rows = training.choose_holdout(ROWS, HOLDOUT, SEED)
    joined = np.hstack([values, own])
    spread = joined[train_rows].std(axis=0)
    joined = (joined - joined[train_rows].mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    reference = LogisticRegression(C=1e6, max_iter=2000).fit(joined[train_rows], labels[train_rows])
    plain_auc = roc_auc_score(labels[~train_rows], reference.decision_function(joined[~train_rows]))
    assert metrics["holdout_rows"] == (~train_rows).sum()
    assert abs(metrics["auc"] - plain_auc) <= 0.005, (metrics["auc"], plain_auc)

    # the zone's side: the job succeeded and what the zone keeps holds no weight
    model = json.loads(result.model_path.read_text())
    with joint_zone.db.engine.connect() as conn:
        job = conn.execute(
            sa.text("SELECT status, report, result, params FROM joint_job WHERE id = :j"), {"j": result.job_id}
        ).one()
    assert job.status == "succeeded" and job.result is None
    kept = json.dumps([job.report, job.params])
    for feature in model["features"]:
        assert f"{feature['weight']}"[:8] not in kept
    assert str(model["intercept"])[:8] not in kept
    # no label in the zone's tables, the gateway's and the engine's logs, the worker's log records,
    # or anything the bank's side sent the gateway
    assert len(sent) >= 2
    assert joint_zone.traces_of(labels, codes, sent, caplog.text) == []

    # the model registers for secure scoring as it is, and scores as it does in plaintext
    parsed = circuits.parse_model(model)
    _, private = paillier.generate_keypair(2048)
    key = ScoringKey(private=private)
    with joint_zone.sdk() as zone:
        view = zone.register_model(result.model_path, key)
        approved = httpx.post(
            f"{joint_zone.url}/v1/scoring/models/{view['id']}/review",
            json={"decision": "approve", "reason": "joint model: features and purpose reviewed"},
            headers=joint_zone.operator,
            timeout=60,
        )
        assert approved.status_code == 200, approved.text
        resolution = approved.json()["resolution"]
        assert view["product"] == SCORING
        bounds = {
            f.name: circuits.FeatureBounds(f.name, f.min, f.max, f.missing)
            for f in (joint_zone.spec.joint.features if joint_zone.spec.joint else [])
        }
        for row in range(3):
            scored = zone.score(result.model_path, codes[row], key=key, model_id=view["id"]).enterprise
            expected = circuits.plain_score(parsed, dict(zip(FEATURES, map(int, values[row]), strict=True)), bounds)
            assert scored.found and scored.score_units is not None
            assert abs(scored.score_units - expected) <= resolution


def test_a_bank_side_that_never_comes_expires_the_job_and_credits_it(joint_zone: JointZone) -> None:
    codes = joint_zone.sample(300)
    with joint_zone.client() as c:
        created = c.post(
            "/v1/joint/jobs",
            json={
                "kind": "train",
                "product": SMALL,
                "purpose": "risk_modeling",
                "features": FEATURES[:3],
                "sample": codes,
                "peer_address": f"127.0.0.1:{free_port()}",
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
    settings = joint_zone.worker_settings().model_copy(update={"joint_link_timeout_seconds": 3.0})
    ran = joint_worker.run_once(joint_zone.db, settings, worker_name="joint-tests-expiry")
    assert f"failed:{job_id}" in ran
    with joint_zone.client() as c:
        job = c.get(f"/v1/joint/jobs/{job_id}").json()
    assert job["status"] == "expired" and "did not connect" in job["reason"]
    with joint_zone.db.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT charged_fen, credit_id FROM joint_job WHERE id = :j"), {"j": job_id}).one()
        assert row.charged_fen > 0 and row.credit_id is not None


def engines_under(directory: Path) -> list[int]:
    """The processes whose working directory is under `directory` (an engine child works in its run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(directory):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_bank_side_killed_mid_training_fails_the_job_credits_it_and_frees_the_worker(
    joint_zone: JointZone, tmp_path: Path
) -> None:
    """The bank's side (the SDK in a process of its own, and its engine child) is killed in the
    middle of the epochs: the zone's side hears nothing more for DATAZONE_JOINT_PEER_SILENCE_SECONDS,
    ends the job as failed with the link dropped, credits it, and the worker goes on."""
    codes = joint_zone.sample(600)
    synthetic_labels(joint_zone, codes, tmp_path)
    # small batches and many epochs: the training outlasts the kill
    bank_side = tmp_path / "bank_side.py"
    bank_side.write_text(
        textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from datazone.client import training
            from datazone.client.sdk import ZoneClient
            from datazone.purposes import Purpose

            url, client_id, secret, listen, out = sys.argv[1:]
            with ZoneClient(url, client_id, secret, timeout=120) as zone:
                training.train(
                    zone, purpose=Purpose.risk_modeling, labels_path=Path(out) / "labels.csv",
                    features={FEATURES[:3]!r}, listen=listen, out_dir=Path(out) / "out",
                    params={{"epochs": 30, "batch_size": 16}}, product={SMALL!r},
                )
        """)
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.time()
    job_of = sa.text(
        "SELECT id, status, reason, progress_phase, charged_fen, credit_id FROM joint_job "
        "WHERE institution_id = :i AND kind = 'train' AND created_at >= to_timestamp(:t) ORDER BY created_at DESC LIMIT 1"
    )
    with joint_zone.worker(joint_peer_silence_seconds=6.0):
        bank = subprocess.Popen(
            [sys.executable, str(bank_side), joint_zone.url, joint_zone.client_id, joint_zone.client_secret,
             f"127.0.0.1:{free_port()}", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "TMPDIR": str(scratch)},  # the SDK's engine directory, so its child can be found
        )
        try:
            deadline = time.monotonic() + 240  # a hang detector only
            while True:
                with joint_zone.db.engine.connect() as conn:
                    job = conn.execute(job_of, {"i": joint_zone.institution_id, "t": started}).first()
                if job is not None and (job.progress_phase or "").startswith("training epoch"):
                    break
                assert bank.poll() is None, "the bank's side ended before it could be killed"
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert engines_under(scratch), "the bank's engine child was not found"
        finally:
            os.killpg(bank.pid, signal.SIGKILL)
            bank.wait(30)
        killed = time.monotonic()
        # the bank's engine child runs in a session of its own: it sees its parent gone and stops
        while engines_under(scratch):
            assert time.monotonic() - killed < 15, f"the orphaned engine still runs: {engines_under(scratch)}"
            time.sleep(0.2)
        while job.status in ("receiving", "queued", "running"):
            assert time.monotonic() - killed < 120, "the zone's side still waits for a bank that is gone"
            time.sleep(0.2)
            with joint_zone.db.engine.connect() as conn:
                job = conn.execute(job_of, {"i": joint_zone.institution_id, "t": started}).one()
    assert job.status == "failed" and "dropped" in (job.reason or ""), job
    assert str(joint_zone.settings.home) not in job.reason
    assert job.charged_fen > 0 and job.credit_id is not None
    # the job's engine directory is gone (its log kept), so its worker finished with it
    assert not (joint_zone.settings.home / "joint" / "jobs" / job.id).exists()
    # and the worker takes the next job: one whose bank never comes expires as before
    codes = joint_zone.sample(300)
    with joint_zone.client() as c:
        created = c.post(
            "/v1/joint/jobs",
            json={"kind": "train", "product": SMALL, "purpose": "risk_modeling", "features": FEATURES[:3],
                  "sample": codes, "peer_address": f"127.0.0.1:{free_port()}"},
        )
        assert created.status_code == 201, created.text
    ran = joint_worker.run_once(
        joint_zone.db, joint_zone.worker_settings().model_copy(update={"joint_link_timeout_seconds": 2.0}),
        worker_name="after-the-drop",
    )
    assert f"failed:{created.json()['job_id']}" in ran
