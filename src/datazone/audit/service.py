"""The audit trail: every control-plane change and every data access, sealed into a hash chain.

Requests only INSERT entries (`record`), in their own transaction, and never wait on
a lock shared with other requests. A sealer (`seal_pending`, run in the background by
`AuditSealer`) later numbers the committed, unsealed entries into the next block under
an advisory lock that only sealers and verifiers take. The hashing is in `chain.py`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.audit import chain
from datazone.audit.models import AuditBlock, AuditEntry
from datazone.audit.schemas import PublishedRoot
from datazone.db import shanghai_date
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.limits import day_window
from datazone.principal import service as principal_service
from datazone.principal.models import Principal

OUTCOMES = ("ok", "refused", "failed")
# session.info key: the login of the person (a console account) acting in this unit of work; every
# entry recorded in it names them (detail.account) beside the principal they act for
ACTING_ACCOUNT = "acting_account"


def record(
    session: Session,
    *,
    actor: Principal | None,
    action: str,
    object_type: str,
    object_id: str,
    outcome: str = "ok",
    reason: str | None = None,
    purpose: str | None = None,
    entities: Iterable[str] = (),
    entity_count: int | None = None,
    supplier_ids: Iterable[str] = (),
    institution_id: int | None = None,
    detail: dict[str, Any] | None = None,
    actor_name: str | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction: it commits or rolls back with the change it records.

    `actor=None` is the system itself (scheduler, sealer); pass `actor_name` to say which.
    Never put a secret in `detail`.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    ents = sorted({storable(e) for e in entities})
    acting = session.info.get(ACTING_ACCOUNT)
    if acting is not None and actor is not None:
        detail = {"account": acting, **(detail or {})}
    object_id, purpose, reason, detail = storable(object_id), storable(purpose), storable(reason), storable(detail)
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        actor_name=actor.name if actor is not None else (actor_name or "system"),
        actor_kind=actor.kind if actor is not None else "system",
        action=action,
        object_type=object_type,
        object_id=object_id,
        purpose=purpose,
        entities=ents,
        entity_count=len(ents) if entity_count is None else entity_count,
        outcome=outcome,
        reason=reason,
        detail=detail or {},
        supplier_ids=sorted(set(supplier_ids)),
        institution_id=institution_id
        if institution_id is not None
        else (actor.id if actor is not None and actor.kind == "institution" else None),
    )
    session.add(entry)
    session.flush()
    return entry


def record_principal_change(
    session: Session,
    *,
    principal: Principal,
    action: str,
    by: Principal | None,
    by_name: str | None = None,
    key_id: str = "",
    reason: str | None = None,
) -> AuditEntry:
    """A principal created, suspended or reinstated, or a key of it issued or revoked: by an operator in
    the console (`by`) or from the operator's shell (`by_name`). The principal service cannot record it
    itself (this module reads principals), so the shell and the console both come here."""
    return record(
        session,
        actor=by,
        actor_name=None if by is not None else by_name,
        action=action,
        object_type="principal",
        object_id=principal.name,
        reason=reason,
        detail={"key_id": key_id} if key_id else {},
        supplier_ids=[principal.supplier_id] if principal.supplier_id else [],
        institution_id=principal.id if principal.kind == "institution" else None,
    )


def storable(value: Any) -> Any:
    """`value` with every NUL replaced by U+FFFD, through lists and dicts. PostgreSQL text and
    jsonb cannot hold NUL; a client's input quoted in an entry (a refused code, a detail)
    must not make the entry, and so the audit of a refusal, fail."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return value


# the action every product answer (and refusal) is recorded under
DATA_ACCESS = "product.answer"


@dataclass(frozen=True)
class UsageVolume:
    product_id: str
    day: date  # in Asia/Shanghai
    calls: int
    entities: int
    refused: int


def usage_volume(
    session: Session, *, since: datetime, until: datetime, product_id: str | None = None
) -> list[UsageVolume]:
    """Data accesses per product and Shanghai day, from the audit trail."""
    day = sa.func.date(sa.func.timezone("Asia/Shanghai", AuditEntry.at))
    q = (
        sa.select(
            AuditEntry.object_id,
            day,
            sa.func.count().filter(AuditEntry.outcome == "ok"),
            sa.func.coalesce(sa.func.sum(AuditEntry.entity_count).filter(AuditEntry.outcome == "ok"), 0),
            sa.func.count().filter(AuditEntry.outcome == "refused"),
        )
        .where(AuditEntry.action == DATA_ACCESS, AuditEntry.at >= since, AuditEntry.at < until)
        .group_by(AuditEntry.object_id, day)
        .order_by(AuditEntry.object_id, day)
    )
    if product_id is not None:
        q = q.where(AuditEntry.object_id == product_id)
    return [UsageVolume(p, d, int(c), int(e), int(r)) for p, d, c, e, r in session.execute(q)]


# ---------------------------------------------------------------- sealing

# taken by sealers (exclusive, try-only) and verifiers (shared); never by requests
SEAL_LOCK_KEY = 7_410_003


class AuditEntryNotSealed(Conflict):
    type = "audit-entry-not-sealed"
    title = "The audit entry is not sealed yet"


def _entry_table() -> sa.Table:
    table = AuditEntry.__table__
    assert isinstance(table, sa.Table)
    return table


def _forget_stale_positions(session: Session) -> None:
    # the block assignment was a Core UPDATE: entries loaded in this session still show NULL
    for obj in list(session.identity_map.values()):
        if isinstance(obj, AuditEntry):
            session.expire(obj, ["block_height", "block_position"])


def pending_count(session: Session) -> int:
    """Committed (or own) entries not yet sealed into a block."""
    return int(session.scalar(sa.select(sa.func.count()).where(AuditEntry.block_height.is_(None))) or 0)


def seal_pending(session: Session, *, max_entries: int) -> AuditBlock | None:
    """Seal up to `max_entries` unsealed entries, in id order, into the next block.

    Returns None when nothing is pending or another sealer holds the lock (it will seal
    them). An entry whose transaction is still open is invisible here and stays NULL, so
    the next run seals it: blocks are (height, position), not id ranges. The advisory
    lock makes sealers take turns; the primary key on height stops a fork regardless.
    """
    if max_entries < 1:
        raise ValueError("max_entries must be at least 1")
    if not session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(SEAL_LOCK_KEY))):
        return None
    last = session.execute(
        sa.select(AuditBlock.height, AuditBlock.block_hash).order_by(AuditBlock.height.desc()).limit(1)
    ).first()
    height = 0 if last is None else last.height + 1
    prev_hash = chain.GENESIS_PREV_HASH if last is None else bytes(last.block_hash)

    t = _entry_table()
    picked = (
        sa.select(t.c.id, (sa.func.row_number().over(order_by=t.c.id) - 1).label("position"))
        .where(t.c.block_height.is_(None))
        .order_by(t.c.id)
        .limit(max_entries)
        .subquery()
    )
    rows = (
        session.execute(
            t.update()
            .where(t.c.id == picked.c.id)
            .values(block_height=height, block_position=picked.c.position)
            .returning(*t.c)
        )
        .mappings()
        .all()
    )
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["block_position"])
    root = chain.merkle_root([chain.leaf_hash(chain.entry_content(r)) for r in rows])
    sealed_at = session.scalar(sa.select(sa.func.clock_timestamp()))
    assert sealed_at is not None
    block = AuditBlock(
        height=height,
        prev_hash=prev_hash,
        merkle_root=root,
        entry_count=len(rows),
        first_entry_id=rows[0]["id"],
        last_entry_id=rows[-1]["id"],
        sealed_at=sealed_at,
        block_hash=chain.block_hash(
            height=height,
            prev_hash=prev_hash,
            merkle_root=root,
            entry_count=len(rows),
            first_entry_id=rows[0]["id"],
            last_entry_id=rows[-1]["id"],
            sealed_at=sealed_at,
        ),
    )
    session.add(block)
    session.flush()
    _forget_stale_positions(session)
    return block


# ---------------------------------------------------------------- published roots


def block_header(block: AuditBlock | Mapping[Any, Any]) -> dict[str, Any]:
    """A block as published: hashes in hex, sealed_at in ISO 8601 UTC with microseconds."""
    get = block.__getitem__ if isinstance(block, Mapping) else block.__getattribute__
    return {
        "height": get("height"),
        "prev_hash": bytes(get("prev_hash")).hex(),
        "merkle_root": bytes(get("merkle_root")).hex(),
        "block_hash": bytes(get("block_hash")).hex(),
        "entry_count": get("entry_count"),
        "first_entry_id": get("first_entry_id"),
        "last_entry_id": get("last_entry_id"),
        "sealed_at": chain.timestamp_text(get("sealed_at")),
    }


def list_blocks(session: Session, *, from_height: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """The published roots, lowest height first: what a verifier keeps to check the chain later."""
    q = sa.select(AuditBlock).where(AuditBlock.height >= from_height).order_by(AuditBlock.height)
    if limit is not None:
        q = q.limit(limit)
    return [block_header(b) for b in session.scalars(q)]


def parse_roots(roots: Iterable[Any]) -> list[PublishedRoot]:
    """Published roots read back (e.g. from `datazone audit roots`), every problem listed."""
    parsed: list[PublishedRoot] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(roots):
        try:
            parsed.append(PublishedRoot.model_validate(item))
        except ValidationError as exc:
            for e in exc.errors():
                where = ".".join(str(p) for p in e["loc"])
                errors.append(
                    {"location": f"roots[{i}]" + (f".{where}" if where else ""), "problem": e["msg"]}
                )
    heights = [r.height for r in parsed]
    for h in sorted({h for h in heights if heights.count(h) > 1}):
        errors.append({"location": "roots", "problem": f"height {h} is published more than once"})
    if errors:
        raise InvalidSpec(
            "the published roots are not valid: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors)
            + " (export them with `datazone audit roots` or GET /v1/audit/blocks)",
            errors=errors,
        )
    return parsed


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    blocks_checked: int
    entries_checked: int
    unsealed_entries: int
    first_bad_block: int | None
    problem: str | None
    roots_checked: int = 0


class _Broken(Exception):
    def __init__(self, height: int, problem: str) -> None:
        super().__init__(problem)
        self.height = height
        self.problem = problem


def _check_block(block: Mapping[Any, Any], entries: list[Mapping[Any, Any]], prev_hash: bytes) -> None:
    """Raise _Broken naming what is wrong with one block, given its entries by position."""
    h = block["height"]
    if bytes(block["prev_hash"]) != prev_hash:
        what = "the genesis value (32 zero bytes)" if h == 0 else f"block {h - 1}'s hash"
        raise _Broken(
            h, f"block {h}: prev_hash does not match {what} (a block was removed, reordered or edited)"
        )
    if not entries:
        raise _Broken(
            h,
            f"block {h}: no entries left of the {block['entry_count']} it was sealed with (deleted or moved)",
        )
    for expected, e in enumerate(entries):
        pos = e["block_position"]
        if pos != expected:
            if pos is None:
                problem = f"entry {e['id']} has no position"
            elif pos < expected:
                problem = f"two entries at position {pos} (an entry was moved here or duplicated)"
            else:
                problem = f"no entry at position {expected} (an entry was deleted or moved away)"
            raise _Broken(h, f"block {h}: {problem}")
    if len(entries) != block["entry_count"]:
        how = "added or moved here" if len(entries) > block["entry_count"] else "deleted or moved away"
        raise _Broken(
            h,
            f"block {h}: holds {len(entries)} entries but was sealed with {block['entry_count']} "
            f"(an entry was {how})",
        )
    try:
        root = chain.merkle_root([chain.leaf_hash(chain.entry_content(e)) for e in entries])
    except (TypeError, ValueError) as exc:  # e.g. a timestamp edited to something unhashable
        raise _Broken(h, f"block {h}: an entry cannot be hashed ({exc})") from None
    if root != bytes(block["merkle_root"]):
        raise _Broken(
            h,
            f"block {h}: Merkle root does not match its entries (an entry was edited, reordered or replaced)",
        )
    if (entries[0]["id"], entries[-1]["id"]) != (block["first_entry_id"], block["last_entry_id"]):
        raise _Broken(h, f"block {h}: first/last entry ids do not match its entries")
    recomputed = chain.block_hash(
        height=h,
        prev_hash=bytes(block["prev_hash"]),
        merkle_root=bytes(block["merkle_root"]),
        entry_count=block["entry_count"],
        first_entry_id=block["first_entry_id"],
        last_entry_id=block["last_entry_id"],
        sealed_at=block["sealed_at"],
    )
    if recomputed != bytes(block["block_hash"]):
        raise _Broken(h, f"block {h}: block hash does not match its header (the block row was edited)")


def _check_published(block: Mapping[Any, Any], root: PublishedRoot) -> None:
    h = block["height"]
    if bytes(block["block_hash"]).hex() != root.block_hash:
        raise _Broken(
            h,
            f"block {h}: differs from the published root (block hash {root.block_hash[:16]}... was "
            f"published, the database has {bytes(block['block_hash']).hex()[:16]}...): the chain was "
            "rewritten from here",
        )


def _sealed_entries(session: Session) -> Generator[Mapping[Any, Any], None, None]:
    """Every sealed entry by (height, position), streamed: the trail may be far larger than memory."""
    t = _entry_table()
    result = session.execute(
        sa.select(t)
        .where(t.c.block_height.is_not(None))
        .order_by(t.c.block_height, t.c.block_position, t.c.id)
        .execution_options(yield_per=2000),
    )
    try:
        yield from result.mappings()
    finally:
        result.close()  # also when the walk stops at a bad block


def verify_chain(session: Session, *, roots: Iterable[Any] | None = None) -> ChainReport:
    """Walk the blocks by height and name the first one that was altered, removed or reordered.

    With `roots` (published earlier), each block must also be the one published at its
    height, so a chain rewritten consistently after the fact is still caught.
    """
    published = {r.height: r for r in parse_roots(roots)} if roots is not None else {}
    # shared with other verifiers, exclusive of sealers: no block appears half-way through the walk
    session.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(SEAL_LOCK_KEY)))
    unsealed = pending_count(session)
    blocks = [dict(m) for m in session.execute(sa.select(AuditBlock.__table__).order_by("height")).mappings()]
    stream = _sealed_entries(session)
    groups = itertools.groupby(stream, key=lambda e: e["block_height"])
    pending_group: tuple[int, list[Mapping[Any, Any]]] | None = None

    def entries_of(height: int) -> list[Mapping[Any, Any]]:
        nonlocal pending_group
        while True:
            if pending_group is None:
                nxt = next(groups, None)
                if nxt is None:
                    return []
                pending_group = (nxt[0], list(nxt[1]))
            if pending_group[0] > height:
                return []
            got_height, got = pending_group
            pending_group = None
            if got_height == height:
                return got
            # entries point at a height before this block that had no block of its own
            raise _Broken(got_height, f"{_ids(got)} sealed into block {got_height}, which does not exist")

    checked_blocks = checked_entries = roots_checked = 0
    prev_hash = chain.GENESIS_PREV_HASH
    try:
        for expected, block in enumerate(blocks):
            h = block["height"]
            if h != expected:
                if expected in published or h > expected:
                    raise _Broken(expected, f"block {expected} is missing (the next block is {h})")
                raise _Broken(min(h, expected), f"block at unexpected height {h}")
            entries = entries_of(h)
            _check_block(block, entries, prev_hash)
            if h in published:
                _check_published(block, published[h])
                roots_checked += 1
            prev_hash = bytes(block["block_hash"])
            checked_blocks += 1
            checked_entries += len(entries)
        top = len(blocks)
        # entries left over point past the last block: that block (at least) was removed
        if pending_group is None:
            nxt = next(groups, None)
            pending_group = None if nxt is None else (nxt[0], list(nxt[1]))
        if pending_group is not None:
            stray_height, stray = pending_group
            raise _Broken(
                stray_height,
                f"{_ids(stray)} sealed into block {stray_height}, which does not exist (the block was removed)",
            )
        beyond = sorted(h for h in published if h >= top)
        if beyond:
            raise _Broken(beyond[0], f"block {beyond[0]} was published but is missing from the database")
    except _Broken as broken:
        return ChainReport(
            ok=False,
            blocks_checked=checked_blocks,
            entries_checked=checked_entries,
            unsealed_entries=unsealed,
            first_bad_block=broken.height,
            problem=broken.problem,
            roots_checked=roots_checked,
        )
    finally:
        stream.close()
    return ChainReport(
        ok=True,
        blocks_checked=checked_blocks,
        entries_checked=checked_entries,
        unsealed_entries=unsealed,
        first_bad_block=None,
        problem=None,
        roots_checked=roots_checked,
    )


def _ids(entries: list[Mapping[Any, Any]]) -> str:
    """'entry 7 is' / 'entries 7, 8 and 3 more are'."""
    ids = ", ".join(str(e["id"]) for e in entries[:5])
    if len(entries) == 1:
        return f"entry {ids} is"
    more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
    return f"entries {ids}{more} are"


# ---------------------------------------------------------------- who sees what


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The audit entries the viewer may read, as a WHERE clause (every list and get of the trail uses it).

    Least privilege: auditors see all, a department its data's entries, an institution its own."""
    if viewer.kind == "operator":
        if "auditor" in viewer.roles:
            return sa.true()
        raise Forbidden(
            "the audit trail is open to operators with the role auditor; you hold "
            + (", ".join(viewer.roles) or "no role"),
        )
    if viewer.kind == "department" and viewer.supplier_id:
        return AuditEntry.supplier_ids.contains([viewer.supplier_id])
    if viewer.kind == "institution":
        return AuditEntry.institution_id == viewer.id
    raise Forbidden(f"a {viewer.kind} principal has no view of the audit trail")


def _check_window(*, since: datetime | None, until: datetime | None, limit: int, max_limit: int) -> None:
    errors: list[dict[str, Any]] = []
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            errors.append(
                {"location": name, "problem": "needs a timezone offset, e.g. 2026-11-21T00:00:00+08:00"}
            )
    if since is not None and until is not None and since.tzinfo and until.tzinfo and since >= until:
        errors.append({"location": "since", "problem": "must be before until"})
    if not 1 <= limit <= max_limit:
        errors.append({"location": "limit", "problem": f"must be between 1 and {max_limit}"})
    if errors:
        raise InvalidSpec("; ".join(f"{e['location']}: {e['problem']}" for e in errors), errors=errors)


MAX_PAGE = 1000


def list_entries(
    session: Session,
    *,
    viewer: Principal,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
    actor: str | None = None,
    object_id: str | None = None,
    outcome: str | None = None,
) -> list[AuditEntry]:
    """The entries `viewer` may see, newest first; page on with `before_id` = the last id seen.
    `actor` (a principal's name), `object_id` and `outcome` narrow the search to exact matches."""
    scope = readable_by(viewer)
    _check_window(since=since, until=until, limit=limit, max_limit=MAX_PAGE)
    q = sa.select(AuditEntry).where(scope).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        q = q.where(AuditEntry.action == action)
    if actor is not None:
        q = q.where(AuditEntry.actor_name == actor)
    if object_id is not None:
        q = q.where(AuditEntry.object_id == object_id)
    if outcome is not None:
        q = q.where(AuditEntry.outcome == outcome)
    if since is not None:
        q = q.where(AuditEntry.at >= since)
    if until is not None:
        q = q.where(AuditEntry.at < until)
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    return list(session.scalars(q))


def get_entry(session: Session, *, viewer: Principal, entry_id: int) -> AuditEntry:
    """One entry if `viewer` may see it; otherwise 404, so its existence does not leak."""
    entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.id == entry_id, readable_by(viewer)))
    if entry is None:
        raise NotFound(f"no audit entry {entry_id} that you may see", entry_id=entry_id)
    return entry


@dataclass(frozen=True)
class Use:
    """One data access as its department or institution sees it."""

    entry_id: int
    at: datetime
    institution_id: int | None
    institution: str | None
    product_id: str
    entity_count: int
    purpose: str | None
    outcome: str
    reason: str | None
    supplier_ids: list[str]


def list_uses(
    session: Session,
    *,
    viewer: Principal,
    since: datetime,
    until: datetime,
    product_id: str | None = None,
    limit: int = MAX_PAGE,
    before_id: int | None = None,
) -> list[Use]:
    """The data accesses `viewer` may see in [since, until), newest first: a department every
    use of its data, an institution only its own calls, an auditor all."""
    scope = readable_by(viewer)
    _check_window(since=since, until=until, limit=limit, max_limit=MAX_PAGE)
    q = (
        sa.select(AuditEntry)
        .where(scope, AuditEntry.action == DATA_ACCESS, AuditEntry.at >= since, AuditEntry.at < until)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    if product_id is not None:
        q = q.where(AuditEntry.object_id == product_id)
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    entries = list(session.scalars(q))
    names = _institution_names(session, {e.institution_id for e in entries if e.institution_id is not None})
    return [
        Use(
            entry_id=e.id,
            at=e.at,
            institution_id=e.institution_id,
            institution=names.get(e.institution_id) if e.institution_id is not None else None,
            product_id=e.object_id,
            entity_count=e.entity_count,
            purpose=e.purpose,
            outcome=e.outcome,
            reason=e.reason,
            supplier_ids=list(e.supplier_ids),
        )
        for e in entries
    ]


def _institution_names(session: Session, institution_ids: Iterable[int]) -> dict[int, str]:
    """The names of the institutions an entry names (a principal removed since keeps its id in the
    entry but has no name here)."""
    names: dict[int, str] = {}
    for inst in institution_ids:
        with contextlib.suppress(NotFound):
            names[inst] = principal_service.get_principal(session, principal_id=inst).name
    return names


@dataclass(frozen=True)
class UseDay:
    """The data accesses of one Shanghai day by one institution to one product, as a viewer may see
    them: `calls` answered and the `enterprises` they named (summed over calls, so one enterprise
    asked twice counts twice), and the calls `refused`."""

    day: date
    product_id: str
    institution_id: int | None
    institution: str | None
    calls: int
    enterprises: int
    refused: int


def uses_per_day(
    session: Session,
    *,
    viewer: Principal,
    days: int,
    last_day: date | None = None,
    product_id: str | None = None,
) -> list[UseDay]:
    """Data accesses per Shanghai day, product and institution over the `days` days ending with
    `last_day` (default today), oldest first: a department the uses of its data, an institution its
    own calls, an auditor all (`readable_by`). The chart beside `list_uses`' table. One GROUP BY."""
    scope = readable_by(viewer)
    window = day_window(days=days, last_day=last_day)
    day = shanghai_date(AuditEntry.at).label("day")
    answered = AuditEntry.outcome == "ok"
    q = (
        sa.select(
            day,
            AuditEntry.object_id,
            AuditEntry.institution_id,
            sa.func.count().filter(answered),
            sa.func.coalesce(sa.func.sum(AuditEntry.entity_count).filter(answered), 0),
            sa.func.count().filter(AuditEntry.outcome == "refused"),
        )
        .where(scope, AuditEntry.action == DATA_ACCESS, AuditEntry.at >= window.since, AuditEntry.at < window.until)
        .group_by(day, AuditEntry.object_id, AuditEntry.institution_id)
        .order_by(day, AuditEntry.object_id, AuditEntry.institution_id.nulls_first())
    )
    if product_id is not None:
        q = q.where(AuditEntry.object_id == product_id)
    rows = session.execute(q).all()
    names = _institution_names(session, {r[2] for r in rows if r[2] is not None})
    return [
        UseDay(
            day=d,
            product_id=p,
            institution_id=inst,
            institution=names.get(inst) if inst is not None else None,
            calls=int(calls),
            enterprises=int(enterprises),
            refused=int(refused),
        )
        for d, p, inst, calls, enterprises, refused in rows
    ]


@dataclass(frozen=True)
class RefusalCount:
    """How often one check refused over a window. `check` is the gate that refused (the call
    pipeline stores it in the entry's detail); an entry no gate tagged counts under its problem
    type (the entry's reason)."""

    check: str
    refusals: int
    institutions: int
    last_at: datetime


def refusals_by_check(
    session: Session, *, viewer: Principal, days: int, last_day: date | None = None
) -> list[RefusalCount]:
    """Refused entries (any action) per check over the `days` Shanghai days ending with `last_day`
    (default today), most frequent first, as `viewer` may see them (`readable_by`). One GROUP BY."""
    scope = readable_by(viewer)
    window = day_window(days=days, last_day=last_day)
    check = sa.func.coalesce(AuditEntry.detail["check"].astext, AuditEntry.reason, "unknown").label("check")
    q = (
        sa.select(
            check,
            sa.func.count(),
            sa.func.count(sa.distinct(AuditEntry.institution_id)),
            sa.func.max(AuditEntry.at),
        )
        .where(scope, AuditEntry.outcome == "refused", AuditEntry.at >= window.since, AuditEntry.at < window.until)
        .group_by(check)
        .order_by(sa.func.count().desc(), check)
    )
    return [
        RefusalCount(check=c, refusals=int(n), institutions=int(i), last_at=last)
        for c, n, i, last in session.execute(q)
    ]


# ---------------------------------------------------------------- inclusion proofs


def inclusion_proof(session: Session, *, entry_id: int, viewer: Principal | None = None) -> dict[str, Any]:
    """The proof that an entry is in its sealed block: check it with `chain.verify_proof`
    against the block hash published for that height.

    With `viewer`, an entry the viewer may not see is answered as not found.
    """
    if viewer is not None:
        entry = get_entry(session, viewer=viewer, entry_id=entry_id)
    else:
        found = session.get(AuditEntry, entry_id)
        if found is None:
            raise NotFound(f"no audit entry {entry_id}", entry_id=entry_id)
        entry = found
    session.refresh(entry, ["block_height", "block_position"])
    if entry.block_height is None or entry.block_position is None:
        raise AuditEntryNotSealed(
            f"audit entry {entry_id} is not sealed into a block yet; the sealer runs every few "
            "seconds, ask again shortly",
            entry_id=entry_id,
        )
    block = session.get(AuditBlock, entry.block_height)
    if block is None:
        raise NotFound(
            f"audit entry {entry_id} names block {entry.block_height}, which does not exist; "
            "run `datazone audit verify`",
            entry_id=entry_id,
        )
    t = _entry_table()
    rows = (
        session.execute(sa.select(t).where(t.c.block_height == block.height).order_by(t.c.block_position))
        .mappings()
        .all()
    )
    index = next(i for i, r in enumerate(rows) if r["id"] == entry_id)
    leaves = [chain.leaf_hash(chain.entry_content(r)) for r in rows]
    content = chain.entry_content(rows[index])
    return {
        "entry_id": entry_id,
        "entry": content,
        "leaf_hash": leaves[index].hex(),
        "position": rows[index]["block_position"],
        "audit_path": [{"side": s.side, "hash": s.hash.hex()} for s in chain.audit_path(leaves, index)],
        "block": block_header(block),
    }
