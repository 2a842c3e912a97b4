"""Joint statistics end to end: the SDK encrypts the labels under its own OU key, the gateway
takes the sample and the columns, the zone's worker sums ciphertexts per bin and group, the SDK
decrypts. Every figure equals the plaintext computation over the product engine's features;
the zone keeps no label; a job that cannot deliver is credited."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from datazone.client import stats as stats_sdk
from datazone.joint import worker as joint_worker
from datazone.privacy import joint_stats
from tests.joint.conftest import SMALL, SMALL_BOUNDS, JointZone

FEATURES = ["years_since_founding", "reg_capital_wan", "tax_grade_code", "enforcement_cases_24m", "penalties_36m"]
GROUPED = ["years_since_founding", "reg_capital_wan"]


def labelled(zone: JointZone, size: int, seed: int) -> stats_sdk.LabeledSample:
    codes = zone.sample(size)
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < 0.3).astype(np.int64)
    segments = rng.integers(0, 3, size).astype(np.int64)
    return stats_sdk.LabeledSample(codes=codes, labels=labels, segments=segments, source="tests")


def test_statistics_equal_the_plaintext_computation(joint_zone: JointZone, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sample = labelled(joint_zone, 400, seed=7)
    phases: list[str] = []
    received: list[bytes] = []

    def keep_column(request: httpx.Request) -> None:
        if request.method == "PUT":
            received.append(request.read())

    with joint_zone.worker(), joint_zone.sdk() as zone:
        zone._http.event_hooks["request"].append(keep_column)
        report = stats_sdk.run_stats(
            zone,
            sample,
            product=SMALL,
            purpose="risk_modeling",
            features=FEATURES,
            bins=6,
            grouped=GROUPED,
            progress=lambda phase, done, total: phases.append(phase),
            poll_interval=0.2,
        )
    assert "upload" in phases
    values = joint_zone.plain_features(sample.codes, FEATURES)
    plain = joint_stats.plain_stats(
        FEATURES,
        values,
        sample.labels,
        bins=6,
        min_count=SMALL_BOUNDS["min_bin_count"],
        grouped=GROUPED,
        segments=sample.segments,
        segment_count=3,
    )
    assert report.sample_size == 400
    assert [f.name for f in report.features] == FEATURES
    for got, want in zip(report.features, plain.features, strict=True):
        assert got.edges == want.edges, got.name
        assert got.totals == want.totals and got.positives == want.positives, got.name
        assert got.woe == pytest.approx(want.woe) and got.iv == pytest.approx(want.iv), got.name
        assert min(got.totals) >= SMALL_BOUNDS["min_bin_count"]
    assert report.grouped == plain.grouped
    # a feature with few distinct values was merged, and the report says so
    assert report.merged == plain.merged
    with joint_zone.db.engine.connect() as conn:
        job = conn.execute(
            sa.text(
                "SELECT id, status, result, params FROM joint_job WHERE institution_id = :i AND kind = 'stats' "
                "ORDER BY created_at DESC LIMIT 1"
            ),
            {"i": joint_zone.institution_id},
        ).one()
        assert job.status == "succeeded"
        # the encrypted columns are gone with the job; what is kept holds no label in clear
        assert conn.execute(sa.text("SELECT count(*) FROM joint_column WHERE job_id = :j"), {"j": job.id}).scalar_one() == 0
        assert all(isinstance(f["positives"], str) for f in job.result["features"])
        assert "label" not in job.params
    # the columns the gateway received were ciphertexts (1 label and 3 segment indicators), and no
    # table, log or received body holds a label in any form a leak would take
    assert len(received) == 4 and all(len(body) > 400 * 256 for body in received)
    assert joint_zone.traces_of(sample.labels, sample.codes, received, caplog.text) == []
    # the search finds a label where one is: a log line that did print them
    logging.getLogger("datazone.tests").warning("labels %s", ",".join(map(str, sample.labels)))
    assert joint_zone.traces_of(sample.labels, sample.codes, [], caplog.text) == ["the worker's log records"]


def test_features_computed_in_several_processes_give_the_same_statistics(
    joint_zone: JointZone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker splits a large sample's features over processes; the sums are still exact."""
    monkeypatch.setattr(joint_worker, "PARALLEL_FROM", 100)
    sample = labelled(joint_zone, 300, seed=9)
    with joint_zone.worker(), joint_zone.sdk() as zone:
        report = stats_sdk.run_stats(
            zone, sample, product=SMALL, purpose="risk_modeling", features=FEATURES, bins=4, poll_interval=0.2
        )
    plain = joint_stats.plain_stats(
        FEATURES, joint_zone.plain_features(sample.codes, FEATURES), sample.labels, bins=4,
        min_count=SMALL_BOUNDS["min_bin_count"],
    )
    for got, want in zip(report.features, plain.features, strict=True):
        assert (got.edges, got.totals, got.positives) == (want.edges, want.totals, want.positives), got.name


def test_the_worker_computes_features_while_the_columns_are_on_their_way(joint_zone: JointZone) -> None:
    sample = labelled(joint_zone, 300, seed=19)
    key = joint_stats.LabelKey.generate()
    body = {
        "kind": "stats",
        "product": SMALL,
        "purpose": "risk_modeling",
        "features": FEATURES,
        "sample": sample.codes,
        "bins": 4,
        "public_key": joint_stats._b64(key.public_key_bytes()),
    }
    settings = joint_zone.worker_settings()
    with joint_zone.client() as c:
        job = c.post("/v1/joint/jobs", json=body).json()
        # no column yet: the worker's pass computes the job's features ahead and keeps them
        joint_worker.run_once(joint_zone.db, settings, worker_name="ahead")
        with joint_zone.db.engine.connect() as conn:
            kept = conn.execute(
                sa.text("SELECT status, features_worker, length(zone_features) FROM joint_job WHERE id = :j"),
                {"j": job["job_id"]},
            ).one()
        assert kept[0] == "receiving" and kept[1] == "ahead" and kept[2] > 0
        put = c.put(
            f"/v1/joint/jobs/{job['job_id']}/columns/label",
            content=key.encrypt_column(sample.labels),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert put.json()["status"] == "queued"
        joint_worker.run_once(joint_zone.db, settings, worker_name="sums")
        result = c.get(f"/v1/joint/jobs/{job['job_id']}/result").json()
    report = joint_stats.build_report(result, key, positives=int(sample.labels.sum()))
    plain = joint_stats.plain_stats(
        FEATURES, joint_zone.plain_features(sample.codes, FEATURES), sample.labels, bins=4,
        min_count=SMALL_BOUNDS["min_bin_count"],
    )
    for got, want in zip(report.features, plain.features, strict=True):
        assert (got.edges, got.totals, got.positives) == (want.edges, want.totals, want.positives), got.name
    with joint_zone.db.engine.connect() as conn:
        # the zone's copy of its features goes with the job's end
        assert conn.execute(
            sa.text("SELECT zone_features FROM joint_job WHERE id = :j"), {"j": job["job_id"]}
        ).scalar_one() is None


def test_declared_bins_under_the_minimum_fail_the_job_and_credit_it(joint_zone: JointZone) -> None:
    sample = labelled(joint_zone, 300, seed=11)
    with joint_zone.worker(), joint_zone.sdk() as zone, pytest.raises(stats_sdk.StatsJobFailed) as failed:
        stats_sdk.run_stats(
            zone,
            sample,
            product=SMALL,
            purpose="risk_modeling",
            features=FEATURES[:3],
            edges={"years_since_founding": [1, 200]},
            poll_interval=0.2,
        )
    assert "years_since_founding" in str(failed.value) and "fewer than 10" in str(failed.value)
    with joint_zone.db.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT status, charged_fen, credit_id FROM joint_job WHERE id = :j"), {"j": failed.value.job_id}
        ).one()
        assert row.status == "failed" and row.charged_fen > 0 and row.credit_id is not None
        credited = conn.execute(sa.text("SELECT amount_fen FROM ledger_entry WHERE id = :c"), {"c": row.credit_id}).scalar_one()
        assert abs(credited) == row.charged_fen


def test_a_column_that_is_not_the_jobs_is_refused(joint_zone: JointZone) -> None:
    sample = labelled(joint_zone, 300, seed=13)
    key, other = joint_stats.LabelKey.generate(), joint_stats.LabelKey.generate()
    body = {
        "kind": "stats",
        "product": SMALL,
        "purpose": "risk_modeling",
        "features": FEATURES[:3],
        "sample": sample.codes,
        "public_key": joint_stats._b64(key.public_key_bytes()),
    }
    with joint_zone.client() as c:
        job = c.post("/v1/joint/jobs", json=body).json()
        url = f"/v1/joint/jobs/{job['job_id']}/columns/label"
        octets = {"Content-Type": "application/octet-stream"}
        short = c.put(url, content=key.encrypt_column(sample.labels[:-1]), headers=octets)
        assert short.status_code == 422 and "300" in short.json()["detail"]
        garbage = c.put(url, content=b"\x93NUMPY" + b"\x00" * 500, headers=octets)
        assert garbage.status_code == 422
        unknown = c.put(f"/v1/joint/jobs/{job['job_id']}/columns/segment-0", content=key.encrypt_column(sample.labels), headers=octets)
        assert unknown.status_code == 422 and "label" in unknown.json()["detail"]
        assert c.get(f"/v1/joint/jobs/{job['job_id']}").json()["status"] == "receiving"
        ok = c.put(url, content=key.encrypt_column(sample.labels), headers=octets)
        assert ok.status_code == 200 and ok.json()["status"] == "queued"
        assert other.public_key_bytes() != key.public_key_bytes()
