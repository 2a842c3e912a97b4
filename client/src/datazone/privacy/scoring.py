"""Secure scoring (安全评分): an institution's model applied to zone features under Paillier.

Three parties' views of one model (docs/secure-scoring.md is the specification):

- The institution's risk team writes the model in plaintext, as a JSON file
  (`parse_model`, `load_model`): a logistic regression (logit = intercept +
  sum of weight · feature) or a scorecard (score = intercept + the points of
  each feature's bin; the bin edges are public, the points are not).
- The SDK turns it into a registration (`encrypt_model`): every weight, point
  and the intercept fixed-point (round(x · scale)) and Paillier-encrypted under
  the institution's key, plus a declared bound on the score (`score_bits`).
- The zone checks the registration and precomputes what scoring needs
  (`compile_model` -> `ScoringCircuit`): its features clamped to public bounds,
  a score ciphertext per enterprise, packed `slots` to a ciphertext with
  rounding noise, masked above the used slots and re-randomized (`seal`).

`plain_score` computes in plaintext the exact integer the encrypted path
decrypts to; `open_scores` is the institution's side of a sealed answer.

The circuit's arithmetic, for n² of a 2048-bit key (a product costs ~5 us, a
full exponentiation r^n ~9 ms):
- logistic: Enc(b)·∏ c_i^(x_i) with the feature minimum folded into a per-model
  base (so exponents x_i - min_i are non-negative) and fixed-base tables of
  8-bit windows per weight: a 20-bit feature costs up to 3 products, not a
  100 us exponentiation;
- scorecard: a selection of one point ciphertext per feature, one product each;
- packing: Horner over `slots` scores (acc^(2^slot_bits)·c), so one
  re-randomization factor and one decryption serve `slots` scores.
The work per enterprise does not depend on its feature values (no zero digit or
zero exponent is skipped), so response times do not track the features.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any, TypeGuard

import gmpy2
from gmpy2 import mpz

from datazone.privacy.paillier import (
    MIN_KEY_BITS,
    InvalidPublicKey,
    KeyTooSmall,
    MalformedCiphertexts,
    PrivateKey,
    PublicKey,
    decode_ciphertexts,
    encode_ciphertext,
)

MODEL_FORMAT = "datazone-scoring-model/1"
KINDS = ("logistic", "scorecard")
MAX_SCALE = 10**12
# |weight · scale| (or points, intercept) must stay below 2^63: a fixed-point value, not a packing channel
MAX_FIXED_BITS = 63
# the declared score bound: at most this many bits (a legitimate model at scale 10^6 needs about 40)
MAX_SCORE_BITS = 512
MAX_FEATURES = 256
MAX_BINS = 64
WINDOW_BITS = 8
# below this many rows in one call, a fixed-base table costs more than the exponentiations it saves
_TABLE_MIN_ROWS = 64
_SHOWN_PROBLEMS = 30

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SLUG = re.compile(r"[a-z][a-z0-9-]{1,62}")
_IDENT = re.compile(r"[a-z][a-z0-9_]{1,62}")
_DECIMAL = Context(prec=80)
_MODEL_FIELDS = (
    "format",
    "name",
    "product",
    "purpose",
    "kind",
    "scale",
    "intercept",
    "features",
    "description",
)
_REGISTRATION_FIELDS = (
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
)
_FEATURE_FIELDS = {"logistic": ("name", "weight"), "scorecard": ("name", "bins", "points", "missing_points")}


class InvalidModel(ValueError):
    """A model file or registration with problems: `errors` lists every one as
    {"location", "problem"} (locations like "features.3.points.1", counting from
    0); the message lists them too. Neither ever holds a weight, a point or a
    ciphertext."""

    def __init__(self, errors: Sequence[Mapping[str, str]]) -> None:
        self.errors = [{"location": e["location"], "problem": e["problem"]} for e in errors]
        shown = "; ".join(f"{e['location']}: {e['problem']}" for e in self.errors[:_SHOWN_PROBLEMS])
        more = len(self.errors) - _SHOWN_PROBLEMS
        if more > 0:
            shown += f"; and {more} more"
        count = len(self.errors)
        super().__init__(f"the model has {count} problem{'s' if count != 1 else ''}: {shown}")


@dataclass(frozen=True)
class FeatureBounds:
    """A zone feature as the product's public catalog describes it: values are
    clamped to [min, max] and `missing` stands in where the zone has no data."""

    name: str
    min: int
    max: int
    missing: int


@dataclass(frozen=True)
class ModelFeature:
    name: str
    weight: float | None = None  # logistic
    bins: tuple[float, ...] = ()  # scorecard: edges; bin i holds values with i edges <= value
    points: tuple[float, ...] = ()  # scorecard: one per bin, len(bins) + 1
    missing_points: float | None = None  # scorecard: points for a missing value (else its bin's)


@dataclass(frozen=True)
class ScoringModel:
    name: str
    product: str
    purpose: str
    kind: str
    scale: int
    intercept: float
    features: tuple[ModelFeature, ...]
    description: str = ""


class _Problems:
    """Collects problems with their locations, so a caller hears about all of them at once."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, location: str, problem: str) -> None:
        self.errors.append({"location": location, "problem": problem})

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidModel(self.errors)


# ---------------------------------------------------------------- the model file


def parse_model(doc: Mapping[str, Any]) -> ScoringModel:
    """Parse a hand-written model file; InvalidModel lists every problem with its location.

    Feature names are checked for form only: the zone's catalog decides which
    exist (`encrypt_model` and `compile_model` check them against the bounds)."""
    problems = _Problems()
    if not isinstance(doc, Mapping):
        raise InvalidModel([{"location": "model", "problem": "a model file is a JSON object"}])
    _unknown_fields(problems, "", doc, _MODEL_FIELDS)
    if "format" not in doc:
        problems.add("format", f'missing: the first line of a model file says "format": "{MODEL_FORMAT}"')
    elif doc["format"] != MODEL_FORMAT:
        problems.add("format", f'unknown format; this version reads "{MODEL_FORMAT}"')
    header = _header(problems, doc)
    scale = _scale(problems, doc.get("scale"), "scale")
    kind = header["kind"]
    intercept = _fixed_number(problems, doc.get("intercept"), "intercept", scale)
    features: list[ModelFeature] = []
    for at, raw, name in _named_features(problems, _feature_list(problems, doc.get("features"))):
        if kind == "logistic":
            _unknown_fields(problems, at, raw, _FEATURE_FIELDS["logistic"], kind)
            weight = _fixed_number(problems, raw.get("weight"), f"{at}.weight", scale)
            features.append(ModelFeature(name=name, weight=weight))
        elif kind == "scorecard":
            _unknown_fields(problems, at, raw, _FEATURE_FIELDS["scorecard"], kind)
            bins = _bins(problems, raw.get("bins"), f"{at}.bins")
            raw_points = raw.get("points")
            points: list[float] = []
            if not isinstance(raw_points, list):
                problems.add(f"{at}.points", "a list of numbers, one per bin (len(bins) + 1), is required")
            else:
                if bins is not None and len(raw_points) != len(bins) + 1:
                    problems.add(
                        f"{at}.points",
                        f"{len(raw_points)} points for {len(bins)} bin edges; a scorecard needs "
                        f"{len(bins) + 1} (one per bin)",
                    )
                points = [
                    _fixed_number(problems, value, f"{at}.points.{i}", scale)
                    for i, value in enumerate(raw_points)
                ]
            missing = raw.get("missing_points")
            missing_points = (
                None if missing is None else _fixed_number(problems, missing, f"{at}.missing_points", scale)
            )
            features.append(
                ModelFeature(name=name, bins=bins or (), points=tuple(points), missing_points=missing_points)
            )
    problems.raise_if_any()
    return ScoringModel(
        name=header["name"],
        product=header["product"],
        purpose=header["purpose"],
        kind=kind,
        scale=scale,
        intercept=intercept,
        features=tuple(features),
        description=header["description"],
    )


def load_model(path: str | Path) -> ScoringModel:
    """Read and parse a model file (UTF-8 JSON); a key written twice in one object is a problem too."""
    text = Path(path).read_text(encoding="utf-8")
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        duplicates.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(items)

    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise InvalidModel(
            [{"location": "file", "problem": f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"}]
        ) from None
    if duplicates:
        raise InvalidModel(
            [
                {"location": "file", "problem": f"the key {key!r} appears twice in one object"}
                for key in duplicates
            ]
        )
    return parse_model(doc)


# ---------------------------------------------------------------- plaintext reference


def fixed_point(value: float, scale: int) -> int:
    """round(value · scale), half to even, computed exactly from the number as
    written (so -0.12 at scale 10^6 is -120000, not a float's neighbour)."""
    if isinstance(value, int):
        return value * scale
    exact = _DECIMAL.multiply(Decimal(repr(float(value))), Decimal(scale))
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def bin_index(edges: Sequence[float], value: int) -> int:
    """The scorecard bin of `value`: the number of edges <= value (bin 0 lies below the first edge)."""
    return bisect_right(edges, value)


def clamp(value: int, bounds: FeatureBounds) -> int:
    return min(max(value, bounds.min), bounds.max)


def plain_score(
    model: ScoringModel, values: Mapping[str, int | None], bounds: Mapping[str, FeatureBounds]
) -> int:
    """The integer score the encrypted path decrypts to, computed in plaintext.

    Each value is clamped to its feature's [min, max]; a missing one (None or
    absent) is the feature's `missing` value, or for a scorecard feature with
    `missing_points`, those points. Weights, points and the intercept are fixed
    point: round(x · scale)."""
    _require_known(model, bounds)
    score = fixed_point(model.intercept, model.scale)
    for feature in model.features:
        feature_bounds = bounds[feature.name]
        value = values.get(feature.name)
        if model.kind == "scorecard" and value is None and feature.missing_points is not None:
            score += fixed_point(feature.missing_points, model.scale)
            continue
        x = feature_bounds.missing if value is None else clamp(value, feature_bounds)
        if model.kind == "logistic":
            score += fixed_point(_weight(feature), model.scale) * x
        else:
            score += fixed_point(feature.points[bin_index(feature.bins, x)], model.scale)
    return score


def real_score(model: ScoringModel, score: int) -> float:
    """The integer score as a real number: score / scale (a logit or points)."""
    return score / model.scale


def link(model: ScoringModel, real: float) -> float:
    """The model's link: the logistic function for a logit, the identity for scorecard points."""
    if model.kind != "logistic":
        return real
    # the two forms keep exp() from overflowing at either end
    if real >= 0:
        return 1.0 / (1.0 + math.exp(-real))
    e = math.exp(real)
    return e / (1.0 + e)


def score_bound(model: ScoringModel, bounds: Mapping[str, FeatureBounds]) -> int:
    """The largest |score| the model can give for any clamped or missing features."""
    _require_known(model, bounds)
    low = high = fixed_point(model.intercept, model.scale)
    for feature in model.features:
        b = bounds[feature.name]
        if model.kind == "logistic":
            weight = fixed_point(_weight(feature), model.scale)
            terms = [weight * b.min, weight * b.max]
        else:
            reachable = range(bin_index(feature.bins, b.min), bin_index(feature.bins, b.max) + 1)
            terms = [fixed_point(feature.points[i], model.scale) for i in reachable]
            if feature.missing_points is not None:
                terms.append(fixed_point(feature.missing_points, model.scale))
        low += min(terms)
        high += max(terms)
    return max(abs(low), abs(high))


def score_bits_for(bound: int) -> int:
    """Bits such that |score| < 2^bits, rounded up to a multiple of 8 (so the
    declaration says little about the weights), at least 8."""
    return max(8, -(-bound.bit_length() // 8) * 8)


# ---------------------------------------------------------------- the institution's side


def encrypt_model(
    model: ScoringModel, public: PublicKey, *, bounds: Mapping[str, FeatureBounds]
) -> dict[str, Any]:
    """The registration body (POST /v1/scoring/models): the model with every
    weight, point and the intercept fixed-point and encrypted under `public`,
    with a fresh r^n each. `public` must carry its modulus proof (the public
    part of a PrivateKey does). Bin edges stay public."""
    _require_known(model, bounds)
    public.check_proof()

    def encrypt(value: float) -> str:
        return encode_ciphertext(public, public.encrypt(fixed_point(value, model.scale)))

    features: list[dict[str, Any]] = []
    for feature in model.features:
        if model.kind == "logistic":
            features.append({"name": feature.name, "weight": encrypt(_weight(feature))})
        else:
            features.append(
                {
                    "name": feature.name,
                    "bins": list(feature.bins),
                    "points": [encrypt(points) for points in feature.points],
                    "missing_points": None
                    if feature.missing_points is None
                    else encrypt(feature.missing_points),
                }
            )
    return {
        "name": model.name,
        "product": model.product,
        "purpose": model.purpose,
        "kind": model.kind,
        "scale": model.scale,
        "description": model.description,
        "public_key": public.to_json(),
        "score_bits": score_bits_for(score_bound(model, bounds)),
        "intercept": encrypt(model.intercept),
        "features": features,
    }


def resolution_units(kind: str, scale: int, *, logit_resolution: float, points_resolution: float) -> int:
    """The rounding step of a product's outputs in score units: max(1, round(scale · resolution))."""
    resolution = logit_resolution if kind == "logistic" else points_resolution
    return max(1, fixed_point(resolution, scale))


def slot_bits_for(score_bits: int, resolution: int = 1) -> int:
    """Bits of one packed slot: room for score + offset + noise, where |score| < 2^score_bits,
    the offset is below 2^(slot_bits-2) + resolution and the noise below the resolution."""
    return max(score_bits, resolution.bit_length()) + 2


def slot_offset(slot_bits: int, resolution: int) -> int:
    """What each slot adds so a signed score is non-negative: 2^(slot_bits-2)
    rounded up to a multiple of the resolution (so outputs stay multiples of it)."""
    return -(-(1 << (slot_bits - 2)) // resolution) * resolution


def open_scores(
    private: PrivateKey, packed: Sequence[int], *, count: int, slot_bits: int, slots: int, resolution: int
) -> list[int]:
    """The institution's side of a sealed answer: the `count` integer scores, in
    order, each rounded to a multiple of `resolution` by the zone's noise
    (stochastic rounding: the expected value is the exact score)."""
    if count < 0 or slots < 1 or slot_bits < 3 or resolution < 1:
        raise ValueError("count, slots, slot_bits and resolution must be positive")
    if slots * slot_bits > private.public.bits - 2:
        raise ValueError(f"{slots} slots of {slot_bits} bits do not fit a {private.public.bits}-bit key")
    if resolution > 1 << (slot_bits - 2):
        raise ValueError(f"a resolution of {resolution} does not fit slots of {slot_bits} bits")
    expected = -(-count // slots)
    if len(packed) != expected:
        raise ValueError(
            f"{count} scores in slots of {slots} come in {expected} ciphertexts, not {len(packed)}"
        )
    offset = slot_offset(slot_bits, resolution)
    mask = (1 << slot_bits) - 1
    scores: list[int] = []
    for index, ciphertext in enumerate(packed):
        plaintext = private.decrypt_residue(ciphertext)
        for slot in range(min(slots, count - index * slots)):
            value = (plaintext >> (slot_bits * slot)) & mask
            scores.append(value // resolution * resolution - offset)
    return scores


# ---------------------------------------------------------------- the zone's side


def compile_model(
    registration: Mapping[str, Any],
    bounds: Mapping[str, FeatureBounds],
    *,
    min_key_bits: int = MIN_KEY_BITS,
    min_features: int = 1,
    resolution: int | None = None,
    max_score_bits: int = MAX_SCORE_BITS,
) -> ScoringCircuit:
    """Check a registration against the product's features and build its circuit.

    InvalidModel lists every problem: the key (size, form, the proof that
    gcd(n, φ(n)) = 1), every malformed ciphertext, features unknown to `bounds`
    or listed twice, bins not strictly increasing, points not one per bin, fewer
    than `min_features` features, a score_bits that is not a multiple of 8 in
    [8, max_score_bits] or leaves no slot. With `resolution` (score units) the
    slots also make room for a coarse rounding step; without it, `seal` accepts
    resolutions up to 2^score_bits."""
    if resolution is not None and resolution < 1:
        raise ValueError("the resolution is a positive number of score units")
    if not isinstance(registration, Mapping):
        raise InvalidModel([{"location": "registration", "problem": "a registration is a JSON object"}])
    problems = _Problems()
    _unknown_fields(problems, "", registration, _REGISTRATION_FIELDS)
    header = _header(problems, registration)
    kind = header["kind"]
    _scale(problems, registration.get("scale"), "scale")
    public = _registration_key(problems, registration.get("public_key"), min_key_bits)

    score_bits = registration.get("score_bits")
    slot_bits = 0
    if not _is_int(score_bits) or score_bits % 8 or not 8 <= score_bits <= max_score_bits:
        problems.add(
            "score_bits", f"a multiple of 8 from 8 to {max_score_bits} (the bound on |score| in bits)"
        )
    else:
        slot_bits = slot_bits_for(score_bits, resolution or 1)
        if public is not None and (public.bits - 2) // slot_bits < 1:
            problems.add("score_bits", f"slots of {slot_bits} bits do not fit a {public.bits}-bit key")

    texts: dict[str, object] = {"intercept": registration.get("intercept")}
    # (location, name, bins, points count) of each well-formed feature
    shapes: list[tuple[str, str, tuple[float, ...], int]] = []
    raw_features = _feature_list(problems, registration.get("features"))
    for at, raw, name in _named_features(problems, raw_features):
        if name and name not in bounds:
            problems.add(f"{at}.name", f"unknown feature {name!r}: not among this product's scoring features")
        if kind not in KINDS:
            continue
        _unknown_fields(problems, at, raw, _FEATURE_FIELDS[kind], kind)
        if kind == "logistic":
            texts[f"{at}.weight"] = raw.get("weight")
            shapes.append((at, name, (), 0))
            continue
        bins = _bins(problems, raw.get("bins"), f"{at}.bins")
        points = raw.get("points")
        if not isinstance(points, list):
            problems.add(f"{at}.points", "a list of ciphertexts, one per bin (len(bins) + 1), is required")
            points = []
        elif bins is not None and len(points) != len(bins) + 1:
            problems.add(
                f"{at}.points",
                f"{len(points)} points for {len(bins)} bin edges; one per bin needs {len(bins) + 1}",
            )
        texts.update({f"{at}.points.{i}": text for i, text in enumerate(points)})
        if raw.get("missing_points") is not None:
            texts[f"{at}.missing_points"] = raw["missing_points"]
        shapes.append((at, name, bins or (), len(points)))
    if raw_features and len(raw_features) < min_features:
        problems.add(
            "features",
            f"{len(raw_features)} feature{'s' if len(raw_features) != 1 else ''}; this product's models use "
            f"at least {min_features}, so that no score is a single feature",
        )

    ciphertexts: dict[str, int] = {}
    if public is not None:
        try:
            ciphertexts = decode_ciphertexts(public, texts)
        except MalformedCiphertexts as exc:
            for location, why in exc.problems.items():
                problems.add(location, f"not a ciphertext under the registered key: {why}")
    problems.raise_if_any()
    assert public is not None and kind in KINDS and isinstance(score_bits, int)  # checked above

    features: list[_CircuitFeature] = []
    for at, name, bins, point_count in shapes:
        if kind == "logistic":
            features.append(_CircuitFeature(name, bounds[name], weight=ciphertexts[f"{at}.weight"]))
        else:
            points = tuple(ciphertexts[f"{at}.points.{i}"] for i in range(point_count))
            features.append(
                _CircuitFeature(
                    name,
                    bounds[name],
                    bins=bins,
                    points=points,
                    missing_points=ciphertexts.get(f"{at}.missing_points"),
                )
            )
    return ScoringCircuit(
        public=public,
        kind=kind,
        scale=int(registration["scale"]),
        score_bits=score_bits,
        slot_bits=slot_bits,
        intercept=ciphertexts["intercept"],
        features=features,
    )


class _CircuitFeature:
    """One feature of a compiled model: its bounds and its ciphertexts."""

    def __init__(
        self,
        name: str,
        bounds: FeatureBounds,
        *,
        weight: int | None = None,
        bins: tuple[float, ...] = (),
        points: tuple[int, ...] = (),
        missing_points: int | None = None,
    ) -> None:
        self.name = name
        self.bounds = bounds
        # a logistic feature's weight ciphertext (1 for a scorecard's, which has points instead)
        self.ciphertext = mpz(1 if weight is None else weight)
        self.bins = bins
        self.points = tuple(mpz(p) for p in points)
        # a scorecard's ciphertext for a missing value: its own points, else the bin of `missing`
        self.missing_points: mpz | None = None
        if missing_points is not None:
            self.missing_points = mpz(missing_points)
        elif points:
            self.missing_points = self.points[bin_index(bins, bounds.missing)]


class ScoringCircuit:
    """A registered model compiled for the zone: computes encrypted scores and seals them.

    Holds only ciphertexts and public numbers. `encrypted_scores` gives one
    ciphertext a row, not yet re-randomized: only `seal`ed ciphertexts may
    leave the zone."""

    def __init__(
        self,
        *,
        public: PublicKey,
        kind: str,
        scale: int,
        score_bits: int,
        slot_bits: int,
        intercept: int,
        features: Sequence[_CircuitFeature],
    ) -> None:
        self.public = public
        self.kind = kind
        self.scale = scale
        self.score_bits = score_bits
        self.slot_bits = slot_bits
        self.slots = (public.bits - 2) // slot_bits
        self.feature_names = tuple(f.name for f in features)
        self._features = tuple(features)
        self._nsquare = mpz(public.nsquare)
        self._intercept = mpz(intercept)
        # windows[i][k][d] = weight_i^(d · 2^(8k)): built on the first large batch
        self._windows: list[list[list[mpz]]] | None = None
        # The work per row must not depend on the row's values (a caller timing single scores
        # would learn about the features): every window costs one product, a zero digit
        # included, and the direct path raises each weight to x - min + 2^span_bits, an exponent
        # of the same bit length whatever x. The bases fold in what that adds.
        self._base = self._intercept  # intercept · ∏ c_i^min_i: for the tables
        self._direct_base = self._intercept  # intercept · ∏ c_i^(min_i - 2^span_bits_i): for powmod
        if kind == "logistic":
            # negative exponents raise the weight's inverse, which powmod computes
            for feature in self._features:
                offset = gmpy2.powmod(feature.ciphertext, feature.bounds.min, self._nsquare)
                self._base = self._base * offset % self._nsquare
                top = 1 << _span_bits(feature.bounds)
                offset = gmpy2.powmod(feature.ciphertext, feature.bounds.min - top, self._nsquare)
                self._direct_base = self._direct_base * offset % self._nsquare

    def packed_count(self, scores: int) -> int:
        """Ciphertexts that `scores` scores pack into."""
        return -(-scores // self.slots)

    def encrypted_scores(self, rows: Sequence[Sequence[int | None]]) -> list[int]:
        """One score ciphertext per row (values in `feature_names` order, None for
        missing), NOT re-randomized: pass them to `seal` before they leave the zone.

        The number and size of the modular operations per row does not depend on
        the values (the same for every row of a call)."""
        width = len(self._features)
        for index, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {index} has {len(row)} values for the model's {width} features")
            if any(v is not None and not isinstance(v, int) for v in row):
                raise TypeError(f"row {index}: feature values are integers or None")
        if self.kind == "scorecard":
            return [int(self._scorecard(row)) for row in rows]
        if self._windows is None and len(rows) >= _TABLE_MIN_ROWS:
            self._windows = self._window_tables()
        if self._windows is None:
            return [int(self._logistic_direct(row)) for row in rows]
        return [int(self._logistic_windowed(row, self._windows)) for row in rows]

    def _exponent(self, value: int | None, feature: _CircuitFeature) -> int:
        b = feature.bounds
        return (b.missing if value is None else min(max(value, b.min), b.max)) - b.min

    def _logistic_direct(self, row: Sequence[int | None]) -> mpz:
        acc, nsquare = self._direct_base, self._nsquare
        for value, feature in zip(row, self._features, strict=True):
            exponent = self._exponent(value, feature) + (1 << _span_bits(feature.bounds))
            acc = acc * gmpy2.powmod(feature.ciphertext, exponent, nsquare) % nsquare
        return acc

    def _logistic_windowed(self, row: Sequence[int | None], windows: list[list[list[mpz]]]) -> mpz:
        acc, nsquare, mask = self._base, self._nsquare, (1 << WINDOW_BITS) - 1
        for value, feature, tables in zip(row, self._features, windows, strict=True):
            exponent = self._exponent(value, feature)
            for table in tables:
                acc = acc * table[exponent & mask] % nsquare
                exponent >>= WINDOW_BITS
        return acc

    def _window_tables(self) -> list[list[list[mpz]]]:
        """Fixed-base tables for each weight, one per 8-bit window of its span (max - min).

        Entry 0 of every table is one fresh encryption of zero, a full-size number
        like the others, so a zero digit costs the same product as any other."""
        nsquare = self._nsquare
        zero = gmpy2.powmod(mpz(secrets.randbelow(self.public.n - 2) + 2), mpz(self.public.n), nsquare)
        windows: list[list[list[mpz]]] = []
        for feature in self._features:
            span_bits = _span_bits(feature.bounds)
            tables: list[list[mpz]] = []
            base = feature.ciphertext
            for start in range(0, max(span_bits, 1), WINDOW_BITS):
                size = 1 << min(WINDOW_BITS, max(span_bits, 1) - start)
                table = [zero, base]
                for _ in range(2, size):
                    table.append(table[-1] * base % nsquare)
                tables.append(table)
                base = gmpy2.powmod(base, 1 << WINDOW_BITS, nsquare)
            windows.append(tables)
        return windows

    def _scorecard(self, row: Sequence[int | None]) -> mpz:
        acc, nsquare = self._intercept, self._nsquare
        for value, feature in zip(row, self._features, strict=True):
            if value is None:
                chosen = feature.missing_points
                assert chosen is not None  # every scorecard feature has one
            else:
                chosen = feature.points[bin_index(feature.bins, clamp(value, feature.bounds))]
            acc = acc * chosen % nsquare
        return acc

    def seal(self, cts: Sequence[int], *, factors: Sequence[int], resolution: int) -> list[int]:
        """Pack the score ciphertexts `slots` at a time (the first score in the
        lowest slot), add each slot's offset and rounding noise u uniform in
        [0, resolution), mask every bit above the used slots with uniform noise,
        and multiply each packed ciphertext by one factor r^n: the only form in
        which scores leave the zone.

        The mask holds the institution to the declared score_bits: whatever its
        weights, a packed ciphertext shows it the used slots, and of anything above
        them at most about one bit (whether the masked sum wrapped around n)."""
        if len(factors) != self.packed_count(len(cts)):
            raise ValueError(
                f"{len(cts)} scores pack into {self.packed_count(len(cts))} ciphertexts; "
                f"got {len(factors)} factors"
            )
        if not 1 <= resolution <= 1 << (self.slot_bits - 2):
            raise ValueError(
                f"a resolution of {resolution} units does not fit slots of {self.slot_bits} bits "
                "(compile the model with its resolution)"
            )
        n, nsquare = mpz(self.public.n), self._nsquare
        offset, shift = slot_offset(self.slot_bits, resolution), mpz(1) << self.slot_bits
        sealed: list[int] = []
        for index, factor in enumerate(factors):
            group = cts[index * self.slots : (index + 1) * self.slots]
            acc = mpz(group[-1])
            for ciphertext in reversed(group[:-1]):
                acc = gmpy2.powmod(acc, shift, nsquare) * mpz(ciphertext) % nsquare
            used = self.slot_bits * len(group)
            noise = secrets.randbelow(int(n) >> used) << used
            for slot in range(len(group)):
                noise += (offset + secrets.randbelow(resolution)) << (self.slot_bits * slot)
            # Enc(noise) without randomness is (1 + noise·n): the factor below randomizes the whole
            acc = acc * mpz(1 + noise * int(n)) % nsquare
            sealed.append(int(acc * mpz(factor) % nsquare))
        return sealed


# ---------------------------------------------------------------- validation helpers


def _header(problems: _Problems, doc: Mapping[str, Any]) -> dict[str, str]:
    """name, product, purpose, kind and description of a model file or registration."""
    checks = {
        "name": (_NAME, "letters, digits, '.', '_' or '-', up to 64, starting with a letter or digit"),
        "product": (_SLUG, "a product id (lowercase letters, digits and '-')"),
        "purpose": (_IDENT, "a purpose such as pre_loan (lowercase letters, digits and '_')"),
    }
    header: dict[str, str] = {}
    for field, (pattern, form) in checks.items():
        value = doc.get(field)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            problems.add(field, f"required: {form}")
            value = ""
        header[field] = value
    kind = doc.get("kind")
    if kind not in KINDS:
        problems.add("kind", f"unknown kind; a model is {' or '.join(repr(k) for k in KINDS)}")
    header["kind"] = kind if isinstance(kind, str) else ""
    description = doc.get("description", "")
    if not isinstance(description, str):
        problems.add("description", "a string")
        description = ""
    header["description"] = description
    return header


def _scale(problems: _Problems, value: object, location: str) -> int:
    if not _is_int(value) or not 1 <= value <= MAX_SCALE:
        problems.add(
            location, f"an integer from 1 to {MAX_SCALE:,} (fixed point: a weight w counts as round(w·scale))"
        )
        return 1
    return value


def _fixed_number(problems: _Problems, value: object, location: str, scale: int) -> float:
    """A finite number whose fixed-point value fits MAX_FIXED_BITS; 0 after a problem."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add(location, "required: a number")
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        problems.add(location, "a finite number (not NaN or infinity)")
        return 0
    if abs(fixed_point(value, scale)) >= 1 << MAX_FIXED_BITS:
        problems.add(location, f"too large: the value times the scale must stay below 2^{MAX_FIXED_BITS}")
        return 0
    return value


def _bins(problems: _Problems, value: object, location: str) -> tuple[float, ...] | None:
    if not isinstance(value, list) or not value:
        problems.add(location, "a non-empty list of bin edges (numbers, strictly increasing) is required")
        return None
    if len(value) > MAX_BINS:
        problems.add(location, f"{len(value)} bin edges; a feature has at most {MAX_BINS}")
        return None
    bad = [
        i
        for i, edge in enumerate(value)
        if isinstance(edge, bool) or not isinstance(edge, int | float) or not math.isfinite(edge)
    ]
    if bad:
        for i in bad:
            problems.add(f"{location}.{i}", "a bin edge is a finite number")
        return None
    unordered = [i for i in range(1, len(value)) if not value[i - 1] < value[i]]
    for i in unordered:
        problems.add(
            f"{location}.{i}", "bin edges must be strictly increasing: this edge is not above the one before"
        )
    return None if unordered else tuple(value)


def _feature_list(problems: _Problems, value: object) -> list[Any]:
    """A model's `features` list ([] when it is none); a missing, empty or overlong list is a problem."""
    if not isinstance(value, list) or not value:
        problems.add("features", "a non-empty list of features is required")
        return []
    if len(value) > MAX_FEATURES:
        problems.add("features", f"{len(value)} features; a model has at most {MAX_FEATURES}")
    return value


def _named_features(
    problems: _Problems, raw_features: Sequence[Any]
) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(location, object, checked name) of each feature that is an object; a name is checked as it
    comes, so each feature's problems stay together in the order they are found."""
    seen: set[str] = set()
    for index, raw in enumerate(raw_features):
        at = f"features.{index}"
        if not isinstance(raw, Mapping):
            problems.add(at, "a feature is an object with a name")
            continue
        yield at, raw, _feature_name(problems, raw.get("name"), f"{at}.name", seen)


def _feature_name(problems: _Problems, value: object, location: str, seen: set[str]) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        problems.add(location, "required: a feature name (lowercase letters, digits and '_')")
        return ""
    if value in seen:
        problems.add(location, f"feature {value!r} is listed twice")
    seen.add(value)
    return value


def _unknown_fields(
    problems: _Problems, at: str, doc: Mapping[str, Any], known: Sequence[str], kind: str | None = None
) -> None:
    for key in doc:
        if key in known:
            continue
        location = f"{at}.{key}" if at else str(key)
        if kind == "scorecard" and key == "weight":
            problems.add(location, "a scorecard feature has bins and points, not a weight")
        elif kind == "logistic" and key in ("bins", "points", "missing_points"):
            problems.add(location, "a logistic feature has a weight, not bins or points")
        else:
            problems.add(location, "unknown field")


def _registration_key(problems: _Problems, doc: object, min_key_bits: int) -> PublicKey | None:
    try:
        public = PublicKey.from_json(doc, min_bits=min_key_bits)
        public.check_proof()
    except KeyTooSmall as exc:
        problems.add("public_key", str(exc))
        return None
    except InvalidPublicKey as exc:
        problems.add("public_key", str(exc))
        return None
    return public


def _require_known(model: ScoringModel, bounds: Mapping[str, FeatureBounds]) -> None:
    unknown = [
        {
            "location": f"features.{i}.name",
            "problem": f"unknown feature {f.name!r}: not among the product's features",
        }
        for i, f in enumerate(model.features)
        if f.name not in bounds
    ]
    if unknown:
        raise InvalidModel(unknown)


def _span_bits(bounds: FeatureBounds) -> int:
    return max(bounds.max - bounds.min, 0).bit_length()


def _weight(feature: ModelFeature) -> float:
    if feature.weight is None:
        raise ValueError(f"feature {feature.name!r} of a logistic model has no weight")
    return feature.weight


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
