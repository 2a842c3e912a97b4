"""Product specs: what a data product reads, computes, answers and costs.

A spec is declared in YAML, one file a product, in the top-level `products/` folder and
applied with `datazone product apply products/*.yaml` (or `PUT /v1/products/{id}`). The
pydantic model checks the document's own shape; `service.validate_against_zone` checks it
against the zone (datasets, fields, the engine's logics) and lists every problem at once.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datazone.dataset.schemas import IDENT, SLUG, Masking
from datazone.lifecycle.schemas import Reason
from datazone.limits import MAX_LIST, RequestBody
from datazone.purposes import Purpose


class Category(StrEnum):
    credit_lookup = "credit_lookup"
    admission_analysis = "admission_analysis"
    risk_insight = "risk_insight"
    competitiveness_analysis = "competitiveness_analysis"
    enterprise_portrait = "enterprise_portrait"
    trust_analysis = "trust_analysis"
    custom = "custom"


CATEGORY_NAMES: dict[Category, str] = {
    Category.credit_lookup: "信用信息查询",
    Category.admission_analysis: "准入分析",
    Category.risk_insight: "风险洞察",
    Category.competitiveness_analysis: "竞争力分析",
    Category.enterprise_portrait: "企业画像",
    Category.trust_analysis: "守信分析",
    Category.custom: "定制",
}


class Tier(StrEnum):
    free = "free"
    paid = "paid"
    negotiated = "negotiated"  # priced per contract: price_fen may be 0


class ProductState(StrEnum):
    draft = "draft"
    published = "published"
    deprecated = "deprecated"
    retired = "retired"


# states a caller who is not the operator may see in the catalog
VISIBLE_STATES: tuple[str, ...] = (ProductState.published.value, ProductState.deprecated.value)


class PsiResult(StrEnum):
    intersection = "intersection"  # the institution learns which of its enterprises are in the slice
    size = "size"  # only how many


class PsiPopulation(BaseModel):
    """The zone slice a PSI product joins with: the enterprises with current records in a
    dataset, optionally only those whose fields equal the given values."""

    model_config = ConfigDict(extra="forbid")

    dataset: Annotated[str, Field(pattern=IDENT)]
    where: dict[Annotated[str, Field(pattern=IDENT)], str] = Field(default_factory=dict)


class PsiSpec(BaseModel):
    """How a product is served by private set intersection instead of per-enterprise lookups."""

    model_config = ConfigDict(extra="forbid")

    population: PsiPopulation
    result: PsiResult = PsiResult.intersection
    # outputs shown, for matched enterprises only, through labeled PSI (empty: membership only)
    labels: list[Annotated[str, Field(pattern=IDENT)]] = Field(default_factory=list)
    # below this many items a set is a probe of named enterprises, not a customer list
    min_set: Annotated[int, Field(ge=1)] = 100
    max_set: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    # the chance that a set of max_set items gets one false match from the OpenMined setup
    fpr: Annotated[float, Field(gt=0, le=1e-3)] = 1e-9

    @model_validator(mode="after")
    def _consistent(self) -> PsiSpec:
        problems = []
        if self.min_set > self.max_set:
            problems.append(f"min_set {self.min_set} is above max_set {self.max_set}")
        if self.labels and self.result is PsiResult.size:
            problems.append("labels need result 'intersection': a size-only product shows no enterprise")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AnonymousAnswer(StrEnum):
    existence = "existence"  # is the enterprise among `members`? (a blacklist check)
    full = "full"  # the product's whole (masked) answer about the enterprise


class AnonymousSpec(BaseModel):
    """How a product is served by anonymous query (匿踪查询) instead of plain lookups: the
    institution sends a hash-prefix bucket and a blinded OPRF point; the zone learns only the
    bucket, which holds at least `k` candidates (see docs/anonymous-query.md)."""

    model_config = ConfigDict(extra="forbid")

    answer: AnonymousAnswer
    # every enterprise an institution might ask about; the buckets partition these
    candidates: PsiPopulation = Field(default_factory=lambda: PsiPopulation(dataset="mr_registration"))
    # existence only: the list asked about (e.g. the dishonest-debtor list)
    members: PsiPopulation | None = None
    # the privacy parameter: every bucket holds at least k candidates
    k: Annotated[int, Field(ge=2, le=10_000_000)] = 1000
    # fixed bucket prefix length; unset: the longest whose every bucket still holds k candidates
    prefix_bits: Annotated[int, Field(ge=0, le=24)] | None = None
    # answers are sealed before anyone asks, so they are masked at this clearance for everyone
    clearance: Annotated[int, Field(ge=1, le=3)] = 1
    # queries (OPRF evaluations) per request
    max_queries: Annotated[int, Field(ge=1, le=1000)] = 100

    @model_validator(mode="after")
    def _consistent(self) -> AnonymousSpec:
        if self.answer is AnonymousAnswer.existence and self.members is None:
            raise ValueError("an existence product names its members (the list asked about)")
        if self.answer is AnonymousAnswer.full and self.members is not None:
            raise ValueError("a full-answer product answers for every candidate: drop members")
        return self


class ScoringKind(StrEnum):
    logistic = "logistic"  # logit = intercept + sum(weight * feature), fixed-point weights
    scorecard = "scorecard"  # score = base + sum(points of the feature's bin); bins public


class ScoringFeature(BaseModel):
    """A zone feature an institution's model may use: an integer output of the product's
    logic, clamped to [min, max] before scoring; `missing` stands in where the zone has no data."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=IDENT)]
    min: int
    max: int
    missing: int
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ScoringFeature:
        if not self.min <= self.missing <= self.max or self.min >= self.max:
            raise ValueError(f"feature {self.name!r}: need min < max and missing within [min, max]")
        return self


class ScoringSpec(BaseModel):
    """How a product is served by secure scoring (安全评分): institutions register models over
    these features with Paillier-encrypted weights or points; the zone returns encrypted scores
    (see docs/secure-scoring.md)."""

    model_config = ConfigDict(extra="forbid")

    features: Annotated[list[ScoringFeature], Field(min_length=1)]
    kinds: Annotated[list[ScoringKind], Field(min_length=1)] = Field(
        default_factory=lambda: [ScoringKind.logistic, ScoringKind.scorecard]
    )
    # a model over fewer features is refused: one feature's score is that feature
    min_features: Annotated[int, Field(ge=2)] = 3
    # each enterprise is scored at most cap_scores times per institution in any cap_days days
    cap_scores: Annotated[int, Field(ge=1)] = 3
    cap_days: Annotated[int, Field(ge=1, le=366)] = 30
    # outputs are rounded (stochastically, under encryption) to this many units of the score:
    # a logit for logistic models, points for scorecards
    logit_resolution: Annotated[float, Field(gt=0, le=1)] = 0.01
    points_resolution: Annotated[float, Field(gt=0, le=100)] = 1.0
    # enterprises per batch job (a contract's scoring_max_batch may lower it)
    max_batch: Annotated[int, Field(ge=1, le=1_000_000)] = 100_000
    min_key_bits: Annotated[int, Field(ge=2048, le=4096)] = 2048

    @model_validator(mode="after")
    def _consistent(self) -> ScoringSpec:
        names = [f.name for f in self.features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"scoring features listed twice: {', '.join(twice)}")
        if self.min_features > len(self.features):
            raise ValueError(f"min_features {self.min_features} is more than the {len(self.features)} features offered")
        return self


class JointSpec(BaseModel):
    """How a product is served by joint statistics and joint modeling (联合统计与联合建模): an
    institution's labelled sample against these zone features, its labels encrypted (statistics)
    or secret-shared (training), never seen by the zone (see docs/joint-modeling.md, which states
    what each side learns and why each bound below is there)."""

    model_config = ConfigDict(extra="forbid")

    features: Annotated[list[ScoringFeature], Field(min_length=1)]
    # the product whose secure scoring applies a trained model (its features and bounds are these)
    scoring_product: Annotated[str, Field(pattern=SLUG)]
    # a sample below this many enterprises is refused: small samples let bins single out enterprises
    min_sample: Annotated[int, Field(ge=100)] = 1000
    max_sample: Annotated[int, Field(ge=100, le=200_000)] = 200_000
    # no reported bin (or group) holds fewer enterprises than this
    min_bin_count: Annotated[int, Field(ge=5)] = 50
    max_bins: Annotated[int, Field(ge=2, le=50)] = 20
    # a job whose sample differs from an earlier job's of the institution by fewer enterprises than
    # this (but by some) is refused: the two answers' difference would describe those few
    min_difference: Annotated[int, Field(ge=1)] = 100
    # jobs per institution in any `period_days` days
    max_jobs: Annotated[int, Field(ge=1)] = 30
    period_days: Annotated[int, Field(ge=1, le=366)] = 30
    # a model over fewer zone features is refused, as in secure scoring
    min_features: Annotated[int, Field(ge=1)] = 3
    # a job is metered as one unit per sample enterprise plus this many units (the job itself)
    job_units: Annotated[int, Field(ge=0)] = 0
    max_epochs: Annotated[int, Field(ge=1, le=200)] = 30
    max_segments: Annotated[int, Field(ge=0, le=16)] = 8

    @model_validator(mode="after")
    def _consistent(self) -> JointSpec:
        names = [f.name for f in self.features]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"joint features listed twice: {', '.join(twice)}")
        if self.min_sample > self.max_sample:
            raise ValueError(f"min_sample {self.min_sample} is above max_sample {self.max_sample}")
        if self.min_bin_count * 2 > self.min_sample:
            raise ValueError("min_sample must hold at least two bins of min_bin_count")
        return self


class OutputSpec(BaseModel):
    """One field of the product's answer. grade and masking default to the source field's
    when `from` names exactly one field; with several sources they must be stated."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(pattern=IDENT)]
    description: str = ""
    from_: Annotated[list[str], Field(alias="from", min_length=1)]
    grade: Annotated[int, Field(ge=1, le=5)] | None = None
    masking: Masking | None = None
    unit: str | None = None

    def policy(self) -> tuple[int, Masking]:
        """(grade, masking) of an applied product's output: apply resolves both, so a stored
        spec always has them; an unapplied spec may not."""
        if self.grade is None or self.masking is None:
            raise ValueError(f"output {self.name!r} has no resolved grade/masking: apply the spec first")
        return self.grade, self.masking


class ProductSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=SLUG)]
    name: Annotated[str, Field(min_length=1)]
    name_en: str = ""
    description: str = ""
    category: Category
    tier: Tier
    price_fen: Annotated[int, Field(ge=0)]
    purposes: Annotated[list[Purpose], Field(min_length=1)]
    consent_required: bool
    logic: Annotated[str, Field(min_length=1)]
    sources: Annotated[dict[str, Annotated[list[str], Field(min_length=1)]], Field(min_length=1)]
    outputs: Annotated[list[OutputSpec], Field(min_length=1)]
    params: dict[str, Any] = Field(default_factory=dict)
    # set: the product is served by PSI only (/v1/psi), never by per-enterprise lookups
    psi: PsiSpec | None = None
    # set: served by anonymous query only (/v1/anonymous)
    anonymous: AnonymousSpec | None = None
    # set: served by secure scoring only (/v1/scoring)
    scoring: ScoringSpec | None = None
    # set: served by joint statistics and modeling jobs only (/v1/joint)
    joint: JointSpec | None = None

    @property
    def channel(self) -> str:
        """How the product is served: lookup, psi, anonymous, scoring or joint (one only)."""
        for name in ("psi", "anonymous", "scoring", "joint"):
            if getattr(self, name) is not None:
                return name
        return "lookup"

    @model_validator(mode="after")
    def _consistent(self) -> ProductSpec:
        problems: list[str] = []
        served_by = [name for name in ("psi", "anonymous", "scoring", "joint") if getattr(self, name) is not None]
        if len(served_by) > 1:
            problems.append(f"a product is served one way: it sets {' and '.join(served_by)}")
        if self.anonymous is not None:
            if self.consent_required:
                problems.append(
                    "an anonymous-query product cannot require consent: the zone never learns whom the "
                    "institution asks about"
                )
            for role in ("candidates", "members"):
                pop = getattr(self.anonymous, role)
                if pop is not None and pop.dataset not in self.sources:
                    problems.append(
                        f"anonymous.{role}.dataset {pop.dataset!r} must be among the sources, "
                        "so its department's grant covers the query"
                    )
        for served in (self.scoring, self.joint):
            if served is None:
                continue
            outputs = {o.name for o in self.outputs}
            unknown = [f.name for f in served.features if f.name not in outputs]
            if unknown:
                what = "scoring" if served is self.scoring else "joint"
                problems.append(f"{what}.features names {', '.join(unknown)}, which are not outputs")
        if self.psi is not None:
            if self.consent_required:
                problems.append(
                    "a PSI product cannot require consent: the zone never learns whom the institution asks about"
                )
            if self.psi.population.dataset not in self.sources:
                problems.append(
                    f"psi.population.dataset {self.psi.population.dataset!r} must be among the sources, "
                    "so its department's grant covers the join"
                )
            outputs = {o.name for o in self.outputs}
            unknown = [label for label in self.psi.labels if label not in outputs]
            if unknown:
                problems.append(f"psi.labels names {', '.join(unknown)}, which are not outputs")
        if self.tier is Tier.free and self.price_fen != 0:
            problems.append(f"a free product costs 0 fen, not {self.price_fen}")
        if self.tier is Tier.paid and self.price_fen == 0:
            problems.append(
                "a paid product needs a price_fen above 0 (use tier 'negotiated' for per-contract)"
            )
        dupes = sorted({p.value for p in self.purposes if self.purposes.count(p) > 1})
        if dupes:
            problems.append(f"purposes listed twice: {', '.join(dupes)}")
        names = [o.name for o in self.outputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"outputs declared twice: {', '.join(dupes)}")
        for ds, fields in self.sources.items():
            twice = sorted({f for f in fields if fields.count(f) > 1})
            if twice:
                problems.append(f"sources.{ds} lists {', '.join(twice)} twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)


# ---------------------------------------------------------------- API models


class OutputOut(BaseModel):
    name: str
    description: str
    from_: list[str] = Field(serialization_alias="from")
    grade: int
    masking: Masking
    unit: str | None


class ProductOut(BaseModel):
    """A catalog entry."""

    id: str
    name: str
    name_en: str
    description: str
    category: Category
    category_name: str
    tier: Tier
    price_fen: int
    purposes: list[Purpose]
    consent_required: bool
    departments: list[str]
    datasets: list[str]
    outputs: list[OutputOut]
    state: ProductState
    successor: str | None
    seamless_switch: bool
    updated_at: datetime
    # served by PSI (/v1/psi) rather than per-enterprise lookups
    psi: PsiSpec | None = None
    # served by anonymous query (/v1/anonymous)
    anonymous: AnonymousSpec | None = None
    # served by secure scoring (/v1/scoring): the feature catalog
    scoring: ScoringSpec | None = None
    # served by joint statistics and modeling (/v1/joint): the features and the bounds on a sample
    joint: JointSpec | None = None


class AppliedOut(BaseModel):
    product: ProductOut
    result: str  # created, updated, unchanged


class TransitionIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    successor: Annotated[str, Field(pattern=SLUG)] | None = None
    seamless: bool = False


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    by_name: str
    reason: str
    at: datetime


# --- demands (需求申请) ----------------------------------------------------------------------------------


class DemandIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(min_length=1, max_length=300)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    purposes: list[Purpose] = Field(default_factory=list, max_length=MAX_LIST)
    wanted_fields: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=MAX_LIST
    )
    wanted_departments: list[Annotated[str, Field(pattern=SLUG)]] = Field(default_factory=list, max_length=MAX_LIST)


class FulfilIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    reason: Reason
    dataset_ids: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    product_id: str | None = None


class DemandOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str
    purposes: list[str]
    wanted_fields: list[str]
    wanted_departments: list[str]
    state: str
    filed_by_name: str
    institution_id: int | None
    fulfilled_dataset_ids: list[str]
    fulfilled_product_id: str | None
    created_at: datetime
    updated_at: datetime




# --- ratings and usage -----------------------------------------------------------------------------


class RatingIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    score: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=2000)] = ""
    period: Annotated[str | None, Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")] = None


class RatingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    period: str
    score: int
    comment: str
    updated_at: datetime


class RatingSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    count: int
    mean: float | None
    by_score: dict[int, int]
    by_period: dict[str, float]


class UsageVolumeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    day: date
    calls: int
    entities: int
    refused: int
