"""Joint statistics and joint modeling (联合统计与联合建模): an institution's labelled sample
against the zone's features, the labels never seen by the zone.

A job is one call through the pipeline (`access.pipeline`): the product, contract, purpose and
the departments' grants of every feature's datasets, the sample's consent for the purpose, then
this channel's own checks (the features are the product's and within the contract's clearance,
the sample's floor, bins and groups within bounds, the institution's jobs in the period under
the cap, and no earlier sample differing from this one by a few enterprises). It is metered
when created, one unit per sample enterprise plus the product's `job_units`, and credited back
if it ends without a result for a reason on the zone's side.

- A statistics job then receives the institution's encrypted label column (and segment
  indicator columns) and a worker sums the ciphertexts per bin and group (`run_stats`).
- A training job is run by a worker against the institution's own side over the engine link
  (`datazone.privacy.joint_model`), as a PSI engine job is.

docs/joint-modeling.md states what each side learns at each step and why each bound is there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import itertools
import math
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.access import gates, pipeline
from datazone.access.gates import Authorization
from datazone.access.pipeline import Answer, Audited, Call, Channel, Computed, Subject
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.config import Settings
from datazone.dataset.schemas import SHANGHAI
from datazone.db import notify_work
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, NotFound
from datazone.joint.models import JointColumn, JointJob, JointSampleMember
from datazone.metering import service as metering
from datazone.oauth.resource import AccessGrant
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.privacy import engine as link_engine
from datazone.privacy import joint_stats
from datazone.product import service as product_service
from datazone.product.schemas import JointSpec, ProductSpec
from datazone.psi.service import JobsInStatus
from datazone.purposes import Purpose
from datazone.scoring import service as scoring_service

COLUMN_LABEL = "label"
MAX_FEATURES = 64
MAX_OWN_FEATURES = 64
_MEMBER_INFO = b"datazone joint sample members"
_LINK_KEY_INFO = b"datazone joint link keys"
# statuses whose sample counts for the differencing check and the cap: everything but a job
# that ended without an answer
_COUNTED = ("receiving", "queued", "running", "succeeded")


class JointCapReached(Forbidden):
    type = "joint-cap-reached"
    title = "The institution's joint jobs for the period are used up"


class SampleTooClose(Forbidden):
    type = "joint-sample-too-close"
    title = "The sample differs too little from an earlier one"


class JobNotReceiving(Conflict):
    type = "joint-job-not-receiving"
    title = "The job takes no more columns"


class LinkPortsBusy(DomainError):
    status = 503
    type = "joint-link-ports-busy"
    title = "Every link port of the zone's joint workers is taken"


class ResultNotReady(Conflict):
    type = "joint-result-not-ready"
    title = "The job has no result yet"


def utcnow() -> datetime:
    return datetime.now(UTC)


def joint_spec(spec: ProductSpec) -> JointSpec:
    if spec.joint is None:
        raise InvalidSpec(f"product {spec.id!r} is not a joint statistics and modeling product")
    return spec.joint


def _listed(location: str, problem: str) -> dict[str, str]:
    return {"location": location, "problem": problem}


def _refuse(problems: list[dict[str, str]], *, check: str) -> None:
    if problems:
        shown = "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:30])
        more = f"; and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise InvalidSpec(shown + more + "; nothing was queued or charged", errors=problems, check=check)


@dataclass(frozen=True)
class JobRequest:
    """What the institution asks for (the API's body, checked by its schema for shape)."""

    kind: str
    product_id: str
    purpose: Purpose
    features: list[str]
    sample: list[str]
    bins: int = 10
    edges: dict[str, list[float]] | None = None
    grouped: list[str] = field(default_factory=list)
    segments: int = 0
    public_key: str | None = None
    peer_address: str | None = None
    institution_certificate_pem: str | None = None
    own_features: int = 0
    epochs: int = 3
    batch_size: int = 8192
    learning_rate: float = 2.0
    l2: float = 0.0
    sigmoid: str = "seg3"
    scorecard: bool = False
    stats_job: str | None = None


@dataclass(frozen=True)
class CreatedJob:
    job: JointJob
    # a training job's link ticket, shown in this answer only (the zone keeps its SHA-256)
    ticket: str | None
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


def member_digests(settings: Settings, usccs: Sequence[str]) -> list[bytes]:
    """Keyed digests of a sample's members: what the differencing check compares, so the table
    of past samples is not a list of whom each institution modelled."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MEMBER_INFO).derive(
        keyring.deployment_secret(settings)
    )
    return [hmac.new(key, code.encode(), hashlib.sha256).digest()[:16] for code in usccs]


def _link_sealer(settings: Settings) -> Any:
    return keyring.sealer(settings, info=_LINK_KEY_INFO)


def column_names(job: JointJob) -> list[str]:
    """The encrypted columns a statistics job waits for: the labels, then one per segment."""
    if job.kind != "stats":
        return []
    return [COLUMN_LABEL] + [f"segment-{k}" for k in range(int(job.params.get("segments", 0)))]


def _zone_port(session: Session, *, settings: Settings) -> int:
    """A port of the joint link range that no live training job holds."""
    low, _, high = settings.joint_link_ports.partition("-")
    ports = range(int(low), int(high or low) + 1)
    held = {
        int(a.rpartition(":")[2])
        for a in session.scalars(
            sa.select(JointJob.zone_address).where(
                JointJob.kind == "train", JointJob.status.in_(("queued", "running")), JointJob.zone_address.is_not(None)
            )
        )
        if a
    }
    free = [p for p in ports if p not in held]
    if not free:
        raise LinkPortsBusy(
            "every link port of the zone's joint modeling workers is taken by a live job; try again shortly",
            headers={"Retry-After": "60"},
            check="joint_job",
        )
    return secrets.choice(free)


def feature_catalog(spec: ProductSpec) -> list[dict[str, Any]]:
    """The features a joint product offers, with their bounds and grades (published)."""
    offer = joint_spec(spec)
    return [
        {
            "name": f.name,
            "description": f.description or spec.output(f.name).description,
            "min": f.min,
            "max": f.max,
            "missing": f.missing,
            "grade": spec.output(f.name).grade or 1,
        }
        for f in offer.features
    ]


class JointJobCall(Channel[CreatedJob]):
    """A joint statistics or training job: checked, metered and created in one call."""

    kind = "joint"

    def __init__(self, *, settings: Settings, request: JobRequest) -> None:
        self.settings = settings
        self.request = request
        self.product_named = request.product_id
        self.named = request.sample
        self.codes: list[str] = []
        self.digests: list[bytes] = []
        self.edges: dict[str, list[float]] | None = request.edges
        self.public_key: bytes | None = None
        self.job: JointJob | None = None
        self.ticket: str | None = None
        self.zone_address: str | None = None

    def subject(self, session: Session, call: Call) -> Subject:
        spec = product_service.spec_of(product_service.get_product(session, product_id=self.request.product_id))
        known = {f.name for f in spec.joint.features} if spec.joint is not None else set()
        # the grants checked are those of the features' datasets (and the registration's)
        datasets = scoring_service.model_datasets(spec, [f for f in self.request.features if f in known])
        return Subject(self.request.product_id, self.request.purpose, datasets)

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> CreatedJob:
        job = get_job(session, institution_id=call.caller.id, job_id=str(stored.body["job_id"]))
        return CreatedJob(job, None, stored.status, stored.headers, True)

    def enterprises(self, session: Session, call: Call, auth: Authorization) -> Sequence[str]:
        offer = joint_spec(auth.spec)
        size = len(self.request.sample)
        with gates.check("joint_sample"):
            if size > offer.max_sample:
                raise InvalidSpec(
                    f"a sample of {size} enterprises is over the product's limit of {offer.max_sample}; "
                    "draw a smaller sample",
                    limit=offer.max_sample,
                )
            if size < offer.min_sample:
                raise InvalidSpec(
                    f"a sample of {size} enterprises is below the product's floor of {offer.min_sample}: "
                    "per-bin figures over a small sample would describe single enterprises",
                    floor=offer.min_sample,
                )
        with gates.check("uscc"):
            self.codes = gates.validate_usccs(self.request.sample)
        return self.codes

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        request, spec = self.request, auth.spec
        offer = joint_spec(spec)
        offered = {f.name: f for f in offer.features}
        problems: list[dict[str, str]] = []
        if request.kind not in ("stats", "train"):
            problems.append(_listed("kind", f"one of stats, train, not {request.kind!r}"))
        named = list(enumerate(request.features))
        for i, name in named:
            if name not in offered:
                problems.append(
                    _listed(f"features.{i}", f"{name!r} is not a feature of {spec.id}; GET /v1/joint/features lists them")
                )
        if len(set(request.features)) != len(request.features):
            problems.append(_listed("features", "each feature once"))
        if not 1 <= len(request.features) <= MAX_FEATURES:
            problems.append(_listed("features", f"1 to {MAX_FEATURES} features"))
        if request.kind == "train" and len(request.features) < offer.min_features:
            problems.append(
                _listed("features", f"a model reads at least {offer.min_features} zone features, as in secure scoring")
            )
        known = [(i, n) for i, n in named if n in offered]
        problems += [
            _listed(p["location"].removesuffix(".name"), p["problem"])
            for p in scoring_service.clearance_problems(spec=spec, named=known, clearance=auth.contract.clearance)
        ]
        if request.kind == "stats":
            problems += self._stats_problems(offer)
        else:
            problems += self._train_problems(session, call, offer)
        _refuse(problems, check="joint_job")
        self._check_cap(session, call, offer)
        self._check_difference(session, call, offer)

    def _stats_problems(self, offer: JointSpec) -> list[dict[str, str]]:
        request, problems = self.request, []
        if not 2 <= request.bins <= offer.max_bins:
            problems.append(_listed("bins", f"2 to {offer.max_bins} bins"))
        for name, edges in (request.edges or {}).items():
            if name not in request.features:
                problems.append(_listed(f"edges.{name}", "edges for a feature the job does not ask for"))
            elif not edges or len(edges) + 1 > offer.max_bins:
                problems.append(_listed(f"edges.{name}", f"1 to {offer.max_bins - 1} edges"))
            elif any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in itertools.pairwise(edges)):
                problems.append(_listed(f"edges.{name}", "finite and strictly increasing"))
        for i, name in enumerate(request.grouped):
            if name not in request.features:
                problems.append(_listed(f"grouped.{i}", f"{name!r} is not among the job's features"))
        if not 0 <= request.segments <= offer.max_segments:
            problems.append(_listed("segments", f"0 to {offer.max_segments} segment columns"))
        if request.public_key is None:
            problems.append(_listed("public_key", "a statistics job needs your HEU public key"))
        else:
            try:
                raw = base64.b64decode(request.public_key, validate=True)
                joint_stats.load_public_key(raw)
            except (ValueError, joint_stats.MalformedColumn) as exc:
                problems.append(_listed("public_key", f"not an HEU public key: {exc}"))
            else:
                self.public_key = raw
        for name in ("peer_address", "institution_certificate_pem", "stats_job"):
            if getattr(request, name) is not None:
                problems.append(_listed(name, "only a training job takes it"))
        return problems

    def _train_problems(self, session: Session, call: Call, offer: JointSpec) -> list[dict[str, str]]:
        request, problems = self.request, []
        why = "required" if request.peer_address is None else _address_problem(request.peer_address)
        if why is not None:
            problems.append(_listed("peer_address", why + ": where your side of the link listens"))
        if not 0 <= request.own_features <= MAX_OWN_FEATURES:
            problems.append(_listed("own_features", f"0 to {MAX_OWN_FEATURES} of your own features"))
        if not 1 <= request.epochs <= offer.max_epochs:
            problems.append(_listed("epochs", f"1 to {offer.max_epochs}"))
        if not 16 <= request.batch_size <= 65536:
            problems.append(_listed("batch_size", "16 to 65536"))
        if not (0 < request.learning_rate <= 100 and math.isfinite(request.learning_rate)):
            problems.append(_listed("learning_rate", "above 0, at most 100"))
        if not (0 <= request.l2 <= 10 and math.isfinite(request.l2)):
            problems.append(_listed("l2", "0 to 10"))
        if request.public_key is not None or request.segments or request.grouped:
            problems.append(_listed("public_key", "only a statistics job takes a key, groups or segments"))
        if request.scorecard:
            if request.stats_job is None:
                problems.append(_listed("stats_job", "a scorecard is binned as a statistics job of yours binned"))
            else:
                stats = session.scalars(
                    sa.select(JointJob).where(
                        JointJob.id == request.stats_job, JointJob.institution_id == call.caller.id
                    )
                ).first()
                if stats is None or stats.kind != "stats" or stats.status != "succeeded" or stats.result is None:
                    problems.append(_listed("stats_job", f"no succeeded statistics job {request.stats_job!r} of yours"))
                else:
                    edges = {f["name"]: list(f["edges"]) for f in stats.result.get("features", [])}
                    lacking = [n for n in request.features if n not in edges]
                    if lacking:
                        problems.append(
                            _listed("stats_job", f"it did not bin {', '.join(lacking)}; run statistics on them first")
                        )
                    # a feature left with one bin is a constant over the sample: it has no points to learn
                    single = [n for n in request.features if n in edges and not edges[n]]
                    if single:
                        problems.append(
                            _listed(
                                "features",
                                f"{', '.join(single)} fell into a single bin in statistics job {request.stats_job}; "
                                "leave it out of the scorecard",
                            )
                        )
                    self.edges = edges
        elif request.stats_job is not None:
            problems.append(_listed("stats_job", "only a scorecard takes a statistics job's bins"))
        return problems

    def _check_cap(self, session: Session, call: Call, offer: JointSpec) -> None:
        since = call.at - timedelta(days=offer.period_days)
        # one institution's jobs are created one at a time, so the cap holds under a race
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(0x6A6F696E_00000000 + call.caller.id)))
        used = session.scalar(
            sa.select(sa.func.count())
            .select_from(JointJob)
            .where(
                JointJob.institution_id == call.caller.id,
                JointJob.product_id == self.request.product_id,
                JointJob.created_at > since,
                JointJob.status.in_(_COUNTED),
            )
        )
        if int(used or 0) >= offer.max_jobs:
            raise JointCapReached(
                f"your institution ran {used} joint jobs in the last {offer.period_days} days, the product's cap is "
                f"{offer.max_jobs}; ask the operator if you need more",
                cap=offer.max_jobs,
                period_days=offer.period_days,
                check="joint_cap",
            )

    def _check_difference(self, session: Session, call: Call, offer: JointSpec) -> None:
        """Refuse a sample that differs from an earlier sample of this institution (in the period)
        by at least one and fewer than `min_difference` enterprises: subtracting the two answers
        would describe those few. Counted in the database against the kept digests."""
        self.digests = member_digests(self.settings, self.codes)
        since = call.at - timedelta(days=offer.period_days)
        # per earlier job of the period: how many of its members are in this sample (a hash join
        # of its kept digests against this sample's)
        earlier = sa.text(
            """
            SELECT j.id, j.sample_size,
                   (SELECT count(*) FROM joint_sample_member m
                      JOIN unnest(CAST(:mine AS bytea[])) AS u(member) ON u.member = m.member
                     WHERE m.job_id = j.id) AS common
              FROM joint_job j
             WHERE j.institution_id = :institution AND j.product_id = :product
               AND j.created_at > :since AND j.status = ANY(CAST(:counted AS text[]))
            """
        ).bindparams(
            mine=self.digests,
            institution=call.caller.id,
            product=self.request.product_id,
            since=since,
            counted=list(_COUNTED),
        )
        size = len(self.codes)
        for job_id, other_size, common in session.execute(earlier):
            difference = size + int(other_size) - 2 * int(common)
            if 0 < difference < offer.min_difference:
                raise SampleTooClose(
                    f"this sample differs from the sample of your job {job_id} by {difference} enterprises; two "
                    f"answers over samples that close would describe those few, so samples of one institution "
                    f"differ by at least {offer.min_difference} (or not at all) within {offer.period_days} days",
                    job_id=job_id,
                    difference=difference,
                    min_difference=offer.min_difference,
                    check="joint_difference",
                )

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        request, settings, at = self.request, self.settings, call.at
        offer = joint_spec(auth.spec)
        params: dict[str, Any]
        zone_cert = zone_key = None
        ticket_sha256 = None
        if request.kind == "stats":
            params = {
                "bins": request.bins,
                "edges": request.edges,
                "grouped": request.grouped,
                "segments": request.segments,
                "min_bin_count": offer.min_bin_count,
            }
            status, expires = "receiving", at + timedelta(minutes=settings.joint_receiving_minutes)
        else:
            params = {
                "own_features": request.own_features,
                "epochs": request.epochs,
                "batch_size": request.batch_size,
                "learning_rate": request.learning_rate,
                "l2": request.l2,
                "sigmoid": request.sigmoid,
                "scorecard": request.scorecard,
                "stats_job": request.stats_job,
                "edges": self.edges if request.scorecard else None,
            }
            status, expires = "queued", at + timedelta(seconds=settings.joint_link_timeout_seconds)
            self.zone_address = f"{settings.psi_link_host}:{_zone_port(session, settings=settings)}"
            self.ticket = secrets.token_urlsafe(32)
            ticket_sha256 = hashlib.sha256(self.ticket.encode()).digest()
            if request.institution_certificate_pem:
                cert_pem, zone_key = link_engine.link_certificate_pem(common_name=settings.psi_link_host, days=2)
                zone_cert = cert_pem.decode()
        job = self.job = JointJob(
            id="joint_" + secrets.token_urlsafe(15),
            kind=request.kind,
            institution_id=call.caller.id,
            client_id=call.grant.client_id,
            product_id=auth.served.id,
            purpose=request.purpose.value,
            contract_id=auth.contract.id,
            status=status,
            features=list(request.features),
            params=params,
            sample_size=len(self.codes),
            sample=self.codes,
            public_key=self.public_key,
            peer_address=request.peer_address,
            zone_address=self.zone_address,
            ticket_sha256=ticket_sha256,
            institution_certificate_pem=request.institution_certificate_pem,
            zone_certificate_pem=zone_cert,
            zone_key_encrypted=_link_sealer(settings).encrypt(zone_key) if zone_key else None,
            progress_done=0,
            progress_total=0,
            charged_fen=0,
            created_at=at,
            expires_at=expires,
        )
        session.add(job)
        session.flush()
        session.execute(
            sa.insert(JointSampleMember).from_select(
                ["job_id", "member"],
                sa.select(
                    sa.literal(job.id),
                    sa.func.unnest(sa.literal(self.digests, sa.ARRAY(sa.LargeBinary))),
                ),
            )
        )
        audit = Audited(
            action=f"joint.{request.kind}.create",
            entity_count=len(self.codes),
            detail={"job_id": job.id, "features": list(request.features), "params": params},
        )
        return Computed(audit, units=len(self.codes) + offer.job_units)

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[CreatedJob]:
        job = self.job
        assert job is not None
        job.charged_fen = admission.charged_fen
        job.call_id = uuid.uuid4()
        headers = dict(admission.headers)
        # a queued training job for its link, a statistics job for its features (computed while
        # the bank encrypts and sends its columns)
        notify_work(session, job_id=job.id)
        units = len(self.codes) + joint_spec(auth.spec).job_units
        return Answer(
            CreatedJob(job, self.ticket, 201, headers),
            201,
            {"job_id": job.id},
            headers,
            units=units,
            call_id=job.call_id,
        )


def _address_problem(address: str) -> str | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{address!r} is not host:port"
    return None


def create_job(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    request: JobRequest,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> CreatedJob:
    """Check, meter and create a joint job (see the module's docstring)."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    return pipeline.run(session, call, JointJobCall(settings=settings, request=request))


def get_job(session: Session, *, institution_id: int, job_id: str, for_update: bool = False) -> JointJob:
    q = sa.select(JointJob).where(JointJob.id == job_id, JointJob.institution_id == institution_id)
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    job = session.scalars(q).first()
    if job is None:
        raise NotFound(f"no joint job {job_id!r} of yours")
    return job


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The joint jobs a principal may read: the operator every one, an institution its own."""
    if viewer.kind == "operator":
        return sa.true()
    if viewer.kind == "institution":
        return JointJob.institution_id == viewer.id
    raise Forbidden("joint jobs are seen by the operator and the institution that runs them")


def list_jobs(session: Session, *, viewer: Principal, limit: int = 100) -> list[JointJob]:
    q = (
        sa.select(JointJob)
        .where(readable_by(viewer))
        .order_by(JointJob.created_at.desc(), JointJob.id)
        .limit(max(1, min(limit, 1000)))
    )
    return list(session.scalars(q))


def job_queue(session: Session, *, viewer: Principal) -> list[JobsInStatus]:
    """Joint jobs per status (receiving, queued and running are the workers' queue), by status
    name: the operator's every job, an institution its own. One GROUP BY."""
    q = (
        sa.select(JointJob.status, sa.func.count(), sa.func.min(JointJob.created_at))
        .where(readable_by(viewer))
        .group_by(JointJob.status)
        .order_by(JointJob.status)
    )
    return [JobsInStatus(status=s, jobs=int(n), oldest_created_at=t) for s, n, t in session.execute(q)]


def job_body(job: JointJob, *, received: Sequence[str] = (), ticket: str | None = None) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "kind": job.kind,
        "product": job.product_id,
        "purpose": job.purpose,
        "status": job.status,
        "reason": job.reason,
        "sample_size": job.sample_size,
        "features": list(job.features),
        "charged_fen": job.charged_fen,
        "created_at": job.created_at.isoformat(),
        "expires_at": job.expires_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "progress": {"phase": job.progress_phase, "done": job.progress_done, "total": job.progress_total},
        "columns_expected": column_names(job),
        "columns_received": list(received),
        "zone_address": job.zone_address,
        "peer_address": job.peer_address,
        "zone_certificate_pem": job.zone_certificate_pem,
        "link_timeout_s": (job.expires_at - job.created_at).total_seconds() if job.kind == "train" else None,
        "ticket": ticket,
    }


def received_columns(session: Session, *, job_id: str) -> list[str]:
    return list(session.scalars(sa.select(JointColumn.name).where(JointColumn.job_id == job_id).order_by(JointColumn.name)))


def put_column(
    session: Session, *, institution_id: int, job_id: str, name: str, data: bytes, at: datetime | None = None
) -> JointJob:
    """Keep one encrypted column of a statistics job, checked to be `sample_size` ciphertexts
    under the job's key; the job is queued once every column is in. Sending a column again
    replaces it while the job is receiving."""
    job = get_job(session, institution_id=institution_id, job_id=job_id, for_update=True)
    at = at or utcnow()
    with gates.check("joint_job"):
        if job.status != "receiving":
            raise JobNotReceiving(f"job {job.id} is {job.status}; it takes columns only while receiving")
        if at >= job.expires_at:
            raise JobNotReceiving(f"job {job.id} waited for its columns until {job.expires_at.isoformat()}; create a new one")
        expected = column_names(job)
        if name not in expected:
            raise InvalidSpec(f"job {job.id} takes the columns {', '.join(expected)}, not {name!r}")
        assert job.public_key is not None
        try:
            joint_stats.load_column(joint_stats.load_public_key(job.public_key), data, expected=job.sample_size)
        except joint_stats.MalformedColumn as exc:
            raise InvalidSpec(f"column {name!r}: {exc}", location=f"columns.{name}") from None
    session.execute(sa.delete(JointColumn).where(JointColumn.job_id == job.id, JointColumn.name == name))
    session.add(JointColumn(job_id=job.id, name=name, data=data))
    session.flush()
    if set(received_columns(session, job_id=job.id)) >= set(expected):
        job.status = "queued"
        notify_work(session, job_id=job.id)
    audit_service.record(
        session,
        actor=principal_service.get_principal(session, principal_id=institution_id),
        action="joint.stats.column",
        object_type="product",
        object_id=job.product_id,
        purpose=job.purpose,
        institution_id=institution_id,
        detail={"job_id": job.id, "column": name, "bytes": len(data)},
    )
    session.flush()
    return job


def result_body(session: Session, *, institution_id: int, job_id: str) -> dict[str, Any]:
    job = get_job(session, institution_id=institution_id, job_id=job_id)
    with gates.check("job"):
        if job.kind != "stats":
            raise ResultNotReady(f"job {job.id} is a training job: its model is on your side, not the zone's")
        if job.status != "succeeded" or job.result is None:
            raise ResultNotReady(
                f"job {job.id} is {job.status}" + (f" ({job.reason})" if job.reason else "") + "; no result to fetch"
            )
    return {"job_id": job.id, "sample_size": job.sample_size, **job.result}


# ---------------------------------------------------------------- the worker's side


def _oldest_unclaimed(session: Session, *where: sa.ColumnElement[bool]) -> JointJob | None:
    """The oldest job that matches, locked for this transaction (SKIP LOCKED: two workers never
    take the same one)."""
    return session.scalars(
        sa.select(JointJob).where(*where).order_by(JointJob.created_at).limit(1).with_for_update(skip_locked=True)
    ).first()


def claim_features(session: Session, *, worker: str) -> str | None:
    """A statistics job still receiving its columns whose features nobody computes yet, now marked
    as `worker`'s to compute (a short statement: the bank's column uploads never wait on it)."""
    job = _oldest_unclaimed(
        session, JointJob.kind == "stats", JointJob.status == "receiving", JointJob.features_worker.is_(None)
    )
    if job is None:
        return None
    job.features_worker = worker
    session.flush()
    return job.id


def keep_features(session: Session, *, job_id: str, features: ZoneFeatures) -> None:
    """Keep a job's computed features until its columns are in (NumPy's own format, no pickle)."""
    out = io.BytesIO()
    np.savez(out, values=features.values, found=np.array([features.found]))
    session.execute(sa.update(JointJob).where(JointJob.id == job_id).values(zone_features=out.getvalue()))


def kept_features(job: JointJob) -> ZoneFeatures | None:
    if job.zone_features is None:
        return None
    with np.load(io.BytesIO(job.zone_features), allow_pickle=False) as kept:
        return ZoneFeatures(list(job.features), kept["values"], int(kept["found"][0]))


def claim_job(session: Session, *, worker: str) -> JointJob | None:
    """The oldest queued job, now running on `worker` (SKIP LOCKED: two workers never take one)."""
    job = _oldest_unclaimed(session, JointJob.status == "queued")
    if job is None:
        return None
    job.status, job.worker, job.started_at = "running", worker, utcnow()
    session.flush()
    return job


def job_refusal(session: Session, *, job: JointJob, at: datetime | None = None) -> str | None:
    """Why the job may not go on now (a grant revoked, the contract ended ...), or None."""
    spec = product_service.spec_of(product_service.get_product(session, product_id=job.product_id))
    try:
        institution = principal_service.get_principal(session, principal_id=job.institution_id)
        gates.authorize(
            session,
            caller=institution,
            product_id=job.product_id,
            purpose=Purpose(job.purpose),
            at=at or utcnow(),
            channel="joint",
            datasets=scoring_service.model_datasets(spec, list(job.features)),
        )
    except DomainError as exc:
        return f"{exc.extra.get('check', 'check')}: {exc.detail}"
    return None


def note_progress(session: Session, *, job_id: str, phase: str, done: int, total: int) -> None:
    session.execute(
        sa.update(JointJob)
        .where(JointJob.id == job_id)
        .values(progress_phase=phase, progress_done=done, progress_total=total)
    )


def finish_job(
    session: Session,
    *,
    job_id: str,
    status: str,
    reason: str | None = None,
    credit: bool = False,
    result: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> JointJob:
    """End a job; `credit`: it ended without its result for a reason on the zone's side (or a
    party that never came), so its charge is credited back. A statistics job's encrypted
    columns are dropped once it ends: nothing of the labels outlives the job."""
    job = session.get(JointJob, job_id, with_for_update=True, populate_existing=True)
    assert job is not None
    job.status, job.reason, job.finished_at = status, reason, utcnow()
    if result is not None:
        job.result = result
    if report is not None:
        job.report = report
    job.zone_features = None
    session.execute(sa.delete(JointColumn).where(JointColumn.job_id == job.id))
    if credit:
        credit_job(session, job=job)
    audit_service.record(
        session,
        actor=None,
        actor_name=f"joint-worker:{job.worker or '-'}",
        action=f"joint.{job.kind}.finish",
        object_type="product",
        object_id=job.product_id,
        outcome="ok" if status == "succeeded" else "failed",
        reason=reason,
        purpose=job.purpose,
        entity_count=job.sample_size,
        institution_id=job.institution_id,
        detail={"job_id": job.id, "status": status, "credited": job.credit_id is not None},
    )
    session.flush()
    return job


def credit_job(session: Session, *, job: JointJob) -> None:
    """Give a job's charge back once, with a ledger credit that names the job."""
    if job.credit_id is not None or job.call_id is None or job.charged_fen <= 0:
        return
    charges = metering.call_charges(session, institution_id=job.institution_id, at=job.created_at, call_id=job.call_id)
    if charges.debit_id is None:
        return
    credit = billing_service.credit_undelivered(
        session,
        debit_id=charges.debit_id,
        reason=f"joint {job.kind} job {job.id} ended {job.status} without its result: {job.reason or 'no reason given'}",
        actor_name=f"joint-worker:{job.worker}" if job.worker else "joint-worker",
    )
    if credit is not None:
        job.credit_id = credit.id
        session.flush()


def expire_stale_jobs(session: Session) -> int:
    """Jobs still receiving or queued past their window are expired and credited: the zone did
    no work for them."""
    stale = session.scalars(
        sa.select(JointJob.id)
        .where(JointJob.status.in_(("receiving", "queued")), JointJob.expires_at < utcnow())
        .with_for_update(skip_locked=True)
    ).all()
    for job_id in stale:
        job = session.get(JointJob, job_id)
        assert job is not None
        why = (
            "the institution's encrypted columns did not all arrive in time"
            if job.status == "receiving"
            else "no worker took the job before it expired"
        )
        finish_job(session, job_id=job_id, status="expired", reason=why, credit=True)
    return len(stale)


@dataclass(frozen=True)
class ZoneFeatures:
    """The job's features for its sample rows, clamped to the product's bounds (missing values
    take the feature's `missing`), in the sample's order."""

    names: list[str]
    values: npt.NDArray[np.int64]  # (n, features)
    found: int  # sample enterprises the zone has data for


def job_day(job: JointJob) -> date:
    """The day a job's features are computed as of: the day it was created, in Shanghai (the
    zone's day), as every product answers."""
    return job.created_at.astimezone(SHANGHAI).date()


def clamped_features(
    session: Session, *, spec: ProductSpec, names: Sequence[str], codes: Sequence[str], as_of: date
) -> ZoneFeatures:
    """The features of `codes` (in their order), clamped to the product's bounds, `missing` where
    the zone has no data: what both the statistics and the training read."""
    offer = {f.name: f for f in joint_spec(spec).features}
    computed = scoring_service.compute_features(
        session,
        spec=spec,
        datasets=scoring_service.model_datasets(spec, names),
        names=names,
        usccs=list(codes),
        as_of=as_of,
    )
    values = np.empty((len(codes), len(names)), dtype=np.int64)
    low = np.array([offer[n].min for n in names], dtype=np.int64)
    high = np.array([offer[n].max for n in names], dtype=np.int64)
    missing = [offer[n].missing for n in names]
    for row, code in enumerate(codes):
        found = computed.rows.get(code)
        values[row] = [missing[k] if found is None or found[k] is None else found[k] for k in range(len(names))]
    np.clip(values, low, high, out=values)
    return ZoneFeatures(list(names), values, len(computed.rows))


def sample_features(session: Session, *, job: JointJob, spec: ProductSpec) -> ZoneFeatures:
    return clamped_features(session, spec=spec, names=list(job.features), codes=list(job.sample), as_of=job_day(job))


# how a worker reports a job's phase: (phase, done, total)
ProgressNote = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ScorecardBins:
    """A scorecard training job's zone features as bin indices, binned as its statistics job was."""

    indices: npt.NDArray[np.int64]  # (n, features)
    counts: list[int]  # bins per feature


def scorecard_bins(*, job: JointJob, features: ZoneFeatures) -> ScorecardBins | None:
    if not job.params.get("scorecard"):
        return None
    edges = job.params["edges"]
    indices = np.empty(features.values.shape, dtype=np.int64)
    counts = []
    for k, name in enumerate(features.names):
        indices[:, k] = joint_stats.bin_index(features.values[:, k].astype(np.float64), edges[name])
        counts.append(len(edges[name]) + 1)
    return ScorecardBins(indices, counts)


def run_stats(
    session: Session, *, job: JointJob, progress: ProgressNote | None = None, features: ZoneFeatures | None = None
) -> dict[str, Any]:
    """The zone's side of a statistics job: bin the sample's features, sum the encrypted labels
    (and segment indicators) per bin and group (`joint_stats.compute_result`). Returns the result
    body (ciphertexts, and the plaintext counts the zone knows anyway); raises InvalidSpec when a
    declared bin falls under the minimum count."""
    spec = spec_of_job(session, job=job)
    params = job.params
    tell = progress or (lambda phase, done, total: None)
    if features is None:
        tell("features", 0, job.sample_size)
        features = sample_features(session, job=job, spec=spec)
    public_key = joint_stats.load_public_key(job.public_key or b"")
    stored = {c.name: c.data for c in session.scalars(sa.select(JointColumn).where(JointColumn.job_id == job.id))}
    names = column_names(job)
    label = joint_stats.load_column(public_key, stored[COLUMN_LABEL], job.sample_size, what="the label column")
    segments = [joint_stats.load_column(public_key, stored[n], job.sample_size, what=n) for n in names[1:]]
    tell("sums", 0, len(features.names))
    try:
        result = joint_stats.compute_result(
            public_key,
            label,
            segments,
            features.names,
            features.values,
            bins=int(params["bins"]),
            min_count=int(params["min_bin_count"]),
            declared_edges=params.get("edges") or None,
            grouped=list(params.get("grouped") or []),
            job_id=job.id,
        )
    except joint_stats.BinsTooSmall as exc:
        raise InvalidSpec(str(exc), check="joint_bins") from None
    tell("done", len(features.names), len(features.names))
    return {**result, "found": features.found}


def zone_link_key(settings: Settings, job: JointJob) -> bytes | None:
    return _link_sealer(settings).decrypt(job.zone_key_encrypted) if job.zone_key_encrypted else None


def spec_of_product(session: Session, *, product_id: str) -> ProductSpec:
    return product_service.spec_of(product_service.get_product(session, product_id=product_id))


def spec_of_job(session: Session, *, job: JointJob) -> ProductSpec:
    return spec_of_product(session, product_id=job.product_id)
