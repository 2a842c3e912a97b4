"""Models, registrations and the institution's side of an answer, for the scoring tests."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import sqlalchemy as sa

from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from tests.scoring.conftest import PRODUCT, ScoringZone

# a logistic model over features every department of the tests' institution granted for pre_loan
LOGISTIC_WEIGHTS = {
    "years_since_founding": 0.031,
    "reg_capital_wan": 0.0002,
    "tax_grade_code": 0.35,
    "has_tax_arrears": -1.2,
    "dishonest_listed": -2.5,
    "enforcement_cases_24m": -0.4,
    "has_social_insurance": 0.3,
    "headcount_change_pct": 0.004,
    "electricity_change_pct": -0.002,
    "abnormal_listed": -0.9,
}
SCORECARD = {
    "years_since_founding": ([3, 5, 10], [-20.25, 0, 15.5, 30], None),
    "tax_grade_code": ([1, 3, 5], [0, -30, 10.75, 40], None),
    "dishonest_listed": ([1], [10, -80.5], None),
    "headcount_change_pct": ([-20, 0, 20], [-5, 5, 15, 25.125], -10),
    "abnormal_listed": ([1], [5, -40], None),
}


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def logistic(
    name: str,
    weights: Mapping[str, float] = LOGISTIC_WEIGHTS,
    *,
    scale: int,
    intercept: float = -1.5,
    purpose: str = "pre_loan",
) -> circuits.ScoringModel:
    return circuits.parse_model(
        {
            "format": circuits.MODEL_FORMAT,
            "name": name,
            "product": PRODUCT,
            "purpose": purpose,
            "kind": "logistic",
            "scale": scale,
            "intercept": intercept,
            "features": [{"name": f, "weight": w} for f, w in weights.items()],
        }
    )


def scorecard(
    name: str,
    cards: Mapping[str, tuple[list[float], list[float], float | None]] = SCORECARD,
    *,
    scale: int,
    intercept: float = 600,
    purpose: str = "pre_loan",
) -> circuits.ScoringModel:
    features: list[dict[str, Any]] = []
    for f, (bins, points, missing) in cards.items():
        entry: dict[str, Any] = {"name": f, "bins": bins, "points": points}
        if missing is not None:
            entry["missing_points"] = missing
        features.append(entry)
    return circuits.parse_model(
        {
            "format": circuits.MODEL_FORMAT,
            "name": name,
            "product": PRODUCT,
            "purpose": purpose,
            "kind": "scorecard",
            "scale": scale,
            "intercept": intercept,
            "features": features,
        }
    )


def registration(
    zone: ScoringZone,
    model: circuits.ScoringModel,
    *,
    public: paillier.PublicKey | None = None,
    bounds: Mapping[str, circuits.FeatureBounds] | None = None,
) -> dict[str, Any]:
    return circuits.encrypt_model(model, public or zone.public, bounds=bounds or zone.bounds)


def register(zone: ScoringZone, model: circuits.ScoringModel, **kw: Any) -> httpx.Response:
    with zone.client() as c:
        return c.post("/v1/scoring/models", json=registration(zone, model, **kw))


def review(
    zone: ScoringZone, model_id: str, decision: str = "approve", reason: str = "风控模型评审通过"
) -> httpx.Response:
    return httpx.post(
        f"{zone.url}/v1/scoring/models/{model_id}/review",
        json={"decision": decision, "reason": reason},
        headers=zone.operator,
        timeout=60,
    )


def approved(zone: ScoringZone, model: circuits.ScoringModel) -> dict[str, Any]:
    """Register and approve a model; its view."""
    r = register(zone, model)
    assert r.status_code == 201, r.text
    r = review(zone, r.json()["id"])
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    assert view["state"] == "approved"
    return view


def score(zone: ScoringZone, model_id: str, uscc: str, *, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with zone.client() as c:
        return c.post("/v1/scoring/scores", json={"model": model_id, "uscc": uscc}, headers=headers)


def open_single(zone: ScoringZone, body: Mapping[str, Any]) -> int:
    packed = paillier.decode_ciphertexts(zone.public, {"ciphertext": body["ciphertext"]})["ciphertext"]
    [value] = circuits.open_scores(
        zone.private,
        [packed],
        count=1,
        slot_bits=body["slot_bits"],
        slots=body["slots"],
        resolution=body["resolution"],
    )
    return value


def open_chunk(zone: ScoringZone, body: Mapping[str, Any]) -> dict[str, int]:
    """uscc -> score of a chunk's found enterprises."""
    texts = {str(i): t for i, t in enumerate(body["ciphertexts"])}
    decoded = paillier.decode_ciphertexts(zone.public, texts)
    scores = circuits.open_scores(
        zone.private,
        [decoded[str(i)] for i in range(len(texts))],
        count=body["count"],
        slot_bits=body["slot_bits"],
        slots=body["slots"],
        resolution=body["resolution"],
    )
    found = [u for u, f in zip(body["usccs"], body["found"], strict=True) if f]
    assert len(found) == len(scores)
    return dict(zip(found, scores, strict=True))


def expected_scores(zone: ScoringZone, model: circuits.ScoringModel, usccs: Sequence[str]) -> dict[str, int]:
    """The plaintext reference: plain_score over the features the product engine computes."""
    features = zone.features(list(usccs))
    return {u: circuits.plain_score(model, features[u], zone.bounds) for u in usccs}


def assert_rounded(actual: int, exact: int, resolution: int) -> None:
    """Stochastic rounding to the resolution: exact at 1, else one of the two neighbouring multiples."""
    low = exact // resolution * resolution
    if resolution == 1:
        assert actual == exact
    else:
        assert actual in (low, low + resolution), (actual, exact, resolution)


def count_rows(zone: ScoringZone, query: str, **params: Any) -> int:
    with zone.db.engine.connect() as conn:
        return int(conn.execute(sa.text(query), params).scalar_one())


def usage_events(zone: ScoringZone, *, uscc: str | None = None) -> int:
    q = "SELECT count(*) FROM usage_event WHERE institution_id = :i AND product_id = :p"
    if uscc is not None:
        q += " AND uscc = :u"
    return count_rows(zone, q, i=zone.institution_id, p=PRODUCT, u=uscc)


def problem_types(body: Mapping[str, Any]) -> list[str]:
    return [e["type"] for e in body.get("errors", [])]


def dumps(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)
