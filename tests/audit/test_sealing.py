"""Sealing on a real PostgreSQL: blocks, concurrency, racing sealers, the background thread."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.audit import chain, service
from datazone.audit.models import AuditBlock, AuditEntry
from datazone.audit.sealer import AuditSealer
from datazone.db import Database


def record_many(db: Database, n: int, *, tag: str = "t") -> list[int]:
    with db.unit_of_work() as s:
        return [
            service.record(
                s,
                actor=None,
                actor_name="test",
                action="test.event",
                object_type="test",
                object_id=f"{tag}-{i}",
                detail={"i": i, "名": "值"},
                supplier_ids=["dept-a"],
            ).id
            for i in range(n)
        ]


def placements(db: Database) -> list[tuple[int, int | None, int | None]]:
    with db.unit_of_work() as s:
        rows = s.execute(
            sa.select(AuditEntry.id, AuditEntry.block_height, AuditEntry.block_position).order_by(
                AuditEntry.id
            )
        )
        return [(r.id, r.block_height, r.block_position) for r in rows]


def blocks(db: Database) -> list[AuditBlock]:
    with db.unit_of_work() as s:
        return list(s.scalars(sa.select(AuditBlock).order_by(AuditBlock.height)))


def seal_all(db: Database, max_entries: int = 5000) -> int:
    n = 0
    while True:
        with db.unit_of_work() as s:
            if service.seal_pending(s, max_entries=max_entries) is None:
                return n
        n += 1


def verify(db: Database) -> service.ChainReport:
    with db.unit_of_work() as s:
        return service.verify_chain(s)


def test_record_seal_verify(audit_db: Database) -> None:
    ids = record_many(audit_db, 7)
    assert verify(audit_db) == service.ChainReport(
        ok=True, blocks_checked=0, entries_checked=0, unsealed_entries=7, first_bad_block=None, problem=None
    )
    assert seal_all(audit_db, max_entries=3) == 3
    assert placements(audit_db) == [
        (ids[0], 0, 0), (ids[1], 0, 1), (ids[2], 0, 2),
        (ids[3], 1, 0), (ids[4], 1, 1), (ids[5], 1, 2),
        (ids[6], 2, 0),
    ]  # fmt: skip
    bs = blocks(audit_db)
    assert [(b.height, b.entry_count, b.first_entry_id, b.last_entry_id) for b in bs] == [
        (0, 3, ids[0], ids[2]),
        (1, 3, ids[3], ids[5]),
        (2, 1, ids[6], ids[6]),
    ]
    # genesis links to zeros; each block to the previous block's hash
    assert bs[0].prev_hash == bytes(32)
    assert bs[1].prev_hash == bs[0].block_hash and bs[2].prev_hash == bs[1].block_hash
    report = verify(audit_db)
    assert (report.ok, report.blocks_checked, report.entries_checked, report.unsealed_entries) == (
        True,
        3,
        7,
        0,
    )
    # nothing pending: no empty block
    with audit_db.unit_of_work() as s:
        assert service.seal_pending(s, max_entries=10) is None
    assert len(blocks(audit_db)) == 3


def test_the_stored_root_is_recomputable_from_the_rows(audit_db: Database) -> None:
    """An independent check of what the sealer wrote, straight from SQL rows."""
    record_many(audit_db, 5)
    seal_all(audit_db)
    with audit_db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM audit_entry ORDER BY block_position")).mappings().all()
        block = conn.execute(sa.text("SELECT * FROM audit_block")).mappings().one()
    leaves = [chain.leaf_hash(chain.entry_content(r)) for r in rows]
    assert bytes(block["merkle_root"]) == chain.merkle_root(leaves)
    assert bytes(block["block_hash"]) == chain.block_hash(
        height=0,
        prev_hash=bytes(32),
        merkle_root=chain.merkle_root(leaves),
        entry_count=5,
        first_entry_id=rows[0]["id"],
        last_entry_id=rows[-1]["id"],
        sealed_at=block["sealed_at"],
    )


def test_seal_marks_entries_already_loaded_in_the_session(session: Session) -> None:
    entry = service.record(session, actor=None, action="test.event", object_type="test", object_id="x")
    block = service.seal_pending(session, max_entries=100_000)
    assert block is not None
    assert entry.block_height == block.height and entry.block_position is not None
    with pytest.raises(ValueError, match="at least 1"):
        service.seal_pending(session, max_entries=0)


def test_record_never_waits_on_a_sealer(audit_db: Database) -> None:
    record_many(audit_db, 3)
    sealer = audit_db.session()
    try:
        assert (
            service.seal_pending(sealer, max_entries=10) is not None
        )  # lock held, rows updated, not committed
        with audit_db.unit_of_work() as s:
            # a request would fail here rather than wait, if record() touched anything the sealer holds
            s.execute(sa.text("SET LOCAL lock_timeout = '500ms'"))
            started = time.monotonic()
            service.record(s, actor=None, action="test.event", object_type="test", object_id="during-seal")
        assert time.monotonic() - started < 0.5
        sealer.commit()
    finally:
        sealer.close()
    assert seal_all(audit_db) == 1
    assert verify(audit_db).ok


def test_concurrent_writers_and_a_transaction_held_open_across_seals(audit_db: Database) -> None:
    held_recorded = threading.Event()
    release_held = threading.Event()
    held_id: list[int] = []
    errors: list[BaseException] = []

    def held_open() -> None:
        try:
            with audit_db.unit_of_work() as s:
                held_id.append(
                    service.record(s, actor=None, action="test.held", object_type="test", object_id="held").id
                )
                held_recorded.set()
                assert release_held.wait(30)
        except BaseException as exc:
            errors.append(exc)
            held_recorded.set()

    def writer(k: int) -> None:
        try:
            for i in range(5):
                record_many(audit_db, 2, tag=f"w{k}-{i}")
        except BaseException as exc:
            errors.append(exc)

    holder = threading.Thread(target=held_open)
    holder.start()
    assert held_recorded.wait(30)
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for w in writers:
        w.start()
    sealed_while_open = 0
    while any(w.is_alive() for w in writers):
        sealed_while_open += seal_all(audit_db, max_entries=7)
    for w in writers:
        w.join()
    sealed_while_open += seal_all(audit_db, max_entries=7)
    # the held entry has a smaller id than sealed ones, yet it is still waiting, not skipped
    assert sealed_while_open > 0
    by_id = {i: (h, p) for i, h, p in placements(audit_db)}
    assert held_id[0] not in by_id  # still uncommitted: invisible to the sealer, left NULL
    assert all(h is not None for h, _ in by_id.values()) and min(by_id) > held_id[0]
    release_held.set()
    holder.join()
    assert not errors
    seal_all(audit_db, max_entries=7)

    final = placements(audit_db)
    assert len(final) == 1 + 6 * 5 * 2
    assert all(h is not None for _, h, _ in final)
    # sealed exactly once: every (height, position) distinct; heights contiguous from 0
    slots = [(h, p) for _, h, p in final]
    assert len(set(slots)) == len(slots)
    heights = [b.height for b in blocks(audit_db)]
    assert heights == list(range(len(heights)))
    assert dict((i, h) for i, h, _ in final)[held_id[0]] == heights[-1]
    report = verify(audit_db)
    assert report.ok and report.entries_checked == 61 and report.unsealed_entries == 0


def test_a_second_sealer_skips_while_the_first_holds_the_lock(audit_db: Database) -> None:
    record_many(audit_db, 4)
    first, second = audit_db.session(), audit_db.session()
    try:
        block = service.seal_pending(first, max_entries=2)
        assert block is not None and block.height == 0
        assert service.seal_pending(second, max_entries=2) is None  # does not wait, does not fork
        second.rollback()
        first.commit()
        again = service.seal_pending(second, max_entries=2)
        assert again is not None and again.height == 1 and again.prev_hash == block.block_hash
        second.commit()
    finally:
        first.close()
        second.close()
    assert verify(audit_db).ok


def test_two_sealers_racing_never_fork_or_duplicate(audit_db: Database) -> None:
    record_many(audit_db, 200)
    start = threading.Barrier(2)
    made: list[list[int]] = [[], []]
    errors: list[BaseException] = []

    def race(k: int) -> None:
        try:
            start.wait()
            for _ in range(200):
                with audit_db.unit_of_work() as s:
                    block = service.seal_pending(s, max_entries=3)
                    if block is not None:
                        made[k].append(block.height)
                if block is None and service_pending(audit_db) == 0:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    all_heights = sorted(made[0] + made[1])
    assert all_heights == list(range(67))  # ceil(200 / 3), each height sealed by exactly one sealer
    assert [b.height for b in blocks(audit_db)] == all_heights
    slots = [(h, p) for _, h, p in placements(audit_db)]
    assert None not in {h for h, _ in slots} and len(set(slots)) == 200
    assert verify(audit_db).ok


def service_pending(db: Database) -> int:
    with db.unit_of_work() as s:
        return service.pending_count(s)


def test_the_primary_key_stops_a_second_block_at_one_height(audit_db: Database) -> None:
    record_many(audit_db, 1)
    seal_all(audit_db)
    b = blocks(audit_db)[0]
    with pytest.raises(sa.exc.IntegrityError), audit_db.unit_of_work() as s:
        s.add(
            AuditBlock(
                height=0,
                prev_hash=bytes(32),
                merkle_root=bytes(32),
                entry_count=1,
                first_entry_id=b.first_entry_id,
                last_entry_id=b.last_entry_id,
                sealed_at=b.sealed_at,
                block_hash=b"\x01" * 32,
            )
        )


def wait_for(predicate: object, timeout: float = 20) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_background_sealer_seals_in_bounded_blocks(audit_db: Database) -> None:
    sealer = AuditSealer(audit_db, interval_seconds=0.1, max_entries=2)
    sealer.start()
    try:
        assert sealer.running
        record_many(audit_db, 5)  # one commit: drained at once into blocks of 2, 2, 1
        wait_for(lambda: service_pending(audit_db) == 0)
        record_many(audit_db, 1, tag="later")
        wait_for(lambda: service_pending(audit_db) == 0)
    finally:
        sealer.stop()
    assert not sealer.running
    assert [b.entry_count for b in blocks(audit_db)] == [2, 2, 1, 1]
    assert verify(audit_db).ok


def test_background_sealer_survives_errors(
    audit_db: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.engine import make_url

    missing = Database(make_url(database_url).set(database="no_such_database_xyz").render_as_string(False))
    sealer = AuditSealer(missing, interval_seconds=0.05)
    with caplog.at_level(logging.WARNING, logger="datazone.audit.sealer"):
        sealer.start()
        try:
            wait_for(lambda: len([r for r in caplog.records if "audit sealing failed" in r.message]) >= 2)
            assert sealer.running  # it keeps trying
        finally:
            sealer.stop()
            missing.dispose()
    assert all("password" not in r.getMessage().lower() for r in caplog.records)
    with pytest.raises(ValueError, match="positive"):
        AuditSealer(audit_db, interval_seconds=-1)
    disabled = AuditSealer(audit_db, interval_seconds=0)
    disabled.start()
    assert not disabled.running
    disabled.stop()


def test_inclusion_proof_checks_out_against_the_published_block(audit_db: Database) -> None:
    ids = record_many(audit_db, 6)
    seal_all(audit_db, max_entries=5)
    with audit_db.unit_of_work() as s:
        published = {b["height"]: b["block_hash"] for b in service.list_blocks(s)}
        for entry_id in ids:
            proof = service.inclusion_proof(s, entry_id=entry_id)
            assert chain.verify_proof(proof, published_block_hash=published[proof["block"]["height"]])
        proof = service.inclusion_proof(s, entry_id=ids[2])
    assert proof["position"] == 2 and len(proof["audit_path"]) == 3  # 5 leaves: depth 3
    assert proof["entry"]["detail"] == {"i": 2, "名": "值"}
    # a proof for altered content, or against another published block, fails
    forged = {**proof, "entry": {**proof["entry"], "outcome": "refused"}}
    assert not chain.verify_proof(forged)
    assert not chain.verify_proof(proof, published_block_hash=published[1])


def test_inclusion_proof_of_unsealed_or_missing_entry(audit_db: Database) -> None:
    from datazone.errors import NotFound

    (entry_id,) = record_many(audit_db, 1)
    with audit_db.unit_of_work() as s:
        with pytest.raises(service.AuditEntryNotSealed, match="not sealed into a block yet"):
            service.inclusion_proof(s, entry_id=entry_id)
        with pytest.raises(NotFound):
            service.inclusion_proof(s, entry_id=entry_id + 1000)
