"""Joint jobs through the pipeline against a real gateway: what is refused (and that nothing is
written or charged then), the differencing check, the cap, metering and idempotent replay.
The statistics and the training themselves are tested in test_stats.py and test_training.py."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.grant import service as grant_service
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.scoring import service as scoring_service
from tests.conftest import problem
from tests.factories import bearer
from tests.joint.conftest import MAX_JOBS, PURPOSE, SMALL, SMALL_BOUNDS, JointZone

FEATURES = ["years_since_founding", "reg_capital_wan", "tax_grade_code", "enforcement_cases_24m"]


def train_body(sample: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "train",
        "product": SMALL,
        "purpose": "risk_modeling",
        "features": FEATURES,
        "sample": sample,
        "peer_address": "127.0.0.1:47999",
        **extra,
    }


def jobs_of(zone: JointZone) -> int:
    with zone.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM joint_job WHERE institution_id = :i"), {"i": zone.institution_id}
            ).scalar_one()
        )


def usage_of(zone: JointZone) -> int:
    with zone.db.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT coalesce(sum(quantity), 0) FROM usage_event WHERE institution_id = :i"),
                {"i": zone.institution_id},
            ).scalar_one()
        )


def test_a_training_job_is_created_metered_and_audited(joint_zone: JointZone) -> None:
    sample = joint_zone.sample()
    before_jobs, before_units = jobs_of(joint_zone), usage_of(joint_zone)
    with joint_zone.client() as c:
        r = c.post("/v1/joint/jobs", json=train_body(sample), headers={"Idempotency-Key": "train-once-1"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "queued" and job["kind"] == "train"
        assert job["sample_size"] == len(sample)
        assert job["ticket"] and job["zone_address"].startswith("127.0.0.1:")
        assert r.headers["Cache-Control"] == "no-store"
        # metered: one unit per sample enterprise plus the product's units per job
        assert usage_of(joint_zone) - before_units == len(sample) + SMALL_BOUNDS["job_units"]
        assert job["charged_fen"] == (len(sample) + SMALL_BOUNDS["job_units"]) * joint_zone.spec.price_fen
        # the same key again: the same job, no ticket, nothing more charged
        again = c.post("/v1/joint/jobs", json=train_body(sample), headers={"Idempotency-Key": "train-once-1"})
        assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["job_id"] == job["job_id"] and again.json()["ticket"] is None
        assert usage_of(joint_zone) - before_units == len(sample) + SMALL_BOUNDS["job_units"]
        assert jobs_of(joint_zone) == before_jobs + 1
        seen = c.get(f"/v1/joint/jobs/{job['job_id']}").json()
        assert seen["ticket"] is None and seen["status"] == "queued"
        assert job["job_id"] in {j["job_id"] for j in c.get("/v1/joint/jobs").json()["jobs"]}
    with joint_zone.db.engine.connect() as conn:
        entry = conn.execute(
            sa.text("SELECT detail, entity_count FROM audit_entry WHERE action = 'joint.train.create' AND detail->>'job_id' = :j"),
            {"j": job["job_id"]},
        ).one()
        assert entry.entity_count == len(sample)
        # the sample's members are kept only as keyed digests, 16 bytes each
        members = conn.execute(
            sa.text("SELECT count(*), min(length(member)), max(length(member)) FROM joint_sample_member WHERE job_id = :j"),
            {"j": job["job_id"]},
        ).one()
        assert tuple(members) == (len(sample), 16, 16)
        stored = conn.execute(sa.text("SELECT member FROM joint_sample_member WHERE job_id = :j LIMIT 1"), {"j": job["job_id"]}).scalar_one()
        assert all(code.encode() not in bytes(stored) for code in sample)


def test_refusals_list_every_problem_and_write_nothing(joint_zone: JointZone) -> None:
    sample = joint_zone.sample()
    before_jobs, before_units = jobs_of(joint_zone), usage_of(joint_zone)
    with joint_zone.client() as c:
        bad = {
            "kind": "stats",
            "product": SMALL,
            "purpose": "risk_modeling",
            "features": ["years_since_founding", "no_such_feature", "tax_paid_latest_wan"],
            "sample": sample,
            "bins": 30,
            "edges": {"years_since_founding": [5, 3]},
            "grouped": ["reg_capital_wan"],
            "segments": 9,
            "public_key": "bm90IGEga2V5",
        }
        r = c.post("/v1/joint/jobs", json=bad)
        body = problem(r)
        assert r.status_code == 422 and body["check"] == "joint_job"
        locations = {e["location"] for e in body["errors"]}
        # unknown feature, a grade-3 feature above clearance 2, too many bins, edges not
        # increasing, a grouped feature not asked for, too many segments, a key that is not one
        assert {"features.1", "features.2", "bins", "edges.years_since_founding", "grouped.0", "segments", "public_key"} <= locations
        assert "grade 3" in body["detail"]

        small = c.post("/v1/joint/jobs", json=train_body(sample[:100]))
        assert small.status_code == 422 and problem(small)["check"] == "joint_sample"
        assert "floor of 200" in problem(small)["detail"]

        no_consent = c.post("/v1/joint/jobs", json=train_body(sample[:-5] + joint_zone.unconsented[:5]))
        assert no_consent.status_code == 403 and problem(no_consent)["check"] == "consent"
        assert joint_zone.unconsented[0] in no_consent.text

        bad_code = c.post("/v1/joint/jobs", json=train_body([*sample[:-1], "91110000ABCDEFGHIJ"]))
        assert bad_code.status_code == 422 and problem(bad_code)["check"] == "uscc"

        few = c.post("/v1/joint/jobs", json=train_body(sample, features=FEATURES[:2]))
        assert few.status_code == 422 and "at least 3" in few.text

        no_stats = c.post("/v1/joint/jobs", json=train_body(sample, scorecard=True, stats_job="joint_notajob0000"))
        assert no_stats.status_code == 422 and "no succeeded statistics job" in no_stats.text

        no_peer = c.post("/v1/joint/jobs", json={**train_body(sample), "peer_address": "nowhere"})
        assert no_peer.status_code == 422 and "peer_address" in {e["location"] for e in problem(no_peer)["errors"]}

        lookup = c.get(f"/v1/products/{SMALL}/enterprises/{sample[0]}", params={"purpose": "risk_modeling"})
        assert lookup.status_code == 409 and problem(lookup)["type"].endswith("joint-only-product")
    assert jobs_of(joint_zone) == before_jobs
    assert usage_of(joint_zone) == before_units


def test_a_sample_close_to_an_earlier_one_is_refused(joint_zone: JointZone) -> None:
    sample = joint_zone.sample()
    with joint_zone.client() as c:
        first = c.post("/v1/joint/jobs", json=train_body(sample))
        assert first.status_code == 201, first.text
        # the same sample again is allowed (the same answer), a few enterprises more is not
        same = c.post("/v1/joint/jobs", json=train_body(list(reversed(sample))))
        assert same.status_code == 201, same.text
        extra = joint_zone.consented[-5:]
        close = c.post("/v1/joint/jobs", json=train_body(sample + extra))
        body = problem(close)
        assert close.status_code == 403 and body["check"] == "joint_difference"
        assert body["difference"] == 5 and body["job_id"] in (first.json()["job_id"], same.json()["job_id"])
        fewer = c.post("/v1/joint/jobs", json=train_body(sample[:-3]))
        assert fewer.status_code == 403 and problem(fewer)["difference"] == 3


def test_columns_are_checked_and_a_training_job_takes_none(joint_zone: JointZone) -> None:
    sample = joint_zone.sample()
    with joint_zone.client() as c:
        job = c.post("/v1/joint/jobs", json=train_body(sample)).json()
        r = c.put(
            f"/v1/joint/jobs/{job['job_id']}/columns/label",
            content=b"\x00" * 64,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 409 and problem(r)["check"] == "joint_job"
        wrong_type = c.put(f"/v1/joint/jobs/{job['job_id']}/columns/label", content=b"x", headers={"Content-Type": "text/plain"})
        assert wrong_type.status_code == 422
        result = c.get(f"/v1/joint/jobs/{job['job_id']}/result")
        assert result.status_code == 409 and "training job" in problem(result)["detail"]
        other = c.get("/v1/joint/jobs/joint_doesnotexist00")
        assert other.status_code == 404


def test_the_cap_holds_per_period(joint_zone: JointZone) -> None:
    with joint_zone.client() as c:
        made = 0
        while True:
            r = c.post("/v1/joint/jobs", json=train_body(joint_zone.sample()))
            if r.status_code != 201:
                break
            made += 1
            assert made <= MAX_JOBS, "the cap did not hold"
        body = problem(r)
        assert r.status_code == 403 and body["check"] == "joint_cap" and body["cap"] == MAX_JOBS


def test_features_whose_department_has_not_granted_are_refused_before_consent(joint_zone: JointZone) -> None:
    """A bank whose contract covers the product, and from which the tax department withdraws its
    grant after the bank's token was issued: a job over a tax feature is refused at the grants,
    naming the department, before its sample's consent is looked at; a job over the other
    departments' features passes the grants and is refused next, at consent (this bank holds
    none). Nothing is written or charged, and each refusal is audited once."""
    spec = joint_zone.spec
    assert spec.joint is not None
    owner = {}
    now = datetime.now(UTC)
    withdrawn: list[str] = []
    with joint_zone.db.unit_of_work() as s:
        for dataset_id in spec.sources:
            owner[dataset_id] = dataset_service.get_dataset(s, dataset_id=dataset_id).supplier_id
        withheld = {owner[d] for d in scoring_service.model_datasets(spec, ["tax_grade_code"])} - {
            owner[d] for d in scoring_service.model_datasets(spec, [])
        }
        assert withheld, "tax_grade_code reads no dataset of its own department"
        covered = [
            f.name
            for f in spec.joint.features
            if not {owner[d] for d in scoring_service.model_datasets(spec, [f.name])} & withheld
        ]
        assert len(covered) >= 3
        operator = principal_service.find_principal(s, name="demo-operator")
        assert operator is not None
        bank = principal_service.create_principal(s, kind="institution", name=f"joint-narrow-{secrets.token_hex(3)}")
        bank_id = bank.id
        contract_service.create_contract(
            s, institution_id=bank_id, purposes=[PURPOSE], products=[SMALL], clearance=2,
            valid_from=now - timedelta(days=1), valid_to=now + timedelta(days=30), by=operator,
        )
        for department in sorted(set(owner.values())):
            dept = principal_service.find_principal(s, name=f"demo-{department}")
            assert dept is not None
            grant = grant_service.create_grant(
                s, department=department, datasets=[d for d, o in owner.items() if o == department],
                purposes=[PURPOSE], products=[SMALL], institutions=[bank_id],
                valid_from=now - timedelta(days=1), valid_to=now + timedelta(days=30), by=dept,
            )
            if department in withheld:
                withdrawn.append(grant.id)
        client, secret = oauth_service.create_client(s, institution_id=bank_id, name="narrow", by_name="tests")
        client_id = client.client_id
    issued = httpx.post(
        f"{joint_zone.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""), timeout=30
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    with joint_zone.db.unit_of_work() as s:
        for department, grant_id in zip(sorted(withheld), withdrawn, strict=True):
            dept = principal_service.find_principal(s, name=f"demo-{department}")
            assert dept is not None
            grant_service.revoke_grant(s, grant_id=grant_id, by=dept, reason="the joint tests withdraw it")
    sample = joint_zone.consented[:300]
    with httpx.Client(base_url=joint_zone.url, headers=bearer(token), timeout=60) as c:
        refused = c.post("/v1/joint/jobs", json=train_body(sample))
        body = problem(refused)
        assert refused.status_code == 403 and body["check"] == "grant", body
        assert all(department in body["detail"] for department in withheld)
        passed_grants = c.post("/v1/joint/jobs", json=train_body(sample, features=covered[:3]))
        assert passed_grants.status_code == 403 and problem(passed_grants)["check"] == "consent"
    with joint_zone.db.engine.connect() as conn:
        for table in ("joint_job", "usage_event"):
            assert conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE institution_id = :i"), {"i": bank_id}
            ).scalar_one() == 0
        audited = conn.execute(
            sa.text(
                "SELECT detail->>'check' FROM audit_entry WHERE institution_id = :i AND outcome = 'refused' ORDER BY id"
            ),
            {"i": bank_id},
        ).scalars().all()
        assert audited == ["grant", "consent"]
