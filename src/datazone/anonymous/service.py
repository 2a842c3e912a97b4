"""Anonymous query (匿踪查询): the zone's sealed bucket tables and the query path.

A product served by anonymous query answers one enterprise's question without the zone
learning which enterprise: the institution sends the enterprise's hash-prefix bucket and a
blinded OPRF point; the zone evaluates the point under the product's key and returns the
bucket's sealed table, every entry of it, so it learns only the bucket, which holds at least
k candidates (privacy/anonymous_query.py, docs/anonymous-query.md).

Tables are built by the worker (`build_table`), per product, key epoch and data versions,
never in a request. A query takes the same control-plane checks as any product call
(`access.pipeline`, channel "anonymous"), then its own: the live table's parameters,
the product's query limit, every bucket and point. Each query is one OPRF evaluation and one
billed unit counted against the quota, so nobody enumerates the zone through the OPRF.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.access import gates, pipeline
from datazone.access.gates import Authorization
from datazone.access.pipeline import Answer, Audited, Call, Channel, Computed, Subject
from datazone.anonymous.models import AnonymousBucket, AnonymousTable
from datazone.anonymous.schemas import QueryIn
from datazone.audit import service as audit_service
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import SHANGHAI
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec
from datazone.masking import service as masking
from datazone.metering import service as metering
from datazone.oauth.resource import AccessGrant
from datazone.principal.models import Principal
from datazone.privacy import anonymous_query as aq
from datazone.privacy import oprf
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.models import Product
from datazone.product.schemas import AnonymousAnswer, AnonymousSpec, ProductSpec
from datazone.psi import service as psi_service
from datazone.purposes import Purpose

# the engine's batch, as for lookups
_ENGINE_BATCH = 1000
_INSERT_BATCH = 256


class TableBuilding(DomainError):
    status = 503
    type = "anonymous-table-building"
    title = "The zone is sealing this product's buckets"


class BucketsBelowK(DomainError):
    status = 503
    type = "anonymous-buckets-below-k"
    title = "The zone's current data cannot be sealed with k candidates in every bucket"


class ClearanceAboveContract(Forbidden):
    type = "anonymous-clearance-above-contract"
    title = "The product's answers are masked at a clearance above the contract's"


class ParametersChanged(Conflict):
    type = "anonymous-parameters-changed"
    title = "The product's bucket parameters changed"


class TooManyQueries(DomainError):
    status = 422
    type = "anonymous-too-many-queries"
    title = "Too many queries in one request"


class MalformedQueries(DomainError):
    status = 422
    type = "malformed-anonymous-query"
    title = "Some queries cannot be answered as sent"


class ReplayUnavailable(DomainError):
    status = 410
    type = "anonymous-replay-unavailable"
    title = "The answer kept under this Idempotency-Key can no longer be replayed"


class DataChanged(RuntimeError):
    """The zone's data moved on while a table was being sealed: build again."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def anonymous_spec(spec: ProductSpec) -> AnonymousSpec:
    if spec.anonymous is None:
        raise InvalidSpec(f"product {spec.id!r} is not served by anonymous query")
    return spec.anonymous


# ---------------------------------------------------------------- what a table is built from


@dataclass(frozen=True)
class DataState:
    """The data a table seals: the datasets' current versions and, for full answers, the day
    the answers are computed for (they count windows back from it)."""

    key: str
    versions: dict[str, int | None]
    as_of: date


def _datasets(spec: ProductSpec) -> list[str]:
    anon = anonymous_spec(spec)
    if anon.answer is AnonymousAnswer.full:
        return sorted(spec.sources)
    assert anon.members is not None
    return sorted({anon.candidates.dataset, anon.members.dataset})


def _current_version(session: Session, dataset_id: str) -> int | None:
    ds = dataset_service.get_dataset(session, dataset_id=dataset_id)
    # read from the database, not the session's identity map: an ingest may have committed since
    session.refresh(ds)
    return ds.current_version


def data_state(session: Session, *, spec: ProductSpec, today: date | None = None) -> DataState:
    versions = {ds: _current_version(session, ds) for ds in _datasets(spec)}
    as_of = today or utcnow().astimezone(SHANGHAI).date()
    key = ";".join(f"{ds}@v{v}" for ds, v in versions.items())
    if anonymous_spec(spec).answer is AnonymousAnswer.full:
        key += f";as_of={as_of.isoformat()}"
    return DataState(key, versions, as_of)


def sealed_digest(spec: ProductSpec) -> str:
    """SHA-256 of the parts of a spec a table seals: its anonymous section and, for full answers,
    what computes and masks them. A new price or description keeps the tables; a new k does not."""
    anon = anonymous_spec(spec)
    sealed: dict[str, Any] = {"anonymous": anon.model_dump(mode="json")}
    if anon.answer is AnonymousAnswer.full:
        sealed |= {
            "logic": spec.logic,
            "params": spec.params,
            "sources": spec.sources,
            "outputs": [o.model_dump(mode="json", by_alias=True) for o in spec.outputs],
        }
    return hashlib.sha256(json.dumps(sealed, sort_keys=True).encode()).hexdigest()


_DIGESTS: dict[tuple[str, str], str] = {}


def _product_digest(product: Product) -> str:
    """sealed_digest of a stored product, cached by its spec's hash (a stored spec never changes under it)."""
    held = _DIGESTS.get((product.id, product.spec_sha256))
    if held is None:
        if len(_DIGESTS) > 512:
            _DIGESTS.clear()
        held = _DIGESTS[(product.id, product.spec_sha256)] = sealed_digest(product_service.spec_of(product))
    return held


def find_table(
    session: Session, *, product_id: str, sealed_sha256: str, epoch: int, data_key: str
) -> AnonymousTable | None:
    return session.scalars(
        sa.select(AnonymousTable).where(
            AnonymousTable.product_id == product_id,
            AnonymousTable.sealed_sha256 == sealed_sha256,
            AnonymousTable.epoch == epoch,
            AnonymousTable.data_key == data_key,
        )
    ).first()


def live_table(session: Session, *, product: Product) -> AnonymousTable | None:
    """The newest ready table of the product's current spec. While the worker seals a newer one
    (new data, a new key epoch) this one keeps answering; a changed spec is never answered
    from an older spec's table (its k or population may differ)."""
    return session.scalars(
        sa.select(AnonymousTable)
        .where(
            AnonymousTable.product_id == product.id,
            AnonymousTable.sealed_sha256 == _product_digest(product),
            AnonymousTable.state == "ready",
        )
        .order_by(AnonymousTable.ready_at.desc(), AnonymousTable.id.desc())
        .limit(1)
    ).first()


def needed_tables(session: Session, *, settings: Settings) -> list[str]:
    """Published (or deprecated) anonymous products whose table for the live key epoch and the
    current data is not sealed yet. A table refused for k is not tried again: only new data or
    a new spec (a new table) can change the answer."""
    epoch = psi_service.current_epoch(session, settings=settings)
    out = []
    for product in product_service.list_products(session, states=("published", "deprecated")):
        spec = product_service.spec_of(product)
        if spec.anonymous is None:
            continue
        state = data_state(session, spec=spec)
        found = find_table(
            session, product_id=product.id, sealed_sha256=sealed_digest(spec), epoch=epoch.id, data_key=state.key
        )
        if found is None:
            out.append(product.id)
    return out


# ---------------------------------------------------------------- building


def label_bytes(answer: dict[str, Any] | None, fields: Sequence[str]) -> bytes:
    """A full answer as sealed: the masked outputs as compact JSON, `null` when there is none."""
    if answer is None:
        return b"null"
    return json.dumps(
        {f: answer.get(f) for f in fields}, ensure_ascii=False, separators=(",", ":"), default=str
    ).encode()


def full_answers(session: Session, *, spec: ProductSpec, items: Sequence[str], as_of: date) -> list[bytes]:
    """Each candidate's product answer, computed by the product engine and masked at the
    product's anonymous clearance (sealed before anyone asks, so the same for every caller)."""
    anon = anonymous_spec(spec)
    fields = [o.name for o in spec.outputs]
    rules = [masking.FieldRule(o.name, *o.policy()) for o in spec.outputs]
    out: list[bytes] = []
    for start in range(0, len(items), _ENGINE_BATCH):
        batch = list(items[start : start + _ENGINE_BATCH])
        computed = engine.compute(session, spec=spec, usccs=batch, as_of=as_of)
        for code in batch:
            raw = computed.answers.get(code)
            masked = None if raw is None else masking.mask_answer(raw, rules, clearance=anon.clearance).values
            out.append(label_bytes(masked, fields))
    return out


@dataclass(frozen=True)
class _Sealing:
    """One attempt at a product's table: what it seals (the product's spec, the live key epoch,
    the current data) and the table row for them, the one already there or a new one."""

    product: Product
    spec: ProductSpec
    anon: AnonymousSpec
    epoch: int
    data: DataState
    table: AnonymousTable

    def begin(self, session: Session, *, state: str, error: str | None = None) -> AnonymousTable:
        """The table row, described afresh for this attempt ("building", or "failed" with why)."""
        table = self.table
        table.data_versions, table.as_of, table.answer = self.data.versions, self.data.as_of, self.anon.answer.value
        table.k, table.clearance, table.state, table.error = self.anon.k, self.anon.clearance, state, error
        table.created_at = utcnow()
        session.add(table)
        return table

    def audit(
        self,
        session: Session,
        *,
        detail: dict[str, Any],
        outcome: str = "ok",
        reason: str | None = None,
        entity_count: int | None = None,
        supplier_ids: Sequence[str] = (),
    ) -> None:
        audit_service.record(
            session,
            actor=None,
            actor_name="anonymous-worker",
            action="anonymous.table.build",
            object_type="product",
            object_id=self.product.id,
            outcome=outcome,
            reason=reason,
            entity_count=entity_count,
            supplier_ids=supplier_ids,
            detail=detail,
        )


def _sealing(session: Session, *, product: Product, epoch: int) -> _Sealing:
    """What a table of `product` under key `epoch` would seal now, and the row for it."""
    spec = product_service.spec_of(product)
    anon = anonymous_spec(spec)
    data = data_state(session, spec=spec)
    digest = sealed_digest(spec)
    table = find_table(
        session, product_id=product.id, sealed_sha256=digest, epoch=epoch, data_key=data.key
    ) or AnonymousTable(product_id=product.id, sealed_sha256=digest, epoch=epoch, data_key=data.key)
    return _Sealing(product, spec, anon, epoch, data, table)


def build_table(session: Session, *, settings: Settings, product_id: str) -> AnonymousTable:
    """Seal the product's buckets for the live epoch and the current data (idempotent: a table
    already ready for them is returned as it is). Raises aq.BucketTooSmall, with figures, when
    the data no longer gives every bucket k candidates: nothing is sealed then."""
    product = product_service.get_product(session, product_id=product_id)
    epoch = psi_service.current_epoch(session, settings=settings).id
    # one builder per product: a second worker waits here, then finds the table ready
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"anonymous:{product_id}"))))
    sealing = _sealing(session, product=product, epoch=epoch)
    if sealing.table.state == "ready":
        return sealing.table
    started = time.perf_counter()
    spec, anon, state = sealing.spec, sealing.anon, sealing.data
    table = sealing.begin(session, state="building")
    session.flush()

    _, candidates = dataset_service.population(session, dataset_id=anon.candidates.dataset, where=anon.candidates.where)
    choice = aq.choose_prefix_bits(candidates, anon.k, prefix_bits=anon.prefix_bits)
    if anon.answer is AnonymousAnswer.existence:
        assert anon.members is not None
        _, items = dataset_service.population(session, dataset_id=anon.members.dataset, where=anon.members.where)
        values = [b""] * len(items)
        table.members = len(items)
    else:
        items = candidates
        values = aq.pad_labels(full_answers(session, spec=spec, items=items, as_of=state.as_of))
    key = aq.product_key(psi_service.epoch_key(session, settings=settings, epoch=epoch), product_id)
    buckets = aq.buckets_of(items, choice.prefix_bits)
    sealed = aq.seal_buckets(oprf.direct_parallel(key, items), values, buckets, prefix_bits=choice.prefix_bits)
    entries = [0] * choice.buckets
    for bucket in buckets:
        entries[bucket] += 1
    # each statement above read the data committed when it ran: the same versions at the end as at
    # the start mean no ingest landed in between (versions only grow), so the table is of one version
    moved = data_state(session, spec=spec, today=state.as_of).versions
    if moved != state.versions:
        raise DataChanged(f"an ingest moved the data from {state.versions} to {moved} while the table was sealed")
    session.execute(sa.delete(AnonymousBucket).where(AnonymousBucket.table_id == table.id))
    rows = [
        {"table_id": table.id, "bucket": b, "candidates": choice.sizes[b], "entries": entries[b], "data": sealed[b]}
        for b in range(choice.buckets)
    ]
    for start in range(0, len(rows), _INSERT_BATCH):
        session.execute(sa.insert(AnonymousBucket), rows[start : start + _INSERT_BATCH])
    now = utcnow()
    table.prefix_bits, table.candidates, table.smallest_bucket = choice.prefix_bits, choice.candidates, choice.smallest_bucket
    table.size_bytes = sum(len(s) for s in sealed)
    table.state, table.ready_at, table.seconds = "ready", now, round(time.perf_counter() - started, 3)
    session.execute(
        sa.update(AnonymousTable)
        .where(
            AnonymousTable.product_id == product_id,
            AnonymousTable.id != table.id,
            AnonymousTable.state.in_(("ready", "failed")),
            AnonymousTable.superseded_at.is_(None),
        )
        .values(superseded_at=now)
    )
    sealing.audit(
        session,
        entity_count=len(items),
        supplier_ids=product_service.product_departments(session, product=product),
        detail={
            "table": table.id,
            "epoch": epoch,
            "data": state.key,
            "answer": anon.answer.value,
            "k": anon.k,
            "prefix_bits": choice.prefix_bits,
            "candidates": choice.candidates,
            "smallest_bucket": choice.smallest_bucket,
            "bytes": table.size_bytes,
        },
    )
    session.flush()
    return table


def record_refusal(session: Session, *, settings: Settings, product_id: str, error: str) -> None:
    """Keep that the current data cannot be sealed with k candidates in every bucket, and why (in a
    transaction of its own: the build's rolled back). Until a table of newer data or a new spec
    is sealed, the product refuses queries with these figures rather than answer from older data."""
    product = product_service.get_product(session, product_id=product_id)
    sealing = _sealing(session, product=product, epoch=psi_service.current_epoch(session, settings=settings).id)
    if sealing.table.state == "ready":
        return
    sealing.begin(session, state="failed", error=error[:2000])
    sealing.audit(
        session,
        outcome="failed",
        reason=error[:500],
        detail={"epoch": sealing.epoch, "data": sealing.data.key, "k": sealing.anon.k},
    )
    session.flush()


def drop_superseded(session: Session, *, older_than: timedelta) -> int:
    """Drop tables (and refusals) a newer table superseded longer ago than `older_than`: past the
    window in which a replay or a client mid-query could still need them. Returns how many."""
    cutoff = utcnow() - older_than
    result = session.execute(sa.delete(AnonymousTable).where(AnonymousTable.superseded_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- buckets in memory


class BucketCache:
    """Recently served buckets, by (table, bucket): a ready table never changes, so a cached
    bucket cannot go stale; bounded in bytes, least recently used out first."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: OrderedDict[tuple[int, int], tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> tuple[int, bytes] | None:
        with self._lock:
            found = self._held.get(key)
            if found is not None:
                self._held.move_to_end(key)
            return found

    def put(self, key: tuple[int, int], value: tuple[int, bytes]) -> None:
        size = len(value[1])
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._held.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._held[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._held.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._bytes = 0


# per gateway process; 64 MB holds a hundred or more full-answer buckets at k = 1,000
BUCKETS = BucketCache(64 * 1024 * 1024)


def read_buckets(session: Session, *, table_id: int, buckets: Sequence[int]) -> dict[int, tuple[int, bytes]]:
    """bucket -> (candidates, sealed table), from memory where held."""
    out: dict[int, tuple[int, bytes]] = {}
    missing = []
    for bucket in dict.fromkeys(buckets):
        held = BUCKETS.get((table_id, bucket))
        if held is None:
            missing.append(bucket)
        else:
            out[bucket] = held
    if missing:
        rows = session.execute(
            sa.select(AnonymousBucket.bucket, AnonymousBucket.candidates, AnonymousBucket.data).where(
                AnonymousBucket.table_id == table_id, AnonymousBucket.bucket.in_(missing)
            )
        ).all()
        for bucket, candidates, data in rows:
            out[bucket] = (candidates, bytes(data))
            BUCKETS.put((table_id, bucket), out[bucket])
    return out


# ---------------------------------------------------------------- what the institution sees


def _served_table(session: Session, *, product: Product) -> AnonymousTable:
    """The table a query is answered from: the live one, unless the data moved on to where k no
    longer holds (its answers would be stale, and the new data cannot be sealed)."""
    table = live_table(session, product=product)
    refused = session.scalars(
        sa.select(AnonymousTable)
        .where(
            AnonymousTable.product_id == product.id,
            AnonymousTable.sealed_sha256 == _product_digest(product),
            AnonymousTable.state == "failed",
        )
        .order_by(AnonymousTable.created_at.desc())
        .limit(1)
    ).first()
    if refused is not None and (table is None or refused.created_at > table.created_at):
        raise BucketsBelowK(
            f"the zone's current data for {product.id!r} ({refused.data_key}) cannot be sealed with at least "
            f"k = {refused.k} candidates in every bucket: {refused.error}; the operator must lower k or widen "
            "the candidates. Nothing was charged",
            headers={"Retry-After": "3600"},
            check="anonymous_table",
        )
    if table is not None:
        return table
    raise TableBuilding(
        f"the zone is sealing the buckets of {product.id!r}; nothing was charged: try again shortly",
        headers={"Retry-After": "30"},
        check="anonymous_table",
    )


def parameters_body(table: AnonymousTable, *, product_id: str, spec: ProductSpec) -> dict[str, Any]:
    anon = anonymous_spec(spec)
    assert table.prefix_bits is not None and table.candidates is not None and table.smallest_bucket is not None
    assert table.ready_at is not None
    return {
        "product": product_id,
        "answer": table.answer,
        "k": table.k,
        "prefix_bits": table.prefix_bits,
        "buckets": 1 << table.prefix_bits,
        "smallest_bucket": table.smallest_bucket,
        "candidates": table.candidates,
        "table": table.id,
        "epoch": table.epoch,
        "built_at": table.ready_at.isoformat(),
        "as_of": table.as_of.isoformat(),
        "data_versions": table.data_versions,
        "max_queries": anon.max_queries,
        "price_fen": spec.price_fen,
        # how each output is sealed: a withheld field opens as null, which is not "no value"
        "masking": masking.treatments(
            [masking.FieldRule(o.name, *o.policy()) for o in spec.outputs], clearance=anon.clearance
        )
        if table.answer == "full"
        else {},
    }


def parameters(session: Session, *, grant: AccessGrant, product_id: str) -> dict[str, Any]:
    """The live table's parameters: what an institution needs to prepare its queries."""
    gates.require_product_scope(session, grant=grant, product_id=product_id)
    with gates.check("product"):
        _, served = gates.resolve_product(session, product_id=product_id)
        spec = product_service.spec_of(served)
        if spec.channel != "anonymous":
            raise gates.NotServedByAnonymousQuery(
                f"product {served.id!r} is not served by anonymous query (it is a {spec.channel} product)",
                product=served.id,
            )
    return parameters_body(_served_table(session, product=served), product_id=served.id, spec=spec)


@dataclass(frozen=True)
class Answered:
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool


def _check_queries(queries: Sequence[QueryIn], *, buckets: int) -> list[bytes]:
    """The decoded points, or MalformedQueries listing every bad bucket and point at once."""
    problems: list[tuple[int, str, str]] = []
    points: list[bytes] = []
    for i, q in enumerate(queries):
        if not 0 <= q.bucket < buckets:
            problems.append((i, "bucket", f"bucket {q.bucket} is outside 0..{buckets - 1} (2^prefix_bits buckets)"))
        try:
            point = aq.b64decode(q.point)
        except ValueError:
            problems.append((i, "point", "not standard base64 (RFC 4648 section 4, padded)"))
            point = b""
        else:
            if len(point) != oprf.POINT_BYTES or point[0] not in (2, 3):
                problems.append(
                    (i, "point", f"{len(point)} bytes; a compressed P-256 point is {oprf.POINT_BYTES}, starting 02 or 03")
                )
        points.append(point)
    if problems:
        # the rest are checked too, so one answer names every problem
        shaped = [i for i, p in enumerate(points) if len(p) == oprf.POINT_BYTES and p[0] in (2, 3)]
        for j in oprf.find_malformed([points[i] for i in shaped]):
            problems.append((shaped[j], "point", "not a point on P-256 (its x has no y on the curve)"))
        raise _malformed(problems, len(queries))
    return points


def _malformed(problems: list[tuple[int, str, str]], total: int) -> MalformedQueries:
    problems.sort()
    errors = [{"location": f"queries.{i}.{what}", "problem": why} for i, what, why in problems]
    positions = sorted({i for i, _, _ in problems})
    listed = "; ".join(f"{e['location']}: {e['problem']}" for e in errors[:20])
    more = f" and {len(errors) - 20} more" if len(errors) > 20 else ""
    return MalformedQueries(
        f"{len(positions)} of {total} queries cannot be answered (nothing was charged): {listed}{more}",
        errors=errors,
        positions=positions,
        check="anonymous_query",
    )


def _replay(session: Session, stored: metering.StoredAnswer) -> Answered:
    """The first answer again, free: the stored body holds everything but the bucket tables,
    which are read back from the (immutable) table it was answered from."""
    body = dict(stored.body)
    table = session.get(AnonymousTable, body["table"])
    if table is None or table.state != "ready":
        raise ReplayUnavailable(
            f"table {body['table']} that answered this request has been dropped; send the queries again "
            "under a new Idempotency-Key",
            check="idempotency",
        )
    held = read_buckets(session, table_id=table.id, buckets=[a["bucket"] for a in body["answers"]])
    body["answers"] = [{**a, "entries": aq.b64encode(held[a["bucket"]][1])} for a in body["answers"]]
    return Answered(body, stored.headers, True)


class AnonymousQueries(Channel[Answered]):
    """A request of anonymous queries against the product's live bucket table: one OPRF
    evaluation, one billed unit counted against the quota, a query (so nobody enumerates the
    zone through the OPRF)."""

    kind = "anonymous"
    # the live table the checks found to answer from
    table: AnonymousTable

    def __init__(
        self, *, settings: Settings, product_id: str, purpose: Purpose, prefix_bits: int, queries: Sequence[QueryIn]
    ) -> None:
        self.settings = settings
        self.product_named = product_id
        self.purpose = purpose
        self.prefix_bits = prefix_bits
        self.queries = queries
        self.points: list[bytes] = []
        self.kept: dict[str, Any] = {}
        self.entries: dict[int, bytes] = {}

    def subject(self, session: Session, call: Call) -> Subject:
        assert self.product_named is not None
        return Subject(self.product_named, self.purpose)

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> Answered:
        return _replay(session, stored)

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        anon, queries, prefix_bits = anonymous_spec(auth.spec), self.queries, self.prefix_bits
        if auth.contract.clearance < anon.clearance:
            raise ClearanceAboveContract(
                f"product {auth.served.id!r} answers at clearance {anon.clearance}, above your contract's "
                f"{auth.contract.clearance}: ask the operator for a contract of clearance {anon.clearance}",
                check="contract",
            )
        table = self.table = _served_table(session, product=auth.served)
        assert table.prefix_bits is not None
        if prefix_bits != table.prefix_bits:
            current = parameters_body(table, product_id=auth.served.id, spec=auth.spec)
            raise ParametersChanged(
                f"the buckets of {auth.served.id!r} now use prefix_bits {table.prefix_bits} (table {table.id}, "
                f"k {table.k}), not {prefix_bits}; fetch GET /v1/anonymous/{auth.served.id}, recompute the buckets "
                "and send again; nothing was charged",
                current=current,
                check="anonymous_parameters",
            )
        if len(queries) > anon.max_queries:
            raise TooManyQueries(
                f"{len(queries)} queries in one request; product {auth.served.id!r} answers at most "
                f"{anon.max_queries}: split them over several requests",
                limit=anon.max_queries,
                errors=[{"location": "queries", "problem": f"{len(queries)} queries, at most {anon.max_queries}"}],
                check="anonymous_query",
            )
        self.points = _check_queries(queries, buckets=1 << table.prefix_bits)

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        table, queries = self.table, self.queries
        key = aq.product_key(psi_service.epoch_key(session, settings=self.settings, epoch=table.epoch), auth.served.id)
        try:
            evaluated = oprf.evaluate(key, self.points)
        except oprf.MalformedPoints as exc:
            raise _malformed(
                [(i, "point", "not a point on P-256 (its x has no y on the curve)") for i in exc.indices], len(queries)
            ) from None
        asked = [q.bucket for q in queries]
        held = read_buckets(session, table_id=table.id, buckets=asked)
        self.entries = {b: entries for b, (_, entries) in held.items()}
        self.kept = {
            "product": auth.served.id,
            "table": table.id,
            "epoch": table.epoch,
            "prefix_bits": table.prefix_bits,
            "k": table.k,
            "answers": [
                {"bucket": b, "point": aq.b64encode(p), "candidates": held[b][0]}
                for b, p in zip(asked, evaluated, strict=True)
            ],
        }
        audit = Audited(
            action="anonymous.query",
            entity_count=len(queries),
            detail={
                "requested": auth.requested.id,
                "table": table.id,
                "epoch": table.epoch,
                "prefix_bits": table.prefix_bits,
                # the zone learns the buckets anyway: they are what it may know
                "buckets": asked,
            },
        )
        # every evaluation is a unit, billed and counted against the quota
        return Computed(audit, units=len(queries))

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[Answered]:
        answers = self.kept.pop("answers")
        kept = {**self.kept, "charged_fen": admission.charged_fen, "answers": answers}
        headers = dict(admission.headers)
        if auth.served.state == "deprecated":
            headers["Deprecation"] = "true"
        body = {**kept, "answers": [{**a, "entries": aq.b64encode(self.entries[a["bucket"]])} for a in answers]}
        # kept for a replay without the bucket tables (read back from the table): a request of a
        # hundred full-answer buckets would otherwise store tens of megabytes
        return Answer(Answered(body, headers, False), 200, kept, headers, units=len(self.queries))


def query(
    session: Session,
    *,
    settings: Settings,
    grant: AccessGrant,
    product_id: str,
    purpose: Purpose,
    prefix_bits: int,
    queries: Sequence[QueryIn],
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> Answered:
    """Check, evaluate, meter and record one request of anonymous queries (one unit each)."""
    call = Call(grant, at or utcnow(), idempotency_key, fingerprint)
    channel = AnonymousQueries(
        settings=settings, product_id=product_id, purpose=purpose, prefix_bits=prefix_bits, queries=queries
    )
    return pipeline.run(session, call, channel)


@dataclass(frozen=True)
class TablesInState:
    """How many current (not superseded) anonymous table builds are in one state."""

    state: str
    tables: int
    oldest_created_at: datetime


def build_queue(session: Session, *, viewer: Principal) -> list[TablesInState]:
    """Current anonymous table builds per state (building is the workers' queue), by state name;
    the operator's to read (the tables are the zone's, not any institution's). One GROUP BY."""
    if viewer.kind != "operator":
        raise Forbidden("anonymous table builds are the operator's to see")
    q = (
        sa.select(AnonymousTable.state, sa.func.count(), sa.func.min(AnonymousTable.created_at))
        .where(AnonymousTable.superseded_at.is_(None))
        .group_by(AnonymousTable.state)
        .order_by(AnonymousTable.state)
    )
    return [TablesInState(state=s, tables=int(n), oldest_created_at=t) for s, n, t in session.execute(q)]
