"""Private set intersection: the zone's key epochs, the slices it joins, what it precomputes,
the HTTP-native sessions (OpenMined's wire format, labeled or not) and engine jobs.

Every PSI call takes the same control-plane checks as a product lookup
(`access.pipeline`), then PSI's own: the set's floor and limit. A session declares
its set size and is billed for it when it opens (priced per item: each item is
one OPRF evaluation, so nobody can enumerate the zone for free); its chunks are then
answered under the session's epoch. Grants are checked again on every chunk, so a revoked
grant stops a session at its next chunk.

The zone's side of each slice is precomputed per slice version and epoch by the worker
(`build_artifacts`): a request never computes over millions of rows.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.access import gates, pipeline
from datazone.access.gates import Authorization
from datazone.access.pipeline import Answer, Audited, Call, Channel, Computed, Subject
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.db import notify_work
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, NotFound
from datazone.masking import service as masking
from datazone.metering import service as metering
from datazone.oauth import resource
from datazone.oauth.resource import AccessGrant
from datazone.principal.models import Principal
from datazone.privacy import engine as psi_engine
from datazone.privacy import labels as label_tables
from datazone.privacy import openmined, oprf
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.schemas import ProductSpec, PsiResult, PsiSpec
from datazone.psi.models import PsiArtifact, PsiArtifactChunk, PsiChunk, PsiJob, PsiKeyEpoch, PsiSession
from datazone.purposes import Purpose

# artifacts are stored in chunks of this size (a bytea row well under PostgreSQL's limits)
ARTIFACT_CHUNK_BYTES = 8 * 1024 * 1024
# the lock rotation and first-key creation take (a constant key, distinct from other domains')
_EPOCH_LOCK = 0x707369_01  # "psi" 01
_KEY_INFO = b"datazone psi zone keys"


class SetBelowFloor(DomainError):
    status = 422
    type = "psi-set-below-floor"
    title = "The set is smaller than the product's floor"


class SetOverLimit(DomainError):
    status = 422
    type = "psi-set-over-limit"
    title = "The set is larger than the contract or the product allows"


class SetupBuilding(DomainError):
    status = 503
    type = "psi-setup-building"
    title = "The zone's side of this slice is being prepared"


class ChunkConflict(Conflict):
    type = "psi-chunk-conflict"
    title = "A different request was already answered under this chunk index"


class SessionExpired(DomainError):
    status = 410
    type = "psi-session-expired"
    title = "The PSI session has expired"


class MalformedPsiRequest(DomainError):
    status = 400
    type = "malformed-psi-request"
    title = "The PSI request cannot be processed"


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------- key epochs


def _sealer(settings: Settings) -> Any:
    return keyring.sealer(settings, info=_KEY_INFO)


def current_epoch(session: Session, *, settings: Settings) -> PsiKeyEpoch:
    """The live epoch; the first one is created on first use (under a lock, so once)."""
    epoch = session.scalars(sa.select(PsiKeyEpoch).where(PsiKeyEpoch.retired_at.is_(None))).first()
    if epoch is not None:
        return epoch
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(_EPOCH_LOCK)))
    epoch = session.scalars(sa.select(PsiKeyEpoch).where(PsiKeyEpoch.retired_at.is_(None))).first()
    if epoch is not None:
        return epoch
    return _new_epoch(session, settings=settings, by=None, reason="first use")


def _new_epoch(
    session: Session, *, settings: Settings, by: Principal | None, reason: str, by_name: str | None = None
) -> PsiKeyEpoch:
    epoch = PsiKeyEpoch(key_encrypted=_sealer(settings).encrypt(oprf.new_zone_key()))
    session.add(epoch)
    session.flush()
    audit_service.record(
        session,
        actor=by,
        actor_name=None if by is not None else (by_name or "psi-worker"),
        action="psi.key.rotate",
        object_type="psi_key_epoch",
        object_id=str(epoch.id),
        reason=reason,
    )
    return epoch


def list_epochs(session: Session) -> list[PsiKeyEpoch]:
    """Every PSI key epoch, oldest first (what the operator reads; no key material leaves the row)."""
    return list(session.scalars(sa.select(PsiKeyEpoch).order_by(PsiKeyEpoch.id)))


def rotate_key(
    session: Session, *, settings: Settings, by: Principal | None, reason: str, by_name: str | None = None
) -> PsiKeyEpoch:
    """Retire the live epoch and start a new one. Open sessions finish on the epoch they began
    with; new sessions wait for the worker to precompute the new epoch's artifacts."""
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(_EPOCH_LOCK)))
    now = utcnow()
    session.execute(
        sa.update(PsiKeyEpoch).where(PsiKeyEpoch.retired_at.is_(None)).values(retired_at=now)
    )
    session.flush()
    return _new_epoch(session, settings=settings, by=by, reason=reason, by_name=by_name)


def rotate_if_due(session: Session, *, settings: Settings) -> PsiKeyEpoch | None:
    epoch = current_epoch(session, settings=settings)
    if utcnow() - epoch.created_at < timedelta(days=settings.psi_key_rotation_days):
        return None
    return rotate_key(session, settings=settings, by=None, reason="scheduled rotation")


def epoch_key(session: Session, *, settings: Settings, epoch: int) -> bytes:
    """The zone's secret scalar for an epoch (never logged, never returned to a caller)."""
    row = session.get(PsiKeyEpoch, epoch)
    if row is None:
        raise NotFound(f"no PSI key epoch {epoch}")
    key: bytes = _sealer(settings).decrypt(row.key_encrypted)
    return key


# ---------------------------------------------------------------- slices


@dataclass(frozen=True)
class Slice:
    """A product's population at the dataset's current version."""

    key: str
    dataset_id: str
    version: int | None
    where: dict[str, str]


def psi_spec(spec: ProductSpec) -> PsiSpec:
    if spec.psi is None:
        raise InvalidSpec(f"product {spec.id!r} is not a PSI product")
    return spec.psi


def _slice(spec: ProductSpec, version: int | None) -> Slice:
    pop = psi_spec(spec).population
    where = dict(sorted(pop.where.items()))
    key = f"{pop.dataset}@v{version}" + "".join(f";{k}={v}" for k, v in where.items())
    return Slice(key, pop.dataset, version, where)


def slice_of(session: Session, *, spec: ProductSpec) -> Slice:
    ds = dataset_service.get_dataset(session, dataset_id=psi_spec(spec).population.dataset)
    return _slice(spec, ds.current_version)


def slice_items(session: Session, *, spec: ProductSpec) -> tuple[Slice, list[str]]:
    """The slice and its enterprises, read in one statement (so the two agree)."""
    pop = psi_spec(spec).population
    version, items = dataset_service.population(session, dataset_id=pop.dataset, where=pop.where)
    return _slice(spec, version), items


def copy_slice(session: Session, *, spec: ProductSpec, out: BinaryIO) -> int:
    """The slice's enterprises written to `out`, one a line, streamed from PostgreSQL by COPY
    (an engine job's input, without a Python object per enterprise); returns how many."""
    pop = psi_spec(spec).population
    _, items = dataset_service.copy_population(session, dataset_id=pop.dataset, where=pop.where, out=out)
    return items


# ---------------------------------------------------------------- artifacts


def find_artifact(
    session: Session, *, product_id: str, kind: str, epoch: int, slice_key: str, clearance: int = 0
) -> PsiArtifact | None:
    return session.scalars(
        sa.select(PsiArtifact).where(
            PsiArtifact.product_id == product_id,
            PsiArtifact.kind == kind,
            PsiArtifact.epoch == epoch,
            PsiArtifact.slice_key == slice_key,
            PsiArtifact.clearance == clearance,
        )
    ).first()


def artifact_bytes(session: Session, *, artifact: PsiArtifact) -> bytes:
    parts = session.scalars(
        sa.select(PsiArtifactChunk.data)
        .where(PsiArtifactChunk.artifact_id == artifact.id)
        .order_by(PsiArtifactChunk.seq)
    ).all()
    return b"".join(parts)


def _store(session: Session, artifact: PsiArtifact, data: bytes, *, items: int, seconds: float) -> None:
    session.execute(sa.delete(PsiArtifactChunk).where(PsiArtifactChunk.artifact_id == artifact.id))
    for seq, start in enumerate(range(0, max(len(data), 1), ARTIFACT_CHUNK_BYTES)):
        session.add(PsiArtifactChunk(artifact_id=artifact.id, seq=seq, data=data[start : start + ARTIFACT_CHUNK_BYTES]))
    artifact.state = "ready"
    artifact.items = items
    artifact.size_bytes = len(data)
    artifact.sha256 = hashlib.sha256(data).hexdigest()
    artifact.seconds = round(seconds, 3)
    artifact.ready_at = utcnow()
    artifact.error = None
    session.flush()


def label_bytes(answer: dict[str, Any], fields: Sequence[str]) -> bytes:
    """A label: the authorized fields of a masked answer, as compact JSON."""
    return json.dumps({f: answer.get(f) for f in fields}, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def compute_labels(
    session: Session, *, spec: ProductSpec, items: Sequence[str], clearance: int, as_of: date
) -> list[bytes]:
    """Each slice member's label, computed by the product engine and masked at `clearance`."""
    psi = psi_spec(spec)
    rules = [masking.FieldRule(o.name, *o.policy()) for o in spec.outputs if o.name in psi.labels]
    out: list[bytes] = []
    for start in range(0, len(items), 1000):
        batch = list(items[start : start + 1000])
        computed = engine.compute(session, spec=spec, usccs=batch, as_of=as_of)
        for code in batch:
            raw = computed.answers.get(code) or {}
            masked = masking.mask_answer({k: v for k, v in raw.items() if k in psi.labels}, rules, clearance=clearance)
            out.append(label_bytes(masked.values, psi.labels))
    return out


def build_artifact(
    session: Session, *, settings: Settings, product_id: str, kind: str, clearance: int = 0
) -> PsiArtifact:
    """Precompute the zone's side of a product's slice under the live epoch (idempotent: an
    artifact already ready for this slice version and epoch is returned as it is)."""
    product = product_service.get_product(session, product_id=product_id)
    spec = product_service.spec_of(product)
    psi = psi_spec(spec)
    epoch = current_epoch(session, settings=settings)
    slice_, items = slice_items(session, spec=spec)
    # one builder per artifact: a second worker waits here, then finds it ready
    session.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"psi:{product_id}:{kind}:{clearance}")))
    )
    found = find_artifact(
        session, product_id=product_id, kind=kind, epoch=epoch.id, slice_key=slice_.key, clearance=clearance
    )
    if found is not None and found.state == "ready":
        return found
    artifact = found or PsiArtifact(
        product_id=product_id, kind=kind, epoch=epoch.id, slice_key=slice_.key, clearance=clearance, state="building"
    )
    session.add(artifact)
    session.flush()
    key = epoch_key(session, settings=settings, epoch=epoch.id)
    started = time.perf_counter()
    if kind == "setup":
        data = openmined.server_setup(
            key,
            items,
            reveal_intersection=psi.result is PsiResult.intersection,
            max_client_items=psi.max_set,
            fpr=psi.fpr,
        )
    elif kind == "labels":
        if not psi.labels:
            raise InvalidSpec(f"product {product_id!r} declares no labels")
        today = utcnow().astimezone(SHANGHAI).date()
        values = compute_labels(session, spec=spec, items=items, clearance=clearance, as_of=today)
        data = label_tables.seal_labels(oprf.direct_parallel(key, items), values)
    else:
        raise InvalidSpec(f"unknown artifact kind {kind!r}")
    _store(session, artifact, data, items=len(items), seconds=time.perf_counter() - started)
    audit_service.record(
        session,
        actor=None,
        actor_name="psi-worker",
        action="psi.artifact.build",
        object_type="product",
        object_id=product_id,
        entity_count=len(items),
        supplier_ids=product_service.product_departments(session, product=product),
        detail={"kind": kind, "epoch": epoch.id, "slice": slice_.key, "clearance": clearance, "bytes": len(data)},
    )
    return artifact


@dataclass(frozen=True)
class Needed:
    product_id: str
    kind: str
    clearance: int


def needed_artifacts(session: Session, *, settings: Settings) -> list[Needed]:
    """What the live epoch and the current slice versions still lack, for published PSI products:
    an OpenMined setup for each, and a label table per clearance of the contracts that cover a
    labeled one."""
    from datazone.contract import service as contract_service

    epoch = current_epoch(session, settings=settings)
    out: list[Needed] = []
    for product in product_service.list_products(session, states=("published", "deprecated")):
        spec = product_service.spec_of(product)
        if spec.psi is None:
            continue
        slice_ = slice_of(session, spec=spec)
        wanted = [Needed(product.id, "setup", 0)]
        if spec.psi.labels:
            wanted += [
                Needed(product.id, "labels", c)
                for c in contract_service.clearances_for_product(session, product_id=product.id)
            ]
        for need in wanted:
            found = find_artifact(
                session,
                product_id=need.product_id,
                kind=need.kind,
                epoch=epoch.id,
                slice_key=slice_.key,
                clearance=need.clearance,
            )
            if found is None or found.state != "ready":
                out.append(need)
    return out


def product_spec(session: Session, *, product_id: str) -> ProductSpec:
    return product_service.spec_of(product_service.get_product(session, product_id=product_id))


def engine_caches_wanted(session: Session, *, settings: Settings) -> list[tuple[str, str, int]]:
    """(product, cache id, epoch) of the unbalanced caches the live epoch and current slices call
    for: one per published PSI product that reveals the intersection."""
    epoch = current_epoch(session, settings=settings)
    out = []
    for product in product_service.list_products(session, states=("published", "deprecated")):
        spec = product_service.spec_of(product)
        if spec.psi is None or spec.psi.result is not PsiResult.intersection:
            continue
        out.append((product.id, _cache_id(product.id, slice_of(session, spec=spec).key, epoch.id), epoch.id))
    return out


# ---------------------------------------------------------------- sessions


def _limit(auth: Authorization) -> int:
    psi = psi_spec(auth.spec)
    contract_limit = getattr(auth.contract, "psi_max_set", None)
    return min(psi.max_set, contract_limit) if contract_limit else psi.max_set


def _check_set_size(set_size: int, *, auth: Authorization) -> None:
    psi = psi_spec(auth.spec)
    if set_size < psi.min_set:
        raise SetBelowFloor(
            f"a set of {set_size} is below this product's floor of {psi.min_set}: a smaller set is a probe "
            f"of named enterprises, not a customer list; look single enterprises up through a lookup product",
            floor=psi.min_set,
            set_size=set_size,
            check="psi_set",
        )
    limit = _limit(auth)
    if set_size > limit:
        raise SetOverLimit(
            f"a set of {set_size} is over the limit of {limit} (product {auth.served.id!r} and your contract); "
            "split the list into several sessions",
            limit=limit,
            set_size=set_size,
            check="psi_set",
        )


@dataclass(frozen=True)
class Opened:
    psi_session: PsiSession
    replayed: bool
    headers: dict[str, str]
    body: dict[str, Any]


def session_body(row: PsiSession, *, chunks_done: Sequence[int] = ()) -> dict[str, Any]:
    base = f"/v1/psi/sessions/{row.id}"
    return {
        "session_id": row.id,
        "product": row.product_id,
        "purpose": row.purpose,
        "epoch": row.epoch,
        "slice": row.slice_key,
        "result": row.result,
        "labeled": row.labeled,
        "set_size": row.set_size,
        "items_received": row.items_received,
        "max_chunk_items": row.max_chunk_items,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "charged_fen": row.charged_fen,
        "setup_url": f"{base}/setup",
        "labels_url": f"{base}/labels" if row.labeled else None,
        "chunks_url": f"{base}/chunks/{{index}}",
        "chunks_done": list(chunks_done),
        "state": "expired" if row.expires_at <= utcnow() else "open",
    }


class OpenSession(Channel[Opened]):
    """A session for a set of `set_size` items: priced per item (each is one OPRF evaluation,
    so nobody enumerates the zone for free) and billed now, in full."""

    kind = "psi"
    # what the checks found to open the session under
    epoch: PsiKeyEpoch
    slice: Slice
    clearance: int

    def __init__(self, *, settings: Settings, product_id: str, purpose: Purpose, set_size: int, labeled: bool) -> None:
        self.settings = settings
        self.product_named = product_id
        self.purpose = purpose
        self.set_size = set_size
        self.labeled = labeled
        self.row: PsiSession | None = None

    def subject(self, session: Session, call: Call) -> Subject:
        assert self.product_named is not None
        return Subject(self.product_named, self.purpose)

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> Opened:
        row = session.get(PsiSession, stored.body["session_id"])
        assert row is not None
        return Opened(row, True, stored.headers, stored.body)

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        psi = psi_spec(auth.spec)
        if self.labeled and not psi.labels:
            raise InvalidSpec(
                f"product {auth.served.id!r} has no labels: open the session with labeled=false", check="psi_set"
            )
        if self.set_size < 1:
            raise InvalidSpec("set_size must be at least 1", check="psi_set")
        _check_set_size(self.set_size, auth=auth)
        self.epoch = current_epoch(session, settings=self.settings)
        self.slice = slice_of(session, spec=auth.spec)
        kind = "labels" if self.labeled else "setup"
        # a label table is sealed at the contract's clearance; a plain setup holds no labels
        self.clearance = auth.contract.clearance if self.labeled else 0
        artifact = find_artifact(
            session,
            product_id=auth.served.id,
            kind=kind,
            epoch=self.epoch.id,
            slice_key=self.slice.key,
            clearance=self.clearance,
        )
        if artifact is None or artifact.state != "ready":
            raise SetupBuilding(
                f"the zone is preparing {auth.served.id!r} for slice {self.slice.key} under key epoch {self.epoch.id}; "
                "nothing was charged: try again shortly",
                headers={"Retry-After": "30"},
                check="psi_setup",
            )

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        at = call.at
        row = self.row = PsiSession(
            id="psi_" + secrets.token_urlsafe(18),
            institution_id=call.caller.id,
            client_id=call.grant.client_id,
            product_id=auth.served.id,
            purpose=self.purpose.value,
            contract_id=auth.contract.id,
            epoch=self.epoch.id,
            slice_key=self.slice.key,
            result=psi_spec(auth.spec).result.value,
            labeled=self.labeled,
            clearance=self.clearance,
            set_size=self.set_size,
            items_received=0,
            max_chunk_items=self.settings.psi_chunk_items,
            charged_fen=0,
            created_at=at,
            expires_at=at + timedelta(minutes=self.settings.psi_session_minutes),
        )
        session.add(row)
        session.flush()
        audit = Audited(
            action="psi.session.open",
            entity_count=self.set_size,
            detail={"session_id": row.id, "epoch": self.epoch.id, "slice": self.slice.key, "labeled": self.labeled},
        )
        return Computed(audit, units=self.set_size)

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[Opened]:
        row = self.row
        assert row is not None
        row.charged_fen = admission.charged_fen
        body = session_body(row)
        headers = dict(admission.headers)
        # one event of N units per price, none naming an enterprise (the zone never sees them)
        return Answer(Opened(row, False, headers, body), 201, body, headers, units=self.set_size)


def open_session(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    product_id: str,
    purpose: Purpose,
    set_size: int,
    labeled: bool,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> Opened:
    """Check, price and open a session for a set of `set_size` items; billed now, in full."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    channel = OpenSession(settings=settings, product_id=product_id, purpose=purpose, set_size=set_size, labeled=labeled)
    return pipeline.run(session, call, channel)


def get_session(session: Session, *, institution_id: int, session_id: str, for_update: bool = False) -> PsiSession:
    stmt = sa.select(PsiSession).where(PsiSession.id == session_id, PsiSession.institution_id == institution_id)
    row = session.scalars(stmt.with_for_update() if for_update else stmt).first()
    if row is None:
        # another institution's session does not exist for this caller
        raise NotFound(f"no PSI session {session_id!r} of yours")
    return row


def session_product(session: Session, *, institution_id: int, session_id: str) -> tuple[str | None, str | None]:
    """(product, purpose) of the caller's session, or (None, None): for auditing a refusal."""
    row = session.scalars(
        sa.select(PsiSession).where(PsiSession.id == session_id, PsiSession.institution_id == institution_id)
    ).first()
    return (row.product_id, row.purpose) if row is not None else (None, None)


def chunks_done(session: Session, *, session_id: str) -> list[int]:
    return list(
        session.scalars(sa.select(PsiChunk.index).where(PsiChunk.session_id == session_id).order_by(PsiChunk.index))
    )


def _recheck(session: Session, *, grant: AccessGrant, row: PsiSession, at: datetime) -> Authorization:
    """Token scope, contract, product state, data and grants, again: a revocation stops a session."""
    with gates.check("scope"):
        resource.require_scope(grant, row.product_id)
    return gates.authorize(
        session, caller=grant.institution, product_id=row.product_id, purpose=Purpose(row.purpose), at=at, channel="psi"
    )


def session_artifact(session: Session, *, settings: Settings, grant: AccessGrant, session_id: str) -> bytes:
    """The session's precomputed zone side: the OpenMined setup, or the label table."""
    at = utcnow()
    row = get_session(session, institution_id=grant.institution.id, session_id=session_id)
    _require_open(row, at)
    _recheck(session, grant=grant, row=row, at=at)
    kind = "labels" if row.labeled else "setup"
    artifact = find_artifact(
        session, product_id=row.product_id, kind=kind, epoch=row.epoch, slice_key=row.slice_key, clearance=row.clearance
    )
    if artifact is None or artifact.state != "ready":
        # artifacts are never deleted under a live session: only an operator's clean-up gets here
        raise SessionExpired(
            f"the {kind} of session {row.id} is not available any more; open a new session", check="psi_session"
        )
    return artifact_bytes(session, artifact=artifact)


def _require_open(row: PsiSession, at: datetime) -> None:
    if row.expires_at <= at:
        raise SessionExpired(
            f"session {row.id} expired at {row.expires_at.isoformat()}; open a new one", check="psi_session"
        )


@dataclass(frozen=True)
class ChunkAnswer:
    response: bytes
    replayed: bool


def answer_chunk(
    session: Session, *, settings: Settings, grant: AccessGrant, session_id: str, index: int, body: bytes
) -> ChunkAnswer:
    """Evaluate one chunk of blinded points under the session's epoch key, or replay its answer."""
    at = utcnow()
    row = get_session(session, institution_id=grant.institution.id, session_id=session_id, for_update=True)
    _require_open(row, at)
    auth = _recheck(session, grant=grant, row=row, at=at)
    if index < 0 or index > row.set_size:
        raise InvalidSpec(f"chunk index {index} is out of range 0..{row.set_size}", check="psi_chunk")
    digest = hashlib.sha256(body).digest()
    done = session.get(PsiChunk, (row.id, index))
    if done is not None:
        if secrets.compare_digest(done.request_sha256, digest):
            return ChunkAnswer(done.response, True)
        raise ChunkConflict(
            f"chunk {index} of session {row.id} was answered for a different request; resend the same "
            "request to get its answer again, or use the next free index",
            check="psi_chunk",
        )
    reveal = row.result == PsiResult.intersection.value
    try:
        # points are checked by process_request at no extra cost (a separate check costs 17 us a point)
        request = openmined.parse_request(
            body, reveal_intersection=reveal, max_items=row.max_chunk_items, check_points=False
        )
    except openmined.MalformedRequest:
        # a refused request is checked in full, so every problem is named at once
        try:
            openmined.parse_request(body, reveal_intersection=reveal, max_items=row.max_chunk_items)
        except openmined.MalformedRequest as exc:
            raise MalformedPsiRequest(str(exc), positions=exc.indices[:100], check="psi_request") from None
        raise
    n = openmined.request_size(request)
    if row.items_received + n > row.set_size:
        raise SetOverLimit(
            f"chunk {index} brings the session to {row.items_received + n} items, over the {row.set_size} "
            "it declared (and paid for); open another session for the rest",
            limit=row.set_size,
            check="psi_set",
        )
    key = epoch_key(session, settings=settings, epoch=row.epoch)
    try:
        response = openmined.process_request(key, request, reveal_intersection=reveal)
    except openmined.MalformedRequest as exc:
        raise MalformedPsiRequest(str(exc), positions=exc.indices[:100], check="psi_request") from None
    session.add(PsiChunk(session_id=row.id, index=index, items=n, request_sha256=digest, response=response))
    row.items_received += n
    audit_service.record(
        session,
        actor=grant.institution,
        action="psi.chunk",
        object_type="product",
        object_id=row.product_id,
        purpose=row.purpose,
        entity_count=n,
        supplier_ids=product_service.product_departments(session, product=auth.served),
        institution_id=grant.institution.id,
        detail={"session_id": row.id, "index": index, "epoch": row.epoch, "client_id": grant.client_id},
    )
    session.flush()
    return ChunkAnswer(response, False)


def purge_expired_sessions(session: Session, *, older_than: timedelta = timedelta(days=1)) -> int:
    """Drop the chunks of sessions expired long enough ago (their answers can no longer be replayed)."""
    cutoff = utcnow() - older_than
    expired = sa.select(PsiSession.id).where(PsiSession.expires_at < cutoff).scalar_subquery()
    result = session.execute(sa.delete(PsiChunk).where(PsiChunk.session_id.in_(expired)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- engine jobs


class EngineResultNotAllowed(DomainError):
    status = 409
    type = "psi-engine-not-allowed"
    title = "This product cannot be joined on the engine"


PROTOCOLS = ("auto", "rr22", "ecdh", "kkrt", "unbalanced")


@dataclass(frozen=True)
class CreatedJob:
    job: PsiJob
    # shown to the institution in this answer only; only its SHA-256 is kept. None on a replay
    # once a worker has taken the job (the link then waits for the ticket first given)
    ticket: str | None
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


def _replayed_job(session: Session, *, institution_id: int, stored: metering.StoredAnswer) -> CreatedJob:
    """The job first created under a retried Idempotency-Key, as it is now, charged nothing more.

    While no worker has taken it, the retry gets a fresh ticket (the one first given, lost with
    its answer perhaps, stops working): the zone keeps only a ticket's hash, so it cannot show
    the first one again. The row lock orders this against a worker claiming the job."""
    job = session.scalars(
        sa.select(PsiJob)
        .where(PsiJob.id == str(stored.body["job_id"]), PsiJob.institution_id == institution_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    ticket = None
    if job.status == "queued":
        ticket = secrets.token_urlsafe(32)
        job.ticket_sha256 = hashlib.sha256(ticket.encode()).digest()
        session.flush()
    return CreatedJob(job, ticket, stored.status, stored.headers, True)


def _address_problem(address: str) -> str | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{address!r} is not host:port"
    return None


def _zone_port(session: Session, *, settings: Settings) -> int:
    """A port of the configured range that no live job holds."""
    low, _, high = settings.psi_link_ports.partition("-")
    ports = range(int(low), int(high or low) + 1)
    held = {
        int(a.rpartition(":")[2])
        for a in session.scalars(sa.select(PsiJob.zone_address).where(PsiJob.status.in_(("queued", "running"))))
    }
    free = [p for p in ports if p not in held]
    if not free:
        raise SetupBuilding(
            "every link port of the zone's workers is taken by a live job; try again shortly",
            headers={"Retry-After": "60"},
            check="psi_engine",
        )
    return secrets.choice(free)


def slice_size(session: Session, *, spec: ProductSpec) -> int:
    pop = psi_spec(spec).population
    return dataset_service.population_size(session, dataset_id=pop.dataset, where=pop.where)


class EngineJob(Channel[CreatedJob]):
    """A PSI on SecretFlow's engine, queued for a worker to run the zone's side; priced per item
    of the institution's set and billed now. A retry under the same Idempotency-Key gets the job
    first created, as it is now, and is charged nothing (`_replayed_job`)."""

    kind = "psi"
    # what the checks found to queue the job under
    epoch: PsiKeyEpoch
    slice: Slice
    zone_address: str

    def __init__(
        self,
        *,
        settings: Settings,
        product_id: str,
        purpose: Purpose,
        set_size: int,
        peer_address: str,
        protocol: str = "auto",
        institution_certificate_pem: str | None = None,
        have_cache: bool = False,
    ) -> None:
        self.settings = settings
        self.product_named = product_id
        self.purpose = purpose
        self.set_size = set_size
        self.peer_address = peer_address
        self.protocol = protocol
        self.institution_certificate_pem = institution_certificate_pem
        self.have_cache = have_cache
        self.job: PsiJob | None = None
        self.ticket = ""

    def subject(self, session: Session, call: Call) -> Subject:
        assert self.product_named is not None
        return Subject(self.product_named, self.purpose)

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> CreatedJob:
        return _replayed_job(session, institution_id=call.caller.id, stored=stored)

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        psi = psi_spec(auth.spec)
        problems = []
        if self.protocol not in PROTOCOLS:
            problems.append(
                {"location": "protocol", "problem": f"one of {', '.join(PROTOCOLS)}, not {self.protocol!r}"}
            )
        if (why := _address_problem(self.peer_address)) is not None:
            problems.append({"location": "peer_address", "problem": why + ": where your engine side listens"})
        if problems:
            raise InvalidSpec(
                "; ".join(f"{p['location']}: {p['problem']}" for p in problems), errors=problems, check="psi_job"
            )
        if psi.result is not PsiResult.intersection:
            raise EngineResultNotAllowed(
                f"product {auth.served.id!r} reveals the intersection's size only, and the engine would give you "
                "the intersection itself: open an HTTP session (POST /v1/psi/sessions) instead",
                check="psi_job",
            )
        _check_set_size(self.set_size, auth=auth)
        self.epoch = current_epoch(session, settings=self.settings)
        self.slice = slice_of(session, spec=auth.spec)
        if self.protocol == "auto":
            self.protocol = psi_engine.choose_protocol(
                zone_items=slice_size(session, spec=auth.spec), institution_items=self.set_size
            )
        self.zone_address = f"{self.settings.psi_link_host}:{_zone_port(session, settings=self.settings)}"

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        settings, at, protocol = self.settings, call.at, self.protocol
        self.ticket = secrets.token_urlsafe(32)
        zone_cert = zone_key = None
        if self.institution_certificate_pem:
            cert_pem, zone_key = psi_engine.link_certificate_pem(common_name=settings.psi_link_host, days=2)
            zone_cert = cert_pem.decode()
        job = self.job = PsiJob(
            id="job_" + secrets.token_urlsafe(15),
            institution_id=call.caller.id,
            client_id=call.grant.client_id,
            product_id=auth.served.id,
            purpose=self.purpose.value,
            contract_id=auth.contract.id,
            protocol=protocol,
            set_size=self.set_size,
            epoch=self.epoch.id,
            slice_key=self.slice.key,
            cache_id=_cache_id(auth.served.id, self.slice.key, self.epoch.id) if protocol == "unbalanced" else None,
            have_cache=self.have_cache,
            peer_address=self.peer_address,
            zone_address=self.zone_address,
            ticket_sha256=hashlib.sha256(self.ticket.encode()).digest(),
            institution_certificate_pem=self.institution_certificate_pem,
            zone_certificate_pem=zone_cert,
            zone_key_encrypted=_sealer(settings).encrypt(zone_key) if zone_key else None,
            status="queued",
            charged_fen=0,
            created_at=at,
            expires_at=at + timedelta(seconds=settings.psi_link_timeout_seconds),
        )
        session.add(job)
        session.flush()
        audit = Audited(
            action="psi.job.create",
            entity_count=self.set_size,
            detail={"job_id": job.id, "protocol": protocol, "epoch": self.epoch.id, "slice": self.slice.key},
        )
        return Computed(audit, units=self.set_size)

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[CreatedJob]:
        job = self.job
        assert job is not None
        job.charged_fen = admission.charged_fen
        # the job names its call, so its charge can be found again to credit it
        job.call_id = uuid.uuid4()
        headers = dict(admission.headers)
        # the NOTIFY is delivered at commit, with the job
        notify_work(session, job_id=job.id)
        return Answer(
            CreatedJob(job, self.ticket, 201, headers),
            201,
            # what a retry needs to find the job again (never the ticket: only its hash is kept)
            {"job_id": job.id},
            headers,
            units=self.set_size,
            call_id=job.call_id,
        )


def create_job(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    product_id: str,
    purpose: Purpose,
    set_size: int,
    peer_address: str,
    protocol: str = "auto",
    institution_certificate_pem: str | None = None,
    have_cache: bool = False,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> CreatedJob:
    """Check, price and queue a PSI on SecretFlow's engine; a worker runs the zone's side."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    channel = EngineJob(
        settings=settings,
        product_id=product_id,
        purpose=purpose,
        set_size=set_size,
        peer_address=peer_address,
        protocol=protocol,
        institution_certificate_pem=institution_certificate_pem,
        have_cache=have_cache,
    )
    return pipeline.run(session, call, channel)


def _cache_id(product_id: str, slice_key: str, epoch: int) -> str:
    digest = hashlib.sha256(f"{product_id}|{slice_key}|{epoch}".encode()).hexdigest()[:16]
    return f"{product_id}-e{epoch}-{digest}"


def job_body(job: PsiJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "product": job.product_id,
        "purpose": job.purpose,
        "status": job.status,
        "reason": job.reason,
        "protocol": job.protocol,
        "set_size": job.set_size,
        "epoch": job.epoch,
        "slice": job.slice_key,
        "zone_address": job.zone_address,
        "peer_address": job.peer_address,
        "cache_id": job.cache_id,
        "link_timeout_s": (job.expires_at - job.created_at).total_seconds(),
        "zone_certificate_pem": job.zone_certificate_pem,
        "charged_fen": job.charged_fen,
        "created_at": job.created_at.isoformat(),
        "expires_at": job.expires_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def get_job(session: Session, *, institution_id: int, job_id: str) -> PsiJob:
    job = session.scalars(sa.select(PsiJob).where(PsiJob.id == job_id, PsiJob.institution_id == institution_id)).first()
    if job is None:
        raise NotFound(f"no PSI job {job_id!r} of yours")
    return job


def claim_job(session: Session, *, worker: str) -> PsiJob | None:
    """The oldest queued job, now running on `worker` (SKIP LOCKED: two workers never take one job)."""
    job = session.scalars(
        sa.select(PsiJob).where(PsiJob.status == "queued").order_by(PsiJob.created_at).limit(1).with_for_update(skip_locked=True)
    ).first()
    if job is None:
        return None
    job.status, job.worker, job.started_at = "running", worker, utcnow()
    session.flush()
    return job


def job_refusal(session: Session, *, job: PsiJob, at: datetime | None = None) -> str | None:
    """Why the job may not go on now (a grant revoked, the contract ended...), or None."""
    from datazone.principal import service as principal_service

    try:
        institution = principal_service.get_principal(session, principal_id=job.institution_id)
        gates.authorize(
            session,
            caller=institution,
            product_id=job.product_id,
            purpose=Purpose(job.purpose),
            at=at or utcnow(),
            channel="psi",
        )
    except DomainError as exc:
        return f"{exc.extra.get('check', 'check')}: {exc.detail}"
    return None


def finish_job(
    session: Session, *, job_id: str, status: str, reason: str | None = None, credit: bool = False
) -> PsiJob:
    """End a job; `credit`: it ended without delivering for a reason on the zone's side, so its
    charge is credited back (`credit_job`)."""
    job = session.get(PsiJob, job_id, with_for_update=True, populate_existing=True)
    assert job is not None
    job.status, job.reason, job.finished_at = status, reason, utcnow()
    if credit:
        credit_job(session, job=job)
    audit_service.record(
        session,
        actor=None,
        actor_name=f"psi-worker:{job.worker}",
        action="psi.job.finish",
        object_type="product",
        object_id=job.product_id,
        outcome="ok" if status == "succeeded" else "failed",
        reason=reason,
        purpose=job.purpose,
        entity_count=job.set_size,
        institution_id=job.institution_id,
        detail={"job_id": job.id, "status": status, "protocol": job.protocol},
    )
    session.flush()
    return job


def credit_job(session: Session, *, job: PsiJob) -> None:
    """Give a job's whole charge back, with a ledger credit that names it: once, whoever calls
    (the job's row is locked by the caller and keeps the credit's id; the debit cannot be
    credited past what it charged either)."""
    if job.credit_id is not None or job.call_id is None or job.charged_fen <= 0:
        return
    charges = metering.call_charges(
        session, institution_id=job.institution_id, at=job.created_at, call_id=job.call_id
    )
    if charges.debit_id is None:
        return
    credit = billing_service.credit_undelivered(
        session,
        debit_id=charges.debit_id,
        reason=f"PSI job {job.id} ended {job.status} without its result, on the zone's side: "
        f"{job.reason or 'no reason given'}",
        actor_name=f"psi-worker:{job.worker}" if job.worker else "psi-worker",
    )
    if credit is not None:
        job.credit_id = credit.id
        session.flush()


def job_zone_key(session: Session, *, settings: Settings, job: PsiJob) -> bytes | None:
    return _sealer(settings).decrypt(job.zone_key_encrypted) if job.zone_key_encrypted else None


def unbalanced_secret(session: Session, *, settings: Settings, epoch: int) -> bytes:
    """The engine's unbalanced-PSI key for an epoch: derived from the epoch's zone key, so a
    rotation renews it too (and the OPRF key itself never reaches the engine's files)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"datazone psi engine ub key").derive(
        epoch_key(session, settings=settings, epoch=epoch)
    )


def expire_stale_jobs(session: Session) -> int:
    """Queued jobs no worker took before the institution's window closed are expired, and
    credited: the zone did not run them."""
    stale = session.scalars(
        sa.select(PsiJob.id)
        .where(PsiJob.status == "queued", PsiJob.expires_at < utcnow())
        .with_for_update(skip_locked=True)
    ).all()
    for job_id in stale:
        finish_job(
            session, job_id=job_id, status="expired", reason="no worker took the job before it expired", credit=True
        )
    return len(stale)


@dataclass(frozen=True)
class JobsInStatus:
    """How many PSI jobs are in one status, and when the oldest of them was created."""

    status: str
    jobs: int
    oldest_created_at: datetime


def job_queue(session: Session, *, viewer: Principal) -> list[JobsInStatus]:
    """PSI jobs per status (queued and running are the workers' queue), by status name: the
    operator's every job, an institution its own. One GROUP BY."""
    q = (
        sa.select(PsiJob.status, sa.func.count(), sa.func.min(PsiJob.created_at))
        .group_by(PsiJob.status)
        .order_by(PsiJob.status)
    )
    if viewer.kind == "institution":
        q = q.where(PsiJob.institution_id == viewer.id)
    elif viewer.kind != "operator":
        raise Forbidden("PSI jobs are seen by the operator and the institution that runs them")
    return [JobsInStatus(status=s, jobs=int(n), oldest_created_at=t) for s, n, t in session.execute(q)]


def list_jobs(session: Session, *, viewer: Principal, limit: int = 100) -> list[PsiJob]:
    """The newest PSI jobs, at most `limit`: the operator's every job, an institution its own
    (the console's jobs page; the same scope as `job_queue`)."""
    q = sa.select(PsiJob).order_by(PsiJob.created_at.desc(), PsiJob.id).limit(max(1, min(limit, 1000)))
    if viewer.kind == "institution":
        q = q.where(PsiJob.institution_id == viewer.id)
    elif viewer.kind != "operator":
        raise Forbidden("PSI jobs are seen by the operator and the institution that runs them")
    return list(session.scalars(q))
