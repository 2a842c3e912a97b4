"""The institution's side of secure scoring (安全评分): the bank's model weights never leave as themselves.

    key.json    the Paillier key pair (`generate_key_file`): private, mode 0600, never sent
    model.json  the risk team's hand-written model (`privacy.scoring.parse_model`)
    register    the weights or bin points encrypted under the public key, sent with the bins
                and the public key (`register_model`); an operator reviews the registration
    score       the zone answers an encrypted score (one enterprise, or a batch job of up to
                the product's max_batch), re-randomized; it is decrypted and linked here

A registration is recorded next to the model file (`<model>.registration.json`: the model's
id, the key's fingerprint, the model file's digest, the key file's path; nothing secret), so
later runs find the model the zone holds without asking for it by hand, and refuse a model file
edited since: the zone would still score with the weights registered then.

Batch scoring is resumable like PSI. Before the job is asked for, a state file (mode 0600,
`<output>.scoring-state.json`) records the job's idempotency key and the input's digest, then
the job's id: a rerun after a crash or a dropped connection finds the same job (the zone
answers the same key with the same job, billed once) and downloads its chunks, which the
zone stores, so every download of a chunk is the same bytes. The state file holds no score
and is deleted once the results are written. The key itself is derived from the model, the
key pair, the list and the output path (`ZoneClient.job_key`), so even a rerun of a finished
command finds its job again (within the zone's idempotency window, 24 h by default) and gets
the same scores, billed once; a rerun after a failed job gets a new one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from datazone.client.config import _require_private
from datazone.client.enterprises import checked_distinct
from datazone.client.errors import ConfigError, ZoneError
from datazone.client.psi import Duplicate, InstitutionList, read_institution_list
from datazone.privacy import paillier
from datazone.privacy import scoring as model_math

if TYPE_CHECKING:
    from datazone.client.sdk import ZoneClient

# (phase, done, total): phase "upload" (enterprises sent), "compute" (chunks scored by the
# zone), "download" (chunks downloaded and decrypted)
ScoringProgress = Callable[[str, int, int], None]

UTC = timezone.utc  # datetime.UTC is Python 3.11+
KEY_KIND = "datazone-scoring-key"
REGISTRATION_KIND = "datazone-scoring-registration"
STATE_KIND = "datazone-scoring-job"
FILE_VERSION = 1
STATE_SUFFIX = ".scoring-state.json"
REGISTRATION_SUFFIX = ".registration.json"
LIVE_STATES = ("approved", "pending_review")
POLL_INTERVAL_S = 1.0


# -- errors --------------------------------------------------------------------------------------


class KeyFileError(ConfigError):
    """The key file cannot be written or used: exists already, missing, readable by others, not a key."""


class ModelFileError(ValueError):
    """The model file cannot be read (missing, not JSON); an invalid one raises `InvalidModel`."""


class ModelDoesNotFit(ValueError):
    """The model asks for what the product's scoring catalog does not offer; nothing was sent.

    `errors` lists every problem as {"location", "problem"} (InvalidModel's shape)."""

    def __init__(self, product: str, errors: list[dict[str, str]]) -> None:
        self.product = product
        self.errors = errors
        shown = "; ".join(f"{e['location']}: {e['problem']}" for e in errors)
        super().__init__(f"the model does not fit {product}'s scoring catalog, nothing was sent: {shown}")


class ModelNotRegistered(ValueError):
    """The zone holds no usable registration of this model under this key."""


class RegistrationMismatch(ValueError):
    """The registration the zone holds is not the model file as it is now (edited since, or another key)."""


class ScoringStateError(ValueError):
    """The state file cannot be used to continue (another list or model; the job is gone)."""


class ScoringJobFailed(ZoneError):
    """The zone's batch job failed; `job_id` names it and the problem says why."""

    def __init__(self, detail: str, *, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            None,
            {"type": "scoring-job-failed", "title": "Scoring job failed", "detail": detail, "job_id": job_id},
        )


def _unexpected(detail: str) -> ZoneError:
    return ZoneError(None, {"type": "unexpected-answer", "detail": detail})


# -- the key file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringKey:
    """The institution's Paillier key pair as read from its key file."""

    private: paillier.PrivateKey = field(repr=False)
    path: Path | None = None

    @property
    def public(self) -> paillier.PublicKey:
        return self.private.public

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint


def generate_key_file(path: str | Path, *, bits: int = paillier.MIN_KEY_BITS) -> ScoringKey:
    """A fresh key pair written to `path`, created 0600 from its first byte; never overwrites."""
    if not paillier.MIN_KEY_BITS <= bits <= paillier.MAX_KEY_BITS:
        raise KeyFileError(
            f"a scoring key has {paillier.MIN_KEY_BITS} to {paillier.MAX_KEY_BITS} bits, not {bits}"
        )
    target = Path(path)
    if target.exists():
        raise KeyFileError(f"{target} exists already; a key file is never overwritten (move it away first)")
    public, private = paillier.generate_keypair(bits)
    doc = {
        "kind": KEY_KIND,
        "version": FILE_VERSION,
        "bits": public.bits,
        "fingerprint": public.fingerprint,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "private_key": private.to_json(),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: a file that appeared meanwhile is not replaced; 0600 before a byte is written
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{target} exists already; a key file is never overwritten") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=2)
            out.write("\n")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return ScoringKey(private, target)


def read_key_file(path: str | Path) -> ScoringKey:
    """The key pair in `path`; refuses a file others can read, as the profile file is refused."""
    source = Path(path)
    if not source.is_file():
        raise KeyFileError(
            f"key file {source} does not exist; make one with: datazone-client model keygen --out {source}"
        )
    try:
        _require_private(source, "key file")
    except ConfigError as exc:
        raise KeyFileError(str(exc)) from None
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"{source} is not a JSON key file ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KEY_KIND:
        raise KeyFileError(f"{source} is not a datazone scoring key file (its kind is not {KEY_KIND!r})")
    if doc.get("version") != FILE_VERSION:
        raise KeyFileError(
            f"{source} is key file version {doc.get('version')!r}; this SDK reads {FILE_VERSION}"
        )
    try:
        private = paillier.PrivateKey.from_json(doc["private_key"])
    except (KeyError, TypeError, ValueError) as exc:
        # the exception's text may quote the key's numbers: only its kind is named
        raise KeyFileError(f"{source} holds no usable private key ({type(exc).__name__})") from None
    if doc.get("fingerprint") not in (None, private.public.fingerprint):
        raise KeyFileError(f"{source}: the recorded fingerprint is not the key's own; the file was altered")
    return ScoringKey(private, source)


# -- the model file and its registration --------------------------------------------------------


def read_model_file(path: str | Path) -> model_math.ScoringModel:
    """The hand-written model; `InvalidModel` lists every problem of a readable but wrong one."""
    source = Path(path)
    if not source.is_file():
        raise ModelFileError(f"model file {source} does not exist")
    try:
        return model_math.load_model(source)
    except UnicodeDecodeError:
        raise ModelFileError(f"{source} is not UTF-8 text") from None
    except OSError as exc:
        raise ModelFileError(f"{source} cannot be read: {exc.strerror}") from None


def model_digest(model: model_math.ScoringModel) -> str:
    """Identifies the model's content in the local registration record (never sent)."""
    canonical = json.dumps(dataclasses.asdict(model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(b"datazone/scoring/model/v1\n" + canonical.encode("utf-8")).hexdigest()


def registration_path(model_path: str | Path) -> Path:
    """`risk.json` -> `risk.registration.json`, next to it."""
    source = Path(model_path)
    return source.with_name(source.stem + REGISTRATION_SUFFIX)


@dataclass(frozen=True)
class Registration:
    """What the local record next to a model file says about its registration with the zone."""

    model_id: str
    name: str
    product: str
    gateway: str
    key_fingerprint: str
    model_digest: str
    key_file: str | None
    registered_at: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": REGISTRATION_KIND, "version": FILE_VERSION, **dataclasses.asdict(self)}


def read_registration(path: Path) -> Registration | None:
    """The record at `path`, or None when there is none or it is not one of ours."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("kind") != REGISTRATION_KIND
        or doc.get("version") != FILE_VERSION
    ):
        return None
    required = ("model_id", "name", "product", "gateway", "key_fingerprint", "model_digest", "registered_at")
    if not all(isinstance(doc.get(name), str) for name in required):
        return None
    key_file = doc.get("key_file")
    return Registration(
        model_id=doc["model_id"],
        name=doc["name"],
        product=doc["product"],
        gateway=doc["gateway"],
        key_fingerprint=doc["key_fingerprint"],
        model_digest=doc["model_digest"],
        key_file=key_file if isinstance(key_file, str) else None,
        registered_at=doc["registered_at"],
    )


def write_registration(path: Path, record: Registration) -> None:
    _write_atomically(path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_model(model: model_math.ScoringModel | str | Path) -> tuple[model_math.ScoringModel, Path | None]:
    """A model given as itself or as its file (whose path locates the registration record)."""
    if isinstance(model, model_math.ScoringModel):
        return model, None
    return read_model_file(model), Path(model)


def resolve_key(key: ScoringKey | str | Path | None, model_path: Path | None) -> ScoringKey:
    """The key given, or the key file recorded when the model file was registered."""
    if isinstance(key, ScoringKey):
        return key
    if key is not None:
        return read_key_file(key)
    record = read_registration(registration_path(model_path)) if model_path is not None else None
    if record is None or record.key_file is None:
        raise KeyFileError("name the key file (--key KEY): no registration of this model file records one")
    return read_key_file(record.key_file)


def resolve_model_and_key(
    model: model_math.ScoringModel | str | Path, key: ScoringKey | str | Path | None
) -> tuple[model_math.ScoringModel, ScoringKey, Path | None]:
    """The model and its key (each given as itself or as its file), and the model file's path."""
    parsed, path = resolve_model(model)
    return parsed, resolve_key(key, path), path


# -- the product's scoring catalog ---------------------------------------------------------------


@dataclass(frozen=True)
class ScoringCatalog:
    """A product's `scoring` entry in the catalog: the features a model may use and the rules."""

    product: str
    bounds: dict[str, model_math.FeatureBounds]
    kinds: tuple[str, ...]
    min_features: int
    min_key_bits: int
    max_batch: int | None
    raw: dict[str, Any] = field(repr=False)


def scoring_catalog(zone: ZoneClient, product: str) -> ScoringCatalog:
    # the catalog as this client's token sees it (GET /v1/catalog is for the zone's staff keys)
    entries = [e for e in zone.products() if isinstance(e, dict) and e.get("id") == product]
    if not entries:
        raise ZoneError(
            None,
            {
                "type": "product-not-available",
                "detail": f"product {product!r} is not among the products this client may call"
                " (GET /v1/products: a published product its token's scopes cover)",
            },
        )
    spec = entries[0].get("scoring")
    if spec is None:
        raise ZoneError(
            None,
            {
                "type": "not-a-scoring-product",
                "detail": f"product {product!r} is not served by secure scoring (its catalog entry has no scoring)",
            },
        )
    try:
        bounds = {
            str(f["name"]): model_math.FeatureBounds(
                name=str(f["name"]), min=int(f["min"]), max=int(f["max"]), missing=int(f["missing"])
            )
            for f in spec["features"]
        }
        max_batch = spec.get("max_batch")
        return ScoringCatalog(
            product=product,
            bounds=bounds,
            kinds=tuple(str(k) for k in spec.get("kinds") or ("logistic", "scorecard")),
            min_features=int(spec.get("min_features") or 1),
            min_key_bits=int(spec.get("min_key_bits") or paillier.MIN_KEY_BITS),
            max_batch=int(max_batch) if max_batch is not None else None,
            raw=dict(spec),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _unexpected(
            f"{product}'s scoring catalog cannot be read ({type(exc).__name__}: {exc})"
        ) from None


def check_model_fits(
    model: model_math.ScoringModel, catalog: ScoringCatalog, public: paillier.PublicKey
) -> None:
    """Every reason the zone would refuse the registration that can be seen here, all at once."""
    errors: list[dict[str, str]] = []
    if model.kind not in catalog.kinds:
        errors.append(
            {
                "location": "kind",
                "problem": f"{catalog.product} scores {' and '.join(catalog.kinds)} models, not {model.kind}",
            }
        )
    for index, feature in enumerate(model.features):
        if feature.name not in catalog.bounds:
            known = ", ".join(sorted(catalog.bounds))
            errors.append(
                {
                    "location": f"features.{index}.name",
                    "problem": f"{catalog.product} offers no feature {feature.name!r} (its features: {known})",
                }
            )
    if len(model.features) < catalog.min_features:
        errors.append(
            {
                "location": "features",
                "problem": f"{len(model.features)} features; {catalog.product} scores models of at least"
                f" {catalog.min_features} (one feature's score would reveal the feature)",
            }
        )
    if public.bits < catalog.min_key_bits:
        errors.append(
            {
                "location": "key",
                "problem": f"a {public.bits}-bit key; {catalog.product} needs at least {catalog.min_key_bits} bits",
            }
        )
    if errors:
        raise ModelDoesNotFit(catalog.product, errors)


# -- registering and finding models --------------------------------------------------------------


def register_model(
    zone: ZoneClient,
    model: model_math.ScoringModel,
    key: ScoringKey,
    *,
    model_path: Path | None = None,
) -> dict[str, Any]:
    """Encrypt the model under the key, register it, and record the registration next to the file.

    Raises `ModelDoesNotFit` before anything is sent when the product's catalog rules it out."""
    catalog = scoring_catalog(zone, model.product)
    check_model_fits(model, catalog, key.public)
    body = model_math.encrypt_model(model, key.public, bounds=catalog.bounds)
    view = zone._call("POST", "/v1/scoring/models", json=body)
    if not isinstance(view, dict) or not isinstance(view.get("id"), str):
        raise _unexpected("POST /v1/scoring/models did not answer a model view")
    if view.get("key_fingerprint") not in (None, key.fingerprint):
        raise _unexpected("the zone registered the model under another key's fingerprint")
    if model_path is not None:
        write_registration(
            registration_path(model_path),
            Registration(
                model_id=view["id"],
                name=model.name,
                product=model.product,
                gateway=zone.config.url,
                key_fingerprint=key.fingerprint,
                model_digest=model_digest(model),
                key_file=str(key.path.resolve()) if key.path is not None else None,
                registered_at=str(view.get("created_at") or datetime.now(UTC).isoformat(timespec="seconds")),
            ),
        )
    return view


def list_models(zone: ZoneClient, *, state: str | None = None) -> list[dict[str, Any]]:
    body = zone._call("GET", "/v1/scoring/models", params={"state": state} if state else None)
    if isinstance(body, dict) and isinstance(body.get("models"), list):
        body = body["models"]
    if not isinstance(body, list) or not all(isinstance(m, dict) for m in body):
        raise _unexpected("GET /v1/scoring/models did not answer a list of models")
    return list(body)


def get_model(zone: ZoneClient, model_id: str) -> dict[str, Any]:
    path = f"/v1/scoring/models/{quote(model_id, safe='')}"
    view = zone._call("GET", path)
    if not isinstance(view, dict):
        raise _unexpected(f"GET {path} did not answer a JSON object")
    return view


def retire_model(zone: ZoneClient, model_id: str, *, reason: str) -> dict[str, Any]:
    path = f"/v1/scoring/models/{quote(model_id, safe='')}/retire"
    view = zone._call("POST", path, json={"reason": reason})
    if not isinstance(view, dict):
        raise _unexpected(f"POST {path} did not answer a JSON object")
    return view


def _view_differences(view: Mapping[str, Any], model: model_math.ScoringModel, key: ScoringKey) -> list[str]:
    """How the zone's registration differs from the model file and key (what a view shows)."""
    different = []
    for what, theirs, ours in (
        ("name", view.get("name"), model.name),
        ("product", view.get("product"), model.product),
        ("kind", view.get("kind"), model.kind),
        ("scale", view.get("scale"), model.scale),
        ("key fingerprint", view.get("key_fingerprint"), key.fingerprint),
    ):
        if theirs != ours:
            different.append(f"{what} {theirs!r} (the file: {ours!r})")
    features = view.get("features")
    if isinstance(features, list):
        theirs_f = [
            (f.get("name"), [float(b) for b in f.get("bins") or []]) for f in features if isinstance(f, dict)
        ]
        ours_f = [(f.name, [float(b) for b in f.bins]) for f in model.features]
        if theirs_f != ours_f:
            different.append("its features or bins")
    return different


def find_model(
    zone: ZoneClient,
    model: model_math.ScoringModel,
    key: ScoringKey,
    *,
    model_path: Path | None = None,
    model_id: str | None = None,
) -> dict[str, Any]:
    """The zone's view of this model registered under this key.

    By `model_id` if given; else by the registration recorded next to `model_path`; else the
    newest approved (or pending) model of the same name and key fingerprint. Refuses a model
    file changed since it was registered."""
    record = read_registration(registration_path(model_path)) if model_path is not None else None
    if (
        model_id is None
        and record is not None
        and (record.gateway, record.key_fingerprint, record.name)
        == (zone.config.url, key.fingerprint, model.name)
    ):
        model_id = record.model_id
    if record is not None and model_id == record.model_id and record.model_digest != model_digest(model):
        raise RegistrationMismatch(
            f"{model_path} changed since it was registered as {record.model_id} on {record.registered_at};"
            " the zone holds the weights registered then. Register the changed model under a new name"
            " (or retire the old one first)"
        )
    if model_id is not None:
        view = get_model(zone, model_id)
    else:
        candidates = [
            m
            for m in list_models(zone)
            if m.get("name") == model.name
            and m.get("key_fingerprint") == key.fingerprint
            and m.get("state") in LIVE_STATES
        ]
        if not candidates:
            raise ModelNotRegistered(
                f"the zone holds no approved or pending model {model.name!r} under key {key.fingerprint};"
                " register it with: datazone-client model register --model MODEL --key KEY"
            )
        # approved first, then the newest
        candidates.sort(
            key=lambda m: (m.get("state") == "approved", str(m.get("created_at") or "")), reverse=True
        )
        view = candidates[0]
    different = _view_differences(view, model, key)
    if different:
        raise RegistrationMismatch(
            f"model {view.get('id')} at the zone is not this model file and key: {'; '.join(different)}"
        )
    return view


def _require_approved(view: Mapping[str, Any]) -> str:
    model_id = str(view.get("id"))
    state = view.get("state")
    if state != "approved":
        why = f" ({view['review_reason']})" if view.get("review_reason") else ""
        raise ZoneError(
            None,
            {
                "type": "model-not-approved",
                "detail": f"model {model_id} is {state}{why}; only an approved model scores"
                + (" (an operator's reviewer has yet to approve it)" if state == "pending_review" else ""),
            },
        )
    return model_id


# -- scores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredEnterprise:
    """One enterprise's score as the bank reads it (all None when the zone does not hold it)."""

    uscc: str
    found: bool
    line: int | None = None  # the input file's line, for batch results
    score_units: int | None = None  # the integer score the zone computed, in units of 1/scale
    score: float | None = None  # score_units / scale: the logit (logistic) or the points (scorecard)
    probability: float | None = None  # logistic models: 1 / (1 + e^-logit)


@dataclass(frozen=True)
class SingleScore:
    model_id: str
    enterprise: ScoredEnterprise
    as_of: str | None
    data_versions: dict[str, Any]
    charged_fen: int | None


@dataclass(frozen=True)
class BatchScores:
    model_id: str
    job_id: str
    kind: str
    scale: int
    items: int  # distinct enterprises scored
    found: int
    scores: list[ScoredEnterprise] = field(repr=False)  # one per distinct enterprise, in input order
    duplicates: list[Duplicate] = field(repr=False)
    charged_fen: int | None
    resumed: bool  # the job was created by an earlier run
    output: Path | None = None


def _scored(
    model: model_math.ScoringModel, uscc: str, units: int, line: int | None = None
) -> ScoredEnterprise:
    real = model_math.real_score(model, units)
    probability = model_math.link(model, real) if model.kind == "logistic" else None
    return ScoredEnterprise(uscc, True, line, units, real, probability)


def _positive_int(body: Mapping[str, Any], name: str, where: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _unexpected(f"{where}: {name} {value!r} is not a positive integer")
    return value


def _open_packed(
    key: ScoringKey, texts: Sequence[object], *, count: int, body: Mapping[str, Any], where: str
) -> list[int]:
    """The `count` integer scores packed in `texts` (the answer's ciphertexts)."""
    slot_bits = _positive_int(body, "slot_bits", where)
    slots = _positive_int(body, "slots", where)
    resolution = _positive_int(body, "resolution", where)
    if len(texts) != -(-count // slots):
        raise _unexpected(f"{where}: {len(texts)} ciphertexts for {count} scores at {slots} a ciphertext")
    try:
        packed = paillier.decode_ciphertexts(key.public, {f"{where}.{i}": t for i, t in enumerate(texts)})
    except paillier.MalformedCiphertexts as exc:
        raise _unexpected(f"the zone answered malformed ciphertexts: {exc}") from None
    ordered = [packed[f"{where}.{i}"] for i in range(len(texts))]
    try:
        scores: list[int] = model_math.open_scores(
            key.private, ordered, count=count, slot_bits=slot_bits, slots=slots, resolution=resolution
        )
    except ValueError as exc:  # packing parameters that do not fit the key
        raise _unexpected(f"{where}: the scores cannot be opened: {exc}") from None
    return scores


def _check_scored_with(body: Mapping[str, Any], model: model_math.ScoringModel, where: str) -> None:
    for name, ours in (("kind", model.kind), ("scale", model.scale)):
        if name in body and body[name] != ours:
            raise RegistrationMismatch(
                f"{where}: the zone scored with {name} {body[name]!r}, the model file says {ours!r}"
            )


def score_one(
    zone: ZoneClient,
    model: model_math.ScoringModel,
    key: ScoringKey,
    uscc: str,
    *,
    model_path: Path | None = None,
    model_id: str | None = None,
    idempotency_key: str | None = None,
) -> SingleScore:
    """One enterprise scored online: POST /v1/scoring/scores, decrypted and linked here."""
    (code,) = checked_distinct([uscc])
    view = find_model(zone, model, key, model_path=model_path, model_id=model_id)
    found_id = _require_approved(view)
    try:
        body = zone._call(
            "POST",
            "/v1/scoring/scores",
            json={"model": found_id, "uscc": code},
            idempotency_key=idempotency_key,
        )
    except ZoneError as exc:
        if exc.status == 404 and exc.type == "enterprise-not-found":
            return SingleScore(found_id, ScoredEnterprise(code, False), None, {}, 0)
        raise
    if not isinstance(body, dict):
        raise _unexpected("POST /v1/scoring/scores did not answer a JSON object")
    _check_scored_with(body, model, "POST /v1/scoring/scores")
    if body.get("uscc") not in (None, code) or body.get("count", 1) != 1:
        raise _unexpected("POST /v1/scoring/scores answered for another enterprise or more than one score")
    (units,) = _open_packed(key, [body.get("ciphertext")], count=1, body=body, where="ciphertext")
    charged = body.get("charged_fen")
    versions = body.get("data_versions")
    return SingleScore(
        found_id,
        _scored(model, code, units),
        str(body["as_of"]) if body.get("as_of") is not None else None,
        dict(versions) if isinstance(versions, dict) else {},
        charged if isinstance(charged, int) else None,
    )


# -- batch jobs ------------------------------------------------------------------------------------


def default_output_path(input_path: Path) -> Path:
    """`customers.csv` -> `customers.scores.csv`, next to it."""
    return input_path.with_name(input_path.stem + ".scores.csv")


def default_state_path(output: Path) -> Path:
    return output.with_name(output.name + STATE_SUFFIX)


# how many failed earlier jobs of the same command a rerun steps over before giving up
MAX_FAILED_REPLAYS = 20


def input_digest(codes: Sequence[str]) -> str:
    """Identifies the list in the local state file (never sent)."""
    h = hashlib.sha256(b"datazone/scoring/state/v1\n")
    for code in codes:
        h.update(code.encode("ascii") + b"\n")
    return h.hexdigest()


@dataclass
class JobState:
    model_id: str
    key_fingerprint: str
    input_digest: str
    items: int
    idempotency_key: str
    job_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": STATE_KIND, "version": FILE_VERSION, **dataclasses.asdict(self)}


class JobStateFile:
    """The batch's state on disk: private, replaced whole on every save."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> JobState | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("kind") != STATE_KIND:
                raise ValueError("not a scoring state file")
            if raw.get("version") != FILE_VERSION:
                raise ValueError(f"state version {raw.get('version')!r}, this SDK writes {FILE_VERSION}")
            return JobState(
                model_id=str(raw["model_id"]),
                key_fingerprint=str(raw["key_fingerprint"]),
                input_digest=str(raw["input_digest"]),
                items=int(raw["items"]),
                idempotency_key=str(raw["idempotency_key"]),
                job_id=str(raw["job_id"]) if raw.get("job_id") else None,
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ScoringStateError(
                f"{self.path} cannot be read as a scoring state file ({type(exc).__name__}: {exc});"
                " move it away or delete it to start a new job"
            ) from None

    def save(self, state: JobState) -> None:
        if self.path is not None:
            _write_atomically(self.path, json.dumps(state.to_json()))

    def delete(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _check_resumable(state: JobState, fresh: JobState, path: Path | None) -> None:
    different = []
    if state.model_id != fresh.model_id:
        different.append(f"model {state.model_id} (now {fresh.model_id})")
    if state.key_fingerprint != fresh.key_fingerprint:
        different.append("another key")
    if state.input_digest != fresh.input_digest:
        different.append(f"another list ({state.items} distinct enterprises then, {fresh.items} now)")
    if different:
        raise ScoringStateError(
            f"{path} belongs to an unfinished scoring job with {'; '.join(different)}, so it cannot be"
            " continued with this input; run the same command on the same list to continue it, write"
            " to another output, or delete the state file to start anew (the job it holds is billed again)"
        )


def _job_view(body: Any, where: str, *, items: int) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise _unexpected(f"{where} did not answer a job view")
    if body.get("total") != items:
        raise _unexpected(f"{where}: the job holds {body.get('total')!r} enterprises, {items} were sent")
    chunk_size = _positive_int(body, "chunk_size", where)
    if body.get("chunks") != -(-items // chunk_size):
        raise _unexpected(f"{where}: {body.get('chunks')!r} chunks of {chunk_size} for {items} enterprises")
    return body


def _create_or_find_job(
    zone: ZoneClient, state: JobState, state_file: JobStateFile, codes: list[str]
) -> dict[str, Any]:
    if state.job_id is not None:
        path = f"/v1/scoring/jobs/{quote(state.job_id, safe='')}"
        try:
            return _job_view(zone._call("GET", path), f"GET {path}", items=len(codes))
        except ZoneError as exc:
            if exc.status != 404:
                raise
            raise ScoringStateError(
                f"scoring job {state.job_id} in {state_file.path} is no longer at the zone; delete the state"
                " file to start a new job (billed again)"
            ) from None
    for _ in range(MAX_FAILED_REPLAYS):
        try:
            body = zone._call(
                "POST",
                "/v1/scoring/jobs",
                json={"model": state.model_id, "usccs": codes},
                idempotency_key=state.idempotency_key,
            )
        except ZoneError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                state_file.delete()  # refused outright: there is no job to continue
            raise
        view = _job_view(body, "POST /v1/scoring/jobs", items=len(codes))
        if view.get("status") != "failed":
            break
        # a new job is never failed: this is the same command's earlier job, which failed (and
        # was credited for what it did not score). A key of its own makes the next one
        state.idempotency_key = zone.job_key("score-after", state.idempotency_key, str(view["id"]))
        state_file.save(state)
    state.job_id = view["id"]
    state_file.save(state)
    return view


def _download_chunk(
    zone: ZoneClient,
    model: model_math.ScoringModel,
    key: ScoringKey,
    job_id: str,
    index: int,
    asked: Sequence[str],
) -> list[int | None] | None:
    """Chunk `index`'s scores (None for enterprises the zone does not hold), or None while not ready."""
    path = f"/v1/scoring/jobs/{quote(job_id, safe='')}/chunks/{index}"
    try:
        body = zone._call("GET", path)
    except ZoneError as exc:
        if exc.status == 409 and exc.type == "scoring-chunk-not-ready":
            return None
        raise
    if not isinstance(body, dict):
        raise _unexpected(f"GET {path} did not answer a JSON object")
    found = body.get("found")
    if body.get("usccs") != list(asked) or not isinstance(found, list) or len(found) != len(asked):
        raise _unexpected(f"GET {path}: the chunk is not the enterprises sent in it")
    if not all(isinstance(f, bool) for f in found):
        raise _unexpected(f"GET {path}: found holds something other than true and false")
    count = sum(found)
    if body.get("count") != count:
        raise _unexpected(f"GET {path}: count {body.get('count')!r} but {count} enterprises found")
    _check_scored_with(body, model, f"GET {path}")
    texts = body.get("ciphertexts")
    if not isinstance(texts, list):
        raise _unexpected(f"GET {path}: no ciphertexts")
    units = iter(
        _open_packed(key, texts, count=count, body=body, where=f"chunks.{index}.ciphertexts") if count else []
    )
    return [next(units) if hit else None for hit in found]


def score_batch(
    zone: ZoneClient,
    model: model_math.ScoringModel,
    key: ScoringKey,
    codes_or_path: str | Path | Sequence[str] | InstitutionList,
    *,
    model_path: Path | None = None,
    model_id: str | None = None,
    column: str | None = None,
    output: Path | None = None,
    state_path: Path | None = None,
    progress: ScoringProgress | None = None,
    poll_interval: float = POLL_INTERVAL_S,
) -> BatchScores:
    """Score a list in one batch job; resumable through the state file (see the module's text).

    Every code is checked first (`InvalidListedUSCCs` names each bad line; nothing is sent).
    With `output`, the scores are written there as CSV, and the state file defaults to
    `<output>.scoring-state.json`."""
    listed = read_institution_list(codes_or_path, column)
    view = find_model(zone, model, key, model_path=model_path, model_id=model_id)
    found_id = _require_approved(view)
    codes = listed.codes
    if state_path is None and output is not None:
        state_path = default_state_path(output)
    state_file = JobStateFile(state_path)
    fresh = JobState(
        model_id=found_id,
        key_fingerprint=key.fingerprint,
        input_digest=input_digest(codes),
        items=len(codes),
        # the same model, list and output again is the same job: a rerun of a finished command
        # gets its scores back, free, instead of a new job that charges (and caps) them again
        idempotency_key=zone.job_key(
            "score",
            found_id,
            key.fingerprint,
            input_digest(codes),
            str(output.resolve()) if output is not None else "",
        ),
    )
    state = state_file.load()
    if state is None:
        state = fresh
        state_file.save(state)  # the idempotency key is on disk before the job is asked for
    else:
        _check_resumable(state, fresh, state_file.path)
    resumed = state.job_id is not None

    def report(phase: str, done: int, total: int) -> None:
        if progress is not None:
            progress(phase, done, total)

    report("upload", 0, len(codes))
    job = _create_or_find_job(zone, state, state_file, codes)
    job_id = str(job["id"])
    report("upload", len(codes), len(codes))
    chunk_size = int(job["chunk_size"])
    chunk_count = int(job["chunks"])
    units: dict[int, list[int | None]] = {}
    job_path = f"/v1/scoring/jobs/{quote(job_id, safe='')}"
    while True:
        status = job.get("status")
        if status == "failed":
            raise ScoringJobFailed(
                f"scoring job {job_id} failed at the zone: {job.get('error') or 'no reason given'};"
                f" delete {state_file.path} and run again to submit a new job",
                job_id=job_id,
            )
        done_at_zone = chunk_count if status == "succeeded" else int(job.get("chunks_done") or 0)
        report("compute", done_at_zone, chunk_count)
        for index in range(chunk_count):
            if index in units:
                continue
            if len(units) >= done_at_zone:
                break  # the zone has computed no further chunk yet (they may finish out of order)
            asked = codes[index * chunk_size : (index + 1) * chunk_size]
            chunk_units = _download_chunk(zone, model, key, job_id, index, asked)
            if chunk_units is None:
                if status == "succeeded":
                    raise _unexpected(f"scoring job {job_id} succeeded, yet its chunk {index} is not ready")
                break
            units[index] = chunk_units
            report("download", len(units), chunk_count)
        if len(units) == chunk_count:
            break
        time.sleep(poll_interval)  # the real clock: this waits for a worker process
        job = _job_view(zone._call("GET", job_path), f"GET {job_path}", items=len(codes))
    report("compute", chunk_count, chunk_count)

    scores: list[ScoredEnterprise] = []
    for index in range(chunk_count):
        start = index * chunk_size
        for offset, value in enumerate(units[index]):
            code, line = codes[start + offset], listed.lines[start + offset]
            scores.append(
                ScoredEnterprise(code, False, line) if value is None else _scored(model, code, value, line)
            )
    charged = job.get("charged_fen")
    result = BatchScores(
        model_id=found_id,
        job_id=job_id,
        kind=model.kind,
        scale=model.scale,
        items=len(codes),
        found=sum(1 for s in scores if s.found),
        scores=scores,
        duplicates=listed.duplicates,
        charged_fen=charged if isinstance(charged, int) else None,
        resumed=resumed,
    )
    if output is not None:
        write_scores(output, result)
        result = dataclasses.replace(result, output=output)
    state_file.delete()
    return result


# -- the results file ------------------------------------------------------------------------------


def score_columns(kind: str) -> list[str]:
    """logistic: line, uscc, found, logit, probability; scorecard: line, uscc, found, points."""
    return (
        ["line", "uscc", "found", "logit", "probability"]
        if kind == "logistic"
        else ["line", "uscc", "found", "points"]
    )


def score_decimals(scale: int) -> int:
    """Enough decimal places to show a score of 1/scale units exactly (scale 10000 -> 4)."""
    return max(0, math.ceil(math.log10(scale))) if scale > 1 else 0


def score_row(kind: str, scale: int, scored: ScoredEnterprise) -> list[str]:
    found = "true" if scored.found else "false"
    line = "" if scored.line is None else str(scored.line)
    value = "" if scored.score is None else f"{scored.score:.{score_decimals(scale)}f}"
    if kind == "logistic":
        probability = "" if scored.probability is None else f"{scored.probability:.6f}"
        return [line, scored.uscc, found, value, probability]
    return [line, scored.uscc, found, value]


def write_scores(path: Path, result: BatchScores) -> int:
    """One row per distinct enterprise, in input order; written whole or not at all."""
    rows: Iterable[list[str]] = (score_row(result.kind, result.scale, s) for s in result.scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # utf-8-sig: Excel opens it as UTF-8
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(score_columns(result.kind))
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(result.scores)


__all__ = [
    "BatchScores",
    "KeyFileError",
    "ModelDoesNotFit",
    "ModelFileError",
    "ModelNotRegistered",
    "Registration",
    "RegistrationMismatch",
    "ScoredEnterprise",
    "ScoringCatalog",
    "ScoringJobFailed",
    "ScoringKey",
    "ScoringStateError",
    "SingleScore",
    "find_model",
    "generate_key_file",
    "read_key_file",
    "read_model_file",
    "register_model",
    "score_batch",
    "score_one",
    "write_scores",
]
