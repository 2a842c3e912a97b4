"""Batch scoring jobs over the real gateway, run by the scoring worker: progress, a worker that
dies mid-job and the one that takes over, re-downloads, limits, caps and a revoked grant."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.scoring import service as scoring_service
from datazone.scoring import worker as scoring_worker
from datazone.scoring.models import ScoringJob
from tests.conftest import problem
from tests.factories import grants_revoked
from tests.scoring.conftest import CHUNK, MAX_BATCH, PRODUCT, ScoringZone
from tests.scoring.helpers import (
    approved,
    assert_rounded,
    count_rows,
    expected_scores,
    logistic,
    open_chunk,
    score,
    scorecard,
    unique,
    usage_events,
)


def post_job(zone: ScoringZone, model_id: str, usccs: list[str], *, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with zone.client() as c:
        return c.post("/v1/scoring/jobs", json={"model": model_id, "usccs": usccs}, headers=headers)


def job(zone: ScoringZone, job_id: str) -> dict[str, Any]:
    with zone.client() as c:
        r = c.get(f"/v1/scoring/jobs/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def chunk(zone: ScoringZone, job_id: str, index: int) -> httpx.Response:
    with zone.client() as c:
        return c.get(f"/v1/scoring/jobs/{job_id}/chunks/{index}")


def test_a_job_runs_chunk_by_chunk_survives_its_worker_and_downloads_the_same_bytes(
    scoring_zone: ScoringZone,
) -> None:
    zone = scoring_zone
    # no job of an earlier test is left for the workers below to pick first
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-drain")
    model = logistic(unique("batch"), scale=100)
    view = approved(zone, model)
    codes = zone.take(300)
    usccs = codes[:150] + zone.outsiders[:2] + codes[150:]
    billed_before = usage_events(zone)

    created = post_job(zone, view["id"], usccs, key=f"job-{view['id']}")
    assert created.status_code == 201, created.text
    body = created.json()
    chunks = math.ceil(len(usccs) / CHUNK)
    assert (body["status"], body["total"], body["found"], body["chunk_size"], body["chunks"]) == (
        "queued",
        302,
        300,
        CHUNK,
        chunks,
    )
    assert (body["chunks_done"], body["done"], body["charged_fen"]) == (0, 0, 300 * 200)
    job_id = body["id"]
    # the same key is the same job, billed once
    again = post_job(zone, view["id"], usccs, key=f"job-{view['id']}")
    assert again.status_code == 201 and again.json()["id"] == job_id
    assert again.headers["Idempotent-Replayed"] == "true"
    assert usage_events(zone) == billed_before + 300
    assert count_rows(zone, "SELECT count(*) FROM scoring_job WHERE model_id = :m", m=view["id"]) == 1
    # the outsiders are neither billed nor counted against a cap
    assert usage_events(zone, uscc=zone.outsiders[0]) == 0

    waiting = chunk(zone, job_id, 0)
    assert waiting.status_code == 409 and problem(waiting)["type"].endswith("/scoring-chunk-not-ready")
    assert waiting.headers["Retry-After"]

    # worker A computes one chunk, then dies (it stops without a word, leaving the job running)
    first = scoring_worker.run_once(
        zone.db, zone.worker_settings(scoring_factor_pool=2), worker_name="worker-a", chunk_limit=1
    )
    assert f"job:{job_id}:running" in first
    progress = job(zone, job_id)
    assert (progress["status"], progress["chunks_done"], progress["done"]) == ("running", 1, CHUNK)
    saved = chunk(zone, job_id, 0)
    assert saved.status_code == 200
    assert chunk(zone, job_id, 1).status_code == 409

    # worker B finds A quiet and takes the job over at its first missing chunk
    second = scoring_worker.run_once(
        zone.db, zone.worker_settings(scoring_factor_pool=2, scoring_stale_minutes=0), worker_name="worker-b"
    )
    assert f"job:{job_id}:succeeded" in second
    done = job(zone, job_id)
    assert (done["status"], done["chunks_done"], done["done"], done["error"]) == (
        "succeeded",
        chunks,
        302,
        None,
    )
    assert done["finished_at"] is not None

    # a dropped download resumes with the same bytes
    assert chunk(zone, job_id, 0).content == saved.content
    exact = expected_scores(zone, model, codes)
    opened: dict[str, int] = {}
    order: list[str] = []
    for index in range(chunks):
        r = chunk(zone, job_id, index)
        assert r.status_code == 200
        part = r.json()
        assert part["index"] == index and part["job"] == job_id
        order += part["usccs"]
        assert [u in zone.outsiders for u in part["usccs"]] == [not f for f in part["found"]]
        opened.update(open_chunk(zone, part))
    assert order == usccs
    assert opened.keys() == set(codes)
    for code in codes:
        assert_rounded(opened[code], exact[code], 1)
    assert len(set(opened.values())) > 10

    with zone.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT index, worker, fresh_factors FROM scoring_chunk WHERE job_id = :j ORDER BY index"
            ),
            {"j": job_id},
        ).all()
        actions = conn.execute(
            sa.text(
                "SELECT action, outcome, entity_count FROM audit_entry WHERE detail->>'job_id' = :j"
                " OR object_id = :j ORDER BY id"
            ),
            {"j": job_id},
        ).all()
    # chunk 0 is A's, kept; B computed the rest; the pool ran dry and fresh factors made up for it
    assert [r.worker for r in rows] == ["worker-a"] + ["worker-b"] * (chunks - 1)
    assert 0 < sum(r.fresh_factors for r in rows) < chunks
    assert [(a.action, a.outcome) for a in actions] == [
        ("product.answer", "ok"),
        ("scoring.job.takeover", "ok"),
        ("scoring.job.finish", "ok"),
    ]
    assert actions[0].entity_count == 300


def test_a_scorecard_job_with_coarse_rounding(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    model = scorecard(unique("batch-card"), scale=1000)
    view = approved(zone, model)
    assert view["resolution"] == 1000
    codes = zone.take(60)
    created = post_job(zone, view["id"], codes)
    assert created.status_code == 201, created.text
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-c")
    body = job(zone, created.json()["id"])
    assert body["status"] == "succeeded"
    exact = expected_scores(zone, model, codes)
    for index in range(body["chunks"]):
        for code, value in open_chunk(zone, chunk(zone, body["id"], index).json()).items():
            assert_rounded(value, exact[code], 1000)


def test_a_batch_over_the_contract_limit_or_with_bad_codes_is_refused_whole(
    scoring_zone: ScoringZone,
) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("limits"), scale=100))
    codes = zone.take(3)
    jobs_before = count_rows(
        zone, "SELECT count(*) FROM scoring_job WHERE institution_id = :i", i=zone.institution_id
    )
    billed_before = usage_events(zone)

    too_many = post_job(zone, view["id"], [codes[0]] * (MAX_BATCH + 1))
    assert too_many.status_code == 422
    body = problem(too_many)
    assert body["type"].endswith("/scoring-batch-over-limit")
    assert (body["limit"], body["size"]) == (MAX_BATCH, MAX_BATCH + 1)

    bad = post_job(zone, view["id"], [codes[0], "91110000ABCDEFGHIJ", codes[1], "123"])
    assert bad.status_code == 422
    assert [e["location"] for e in problem(bad)["errors"]] == ["usccs.1", "usccs.3"]

    twice = post_job(zone, view["id"], [codes[2], codes[2].lower()])
    assert twice.status_code == 422 and codes[2] in problem(twice)["detail"]

    assert (
        count_rows(zone, "SELECT count(*) FROM scoring_job WHERE institution_id = :i", i=zone.institution_id)
        == jobs_before
    )
    assert usage_events(zone) == billed_before


def test_a_job_with_enterprises_at_their_cap_is_refused_and_nothing_is_written(
    scoring_zone: ScoringZone,
) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("capped-job"), scale=100))
    codes = zone.take(6)
    for code in codes[:2]:
        for _ in range(3):
            assert score(zone, view["id"], code).status_code == 200
    jobs_before = count_rows(
        zone, "SELECT count(*) FROM scoring_job WHERE institution_id = :i", i=zone.institution_id
    )
    billed_before = usage_events(zone)
    tallied = count_rows(
        zone, "SELECT count(*) FROM scoring_tally WHERE institution_id = :i", i=zone.institution_id
    )

    r = post_job(zone, view["id"], codes)
    assert r.status_code == 403
    body = problem(r)
    assert body["type"].endswith("/scoring-cap-exceeded")
    assert (body["over_cap"], body["usccs"]) == (2, codes[:2])
    assert "2 of these enterprises" in body["detail"]
    assert (
        count_rows(zone, "SELECT count(*) FROM scoring_job WHERE institution_id = :i", i=zone.institution_id)
        == jobs_before
    )
    assert usage_events(zone) == billed_before
    assert (
        count_rows(
            zone, "SELECT count(*) FROM scoring_tally WHERE institution_id = :i", i=zone.institution_id
        )
        == tallied
    )

    # a job's scores count against the caps too: two jobs of the rest fill them, a third is refused
    rest = codes[2:]
    for _ in range(3):
        assert post_job(zone, view["id"], rest).status_code == 201
    refused = post_job(zone, view["id"], rest)
    assert refused.status_code == 403 and problem(refused)["over_cap"] == 4
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-d")


def test_a_revoked_grant_stops_a_running_job_naming_the_department(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-drain")
    view = approved(
        zone, logistic(unique("revoked"), scale=100)
    )  # weighs dishonest listings and enforcement cases
    codes = zone.take(3 * CHUNK)
    created = post_job(zone, view["id"], codes)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-e", chunk_limit=1)
    assert job(zone, job_id)["chunks_done"] == 1

    with grants_revoked(
        zone.db, department="courts", reason="法院暂停授权（测试）", institution_id=zone.institution_id
    ) as revoked:
        assert len(revoked) == 1  # the courts' one grant to the tests' institution
        stopped = scoring_worker.run_once(
            zone.db, zone.worker_settings(scoring_stale_minutes=0), worker_name="worker-f"
        )
        assert f"job:{job_id}:failed" in stopped
        failed = job(zone, job_id)
        assert failed["status"] == "failed" and failed["chunks_done"] == 1
        assert "courts" in failed["error"] and "revoked" in failed["error"]
        # what was computed stays downloadable; the rest says why it never will be
        assert chunk(zone, job_id, 0).status_code == 200
        gone = chunk(zone, job_id, 1)
        assert gone.status_code == 409 and problem(gone)["type"].endswith("/scoring-job-failed")
        # and no new score or job reads the courts' data meanwhile
        [other] = zone.take(1)
        refused = score(zone, view["id"], other)
        assert refused.status_code == 403 and problem(refused)["check"] == "grant"
    outcome = count_rows(
        zone,
        "SELECT count(*) FROM audit_entry WHERE action = 'scoring.job.finish' AND outcome = 'failed'"
        " AND detail->>'job_id' = :j",
        j=job_id,
    )
    assert outcome == 1
    assert PRODUCT in created.text
    # the department's revocation is not the institution's doing: the two chunks never scored are
    # credited, naming the job, and their enterprises no longer count against their caps
    [credit] = credits_of(zone, job_id)
    assert credit.amount_fen == 2 * CHUNK * 200 and job_id in credit.memo and "courts" in credit.memo
    assert count_rows(zone, "SELECT count(*) FROM scoring_tally WHERE job_id = :j", j=job_id) == CHUNK


def credits_of(zone: ScoringZone, job_id: str) -> list[Any]:
    with zone.db.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT c.amount_fen, c.memo FROM scoring_job j JOIN ledger_entry c ON c.id = j.credit_id"
                    " WHERE j.id = :j"
                ),
                {"j": job_id},
            ).all()
        )


def test_a_job_stopped_by_its_own_model_retirement_stays_charged(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-drain")
    view = approved(zone, logistic(unique("retired"), scale=100))
    codes = zone.take(2 * CHUNK)
    created = post_job(zone, view["id"], codes)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-g", chunk_limit=1)
    with zone.client() as c:
        retired = c.post(f"/v1/scoring/models/{view['id']}/retire", json={"reason": "模型更新"})
    assert retired.status_code == 200, retired.text
    stopped = scoring_worker.run_once(zone.db, zone.worker_settings(scoring_stale_minutes=0), worker_name="worker-h")
    assert f"job:{job_id}:failed" in stopped
    assert credits_of(zone, job_id) == []
    assert count_rows(zone, "SELECT count(*) FROM scoring_tally WHERE job_id = :j", j=job_id) == 2 * CHUNK


def test_a_worker_failure_mid_job_credits_what_was_not_scored_once(
    scoring_zone: ScoringZone, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = scoring_zone
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-drain")
    view = approved(zone, logistic(unique("crash"), scale=100))
    codes = zone.take(3 * CHUNK)
    created = post_job(zone, view["id"], codes)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    scoring_worker.run_once(zone.db, zone.worker_settings(), worker_name="worker-i", chunk_limit=1)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a fault in the zone's own worker")

    # the zone's fault: its computation breaks (the database and everything else stay real)
    monkeypatch.setattr(scoring_service, "compute_chunk", broken)
    failed = scoring_worker.run_once(zone.db, zone.worker_settings(scoring_stale_minutes=0), worker_name="worker-j")
    assert f"failed:job:{job_id}" in failed
    assert job(zone, job_id)["status"] == "failed"
    [credit] = credits_of(zone, job_id)
    assert credit.amount_fen == 2 * CHUNK * 200 and job_id in credit.memo
    # finishing it again (a restarted worker) credits nothing more
    with zone.db.unit_of_work() as s:
        row = s.get(ScoringJob, job_id, with_for_update=True)
        assert row is not None
        scoring_service.credit_undelivered(s, job=row)
    assert len(credits_of(zone, job_id)) == 1
