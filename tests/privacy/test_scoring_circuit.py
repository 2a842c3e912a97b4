"""The scoring circuit against its plaintext reference: encrypted logistic and scorecard scores
decrypt to exactly `plain_score` (clamping, missing values and negatives included), packing and
stochastic rounding open to the right scores, a masked answer shows nothing above its slots, and
every bad model file or registration is refused with each problem at its location."""

from __future__ import annotations

import base64
import json
import random
import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from phe import paillier as phe

from datazone.privacy import paillier, scoring
from datazone.privacy.paillier import PrivateKey, PublicKey
from datazone.privacy.scoring import FeatureBounds, InvalidModel, ScoringCircuit, ScoringModel

CATALOG = {
    b.name: b
    for b in (
        FeatureBounds("years_since_founding", 0, 40, 0),
        FeatureBounds("insured_latest", 0, 500, 0),
        FeatureBounds("dishonest_flag", 0, 1, 0),
        FeatureBounds("registered_capital", 0, 10**6, 1000),
        FeatureBounds("net_profit", -(10**6), 10**6, 0),
        FeatureBounds("tax_grade", -3, 3, -1),
        FeatureBounds("litigation_count", 0, 50, 0),
    )
}
NAMES = list(CATALOG)


@pytest.fixture(scope="module")
def keys() -> Iterator[tuple[PublicKey, PrivateKey]]:
    yield paillier.generate_keypair(2048)


def logistic_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": scoring.MODEL_FORMAT,
        "name": "sme-pd-v3",
        "product": "secure-credit-score",
        "purpose": "pre_loan",
        "kind": "logistic",
        "scale": 1_000_000,
        "intercept": -2.1,
        "features": [
            {"name": "years_since_founding", "weight": -0.12},
            {"name": "dishonest_flag", "weight": 1.75},
            {"name": "net_profit", "weight": -0.000002},
        ],
    }
    return doc | overrides


def scorecard_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": scoring.MODEL_FORMAT,
        "name": "sme-card-v1",
        "product": "secure-credit-score",
        "purpose": "pre_loan",
        "kind": "scorecard",
        "scale": 1,
        "intercept": 600,
        "features": [
            {
                "name": "insured_latest",
                "bins": [3, 10, 50],
                "points": [-20, 0, 15, 30],
                "missing_points": -10,
            },
            {"name": "tax_grade", "bins": [-1.5, 0.5], "points": [-40, 5, 25]},
            {"name": "litigation_count", "bins": [1, 3], "points": [20, -5, -60]},
        ],
    }
    return doc | overrides


def random_model(rng: random.Random, kind: str) -> ScoringModel:
    names = rng.sample(NAMES, rng.randint(3, len(NAMES)))
    scale = rng.choice([1, 100, 10_000, 1_000_000])
    features: list[dict[str, Any]] = []
    for name in names:
        if kind == "logistic":
            weight = rng.choice([round(rng.uniform(-3, 3), rng.randint(0, 7)), rng.randint(-5, 5), 0.5, -2.5])
            if name in ("registered_capital", "net_profit"):
                weight /= 10**5
            features.append({"name": name, "weight": weight})
        else:
            b = CATALOG[name]
            edges: list[float] = sorted(
                rng.sample(range(b.min - 2, b.max + 3), rng.randint(1, min(4, b.max - b.min + 4)))
            )
            if rng.random() < 0.5:
                edges = [e + 0.5 for e in edges]
            points = [round(rng.uniform(-80, 80), rng.randint(0, 2)) for _ in range(len(edges) + 1)]
            feature: dict[str, Any] = {"name": name, "bins": edges, "points": points}
            if rng.random() < 0.5:
                feature["missing_points"] = rng.randint(-30, 30)
            features.append(feature)
    doc = logistic_doc(kind=kind, scale=scale, intercept=round(rng.uniform(-700, 700), 3), features=features)
    return scoring.parse_model(doc)


def random_row(rng: random.Random, names: tuple[str, ...]) -> list[int | None]:
    row: list[int | None] = []
    for name in names:
        b = CATALOG[name]
        draw = rng.random()
        if draw < 0.15:
            row.append(None)
        elif draw < 0.3:
            row.append(rng.choice([b.min - rng.randint(1, 10**7), b.max + rng.randint(1, 10**7)]))
        else:
            row.append(rng.randint(b.min, b.max))
    return row


def compiled(model: ScoringModel, public: PublicKey, **kwargs: Any) -> ScoringCircuit:
    return scoring.compile_model(scoring.encrypt_model(model, public, bounds=CATALOG), CATALOG, **kwargs)


def seal_and_open(
    circuit: ScoringCircuit, private: PrivateKey, cts: list[int], resolution: int
) -> tuple[list[int], list[int]]:
    factors = paillier.rerandomization_factors(circuit.public, circuit.packed_count(len(cts)))
    sealed = circuit.seal(cts, factors=factors, resolution=resolution)
    opened = scoring.open_scores(
        private,
        sealed,
        count=len(cts),
        slot_bits=circuit.slot_bits,
        slots=circuit.slots,
        resolution=resolution,
    )
    return sealed, opened


# ---------------------------------------------------------------- plaintext reference


def test_plain_score_by_hand() -> None:
    logistic = scoring.parse_model(logistic_doc())
    values: dict[str, int | None] = {"years_since_founding": 10, "dishonest_flag": 1, "net_profit": -200_000}
    # -2.1 - 0.12·10 + 1.75·1 - 0.000002·(-200000) = -1.15, at scale 10^6
    assert scoring.plain_score(logistic, values, CATALOG) == -1_150_000
    # clamped to [0, 40] and [-10^6, 10^6]; a missing flag counts as its `missing` (0)
    values = {
        "years_since_founding": 55,
        "dishonest_flag": None,
        "net_profit": -(10**9),
    }
    assert scoring.plain_score(logistic, values, CATALOG) == -2_100_000 - 4_800_000 + 2_000_000
    # fixed point rounds each weight once: -0.0000015 at scale 10^6 is -2 (half to even), not -1.5
    coarse = scoring.parse_model(logistic_doc(features=[{"name": "net_profit", "weight": -0.0000015}]))
    assert scoring.plain_score(coarse, {"net_profit": -200_000}, CATALOG) == -2_100_000 + 400_000
    assert scoring.plain_score(logistic, {}, CATALOG) == -2_100_000

    card = scoring.parse_model(scorecard_doc())
    base = {"tax_grade": 0, "litigation_count": 0}  # +5 +20
    expected = {2: 605, 3: 625, 9: 625, 10: 640, 49: 640, 50: 655, 10**6: 655, -7: 605, None: 615}
    for insured, score in expected.items():
        assert scoring.plain_score(card, base | {"insured_latest": insured}, CATALOG) == score, insured
    # no missing_points: a missing tax grade is its catalog `missing` (-1), which falls in bin 1
    assert scoring.plain_score(card, {"insured_latest": 3, "litigation_count": 2}, CATALOG) == 600 + 0 + 5 - 5


def test_fixed_point_is_exact_and_rounds_half_to_even() -> None:
    assert scoring.fixed_point(-0.12, 1_000_000) == -120_000
    assert scoring.fixed_point(0.29, 100) == 29
    assert scoring.fixed_point(1.0000015, 1_000_000) == 1_000_002  # 1000001.5 -> even
    assert scoring.fixed_point(2.5, 1) == 2 and scoring.fixed_point(3.5, 1) == 4
    assert scoring.fixed_point(-7, 1000) == -7000
    assert scoring.fixed_point(0.1234567890123, 10**12) == 123_456_789_012


def test_bins_links_and_resolutions() -> None:
    assert [scoring.bin_index([3, 10, 50], v) for v in (-1, 2, 3, 9, 10, 50, 51)] == [0, 0, 1, 1, 2, 3, 3]
    assert scoring.bin_index([-1.5, 0.5], -2) == 0 and scoring.bin_index([-1.5, 0.5], 0) == 1
    logistic, card = scoring.parse_model(logistic_doc()), scoring.parse_model(scorecard_doc())
    assert scoring.real_score(logistic, -1_150_000) == -1.15
    assert scoring.link(logistic, 0.0) == 0.5
    assert scoring.link(logistic, -1.15) == pytest.approx(1 / (1 + 2.718281828459045**1.15))
    assert scoring.link(logistic, -1000.0) == 0.0 and scoring.link(logistic, 1000.0) == 1.0
    assert scoring.link(card, scoring.real_score(card, 615)) == 615.0
    units = scoring.resolution_units
    assert units("logistic", 1_000_000, logit_resolution=0.01, points_resolution=1.0) == 10_000
    assert units("scorecard", 1, logit_resolution=0.01, points_resolution=1.0) == 1
    assert units("scorecard", 100, logit_resolution=0.01, points_resolution=2.5) == 250
    assert units("logistic", 10, logit_resolution=0.01, points_resolution=1.0) == 1


# ---------------------------------------------------------------- the encrypted circuit


@pytest.mark.parametrize("kind", ["logistic", "scorecard"])
def test_encrypted_scores_equal_plain_scores_for_random_models(
    keys: tuple[PublicKey, PrivateKey], kind: str
) -> None:
    public, private = keys
    rng = random.Random(f"circuit-{kind}")
    signs: set[bool] = set()
    for _ in range(3):
        model = random_model(rng, kind)
        circuit = compiled(model, public)
        assert circuit.feature_names == tuple(f.name for f in model.features)
        # 5 rows take the direct path (exponentiations), 70 the fixed-base tables
        for count in (5, 70):
            rows = [random_row(rng, circuit.feature_names) for _ in range(count)]
            cts = circuit.encrypted_scores(rows)
            plain = [
                scoring.plain_score(model, dict(zip(circuit.feature_names, r, strict=True)), CATALOG)
                for r in rows
            ]
            assert [private.decrypt(c) for c in cts[:10]] == plain[:10]
            # all of them opened as the institution does: exact at resolution 1
            assert seal_and_open(circuit, private, cts, resolution=1)[1] == plain
            signs |= {p < 0 for p in plain}
            bound = scoring.score_bound(model, CATALOG)
            assert all(abs(p) <= bound < 1 << circuit.score_bits for p in plain)
    assert signs == {True, False}


def test_extreme_and_missing_values_take_both_paths_to_the_same_scores(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, private = keys
    model = scoring.parse_model(
        logistic_doc(
            features=[
                {"name": name, "weight": round(0.37 * (i + 1) * (-1) ** i, 3)} for i, name in enumerate(NAMES)
            ]
        )
    )
    circuit = compiled(model, public)
    edge_rows: list[list[int | None]] = [
        [CATALOG[n].min for n in NAMES],
        [CATALOG[n].max for n in NAMES],
        [None] * len(NAMES),
        [CATALOG[n].min - 10**12 for n in NAMES],
        [CATALOG[n].max + 10**12 for n in NAMES],
    ]
    direct = circuit.encrypted_scores(edge_rows)
    windowed = circuit.encrypted_scores(edge_rows * 13)[: len(edge_rows)]  # 65 rows: builds the tables
    plain = [scoring.plain_score(model, dict(zip(NAMES, r, strict=True)), CATALOG) for r in edge_rows]
    assert [private.decrypt(c) for c in direct] == [private.decrypt(c) for c in windowed] == plain
    assert plain[0] == plain[3] and plain[1] == plain[4]


def test_rows_must_match_the_features(keys: tuple[PublicKey, PrivateKey]) -> None:
    circuit = compiled(scoring.parse_model(logistic_doc()), keys[0])
    with pytest.raises(ValueError, match="row 1 has 2 values for the model's 3 features"):
        circuit.encrypted_scores([[1, 0, 5], [1, 0]])
    with pytest.raises(TypeError, match="row 0: feature values are integers or None"):
        circuit.encrypted_scores([[1, "0", 5]])  # type: ignore[list-item]


@pytest.mark.parametrize("kind", ["logistic", "scorecard"])
def test_packing_one_a_full_slot_set_and_one_more(keys: tuple[PublicKey, PrivateKey], kind: str) -> None:
    public, private = keys
    rng = random.Random(f"packing-{kind}")
    model = random_model(rng, kind)
    circuit = compiled(model, public)
    assert circuit.slot_bits == circuit.score_bits + 2
    assert circuit.slots == (public.bits - 2) // circuit.slot_bits
    rows = [random_row(rng, circuit.feature_names) for _ in range(circuit.slots + 1)]
    cts = circuit.encrypted_scores(rows)
    plain = [
        scoring.plain_score(model, dict(zip(circuit.feature_names, r, strict=True)), CATALOG) for r in rows
    ]
    for count in (1, circuit.slots, circuit.slots + 1):
        sealed, opened = seal_and_open(circuit, private, cts[:count], resolution=1)
        assert len(sealed) == circuit.packed_count(count) == (1 if count <= circuit.slots else 2)
        assert opened == plain[:count]
        assert all(0 < c < public.nsquare and paillier.encode_ciphertext(public, c) for c in sealed)


def test_sealing_rerandomizes_every_ciphertext(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    model = scoring.parse_model(scorecard_doc())
    circuit = compiled(model, public)
    cts = circuit.encrypted_scores([[3, 0, 0], [None, None, None]])
    # the circuit is deterministic: the same row gives the same ciphertext before sealing
    assert circuit.encrypted_scores([[3, 0, 0]]) == cts[:1]
    first, opened_first = seal_and_open(circuit, private, cts, resolution=1)
    second, opened_second = seal_and_open(circuit, private, cts, resolution=1)
    assert first != second and not set(first) & set(cts)
    # insured 3 (0), tax grade 0 (+5), no litigation (+20); then all missing: -10, the bin of
    # tax grade -1 (+5), the bin of 0 cases (+20)
    assert opened_first == opened_second == [625, 615]


def test_stochastic_rounding_is_a_multiple_of_the_resolution_and_unbiased(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, private = keys
    model = scoring.parse_model(logistic_doc(scale=1000))
    circuit = compiled(model, public)
    resolution = 1000
    for values in ([10, 1, -200_000], [0, 0, -(10**6)]):
        [ct] = circuit.encrypted_scores([values])
        score = scoring.plain_score(model, dict(zip(circuit.feature_names, values, strict=True)), CATALOG)
        assert private.decrypt(ct) == score and score < 0 and score % resolution
        samples = circuit.slots * 10
        _, opened = seal_and_open(circuit, private, [ct] * samples, resolution=resolution)
        low, high = (score // resolution) * resolution, (score // resolution + 1) * resolution
        assert set(opened) == {low, high}  # each a multiple of R within R of the score
        # P(high) = (score - low) / R, so the mean is the score; 5 standard errors apart at most
        spread = resolution * ((score - low) / resolution * (high - score) / resolution) ** 0.5
        assert abs(statistics.fmean(opened) - score) < 5 * spread / samples**0.5


def test_the_mask_shows_nothing_above_the_declared_slots(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    # a model whose scores reach 2^20 but whose registration declares 8 bits (say, to pack features)
    model = scoring.parse_model(
        logistic_doc(
            scale=1,
            intercept=0,
            features=[
                {"name": "registered_capital", "weight": 1},
                {"name": "dishonest_flag", "weight": 0},
                {"name": "tax_grade", "weight": 0},
            ],
        )
    )
    registration = scoring.encrypt_model(model, public, bounds=CATALOG)
    assert registration["score_bits"] == 24
    registration["score_bits"] = 8
    circuit = scoring.compile_model(registration, CATALOG)
    assert circuit.slot_bits == 10
    [ct] = circuit.encrypted_scores([[777_777, 0, 0]])
    plaintexts = []
    for _ in range(2):
        [sealed] = circuit.seal([ct], factors=paillier.rerandomization_factors(public, 1), resolution=1)
        plaintexts.append(private.decrypt_residue(sealed))
    offset = scoring.slot_offset(10, 1)
    # the slot holds the score's low 10 bits (with the offset), as declared ...
    assert {p % 1024 for p in plaintexts} == {(777_777 + offset) % 1024}
    # ... and everything above it is fresh noise, not the score's high bits
    assert plaintexts[0] >> 10 != plaintexts[1] >> 10
    assert all(p >> 10 != (777_777 + offset) >> 10 for p in plaintexts)
    assert all(p.bit_length() > public.bits - 64 for p in plaintexts)


def test_seal_refuses_a_wrong_factor_count_or_an_oversized_resolution(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, _ = keys
    circuit = compiled(scoring.parse_model(scorecard_doc()), public)
    cts = circuit.encrypted_scores([[1, 1, 1]] * 3)
    factors = paillier.rerandomization_factors(public, 2)
    with pytest.raises(ValueError, match="3 scores pack into 1 ciphertexts; got 2 factors"):
        circuit.seal(cts, factors=factors, resolution=1)
    assert circuit.score_bits == 16 and circuit.slot_bits == 18
    with pytest.raises(ValueError, match="resolution of 131072 units does not fit slots of 18 bits"):
        circuit.seal(cts, factors=factors[:1], resolution=1 << 17)
    # compiled with its resolution, the slots make room for it
    registration = scoring.encrypt_model(scoring.parse_model(scorecard_doc()), public, bounds=CATALOG)
    wide = scoring.compile_model(registration, CATALOG, resolution=1 << 17)
    assert wide.slot_bits == 20
    assert wide.seal(wide.encrypted_scores([[1, 1, 1]]), factors=factors[:1], resolution=1 << 17)


def test_open_scores_checks_the_layout(keys: tuple[PublicKey, PrivateKey]) -> None:
    _, private = keys
    with pytest.raises(ValueError, match="5 scores in slots of 2 come in 3 ciphertexts, not 1"):
        scoring.open_scores(private, [1], count=5, slot_bits=10, slots=2, resolution=1)
    with pytest.raises(ValueError, match="do not fit a 2048-bit key"):
        scoring.open_scores(private, [1], count=5, slot_bits=1000, slots=3, resolution=1)


# ---------------------------------------------------------------- registration


def test_a_registration_holds_ciphertexts_and_public_numbers_only(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    model = scoring.parse_model(scorecard_doc(scale=100, intercept=600.25))
    registration = scoring.encrypt_model(model, public, bounds=CATALOG)
    assert set(registration) == {
        "name",
        "product",
        "purpose",
        "kind",
        "scale",
        "description",
        "public_key",
        "score_bits",
        "intercept",
        "features",
    }
    assert registration["public_key"] == public.to_json()
    assert registration["features"][0]["bins"] == [3, 10, 50]
    texts = {"intercept": registration["intercept"]}
    for i, feature in enumerate(registration["features"]):
        texts |= {f"{i}.{j}": t for j, t in enumerate(feature["points"])}
    decoded = paillier.decode_ciphertexts(public, texts)
    assert private.decrypt(decoded["intercept"]) == 60025
    assert [private.decrypt(decoded[f"0.{j}"]) for j in range(4)] == [-2000, 0, 1500, 3000]
    assert (
        private.decrypt(
            paillier.decode_ciphertexts(public, {"m": registration["features"][0]["missing_points"]})["m"]
        )
        == -1000
    )
    assert registration["features"][1]["missing_points"] is None
    body = json.dumps(registration).replace(json.dumps(registration["features"][0]["bins"]), "")
    for plaintext in ("600.25", "60025", "-2000", "1500", "-1000", "-40", "-4000"):
        # as a token of its own: the ciphertexts, about 6,000 base64url characters, spell "-40" by chance in about 1 run of 40
        assert not re.search(rf"(?<![\w.-]){re.escape(plaintext)}(?![\w.-])", body), plaintext
    assert re.search(r"(?<![\w.-])-40(?![\w.-])", '{"points": [-40, 1]}')
    # fresh randomness: the same model encrypts differently each time
    again = scoring.encrypt_model(model, public, bounds=CATALOG)
    assert again["intercept"] != registration["intercept"]
    # the declared bound: a multiple of 8 bits above the largest |score|
    assert registration["score_bits"] % 8 == 0
    assert 1 << registration["score_bits"] > scoring.score_bound(model, CATALOG) * 1


def test_a_model_over_unknown_features_is_refused_on_both_sides(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    doc = logistic_doc()
    doc["features"] = [*doc["features"], {"name": "shoe_size", "weight": 0.1}]
    model = scoring.parse_model(doc)  # the file alone does not know the catalog
    with pytest.raises(InvalidModel) as caught:
        scoring.encrypt_model(model, public, bounds=CATALOG)
    assert caught.value.errors == [
        {
            "location": "features.3.name",
            "problem": "unknown feature 'shoe_size': not among the product's features",
        }
    ]
    registration = scoring.encrypt_model(
        model, public, bounds=CATALOG | {"shoe_size": FeatureBounds("shoe_size", 30, 50, 40)}
    )
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(registration, CATALOG)
    assert caught.value.errors == [
        {
            "location": "features.3.name",
            "problem": "unknown feature 'shoe_size': not among this product's scoring features",
        }
    ]


def test_compile_lists_every_problem_of_a_registration(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = keys
    registration = scoring.encrypt_model(scoring.parse_model(logistic_doc()), public, bounds=CATALOG)
    bad = json.loads(json.dumps(registration))
    not_coprime = base64.urlsafe_b64encode((private.q * 3).to_bytes(512, "big")).rstrip(b"=").decode()
    bad |= {
        "score_bits": 600,
        "scale": 0,
        "kind": "logistic",
        "colour": "blue",
        "intercept": bad["intercept"][:-40],
    }
    bad["features"][0]["weight"] = not_coprime
    bad["features"][1]["bins"] = [1, 2]
    bad["features"][2]["weight"] = 7
    bad["features"].append({"name": "years_since_founding", "weight": registration["features"][0]["weight"]})
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(bad, CATALOG, min_features=5)
    by_location = {e["location"]: e["problem"] for e in caught.value.errors}
    assert set(by_location) == {
        "colour",
        "scale",
        "score_bits",
        "features",
        "features.1.bins",
        "features.3.name",
        "intercept",
        "features.0.weight",
        "features.2.weight",
    }
    assert by_location["features.0.weight"] == "not a ciphertext under the registered key: not coprime to n"
    assert by_location["features.2.weight"].endswith("a base64url string, not a number")
    assert by_location["features.3.name"] == "feature 'years_since_founding' is listed twice"
    assert by_location["features"].startswith("4 features; this product's models use at least 5")
    assert by_location["features.1.bins"] == "a logistic feature has a weight, not bins or points"
    message = str(caught.value)
    assert message.startswith("the model has 9 problems: ")
    for text in (
        not_coprime[:40],
        registration["intercept"][:40],
        registration["features"][0]["weight"][:40],
    ):
        assert text not in message


def test_a_one_feature_model_is_refused_when_the_product_asks_for_more(
    keys: tuple[PublicKey, PrivateKey],
) -> None:
    public, _ = keys
    doc = logistic_doc(features=[{"name": "registered_capital", "weight": 0.001}])
    registration = scoring.encrypt_model(scoring.parse_model(doc), public, bounds=CATALOG)
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(registration, CATALOG, min_features=3)
    assert caught.value.errors == [
        {
            "location": "features",
            "problem": "1 feature; this product's models use at least 3, so that no score is a single feature",
        }
    ]
    assert scoring.compile_model(registration, CATALOG, min_features=1).feature_names == (
        "registered_capital",
    )


def test_a_small_key_or_a_key_without_its_proof_is_refused(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    registration = scoring.encrypt_model(scoring.parse_model(logistic_doc()), public, bounds=CATALOG)
    small, _ = phe.generate_paillier_keypair(n_length=1024)
    small_n = base64.urlsafe_b64encode(small.n.to_bytes(128, "big")).rstrip(b"=").decode()
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(registration | {"public_key": {"n": small_n}}, CATALOG)
    # the ciphertexts cannot be checked against a refused key: the key is the one problem
    assert caught.value.errors == [
        {"location": "public_key", "problem": "a Paillier key of 1024 bits is below the 2048-bit minimum"}
    ]
    with pytest.raises(
        InvalidModel, match="public_key: a Paillier key of 2048 bits is below the 3072-bit minimum"
    ):
        scoring.compile_model(registration, CATALOG, min_key_bits=3072)
    with pytest.raises(InvalidModel, match="public_key: the public key carries no proof"):
        scoring.compile_model(registration | {"public_key": {"n": registration["public_key"]["n"]}}, CATALOG)
    with pytest.raises(paillier.InvalidPublicKey, match="carries no proof"):
        scoring.encrypt_model(scoring.parse_model(logistic_doc()), PublicKey.from_n(public.n), bounds=CATALOG)


@pytest.mark.parametrize("score_bits", [0, 4, 12, 520, "32", None, True])
def test_an_absurd_score_bound_is_refused(keys: tuple[PublicKey, PrivateKey], score_bits: object) -> None:
    public, _ = keys
    registration = scoring.encrypt_model(scoring.parse_model(logistic_doc()), public, bounds=CATALOG)
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(registration | {"score_bits": score_bits}, CATALOG)
    assert caught.value.errors == [
        {"location": "score_bits", "problem": "a multiple of 8 from 8 to 512 (the bound on |score| in bits)"}
    ]


def test_a_scorecard_registration_is_checked_bin_by_bin(keys: tuple[PublicKey, PrivateKey]) -> None:
    public, _ = keys
    registration = scoring.encrypt_model(scoring.parse_model(scorecard_doc()), public, bounds=CATALOG)
    bad = json.loads(json.dumps(registration))
    bad["features"][0]["bins"] = [3, 3, 50]
    bad["features"][1]["points"] = bad["features"][1]["points"][:2]
    bad["features"][2]["weight"] = bad["intercept"]
    bad["features"][2]["missing_points"] = "AAAA"
    with pytest.raises(InvalidModel) as caught:
        scoring.compile_model(bad, CATALOG)
    assert caught.value.errors == [
        {
            "location": "features.0.bins.1",
            "problem": "bin edges must be strictly increasing: this edge is not above the one before",
        },
        {"location": "features.1.points", "problem": "2 points for 2 bin edges; one per bin needs 3"},
        {"location": "features.2.weight", "problem": "a scorecard feature has bins and points, not a weight"},
        {
            "location": "features.2.missing_points",
            "problem": "not a ciphertext under the registered key: 3 bytes where a ciphertext under this key has 512",
        },
    ]


# ---------------------------------------------------------------- the model file


def test_the_example_model_files_parse() -> None:
    logistic = scoring.parse_model(logistic_doc(description="SME probability of default, 2026 refit"))
    assert logistic.kind == "logistic" and logistic.scale == 1_000_000 and logistic.intercept == -2.1
    assert logistic.features[0] == scoring.ModelFeature(name="years_since_founding", weight=-0.12)
    assert logistic.description.startswith("SME")
    card = scoring.parse_model(scorecard_doc())
    assert card.features[0] == scoring.ModelFeature(
        name="insured_latest", bins=(3, 10, 50), points=(-20, 0, 15, 30), missing_points=-10
    )
    assert card.features[1].missing_points is None


def test_parse_model_lists_every_problem_with_its_location() -> None:
    doc = {
        "name": "bad name!",
        "product": "x",
        "purpose": "Pre Loan",
        "kind": "scorecard",
        "scale": 0,
        "intercept": "600",
        "colour": "blue",
        "features": [
            {"name": "insured_latest", "bins": [3, 10, 50], "points": [-20, 0, 15], "weight": 1},
            {"name": "insured_latest", "bins": [5, 5], "points": [1, "x", 2], "missing_points": float("nan")},
            {"name": "tax_grade", "bins": [1, "2"], "points": [1, 2, 3]},
            {"name": "Tax Grade", "points": [1]},
            "oops",
        ],
    }
    with pytest.raises(InvalidModel) as caught:
        scoring.parse_model(doc)
    by_location = {e["location"]: e["problem"] for e in caught.value.errors}
    assert set(by_location) == {
        "format",
        "name",
        "product",
        "purpose",
        "scale",
        "intercept",
        "colour",
        "features.0.weight",
        "features.0.points",
        "features.1.name",
        "features.1.bins.1",
        "features.1.points.1",
        "features.1.missing_points",
        "features.2.bins.1",
        "features.3.name",
        "features.3.bins",
        "features.4",
    }
    assert by_location["format"].startswith('missing: the first line of a model file says "format"')
    assert by_location["features.0.points"] == "3 points for 3 bin edges; a scorecard needs 4 (one per bin)"
    assert by_location["features.1.name"] == "feature 'insured_latest' is listed twice"
    assert by_location["features.1.missing_points"] == "a finite number (not NaN or infinity)"
    assert by_location["colour"] == "unknown field"
    assert str(caught.value).startswith(f"the model has {len(by_location)} problems: colour: unknown field; ")


def test_parse_model_refuses_a_logistic_feature_with_bins_and_an_unknown_kind() -> None:
    with pytest.raises(InvalidModel) as caught:
        scoring.parse_model(
            logistic_doc(
                features=[{"name": "tax_grade", "bins": [1], "points": [1, 2]}, {"name": "dishonest_flag"}]
            )
        )
    assert caught.value.errors == [
        {"location": "features.0.bins", "problem": "a logistic feature has a weight, not bins or points"},
        {"location": "features.0.points", "problem": "a logistic feature has a weight, not bins or points"},
        {"location": "features.0.weight", "problem": "required: a number"},
        {"location": "features.1.weight", "problem": "required: a number"},
    ]
    with pytest.raises(InvalidModel, match="kind: unknown kind; a model is 'logistic' or 'scorecard'"):
        scoring.parse_model(logistic_doc(kind="tree"))
    with pytest.raises(InvalidModel, match=r"format: unknown format"):
        scoring.parse_model(logistic_doc(format="datazone-scoring-model/9"))
    with pytest.raises(InvalidModel, match=r"features.0.weight: too large: the value times the scale"):
        scoring.parse_model(logistic_doc(features=[{"name": "tax_grade", "weight": 1e20}]))


def test_load_model_reads_a_file_and_points_at_json_mistakes(tmp_path: Path) -> None:
    good = tmp_path / "model.json"
    good.write_text(json.dumps(scorecard_doc(), indent=2), encoding="utf-8")
    assert scoring.load_model(good) == scoring.parse_model(scorecard_doc())
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "format": "datazone-scoring-model/1",\n  "scale": 1,,\n}', encoding="utf-8")
    with pytest.raises(InvalidModel) as caught:
        scoring.load_model(broken)
    assert caught.value.errors[0]["location"] == "file"
    assert "line 3" in caught.value.errors[0]["problem"]
    twice = tmp_path / "twice.json"
    twice.write_text(
        json.dumps(scorecard_doc()).replace('"scale": 1', '"scale": 1, "scale": 100'), encoding="utf-8"
    )
    with pytest.raises(InvalidModel, match="the key 'scale' appears twice in one object"):
        scoring.load_model(twice)
