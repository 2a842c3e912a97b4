"""Secure scoring end to end over the real gateway on loopback: registration and review, online
scores decrypted by the institution against the plaintext computation, caps, and bad input."""

from __future__ import annotations

import threading

import gmpy2
import httpx
import pytest
import sqlalchemy as sa

from datazone.principal import service as principal_service
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from tests.conftest import problem
from tests.scoring.conftest import PARTIAL_DEPARTMENT, PRODUCT, ScoringZone
from tests.scoring.helpers import (
    approved,
    assert_rounded,
    count_rows,
    expected_scores,
    logistic,
    open_single,
    problem_types,
    register,
    registration,
    review,
    score,
    scorecard,
    unique,
    usage_events,
)


def test_the_catalog_offers_the_features_and_defenses(scoring_zone: ScoringZone) -> None:
    r = httpx.get(
        f"{scoring_zone.url}/v1/catalog/products/{PRODUCT}", headers=scoring_zone.operator, timeout=30
    )
    assert r.status_code == 200, r.text
    offer = r.json()["scoring"]
    assert len(offer["features"]) == 31
    grade = offer["features"][3]
    assert (grade["name"], grade["min"], grade["max"], grade["missing"]) == ("tax_grade_code", 0, 5, 0)
    assert (offer["min_features"], offer["cap_scores"], offer["cap_days"], offer["min_key_bits"]) == (
        3,
        3,
        30,
        2048,
    )


@pytest.mark.parametrize(
    ("kind", "scale", "resolution"),
    [("logistic", 100, 1), ("logistic", 1_000_000, 10_000), ("scorecard", 1, 1), ("scorecard", 1000, 1000)],
)
def test_decrypted_scores_equal_the_plaintext_computation(
    scoring_zone: ScoringZone, kind: str, scale: int, resolution: int
) -> None:
    zone = scoring_zone
    model = (logistic if kind == "logistic" else scorecard)(unique(kind), scale=scale)
    view = approved(zone, model)
    assert view["resolution"] == resolution
    assert view["key_fingerprint"] == zone.public.fingerprint and view["key_bits"] == 2048
    assert [f["name"] for f in view["features"]] == [f.name for f in model.features]
    codes = zone.take(4)
    exact = expected_scores(zone, model, codes)
    # the four enterprises do not all score alike: a constant answer would not pass
    assert len(set(exact.values())) > 1
    for code in codes:
        r = score(zone, view["id"], code)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["uscc"], body["found"], body["count"], body["kind"], body["scale"]) == (
            code,
            True,
            1,
            kind,
            scale,
        )
        assert body["resolution"] == resolution and body["charged_fen"] == 200
        assert_rounded(open_single(zone, body), exact[code], resolution)


def test_every_returned_ciphertext_is_re_randomized(scoring_zone: ScoringZone) -> None:
    """Two scores of one enterprise decrypt alike but share no bytes: the zone's computation
    (which would tell the institution the features) never leaves unsealed."""
    zone = scoring_zone
    view = approved(zone, logistic(unique("rerandomized"), scale=100))
    [code] = zone.take(1)
    first, second = (score(zone, view["id"], code).json() for _ in range(2))
    assert first["ciphertext"] != second["ciphertext"]
    assert open_single(zone, first) == open_single(zone, second)


def test_an_idempotent_retry_is_the_same_score_billed_and_counted_once(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("idempotent"), scale=100))
    [code] = zone.take(1)
    first = score(zone, view["id"], code, key=f"k-{code}")
    again = score(zone, view["id"], code, key=f"k-{code}")
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert usage_events(zone, uscc=code) == 1
    tallied = "SELECT count(*) FROM scoring_tally WHERE uscc = :u AND institution_id = :i"
    assert count_rows(zone, tallied, u=code, i=zone.institution_id) == 1


def test_review_comes_before_any_score(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    name = unique("reviewed")
    document = registration(zone, logistic(name, scale=100))
    with zone.client() as c:
        r = c.post("/v1/scoring/models", json=document)
        # the same registration again (a retry after a dropped answer) is the same model, registered once
        retried = c.post("/v1/scoring/models", json=document)
    assert r.status_code == 201, r.text
    assert retried.json()["id"] == r.json()["id"]
    registered = "SELECT count(*) FROM audit_entry WHERE action = 'scoring.model.register' AND object_id = :m"
    assert count_rows(zone, registered, m=r.json()["id"]) == 1
    view = r.json()
    assert view["state"] == "pending_review" and view["reviewed_at"] is None
    # the zone keeps no ciphertext in what it shows back
    assert "weight" not in r.text and "intercept" not in r.text
    [code] = zone.take(1)
    refused = score(zone, view["id"], code)
    assert refused.status_code == 409 and problem(refused)["type"].endswith("/model-not-approved")
    assert "pending the operator's review" in problem(refused)["detail"]
    with zone.client() as c:
        job = c.post("/v1/scoring/jobs", json={"model": view["id"], "usccs": [code]})
        assert job.status_code == 409 and problem(job)["type"].endswith("/model-not-approved")
        # an institution does not review its own model
        assert (
            c.post(
                f"/v1/scoring/models/{view['id']}/review", json={"decision": "approve", "reason": "x"}
            ).status_code
            == 401
        )
        # another live model of the same name is refused
        taken = c.post("/v1/scoring/models", json=registration(zone, logistic(name, scale=100)))
        assert taken.status_code == 409 and problem(taken)["type"].endswith("/model-name-taken")
        assert [
            m["id"] for m in c.get("/v1/scoring/models", params={"state": "pending_review"}).json()
        ].count(view["id"]) == 1
    assert usage_events(zone, uscc=code) == 0

    assert review(zone, view["id"]).json()["state"] == "approved"
    again = review(zone, view["id"], "reject")
    assert again.status_code == 409 and problem(again)["type"].endswith("/scoring-model-state")
    assert score(zone, view["id"], code).status_code == 200
    audit = count_rows(
        zone,
        "SELECT count(*) FROM audit_entry WHERE action = 'scoring.model.approve' AND object_id = :m",
        m=view["id"],
    )
    assert audit == 1

    # retired: no more scores, and the name is free again
    with zone.client() as c:
        retired = c.post(f"/v1/scoring/models/{view['id']}/retire", json={"reason": "模型更新"})
        assert retired.status_code == 200 and retired.json()["state"] == "retired"
        assert score(zone, view["id"], code).status_code == 409
        assert (
            c.post("/v1/scoring/models", json=registration(zone, logistic(name, scale=100))).status_code
            == 201
        )


def test_a_rejected_model_never_scores(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    r = register(zone, logistic(unique("rejected"), scale=100))
    model_id = r.json()["id"]
    rejected = review(zone, model_id, "reject", "特征选择不符合监管要求")
    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    [code] = zone.take(1)
    refused = score(zone, model_id, code)
    assert refused.status_code == 409 and "特征选择不符合监管要求" in problem(refused)["detail"]


def test_only_a_reviewer_reviews_and_the_operator_may_retire(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    with zone.db.unit_of_work() as s:
        curator = principal_service.create_principal(
            s, kind="operator", name=unique("curator-only"), roles=["curator"]
        )
        key = principal_service.issue_key(s, principal=curator).token
    model_id = register(zone, logistic(unique("staff"), scale=100)).json()["id"]
    r = httpx.post(
        f"{zone.url}/v1/scoring/models/{model_id}/review",
        json={"decision": "approve", "reason": "ok"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 403 and "reviewer" in problem(r)["detail"]
    empty = httpx.post(
        f"{zone.url}/v1/scoring/models/{model_id}/review",
        json={"decision": "approve", "reason": ""},
        headers=zone.operator,
        timeout=30,
    )
    assert empty.status_code == 422
    with zone.client() as c:
        assert c.get(f"/v1/scoring/models/{model_id}").json()["state"] == "pending_review"
    retired = httpx.post(
        f"{zone.url}/v1/scoring/models/{model_id}/retire",
        json={"reason": "机构已撤回该模型"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert retired.status_code == 200 and retired.json()["retire_reason"] == "机构已撤回该模型"
    twice = httpx.post(
        f"{zone.url}/v1/scoring/models/{model_id}/retire",
        json={"reason": "再次"},
        headers=zone.operator,
        timeout=30,
    )
    assert twice.status_code == 409 and problem(twice)["type"].endswith("/scoring-model-state")


def test_another_institutions_model_does_not_exist_for_it(
    scoring_zone: ScoringZone, synthetic_zone: dict[str, object]
) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("mine"), scale=100))
    r = httpx.post(
        f"{zone.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(str(synthetic_zone["client_id"]), str(synthetic_zone["client_secret"])),
        timeout=30,
    )
    other = {"Authorization": f"Bearer {r.json()['access_token']}"}
    seen = httpx.get(f"{zone.url}/v1/scoring/models/{view['id']}", headers=other, timeout=30)
    assert seen.status_code == 404 and problem(seen)["type"].endswith("/scoring-model-not-found")
    [code] = zone.take(1)
    used = httpx.post(
        f"{zone.url}/v1/scoring/scores", json={"model": view["id"], "uscc": code}, headers=other, timeout=30
    )
    assert used.status_code == 404
    assert view["id"] not in [
        m["id"] for m in httpx.get(f"{zone.url}/v1/scoring/models", headers=other, timeout=30).json()
    ]
    # the operator sees every institution's
    assert view["id"] in [
        m["id"] for m in httpx.get(f"{zone.url}/v1/scoring/models", headers=zone.operator, timeout=30).json()
    ]
    unknown = score(zone, "mdl_doesnotexist00", code)
    assert unknown.status_code == 404 and problem(unknown)["type"].endswith("/scoring-model-not-found")


# ---------------------------------------------------------------- bad registrations


def test_a_one_feature_model_is_refused(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    for weights in ({"tax_grade_code": 0.5}, {"tax_grade_code": 0.5, "dishonest_listed": -2.0}):
        name = unique("thin")
        r = register(zone, logistic(name, weights, scale=100))
        assert r.status_code == 422, r.text
        body = problem(r)
        assert body["type"].endswith("/too-few-features")
        assert [e["location"] for e in body["errors"]] == ["features"]
        assert body["errors"][0]["min_features"] == 3
        assert count_rows(zone, "SELECT count(*) FROM scoring_model WHERE name = :n", n=name) == 0


def test_a_key_below_2048_bits_is_refused(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone

    def prime(bits: int) -> int:
        import secrets

        return int(gmpy2.next_prime(secrets.randbits(bits) | (3 << (bits - 2)) | 1))

    p, q = prime(512), prime(512)
    small = paillier.PrivateKey(paillier.PublicKey(p * q), p, q)
    assert small.public.bits == 1024
    name = unique("small-key")
    r = register(zone, logistic(name, scale=100), public=small.public)
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("/key-too-small")
    assert [e["location"] for e in body["errors"]] == ["public_key"]
    assert "1024 bits" in body["detail"] and "2048" in body["detail"]
    assert count_rows(zone, "SELECT count(*) FROM scoring_model WHERE name = :n", n=name) == 0


def test_every_malformed_ciphertext_is_listed_and_none_is_echoed(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    doc = registration(zone, logistic(unique("malformed"), scale=100))
    cut = doc["features"][1]["weight"][:-8]
    doc["features"][0]["weight"] = "not base64!"
    doc["features"][1]["weight"] = cut
    doc["features"][2]["weight"] = 12345
    doc["intercept"] = "A" * len(doc["intercept"])  # zero
    nsquare = zone.public.nsquare.to_bytes(zone.public.ciphertext_bytes, "big")
    import base64

    doc["features"][3]["weight"] = base64.urlsafe_b64encode(nsquare).rstrip(b"=").decode()
    with zone.client() as c:
        r = c.post("/v1/scoring/models", json=doc)
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("/invalid-model")
    assert sorted(e["location"] for e in body["errors"]) == [
        "features.0.weight",
        "features.1.weight",
        "features.2.weight",
        "features.3.weight",
        "intercept",
    ]
    assert cut not in r.text and doc["features"][4]["weight"] not in r.text


def test_features_the_grants_do_not_cover_are_listed_with_their_department(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    weights = {
        "invention_patents": 0.02,
        "trademarks": 0.01,
        "tax_grade_code": 0.3,
        "years_since_founding": 0.05,
    }
    r = register(zone, logistic(unique("patents"), weights, scale=100, purpose="pre_loan"))
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("/features-not-granted")
    assert [(e["location"], e["departments"]) for e in body["errors"]] == [
        ("features.0.name", [PARTIAL_DEPARTMENT]),
        ("features.1.name", [PARTIAL_DEPARTMENT]),
    ]
    # the same model for the purpose the department did grant registers
    granted = register(zone, logistic(unique("patents"), weights, scale=100, purpose="post_loan"))
    assert granted.status_code == 201, granted.text


def test_features_graded_above_the_contracts_clearance_are_refused(scoring_zone: ScoringZone) -> None:
    """A crafted model can make a score show one feature exactly, so a model reads only what the
    contract could see in clear: the headcount and the tax paid are grade 3, the contract is 2."""
    zone = scoring_zone
    weights = {"insured_latest": 0.001, "tax_paid_latest_wan": 0.01, "tax_grade_code": 0.3, "years_since_founding": 0.05}
    r = register(zone, logistic(unique("graded"), weights, scale=100))
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("/features-above-clearance")
    assert [(e["location"], e["feature"], e["grade"], e["clearance"]) for e in body["errors"]] == [
        ("features.0.name", "insured_latest", 3, 2),
        ("features.1.name", "tax_paid_latest_wan", 3, 2),
    ]
    with zone.db.unit_of_work() as s:
        assert not s.scalar(sa.text("SELECT count(*) FROM scoring_model WHERE name LIKE 'graded-%'"))


def test_every_problem_of_a_registration_is_listed_at_once(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    invented = {"no_such_feature": circuits.FeatureBounds("no_such_feature", 0, 10, 0)}
    name = unique("mixed")
    model = logistic(name, {"invention_patents": 0.02, "no_such_feature": 0.5}, scale=100)
    r = register(zone, model, bounds={**zone.bounds, **invented})
    assert r.status_code == 422
    body = problem(r)
    assert body["type"].endswith("/invalid-scoring-model")
    assert sorted(zip(problem_types(body), (e["location"] for e in body["errors"]), strict=True)) == [
        ("features-not-granted", "features.0.name"),
        ("too-few-features", "features"),
        ("unknown-features", "features.1.name"),
    ]
    assert "tax_grade_code" in body["catalog"] and "no_such_feature" not in body["catalog"]
    assert count_rows(zone, "SELECT count(*) FROM scoring_model WHERE name = :n", n=name) == 0


def test_a_kind_or_purpose_the_product_does_not_serve_is_refused(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    doc = registration(zone, logistic(unique("purpose"), scale=100))
    doc["purpose"] = "marketing"
    with zone.client() as c:
        r = c.post("/v1/scoring/models", json=doc)
        assert r.status_code == 403 and problem(r)["check"] in ("contract", "product")
        doc["purpose"] = "lending"
        bad = c.post("/v1/scoring/models", json=doc)
    assert bad.status_code == 422 and [e["location"] for e in problem(bad)["errors"]] == ["purpose"]


# ---------------------------------------------------------------- caps and channels


def test_the_cap_refuses_a_fourth_score_and_two_racing_requests_cannot_both_pass(
    scoring_zone: ScoringZone,
) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("capped"), scale=100))
    first, racing = zone.take(2)
    for _ in range(3):
        assert score(zone, view["id"], first).status_code == 200
    over = score(zone, view["id"], first)
    assert over.status_code == 403
    body = problem(over)
    assert body["type"].endswith("/scoring-cap-exceeded")
    assert (body["over_cap"], body["usccs"], body["cap_scores"], body["cap_days"]) == (1, [first], 3, 30)
    assert usage_events(zone, uscc=first) == 3
    # the cap counts per product, whatever the model
    other = approved(zone, scorecard(unique("capped"), scale=1))
    assert score(zone, other["id"], first).status_code == 403

    for _ in range(2):
        assert score(zone, view["id"], racing).status_code == 200
    results: list[int] = []
    gate = threading.Barrier(2)

    def call() -> None:
        gate.wait()
        results.append(score(zone, view["id"], racing).status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 403]
    assert usage_events(zone, uscc=racing) == 3


def test_an_enterprise_outside_the_zone_is_not_found_and_not_billed(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    view = approved(zone, logistic(unique("outside"), scale=100))
    before = usage_events(zone)
    r = score(zone, view["id"], zone.outsiders[0])
    assert r.status_code == 404 and problem(r)["type"].endswith("/enterprise-not-found")
    bad = score(zone, view["id"], zone.outsiders[0][:17] + "0")
    assert bad.status_code in (404, 422)
    assert usage_events(zone) == before


def test_a_scoring_product_answers_no_plain_lookup(scoring_zone: ScoringZone) -> None:
    zone = scoring_zone
    [code] = zone.take(1)
    with zone.client() as c:
        r = c.get(f"/v1/products/{PRODUCT}/enterprises/{code}", params={"purpose": "pre_loan"})
    assert r.status_code == 409 and problem(r)["type"].endswith("/scoring-only-product")
