"""Secure scoring (安全评分): an institution's Paillier-encrypted model applied to zone features.

An institution registers a model over a scoring product's feature catalog: logistic weights
or scorecard points, each encrypted under its own Paillier key (the bins are public). The
zone checks the registration in full (every problem listed at once) and keeps only the
ciphertexts and the public key; an operator with the reviewer role approves or rejects it.
Only an approved model scores.

A score takes the same control-plane checks as a product lookup (`access.pipeline`,
narrowed to the datasets the model's features read), the consent the product requires, and
the per-enterprise cap (`cap_scores` per institution and product in any `cap_days`), counted
in `scoring_tally` under an advisory lock per institution so two concurrent requests cannot
both pass. The zone then computes the encrypted score from the features, adds rounding noise
and the slot offset under encryption and re-randomizes it with a factor drawn once from the
pool the worker keeps (`seal`), so the ciphertext returned says nothing of how it was made.

Batch jobs are billed when created (the found enterprises), stored with their enterprises,
and scored by workers chunk by chunk: grants, contract and model state are checked again
before every chunk, each chunk is stored and committed on its own, and a job whose worker
went quiet is taken over at its first missing chunk. A stored chunk never changes.

What a score still reveals is a linear function of the features (see docs/secure-scoring.md):
hence registered and reviewed models only, a minimum number of features, the caps, rounded
outputs and an audit entry for every score and job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.access import gates, pipeline
from datazone.access.gates import Authorization, EnterpriseNotFound, Served, check, validate_usccs
from datazone.access.pipeline import Answer, Audited, Call, Channel, Computed, Result, Subject
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.db import notify_work
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, InvalidUscc, NotFound
from datazone.grant import service as grant_service
from datazone.metering import service as metering
from datazone.oauth import resource
from datazone.oauth.resource import AccessGrant
from datazone.principal.models import Principal
from datazone.privacy import paillier
from datazone.privacy import scoring as circuits
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.engine.facts import REGISTRATION
from datazone.product.schemas import ProductSpec, ScoringSpec
from datazone.purposes import Purpose
from datazone.scoring.models import (
    LIVE_MODEL_STATES,
    ScoringChunk,
    ScoringFactor,
    ScoringJob,
    ScoringJobItem,
    ScoringModel,
    ScoringTally,
)
from datazone.uscc import explain_invalid

log = logging.getLogger("datazone.scoring")

# the advisory lock (class, institution) the cap check and its tally write hold until commit
_CAP_LOCK = 0x73636F72  # "scor"
# the advisory lock (class, hash of a key fingerprint) one pool filler holds
_POOL_LOCK = 0x73636F70  # "scop"
_FACTOR_INFO = b"datazone scoring rerandomization factors"
# enterprises per engine call (its batch size)
ENGINE_BATCH = 1000
# over-the-cap enterprises named in a refusal
CAP_SHOWN = 20


# ---------------------------------------------------------------- errors


class ModelNotFound(NotFound):
    type = "scoring-model-not-found"
    title = "No such scoring model"


class JobNotFound(NotFound):
    type = "scoring-job-not-found"
    title = "No such scoring job"


class InvalidScoringModel(InvalidSpec):
    """A registration with problems; each problem carries its own `type`, and the answer's
    type is that one when all problems share it (`too-few-features`, `key-too-small`, ...)."""

    type = "invalid-scoring-model"
    title = "The model registration is not valid"
    # the types a registration's problems carry (each has its page under the problem types)
    subtypes: ClassVar[dict[str, str]] = {
        "invalid-model": "The model document is not valid",
        "features-not-granted": "A feature reads data its department has not granted you",
        "features-above-clearance": "A feature is graded above your contract's clearance",
        "kind-not-offered": "The product does not score this kind of model",
        "unknown-features": "The product has no such feature",
        "too-few-features": "The model reads too few features to keep one enterprise's data hidden",
        "key-too-small": "The model's Paillier key is too small",
    }

    def __init__(self, errors: list[dict[str, Any]], **extra: Any) -> None:
        listed = "; ".join(f"{e['location']}: {e['problem']}" for e in errors)
        n = len(errors)
        super().__init__(
            f"the model was not registered ({n} problem{'s' if n > 1 else ''}): {listed}",
            errors=errors,
            check="scoring_model",
            **extra,
        )
        kinds = {e["type"] for e in errors}
        if len(kinds) == 1:
            self.type = kinds.pop()


class ModelNameTaken(Conflict):
    type = "model-name-taken"
    title = "The institution has a live model of that name"


class ModelNotApproved(Conflict):
    type = "model-not-approved"
    title = "The model is not approved for scoring"


class ModelStateConflict(Conflict):
    type = "scoring-model-state"
    title = "The model is not in a state that allows this"


class ScoringCapExceeded(Forbidden):
    type = "scoring-cap-exceeded"
    title = "The per-enterprise scoring cap is reached"


class BatchOverLimit(DomainError):
    status = 422
    type = "scoring-batch-over-limit"
    title = "The batch is larger than the contract or the product allows"


class ChunkNotReady(Conflict):
    type = "scoring-chunk-not-ready"
    title = "The chunk is not computed yet"


class JobFailed(Conflict):
    type = "scoring-job-failed"
    title = "The scoring job failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _today(at: datetime) -> date:
    return at.astimezone(SHANGHAI).date()


# ---------------------------------------------------------------- the catalog and the circuit


def scoring_spec(spec: ProductSpec) -> ScoringSpec:
    if spec.scoring is None:
        raise InvalidSpec(f"product {spec.id!r} is not a scoring product")
    return spec.scoring


def feature_bounds(spec: ProductSpec) -> dict[str, circuits.FeatureBounds]:
    return {
        f.name: circuits.FeatureBounds(name=f.name, min=f.min, max=f.max, missing=f.missing)
        for f in scoring_spec(spec).features
    }


def feature_datasets(spec: ProductSpec, names: Sequence[str]) -> dict[str, list[str]]:
    """The datasets each feature reads (from its output's sources), for grants and data minimization."""
    out: dict[str, list[str]] = {}
    for name in names:
        refs = spec.output(name).from_
        out[name] = sorted({ref.partition(".")[0] for ref in refs})
    return out


def model_datasets(spec: ProductSpec, names: Sequence[str]) -> list[str]:
    """Every dataset a model reads: its features' and the registration that says an enterprise exists."""
    wanted = {REGISTRATION}
    for datasets in feature_datasets(spec, names).values():
        wanted.update(datasets)
    return sorted(wanted)


def _digest(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_CIRCUITS: OrderedDict[tuple[str, str, str], circuits.ScoringCircuit] = OrderedDict()
_CIRCUITS_LOCK = threading.Lock()
_CIRCUITS_KEPT = 64


def circuit_of(model: ScoringModel, *, spec: ProductSpec, spec_sha256: str) -> circuits.ScoringCircuit:
    """The model's compiled circuit, cached per process (compiling builds tables): keyed by the
    model, its registration's digest and the catalog's, so nothing stale is ever used."""
    key = (model.id, model.registration_sha256, spec_sha256)
    with _CIRCUITS_LOCK:
        found = _CIRCUITS.get(key)
        if found is not None:
            _CIRCUITS.move_to_end(key)
            return found
    compiled = circuits.compile_model(
        model.registration,
        feature_bounds(spec),
        min_key_bits=scoring_spec(spec).min_key_bits,
        min_features=1,
        resolution=model.resolution,
    )
    with _CIRCUITS_LOCK:
        _CIRCUITS[key] = compiled
        while len(_CIRCUITS) > _CIRCUITS_KEPT:
            _CIRCUITS.popitem(last=False)
    return compiled


def _integer(value: Any) -> int | None:
    """A feature as the circuit takes it: an integer, or None where the zone has no data."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return int(value)
    return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Features:
    rows: dict[str, list[int | None]]  # uscc -> values in the circuit's feature order (found ones only)
    data_versions: dict[str, int | None]


def compute_features(
    session: Session,
    *,
    spec: ProductSpec,
    datasets: Sequence[str],
    names: Sequence[str],
    usccs: Sequence[str],
    as_of: date,
) -> Features:
    """The model's features for each enterprise, read from its datasets only (the product engine
    on a spec narrowed to them: data the model does not use is not read)."""
    narrowed = spec.model_copy(
        update={"sources": {ds: f for ds, f in spec.sources.items() if ds in set(datasets)}}
    )
    rows: dict[str, list[int | None]] = {}
    versions: dict[str, int | None] = {}
    for start in range(0, len(usccs), ENGINE_BATCH):
        computed = engine.compute(
            session, spec=narrowed, usccs=list(usccs[start : start + ENGINE_BATCH]), as_of=as_of
        )
        versions.update(computed.data_versions)
        for code, answer in computed.answers.items():
            if answer is not None:
                rows[code] = [_integer(answer.get(name)) for name in names]
    return Features(rows, versions)


# ---------------------------------------------------------------- re-randomization factors


def _factor_sealer(settings: Settings) -> Fernet:
    return keyring.sealer(settings, info=_FACTOR_INFO)


def claim_factors(session: Session, *, settings: Settings, key_fingerprint: str, count: int) -> list[int]:
    """Up to `count` factors of the pool, each deleted as it is taken (SKIP LOCKED: two claims
    never share one); they return to the pool only if this transaction rolls back."""
    if count <= 0:
        return []
    picked = (
        sa.select(ScoringFactor.id)
        .where(ScoringFactor.key_fingerprint == key_fingerprint)
        .order_by(ScoringFactor.id)
        .limit(count)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    sealed = session.scalars(
        sa.delete(ScoringFactor).where(ScoringFactor.id.in_(picked)).returning(ScoringFactor.factor_sealed)
    ).all()
    sealer = _factor_sealer(settings)
    return [int.from_bytes(sealer.decrypt(s), "big") for s in sealed]


def factors_for(
    session: Session, *, settings: Settings, public: paillier.PublicKey, count: int, processes: int = 1
) -> tuple[list[int], int]:
    """`count` factors: from the pool first, fresh for the rest. Returns (factors, fresh count)."""
    factors = claim_factors(session, settings=settings, key_fingerprint=public.fingerprint, count=count)
    fresh = count - len(factors)
    if fresh:
        factors += paillier.rerandomization_factors(public, fresh, processes=processes)
    return factors, fresh


def pool_levels(session: Session) -> dict[str, int]:
    """Factors ready per key fingerprint."""
    rows = session.execute(
        sa.select(ScoringFactor.key_fingerprint, sa.func.count()).group_by(ScoringFactor.key_fingerprint)
    )
    return {fp: int(n) for fp, n in rows}


def keys_in_use(session: Session) -> dict[str, dict[str, Any]]:
    """The public key (as registered) of each approved model's key fingerprint."""
    rows = session.execute(
        sa.select(ScoringModel.key_fingerprint, ScoringModel.registration["public_key"]).where(
            ScoringModel.state == "approved"
        )
    )
    return {fp: dict(key) for fp, key in rows}


def fill_pool(
    session: Session,
    *,
    settings: Settings,
    key_fingerprint: str,
    public_key: Mapping[str, Any],
    target: int,
    processes: int,
) -> int:
    """Top one key's pool up to `target` factors; returns how many were added. One filler per key
    at a time (a second worker skips it), counted under that lock, so the pool is never overfilled."""
    locked = session.scalar(
        sa.select(sa.func.pg_try_advisory_xact_lock(_POOL_LOCK, sa.func.hashtext(key_fingerprint)))
    )
    if not locked:
        return 0
    have = (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(ScoringFactor)
            .where(ScoringFactor.key_fingerprint == key_fingerprint)
        )
        or 0
    )
    need = target - int(have)
    if need <= 0:
        return 0
    public = paillier.PublicKey.from_json(public_key)
    if public.fingerprint != key_fingerprint:
        raise ValueError(f"the stored key does not match its fingerprint {key_fingerprint}")
    sealer = _factor_sealer(settings)
    width = (public.nsquare.bit_length() + 7) // 8
    factors = paillier.rerandomization_factors(public, need, processes=processes)
    session.execute(
        sa.insert(ScoringFactor),
        [
            {"key_fingerprint": key_fingerprint, "factor_sealed": sealer.encrypt(f.to_bytes(width, "big"))}
            for f in factors
        ],
    )
    return need


def drop_unused_pools(session: Session) -> int:
    """Factors of keys no approved model uses any more (rejected, retired): never needed again."""
    used = sa.select(ScoringModel.key_fingerprint).where(ScoringModel.state == "approved")
    result = session.execute(sa.delete(ScoringFactor).where(ScoringFactor.key_fingerprint.not_in(used)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def worker_processes(settings: Settings) -> int:
    return settings.scoring_processes or os.cpu_count() or 1


# ---------------------------------------------------------------- models


def model_view(model: ScoringModel) -> dict[str, Any]:
    return {
        "id": model.id,
        "institution_id": model.institution_id,
        "name": model.name,
        "product": model.product_id,
        "purpose": model.purpose,
        "kind": model.kind,
        "scale": model.scale,
        "description": model.description,
        "state": model.state,
        "features": model.features,
        "key_fingerprint": model.key_fingerprint,
        "key_bits": model.key_bits,
        "score_bits": model.score_bits,
        "slot_bits": model.slot_bits,
        "slots": model.slots,
        "resolution": model.resolution,
        "created_at": model.created_at.isoformat(),
        "reviewed_at": model.reviewed_at.isoformat() if model.reviewed_at else None,
        "review_reason": model.review_reason,
        "retired_at": model.retired_at.isoformat() if model.retired_at else None,
        "retire_reason": model.retire_reason,
    }


def _problem(location: str, kind: str, text: str, **more: Any) -> dict[str, Any]:
    return {"location": location, "type": kind, "problem": text, **more}


def _document_problems(doc: Mapping[str, Any]) -> tuple[str | None, Purpose | None, list[dict[str, Any]]]:
    """The product and purpose a registration names (what its authorization needs)."""
    problems = []
    product = doc.get("product")
    if not isinstance(product, str) or not product:
        problems.append(_problem("product", "invalid-model", "name the scoring product the model is for"))
        product = None
    raw_purpose = doc.get("purpose")
    purpose = Purpose(raw_purpose) if raw_purpose in {p.value for p in Purpose} else None
    if purpose is None:
        problems.append(
            _problem(
                "purpose",
                "invalid-model",
                f"{raw_purpose!r} is not a purpose; purposes: {', '.join(p.value for p in Purpose)}"
                if isinstance(raw_purpose, str)
                else "name the purpose the model scores for",
            )
        )
    return product, purpose, problems


def _feature_names(doc: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(position, name) of each feature the document names (shape problems are compile_model's to list)."""
    features = doc.get("features")
    if not isinstance(features, list):
        return []
    return [
        (i, f["name"])
        for i, f in enumerate(features)
        if isinstance(f, Mapping) and isinstance(f.get("name"), str)
    ]


def _grant_problems(
    session: Session,
    *,
    spec: ProductSpec,
    named: Sequence[tuple[int, str]],
    institution_id: int,
    purpose: Purpose,
    at: datetime,
) -> list[dict[str, Any]]:
    """Features whose datasets no live grant covers for this institution, product and purpose,
    each with the department to ask."""
    per_feature = feature_datasets(spec, [name for _, name in named])
    wanted = sorted({REGISTRATION, *(ds for datasets in per_feature.values() for ds in datasets)})
    try:
        grant_service.require_grants(
            session,
            product_id=spec.id,
            dataset_ids=wanted,
            institution_id=institution_id,
            purpose=purpose,
            at=at,
        )
        return []
    except grant_service.GrantRequired as exc:
        missing = {e["location"]: e for e in exc.errors}
    problems = []
    if REGISTRATION in missing:
        refusal = missing[REGISTRATION]
        problems.append(
            _problem(
                "product",
                "features-not-granted",
                f"every score reads {REGISTRATION} (it says which enterprises exist): {refusal['problem']}",
                department=refusal.get("department"),
                datasets=[REGISTRATION],
            )
        )
    for i, name in named:
        lacking = [ds for ds in per_feature[name] if ds in missing]
        if not lacking:
            continue
        departments = sorted({str(missing[ds].get("department")) for ds in lacking})
        problems.append(
            _problem(
                f"features.{i}.name",
                "features-not-granted",
                f"feature {name!r} reads {', '.join(lacking)}, which department {', '.join(departments)} has not "
                f"granted you for product {spec.id} and purpose {purpose.value}; ask the department for a grant "
                "or leave the feature out",
                feature=name,
                departments=departments,
                datasets=lacking,
            )
        )
    return problems


def clearance_problems(
    *, spec: ProductSpec, named: Sequence[tuple[int, str]], clearance: int
) -> list[dict[str, Any]]:
    """Features graded above the contract's clearance. A crafted model can make a score show one
    feature exactly (weights of zero elsewhere, or several features packed into one number, and
    the zone never sees a weight), so a model may read only what the contract could see in clear."""
    problems = []
    for i, name in named:
        grade = spec.output(name).grade or 1
        if grade > clearance:
            problems.append(
                _problem(
                    f"features.{i}.name",
                    "features-above-clearance",
                    f"feature {name!r} is grade {grade}, above your contract's clearance {clearance}: a score "
                    "can be made to show a feature exactly, so a model reads only features your contract "
                    "could see in clear; leave it out or ask the operator for a higher clearance",
                    feature=name,
                    grade=grade,
                    clearance=clearance,
                )
            )
    return problems


def _resolution(document: Mapping[str, Any], offer: ScoringSpec) -> int | None:
    """The rounding step of the model's outputs in its fixed-point units (None until its kind and
    scale are valid: compile_model lists what is wrong with them)."""
    kind, scale = document.get("kind"), document.get("scale")
    if kind not in circuits.KINDS or isinstance(scale, bool) or not isinstance(scale, int):
        return None
    if not 1 <= scale <= circuits.MAX_SCALE:
        return None
    return circuits.resolution_units(
        str(kind), scale, logit_resolution=offer.logit_resolution, points_resolution=offer.points_resolution
    )


def register_model(
    session: Session, *, grant: AccessGrant, document: Mapping[str, Any], at: datetime | None = None
) -> ScoringModel:
    """Check a registration (`privacy.scoring.encrypt_model`'s document) in full and keep it,
    pending review. Every problem of the document is listed at once; nothing is written on any."""
    at = at or utcnow()
    caller = grant.institution
    product_id, purpose, problems = _document_problems(document)
    if product_id is None or purpose is None:
        raise InvalidScoringModel(problems)
    with check("scope"):
        resource.require_scope(grant, product_id)
    # the product, contract, channel and purpose first; the data and grants per feature below
    auth = gates.authorize(
        session, caller=caller, product_id=product_id, purpose=purpose, at=at, channel="scoring", datasets=[]
    )
    spec = auth.spec
    offer = scoring_spec(spec)
    bounds = feature_bounds(spec)
    named = _feature_names(document)

    kind = document.get("kind")
    if isinstance(kind, str) and kind in ("logistic", "scorecard") and kind not in offer.kinds:
        problems.append(
            _problem(
                "kind",
                "kind-not-offered",
                f"product {spec.id} scores {', '.join(k.value for k in offer.kinds)} models, not {kind}",
            )
        )
    unknown = [(i, name) for i, name in named if name not in bounds]
    for i, name in unknown:
        problems.append(
            _problem(
                f"features.{i}.name",
                "unknown-features",
                f"product {spec.id} has no feature {name!r} (its catalog is in this problem's 'catalog')",
            )
        )
    known = [(i, name) for i, name in named if name in bounds]
    distinct = list(dict.fromkeys(name for _, name in known))
    if len(distinct) < offer.min_features:
        problems.append(
            _problem(
                "features",
                "too-few-features",
                f"a model over {len(distinct)} known feature{'s' if len(distinct) != 1 else ''} is refused: product "
                f"{spec.id} needs at least {offer.min_features}, so that a score is never one feature in disguise",
                min_features=offer.min_features,
            )
        )
    problems += _grant_problems(
        session, spec=spec, named=known, institution_id=caller.id, purpose=purpose, at=at
    )
    problems += clearance_problems(spec=spec, named=known, clearance=auth.contract.clearance)
    key_refused = False
    try:
        paillier.PublicKey.from_json(document.get("public_key"), min_bits=offer.min_key_bits)
    except paillier.KeyTooSmall as exc:
        key_refused = True
        problems.append(
            _problem(
                "public_key", "key-too-small", f"{exc}; generate a key of at least {offer.min_key_bits} bits"
            )
        )
    except (paillier.InvalidPublicKey, TypeError, ValueError):
        pass  # compile_model names what is wrong with it
    resolution = _resolution(document, offer)
    circuit = None
    try:
        circuit = circuits.compile_model(
            document, bounds, min_key_bits=offer.min_key_bits, min_features=1, resolution=resolution
        )
    except circuits.InvalidModel as exc:
        # what was already listed above is not listed twice
        covered = ["product", "purpose"] + [f"features.{i}" for i, _ in unknown]
        if key_refused:
            covered.append("public_key")
        for e in exc.errors:
            loc = str(e.get("location", ""))
            if any(loc == c or loc.startswith(c + ".") for c in covered):
                continue
            problems.append(_problem(loc, "invalid-model", str(e.get("problem", ""))))
    if problems:
        extra: dict[str, Any] = {"product": spec.id}
        if unknown:
            extra["catalog"] = list(bounds)
        raise InvalidScoringModel(problems, **extra)
    assert circuit is not None
    # the data's lifecycle and the grants again, now over exactly what the model reads
    auth = gates.authorize(
        session,
        caller=caller,
        product_id=product_id,
        purpose=purpose,
        at=at,
        channel="scoring",
        datasets=model_datasets(spec, distinct),
    )
    name = str(document["name"])
    taken = session.scalars(
        sa.select(ScoringModel).where(
            ScoringModel.institution_id == caller.id,
            ScoringModel.name == name,
            ScoringModel.state.in_(LIVE_MODEL_STATES),
        )
    ).first()
    if taken is not None:
        if taken.registration_sha256 == _digest(document):
            # the same registration again (a retry after a dropped answer): the model it made
            return taken
        raise ModelNameTaken(
            f"you have a live model named {name!r} ({taken.id}); retire it first or register under another name",
            model=taken.id,
            check="scoring_model",
        )
    kind_ = str(document["kind"])
    scale = int(document["scale"])
    features: list[dict[str, Any]] = []
    for f in document["features"]:
        entry: dict[str, Any] = {"name": f["name"]}
        if kind_ == "scorecard":
            entry["bins"] = list(f["bins"])
        features.append(entry)
    model = ScoringModel(
        id="mdl_" + secrets.token_urlsafe(12),
        institution_id=caller.id,
        client_id=grant.client_id,
        name=name,
        product_id=auth.served.id,
        purpose=purpose.value,
        kind=kind_,
        scale=scale,
        description=str(document.get("description") or ""),
        features=features,
        registration=dict(document),
        registration_sha256=_digest(document),
        key_fingerprint=circuit.public.fingerprint,
        key_bits=circuit.public.bits,
        score_bits=int(document["score_bits"]),
        slot_bits=circuit.slot_bits,
        slots=circuit.slots,
        resolution=resolution or 1,
        state="pending_review",
        created_at=at,
    )
    session.add(model)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # a concurrent registration of the same name committed first
        raise ModelNameTaken(
            f"you have a live model named {name!r}; retire it first or register under another name",
            check="scoring_model",
        ) from None
    audit_service.record(
        session,
        actor=caller,
        action="scoring.model.register",
        object_type="scoring_model",
        object_id=model.id,
        purpose=purpose.value,
        supplier_ids=product_service.product_departments(session, product=auth.served),
        institution_id=caller.id,
        detail={
            "product": auth.served.id,
            "name": name,
            "kind": kind_,
            "features": [f["name"] for f in features],
            "key_fingerprint": model.key_fingerprint,
            "key_bits": model.key_bits,
            "score_bits": model.score_bits,
            "client_id": grant.client_id,
        },
    )
    return model


def get_model(
    session: Session, *, model_id: str, institution_id: int | None, for_update: bool = False
) -> ScoringModel:
    """A model the viewer may see: an institution its own (another's does not exist for it), the operator any."""
    q = sa.select(ScoringModel).where(ScoringModel.id == model_id)
    if institution_id is not None:
        q = q.where(ScoringModel.institution_id == institution_id)
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    model = session.scalars(q).first()
    if model is None:
        raise ModelNotFound(
            f"no scoring model {model_id!r}" + (" of yours" if institution_id is not None else "")
        )
    return model


def list_models(
    session: Session, *, institution_id: int | None, state: str | None = None
) -> list[ScoringModel]:
    q = sa.select(ScoringModel).order_by(ScoringModel.created_at.desc(), ScoringModel.id)
    if institution_id is not None:
        q = q.where(ScoringModel.institution_id == institution_id)
    if state is not None:
        q = q.where(ScoringModel.state == state)
    return list(session.scalars(q))


def review_model(
    session: Session, *, model_id: str, by: Principal, decision: str, reason: str
) -> ScoringModel:
    """Approve or reject a model pending review (an operator with the reviewer role)."""
    from datazone.principal import service as principal_service

    principal_service.require_role(by, "reviewer", "review scoring models")
    if decision not in ("approve", "reject"):
        raise InvalidSpec(f"decision is approve or reject, not {decision!r}")
    if not reason.strip():
        raise InvalidSpec("say why: 'reason' is empty")
    model = get_model(session, model_id=model_id, institution_id=None, for_update=True)
    if model.state != "pending_review":
        raise ModelStateConflict(
            f"model {model.id} is {model.state}: only a model pending review can be reviewed",
            state=model.state,
        )
    model.state = "approved" if decision == "approve" else "rejected"
    model.reviewed_at, model.reviewed_by, model.review_reason = utcnow(), by.id, reason.strip()
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action=f"scoring.model.{decision}",
        object_type="scoring_model",
        object_id=model.id,
        reason=reason.strip(),
        purpose=model.purpose,
        institution_id=model.institution_id,
        detail={"product": model.product_id, "name": model.name, "kind": model.kind},
    )
    return model


def retire_model(session: Session, *, model_id: str, by: Principal, reason: str) -> ScoringModel:
    """Retire a model (its institution or the operator): it scores no more, and its jobs stop at their next chunk."""
    if by.kind not in ("institution", "operator"):
        raise Forbidden("a model is retired by its institution or the operator")
    if not reason.strip():
        raise InvalidSpec("say why: 'reason' is empty")
    model = get_model(
        session,
        model_id=model_id,
        institution_id=by.id if by.kind == "institution" else None,
        for_update=True,
    )
    if model.state in ("retired", "rejected"):
        raise ModelStateConflict(f"model {model.id} is {model.state} already", state=model.state)
    model.state = "retired"
    model.retired_at, model.retired_by, model.retire_reason = utcnow(), by.id, reason.strip()
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="scoring.model.retire",
        object_type="scoring_model",
        object_id=model.id,
        reason=reason.strip(),
        purpose=model.purpose,
        institution_id=model.institution_id,
        detail={"product": model.product_id, "name": model.name},
    )
    return model


def _require_approved(model: ScoringModel) -> None:
    if model.state != "approved":
        why = {
            "pending_review": "it is pending the operator's review",
            "rejected": f"the operator rejected it: {model.review_reason}",
            "retired": f"it was retired: {model.retire_reason}",
        }[model.state]
        raise ModelNotApproved(
            f"model {model.id} does not score: {why}",
            model=model.id,
            state=model.state,
            check="scoring_model",
        )


@dataclass(frozen=True)
class ModelAuthorization:
    auth: Authorization
    spec: ProductSpec
    spec_sha256: str
    datasets: list[str]
    names: list[str]


def model_subject(session: Session, *, model: ScoringModel) -> Subject:
    """What a score with this model is about: its product and purpose, narrowed to the datasets
    its features read."""
    spec = product_service.spec_of(product_service.get_product(session, product_id=model.product_id))
    names = [f["name"] for f in model.features]
    return Subject(model.product_id, Purpose(model.purpose), model_datasets(spec, names))


def model_authorization(model: ScoringModel, auth: Authorization) -> ModelAuthorization:
    """The model's view of an authorized call; refused when the product no longer offers one of
    its features."""
    names = [f["name"] for f in model.features]
    missing = [n for n in names if n not in feature_bounds(auth.spec)]
    if missing:
        raise ModelNotApproved(
            f"product {auth.served.id} no longer offers feature {', '.join(missing)} of model {model.id}; "
            "register the model again over its current catalog",
            model=model.id,
            check="scoring_model",
        )
    return ModelAuthorization(auth, auth.spec, auth.served.spec_sha256, auth.datasets, names)


def authorize_model(
    session: Session, *, model: ScoringModel, caller: Principal, at: datetime
) -> ModelAuthorization:
    """The control-plane checks for a score with this model, narrowed to the datasets it reads
    (a job's worker takes them again before every chunk)."""
    subject = model_subject(session, model=model)
    auth = gates.authorize(
        session,
        caller=caller,
        product_id=subject.product_id,
        purpose=subject.purpose,
        at=at,
        channel="scoring",
        datasets=subject.datasets,
    )
    return model_authorization(model, auth)


# ---------------------------------------------------------------- caps


def _lock_caps(session: Session, *, institution_id: int) -> None:
    """Held to commit: concurrent scores of one institution pass the cap check one at a time."""
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(_CAP_LOCK, institution_id)))


def cap_counts(
    session: Session, *, institution_id: int, product_id: str, usccs: Sequence[str], since: datetime
) -> dict[str, int]:
    """How often each enterprise was scored for this institution by this product since `since` (one query)."""
    if not usccs:
        return {}
    rows = session.execute(
        sa.select(ScoringTally.uscc, sa.func.count())
        .where(
            ScoringTally.institution_id == institution_id,
            ScoringTally.product_id == product_id,
            ScoringTally.uscc == sa.any_(sa.literal(list(usccs), sa.ARRAY(sa.String))),
            ScoringTally.at > since,
        )
        .group_by(ScoringTally.uscc)
    )
    return {u: int(n) for u, n in rows}


def check_caps(
    session: Session,
    *,
    institution_id: int,
    product_id: str,
    offer: ScoringSpec,
    usccs: Sequence[str],
    at: datetime,
) -> None:
    """Lock, count and refuse the enterprises at their cap (nothing is written on a refusal)."""
    _lock_caps(session, institution_id=institution_id)
    counts = cap_counts(
        session,
        institution_id=institution_id,
        product_id=product_id,
        usccs=usccs,
        since=at - timedelta(days=offer.cap_days),
    )
    over = [u for u in usccs if counts.get(u, 0) >= offer.cap_scores]
    if not over:
        return
    shown = over[:CAP_SHOWN]
    listed = ", ".join(shown) + (f" and {len(over) - len(shown)} more" if len(over) > len(shown) else "")
    raise ScoringCapExceeded(
        f"product {product_id} scores an enterprise at most {offer.cap_scores} times per institution in any "
        f"{offer.cap_days} days; {len(over)} of these enterprises reached it: {listed}. Nothing was scored or "
        "charged; leave them out or try again when their earlier scores leave the window",
        over_cap=len(over),
        usccs=shown,
        cap_scores=offer.cap_scores,
        cap_days=offer.cap_days,
        check="scoring_cap",
    )


def _tally(
    session: Session,
    *,
    institution_id: int,
    product_id: str,
    model_id: str,
    usccs: Sequence[str],
    at: datetime,
    job_id: str | None,
) -> None:
    if usccs:
        session.execute(
            sa.insert(ScoringTally),
            [
                {
                    "institution_id": institution_id,
                    "product_id": product_id,
                    "uscc": u,
                    "at": at,
                    "model_id": model_id,
                    "job_id": job_id,
                }
                for u in usccs
            ],
        )


# ---------------------------------------------------------------- one score, online


class _ModelCall(Channel[Result]):
    """A call with one of the caller's scoring models: its product and purpose are the model's."""

    kind = "scoring"

    def __init__(self, *, settings: Settings, model_id: str, usccs: Sequence[str]) -> None:
        self.settings = settings
        self.model_id = model_id
        self.named = usccs
        self._model: ScoringModel | None = None

    def model(self, session: Session, call: Call) -> ScoringModel:
        if self._model is None:
            self._model = get_model(session, model_id=self.model_id, institution_id=call.caller.id)
        return self._model

    def subject(self, session: Session, call: Call) -> Subject:
        return model_subject(session, model=self.model(session, call))

    def model_checks(self, session: Session, call: Call, auth: Authorization) -> ModelAuthorization:
        """The model approved and every feature still offered."""
        model = self.model(session, call)
        _require_approved(model)
        return model_authorization(model, auth)


class OneScore(_ModelCall[Served]):
    """One enterprise's encrypted score: computed, sealed, capped, billed one unit."""

    def __init__(self, *, settings: Settings, model_id: str, uscc: str) -> None:
        super().__init__(settings=settings, model_id=model_id, usccs=[uscc])
        self.code = ""
        self.ma: ModelAuthorization | None = None
        self.scored: dict[str, Any] = {}

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> Served:
        return Served(stored.status, stored.body, stored.headers, True)

    def enterprises(self, session: Session, call: Call, auth: Authorization) -> Sequence[str]:
        # consent is checked before the zone looks the enterprise up, as for lookups
        with check("uscc"):
            self.code = validate_usccs(self.named)[0]
        return [self.code]

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        self.ma = self.model_checks(session, call, auth)
        check_caps(
            session,
            institution_id=call.caller.id,
            product_id=auth.served.id,
            offer=scoring_spec(auth.spec),
            usccs=[self.code],
            at=call.at,
        )

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        ma, model, code = self.ma, self.model(session, call), self.code
        assert ma is not None
        as_of = _today(call.at)
        features = compute_features(
            session, spec=ma.spec, datasets=ma.datasets, names=ma.names, usccs=[code], as_of=as_of
        )
        if code not in features.rows:
            with check("zone"):
                raise EnterpriseNotFound(f"no enterprise {code} in the zone's registration data", usccs=[code])
        circuit = circuit_of(model, spec=ma.spec, spec_sha256=ma.spec_sha256)
        encrypted = circuit.encrypted_scores([features.rows[code]])
        factors, fresh = factors_for(
            session, settings=self.settings, public=circuit.public, count=circuit.packed_count(1)
        )
        if fresh:
            log.info(
                "scoring factor pool of key %s was empty: %d computed on the request path",
                model.key_fingerprint,
                fresh,
            )
        packed = circuit.seal(encrypted, factors=factors, resolution=model.resolution)
        # counted against the cap from now on (a refusal at admission rolls it back with the call)
        _tally(
            session,
            institution_id=call.caller.id,
            product_id=auth.served.id,
            model_id=model.id,
            usccs=[code],
            at=call.at,
            job_id=None,
        )
        self.scored = {
            "model": model.id,
            "uscc": code,
            "found": True,
            "ciphertext": paillier.encode_ciphertext(circuit.public, packed[0]),
            "count": 1,
            "slot_bits": circuit.slot_bits,
            "slots": circuit.slots,
            "resolution": model.resolution,
            "scale": model.scale,
            "kind": model.kind,
            "as_of": as_of.isoformat(),
            "data_versions": features.data_versions,
        }
        audit = Audited(
            # a data access like any product answer: departments see it among the uses of their data
            action=audit_service.DATA_ACCESS,
            entities=[code],
            supplier_ids=product_service.product_departments(session, product=auth.served),
            detail={
                "channel": "scoring",
                "model": model.id,
                "data_versions": features.data_versions,
                "fresh_factors": fresh,
            },
        )
        return Computed(audit, units=1)

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[Served]:
        body = {**self.scored, "charged_fen": admission.charged_fen}
        headers = dict(admission.headers)
        return Answer(Served(200, body, headers), 200, body, headers, billed=[self.code])


def score_one(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    model_id: str,
    uscc: str,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> Served:
    """Check, compute, seal, meter and record one enterprise's encrypted score."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    return pipeline.run(session, call, OneScore(settings=settings, model_id=model_id, uscc=uscc))


# ---------------------------------------------------------------- batch jobs


def job_view(job: ScoringJob) -> dict[str, Any]:
    done = min(job.total, job.chunks_done * job.chunk_size)
    return {
        "id": job.id,
        "model": job.model_id,
        "product": job.product_id,
        "purpose": job.purpose,
        "status": job.status,
        "total": job.total,
        "found": job.found,
        "chunk_size": job.chunk_size,
        "chunks": job.chunks,
        "chunks_done": job.chunks_done,
        "done": done,
        "charged_fen": job.charged_fen,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "error": job.error,
        "chunks_url": f"/v1/scoring/jobs/{job.id}/chunks/{{index}}",
    }


def batch_limit(auth: Authorization) -> int:
    product_limit = scoring_spec(auth.spec).max_batch
    contract_limit = getattr(auth.contract, "scoring_max_batch", None)
    return min(product_limit, contract_limit) if contract_limit else product_limit


@dataclass(frozen=True)
class CreatedJob:
    job: ScoringJob
    status: int
    headers: dict[str, str]
    replayed: bool


def _validate_codes(usccs: Sequence[str]) -> list[str]:
    """Upper-cased codes; every bad one listed (location usccs.<i>), then the repeated ones
    (linear in the batch: a job holds up to 100,000)."""
    codes = [u.strip().upper() for u in usccs]
    errors = [
        {"location": f"usccs.{i}", "problem": why}
        for i, code in enumerate(codes)
        if (why := explain_invalid(code)) is not None
    ]
    if errors:
        shown = errors[:100]
        more = f" and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise InvalidUscc(
            f"{len(errors)} of the {len(codes)} codes are not valid unified social credit codes: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in shown)
            + more
            + "; nothing was queued or charged",
            errors=errors,
            check="uscc",
        )
    repeated = sorted(code for code, n in Counter(codes).items() if n > 1)
    if repeated:
        shown_codes = ", ".join(repeated[:20]) + (
            f" and {len(repeated) - 20} more" if len(repeated) > 20 else ""
        )
        raise InvalidSpec(
            f"a job lists each enterprise once; repeated: {shown_codes}",
            repeated=repeated[:1000],
            check="uscc",
        )
    return codes


class BatchScoring(_ModelCall[CreatedJob]):
    """A batch of enterprises queued for a worker to score: the found ones billed and counted
    against their caps now; nothing is written on any refusal."""

    def __init__(self, *, settings: Settings, model_id: str, usccs: Sequence[str]) -> None:
        super().__init__(settings=settings, model_id=model_id, usccs=usccs)
        self.codes: list[str] = []
        self.found: list[str] = []
        self.job: ScoringJob | None = None

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> CreatedJob:
        job = get_job(session, institution_id=call.caller.id, job_id=str(stored.body["id"]))
        return CreatedJob(job, stored.status, stored.headers, True)

    def enterprises(self, session: Session, call: Call, auth: Authorization) -> Sequence[str]:
        # the bound first: a list over it is not read further
        limit = batch_limit(auth)
        if len(self.named) > limit:
            raise BatchOverLimit(
                f"a job of {len(self.named)} enterprises is over the limit of {limit} (product {auth.served.id} "
                "and your contract); split the list into several jobs",
                limit=limit,
                size=len(self.named),
                check="scoring_batch",
            )
        with check("uscc"):
            self.codes = _validate_codes(self.named)
        _, registered = dataset_service.read_current_records(
            session, dataset_id=REGISTRATION, usccs=self.codes, fields=[]
        )
        # only the enterprises in the zone are scored, billed and need consent
        self.found = [c for c in self.codes if registered.get(c)]
        return self.found

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        self.model_checks(session, call, auth)
        check_caps(
            session,
            institution_id=call.caller.id,
            product_id=auth.served.id,
            offer=scoring_spec(auth.spec),
            usccs=self.found,
            at=call.at,
        )

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        model, codes, found, caller = self.model(session, call), self.codes, self.found, call.caller
        chunk_size = max(1, self.settings.scoring_chunk)
        job = self.job = ScoringJob(
            id="sjb_" + secrets.token_urlsafe(12),
            institution_id=caller.id,
            client_id=call.grant.client_id,
            model_id=model.id,
            product_id=auth.served.id,
            purpose=model.purpose,
            contract_id=auth.contract.id,
            status="queued",
            total=len(codes),
            found=len(found),
            chunk_size=chunk_size,
            chunks=-(-len(codes) // chunk_size),
            chunks_done=0,
            charged_fen=0,
            created_at=call.at,
        )
        session.add(job)
        session.flush()
        in_zone = set(found)
        session.execute(
            sa.text(
                "INSERT INTO scoring_job_item (job_id, seq, uscc, found)"
                " SELECT :job, t.seq - 1, t.uscc, t.uscc = ANY(:found)"
                " FROM unnest(CAST(:codes AS text[])) WITH ORDINALITY AS t(uscc, seq)"
            ),
            {"job": job.id, "codes": codes, "found": [c for c in codes if c in in_zone]},
        )
        # the job's found enterprises count against their caps from now on (one statement)
        session.execute(
            sa.text(
                "INSERT INTO scoring_tally (institution_id, product_id, uscc, at, model_id, job_id)"
                " SELECT :institution, :product, uscc, :at, :model, job_id FROM scoring_job_item"
                " WHERE job_id = :job AND found"
            ),
            {"institution": caller.id, "product": auth.served.id, "at": call.at, "model": model.id, "job": job.id},
        )
        audit = Audited(
            # the job's one data-access entry (its enterprises are named by their usage events)
            action=audit_service.DATA_ACCESS,
            entity_count=len(found),
            supplier_ids=product_service.product_departments(session, product=auth.served),
            detail={
                "channel": "scoring",
                "job_id": job.id,
                "model": model.id,
                "total": len(codes),
                "found": len(found),
            },
        )
        return Computed(audit, units=len(found))

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[CreatedJob]:
        job = self.job
        assert job is not None
        job.charged_fen = admission.charged_fen
        # the job names its call, so its charge can be found again (`metering.call_charges`) to credit it
        job.call_id = uuid.uuid4()
        session.flush()
        headers = dict(admission.headers)
        # the NOTIFY is delivered at commit, with the job
        notify_work(session, job_id=job.id)
        return Answer(
            CreatedJob(job, 201, headers, False), 201, job_view(job), headers, billed=self.found, call_id=job.call_id
        )


def create_job(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    model_id: str,
    usccs: Sequence[str],
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> CreatedJob:
    """Check, bill and queue a batch of enterprises for a worker to score. The found enterprises
    are billed and counted against their caps now; nothing is written on any refusal."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    return pipeline.run(session, call, BatchScoring(settings=settings, model_id=model_id, usccs=usccs))


def get_job(session: Session, *, institution_id: int, job_id: str) -> ScoringJob:
    job = session.scalars(
        sa.select(ScoringJob).where(ScoringJob.id == job_id, ScoringJob.institution_id == institution_id)
    ).first()
    if job is None:
        raise JobNotFound(f"no scoring job {job_id!r} of yours")
    return job


def chunk_bytes(session: Session, *, institution_id: int, job_id: str, index: int) -> bytes:
    """A computed chunk, exactly as stored; 409 while it is not computed yet."""
    job = get_job(session, institution_id=institution_id, job_id=job_id)
    if not 0 <= index < job.chunks:
        raise NotFound(f"job {job.id} has chunks 0..{job.chunks - 1}, not {index}")
    chunk = session.get(ScoringChunk, (job.id, index))
    if chunk is not None:
        return bytes(chunk.body)
    if job.status == "failed":
        raise JobFailed(
            f"job {job.id} failed before chunk {index} was computed: {job.error}; chunks 0..{job.chunks_done - 1} "
            "are kept. Create a new job for the rest",
            error=job.error,
            check="scoring_job",
        )
    raise ChunkNotReady(
        f"chunk {index} of job {job.id} is not computed yet ({job.chunks_done} of {job.chunks} done, {job.status}); "
        "retry after the Retry-After seconds",
        headers={"Retry-After": "5"},
        job_status=job.status,
        chunks_done=job.chunks_done,
        check="scoring_job",
    )


# ---------------------------------------------------------------- the worker's side of a job


def claim_job(
    session: Session, *, worker: str, stale_minutes: float, at: datetime | None = None
) -> ScoringJob | None:
    """The oldest queued job, or a running one whose worker went quiet for `stale_minutes`, now
    on `worker` (SKIP LOCKED: a job a worker is computing a chunk of is never taken)."""
    at = at or utcnow()
    stale_before = at - timedelta(minutes=stale_minutes)
    job = session.scalars(
        sa.select(ScoringJob)
        .where(
            sa.or_(
                ScoringJob.status == "queued",
                sa.and_(ScoringJob.status == "running", ScoringJob.heartbeat_at < stale_before),
            )
        )
        .order_by(ScoringJob.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    previous = job.worker if job.status == "running" else None
    job.status, job.worker, job.heartbeat_at = "running", worker, at
    job.started_at = job.started_at or at
    session.flush()
    if previous is not None:
        log.warning(
            "scoring job %s taken over from %s (quiet since before %s)",
            job.id,
            previous,
            stale_before.isoformat(),
        )
        audit_service.record(
            session,
            actor=None,
            actor_name=f"scoring-worker:{worker}",
            action="scoring.job.takeover",
            object_type="scoring_job",
            object_id=job.id,
            institution_id=job.institution_id,
            detail={"from_worker": previous, "chunks_done": job.chunks_done},
        )
    return job


def authorize_job(
    session: Session, *, job: ScoringJob, at: datetime | None = None
) -> tuple[ScoringModel, ModelAuthorization]:
    """The checks a job takes again before every chunk: the model still approved, the contract,
    product, data and grants still live. Raises the refusal (its detail says which department)."""
    from datazone.principal import service as principal_service

    model = get_model(session, model_id=job.model_id, institution_id=job.institution_id)
    _require_approved(model)
    institution = principal_service.get_principal(session, principal_id=job.institution_id)
    return model, authorize_model(session, model=model, caller=institution, at=at or utcnow())


def next_chunk(session: Session, *, job: ScoringJob) -> int | None:
    """The first chunk not stored yet (a resumed job starts there), or None when all are."""
    stored = set(session.scalars(sa.select(ScoringChunk.index).where(ScoringChunk.job_id == job.id)))
    return next((i for i in range(job.chunks) if i not in stored), None)


def compute_chunk(
    session: Session,
    *,
    settings: Settings,
    job: ScoringJob,
    model: ScoringModel,
    ma: ModelAuthorization,
    index: int,
    worker: str,
    at: datetime | None = None,
) -> ScoringChunk:
    """Score one chunk's found enterprises, seal them with claimed (or fresh) factors and store the
    chunk's answer; the caller authorized the job (`authorize_job`) and commits."""
    at = at or utcnow()
    items = session.execute(
        sa.select(ScoringJobItem.uscc, ScoringJobItem.found)
        .where(
            ScoringJobItem.job_id == job.id,
            ScoringJobItem.seq >= index * job.chunk_size,
            ScoringJobItem.seq < (index + 1) * job.chunk_size,
        )
        .order_by(ScoringJobItem.seq)
    ).all()
    as_of = _today(at)
    found = [u for u, f in items if f]
    features = compute_features(
        session, spec=ma.spec, datasets=ma.datasets, names=ma.names, usccs=found, as_of=as_of
    )
    circuit = circuit_of(model, spec=ma.spec, spec_sha256=ma.spec_sha256)
    # an enterprise whose registration left the zone since the job was created has no score
    # (it shows found: false in its chunk) rather than one made of stand-ins alone
    scored = [u for u in found if u in features.rows]
    rows = [features.rows[u] for u in scored]
    fresh = 0
    packed: list[int] = []
    if rows:
        encrypted = circuit.encrypted_scores(rows)
        factors, fresh = factors_for(
            session,
            settings=settings,
            public=circuit.public,
            count=circuit.packed_count(len(encrypted)),
            processes=worker_processes(settings),
        )
        packed = circuit.seal(encrypted, factors=factors, resolution=model.resolution)
    body = {
        "job": job.id,
        "model": model.id,
        "index": index,
        "usccs": [u for u, _ in items],
        "found": [u in features.rows for u, _ in items],
        "ciphertexts": [paillier.encode_ciphertext(circuit.public, c) for c in packed],
        "count": len(scored),
        "slot_bits": circuit.slot_bits,
        "slots": circuit.slots,
        "resolution": model.resolution,
        "as_of": as_of.isoformat(),
        "data_versions": features.data_versions,
    }
    chunk = ScoringChunk(
        job_id=job.id,
        index=index,
        found=len(scored),
        body=json.dumps(body, separators=(",", ":")).encode(),
        fresh_factors=fresh,
        worker=worker,
    )
    session.add(chunk)
    job.chunks_done += 1
    job.heartbeat_at = utcnow()
    session.flush()
    return chunk


def finish_job(
    session: Session, *, job: ScoringJob, status: str, error: str | None = None, credit: bool = False
) -> ScoringJob:
    """End a job (the caller holds its row). `credit`: it stopped for a reason on the zone's
    side, so the enterprises it did not score are credited back (`credit_undelivered`)."""
    job.status, job.error, job.finished_at = status, error, utcnow()
    session.flush()
    if credit and status == "failed":
        credit_undelivered(session, job=job)
    audit_service.record(
        session,
        actor=None,
        actor_name=f"scoring-worker:{job.worker}",
        action="scoring.job.finish",
        object_type="product",
        object_id=job.product_id,
        outcome="ok" if status == "succeeded" else "failed",
        reason=error,
        purpose=job.purpose,
        entity_count=job.found,
        supplier_ids=product_service.product_departments(
            session, product=product_service.get_product(session, product_id=job.product_id)
        ),
        institution_id=job.institution_id,
        detail={
            "job_id": job.id,
            "model": job.model_id,
            "status": status,
            "chunks": job.chunks,
            "chunks_done": job.chunks_done,
        },
    )
    return job


def retired_by_its_institution(session: Session, *, job: ScoringJob) -> bool:
    """Whether the job's model was retired by the institution itself (its own act stops the job)."""
    model = session.get(ScoringModel, job.model_id)
    return model is not None and model.state == "retired" and model.retired_by == job.institution_id


def credit_undelivered(session: Session, *, job: ScoringJob) -> None:
    """Credit what a failed job charged for the found enterprises of the chunks it never stored,
    with a ledger entry naming the job, and take them off the caps' tally: once (the job's row is
    locked by the caller and keeps the credit's id; a debit cannot be credited past its charge).

    Stored chunks were delivered (they stay downloadable), so their enterprises stay charged."""
    if job.credit_id is not None or job.call_id is None or job.charged_fen <= 0:
        return
    undelivered = list(
        session.scalars(
            sa.select(ScoringJobItem.uscc).where(
                ScoringJobItem.job_id == job.id,
                ScoringJobItem.found,
                ScoringJobItem.seq >= job.chunks_done * job.chunk_size,
            )
        )
    )
    if not undelivered:
        return
    charges = metering.call_charges(
        session, institution_id=job.institution_id, at=job.created_at, call_id=job.call_id, usccs=undelivered
    )
    session.execute(
        sa.delete(ScoringTally).where(
            ScoringTally.institution_id == job.institution_id,
            ScoringTally.product_id == job.product_id,
            ScoringTally.uscc == sa.func.any(sa.cast(undelivered, sa.ARRAY(sa.Text))),
            ScoringTally.job_id == job.id,
        )
    )
    if charges.debit_id is None or charges.charged_fen <= 0:
        return
    credit = billing_service.credit_undelivered(
        session,
        debit_id=charges.debit_id,
        amount_fen=charges.charged_fen,
        reason=f"scoring job {job.id} failed before scoring {len(undelivered)} of its {job.found} enterprises, "
        f"on the zone's side: {job.error or 'no reason given'}",
        actor_name=f"scoring-worker:{job.worker}" if job.worker else "scoring-worker",
    )
    if credit is not None:
        job.credit_id = credit.id
        session.flush()


@dataclass(frozen=True)
class JobsInStatus:
    """How many scoring jobs are in one status, their chunks left, and the oldest one's creation."""

    status: str
    jobs: int
    chunks_left: int
    oldest_created_at: datetime


def job_queue(session: Session, *, viewer: Principal) -> list[JobsInStatus]:
    """Scoring jobs per status (queued and running are the workers' queue), by status name: the
    operator's every job, an institution its own. One GROUP BY."""
    q = (
        sa.select(
            ScoringJob.status,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(ScoringJob.chunks - ScoringJob.chunks_done), 0),
            sa.func.min(ScoringJob.created_at),
        )
        .group_by(ScoringJob.status)
        .order_by(ScoringJob.status)
    )
    if viewer.kind == "institution":
        q = q.where(ScoringJob.institution_id == viewer.id)
    elif viewer.kind != "operator":
        raise Forbidden("scoring jobs are seen by the operator and the institution that runs them")
    return [
        JobsInStatus(status=s, jobs=int(n), chunks_left=int(left), oldest_created_at=t)
        for s, n, left, t in session.execute(q)
    ]


def list_jobs(session: Session, *, viewer: Principal, limit: int = 100) -> list[ScoringJob]:
    """The newest scoring jobs, at most `limit`: the operator's every job, an institution its own
    (the console's jobs page; the same scope as `job_queue`)."""
    q = sa.select(ScoringJob).order_by(ScoringJob.created_at.desc(), ScoringJob.id).limit(max(1, min(limit, 1000)))
    if viewer.kind == "institution":
        q = q.where(ScoringJob.institution_id == viewer.id)
    elif viewer.kind != "operator":
        raise Forbidden("scoring jobs are seen by the operator and the institution that runs them")
    return list(session.scalars(q))
