"""Tampering done directly in the database, caught by `datazone audit verify` run as a subprocess.

The chain under attack: 10 entries sealed 3 to a block, so blocks 0, 1, 2 hold entries
1-3, 4-6, 7-9 at positions 0-2 and block 3 holds entry 10 alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from datazone.audit import chain, service
from datazone.config import Settings
from datazone.db import Database
from tests.conftest import run_cli

TAMPERING: dict[str, tuple[list[str], int, str]] = {
    # name: (SQL, the block verify must name, words its message must hold)
    "edit detail": (["UPDATE audit_entry SET detail = '{\"i\": 99}' WHERE id = 5"], 1, "Merkle root"),
    "edit outcome": (["UPDATE audit_entry SET outcome = 'refused' WHERE id = 9"], 2, "Merkle root"),
    "edit time": (
        ["UPDATE audit_entry SET at = at + interval '1 microsecond' WHERE id = 1"],
        0,
        "Merkle root",
    ),
    "delete entry": (["DELETE FROM audit_entry WHERE id = 5"], 1, "no entry at position 1"),
    "delete last entry of a block": (["DELETE FROM audit_entry WHERE id = 6"], 1, "holds 2 entries"),
    "delete the only entry of the last block": (
        ["DELETE FROM audit_entry WHERE id = 10"],
        3,
        "no entries left",
    ),
    "unseal entry": (
        ["UPDATE audit_entry SET block_height = NULL, block_position = NULL WHERE id = 8"],
        2,
        "",
    ),
    "swap positions": (
        [
            "UPDATE audit_entry SET block_position = 9 WHERE id = 7",
            "UPDATE audit_entry SET block_position = 0 WHERE id = 8",
            "UPDATE audit_entry SET block_position = 1 WHERE id = 7",
        ],
        2,
        "Merkle root",
    ),
    "move entry to an earlier block": (
        ["UPDATE audit_entry SET block_height = 0, block_position = 3 WHERE id = 8"],
        0,
        "holds 4 entries but was sealed with 3 (an entry was added or moved here)",
    ),
    "move entry to a later block": (
        ["UPDATE audit_entry SET block_height = 2, block_position = 3 WHERE id = 3"],
        0,
        "holds 2 entries",
    ),
    "move entry into a slot of another block": (
        [
            "DELETE FROM audit_entry WHERE id = 2",
            "UPDATE audit_entry SET block_height = 0, block_position = 1 WHERE id = 5",
        ],
        0,
        "Merkle root",
    ),
    "delete a block": (["DELETE FROM audit_block WHERE height = 1"], 1, "block 1 is missing"),
    "delete the last block": (
        ["DELETE FROM audit_block WHERE height = 3"],
        3,
        "entry 10 is sealed into block 3, which does not exist",
    ),
    "swap block heights": (
        [
            "UPDATE audit_block SET height = -1 WHERE height = 1",
            "UPDATE audit_block SET height = 1 WHERE height = 2",
            "UPDATE audit_block SET height = 2 WHERE height = -1",
        ],
        1,
        "prev_hash",
    ),
    "edit a block's sealed_at": (
        ["UPDATE audit_block SET sealed_at = sealed_at - interval '1 second' WHERE height = 2"],
        2,
        "block hash",
    ),
    "edit a block's root to match nothing": (
        ["UPDATE audit_block SET merkle_root = decode(repeat('00', 32), 'hex') WHERE height = 0"],
        0,
        "Merkle root",
    ),
}


def build_chain(db: Database) -> None:
    with db.unit_of_work() as s:
        for i in range(10):
            service.record(
                s,
                actor=None,
                actor_name="test",
                action="test.event",
                object_type="test",
                object_id=f"e{i}",
                detail={"i": i},
                supplier_ids=["dept-a"],
            )
    while True:
        with db.unit_of_work() as s:
            if service.seal_pending(s, max_entries=3) is None:
                break
    with db.engine.connect() as conn:
        # the ids the SQL above relies on
        placed = conn.execute(sa.text("SELECT id, block_height, block_position FROM audit_entry ORDER BY id"))
        assert [tuple(r) for r in placed] == [(i + 1, i // 3, i % 3) for i in range(10)]


def tamper(db: Database, statements: list[str]) -> None:
    with db.engine.begin() as conn:
        for sql in statements:
            conn.execute(sa.text(sql))


def test_untouched_chain_verifies(audit_db: Database, audit_settings: Settings) -> None:
    build_chain(audit_db)
    done = run_cli(audit_settings, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit chain intact: 4 blocks, 10 entries sealed" in done.stdout
    assert "0 entries waiting" in done.stdout


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_names_the_first_bad_block(audit_db: Database, audit_settings: Settings, name: str) -> None:
    statements, bad_block, words = TAMPERING[name]
    build_chain(audit_db)
    tamper(audit_db, statements)
    done = run_cli(audit_settings, "audit", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"BROKEN at block {bad_block}:" in done.stdout, done.stdout
    assert words in done.stdout
    assert "Traceback" not in done.stderr


def rewrite_from(db: Database, height: int) -> None:
    """What a careful forger does: recompute every root and hash from `height` on."""
    with db.engine.begin() as conn:
        prev = bytes(32)
        blocks = conn.execute(sa.text("SELECT * FROM audit_block ORDER BY height")).mappings().all()
        for b in blocks:
            if b["height"] >= height:
                rows = (
                    conn.execute(
                        sa.text("SELECT * FROM audit_entry WHERE block_height = :h ORDER BY block_position"),
                        {"h": b["height"]},
                    )
                    .mappings()
                    .all()
                )
                root = chain.merkle_root([chain.leaf_hash(chain.entry_content(r)) for r in rows])
                new_hash = chain.block_hash(
                    height=b["height"],
                    prev_hash=prev,
                    merkle_root=root,
                    entry_count=len(rows),
                    first_entry_id=rows[0]["id"],
                    last_entry_id=rows[-1]["id"],
                    sealed_at=b["sealed_at"],
                )
                conn.execute(
                    sa.text(
                        "UPDATE audit_block SET prev_hash = :p, merkle_root = :r, block_hash = :bh, "
                        "entry_count = :n, first_entry_id = :f, last_entry_id = :l WHERE height = :h"
                    ),
                    {
                        "p": prev,
                        "r": root,
                        "bh": new_hash,
                        "n": len(rows),
                        "f": rows[0]["id"],
                        "l": rows[-1]["id"],
                        "h": b["height"],
                    },
                )
                prev = new_hash
            else:
                prev = bytes(b["block_hash"])


def test_published_roots_catch_a_chain_rewritten_after_the_fact(
    audit_db: Database, audit_settings: Settings, tmp_path: Path
) -> None:
    build_chain(audit_db)
    roots = tmp_path / "roots.json"
    exported = run_cli(audit_settings, "audit", "roots", "--output", str(roots))
    assert exported.returncode == 0, exported.stderr
    published = json.loads(roots.read_text())
    assert [b["height"] for b in published] == [0, 1, 2, 3]
    assert all(len(b["block_hash"]) == 64 for b in published)

    ok = run_cli(audit_settings, "audit", "verify", "--roots", str(roots))
    assert ok.returncode == 0 and "4 match the published roots" in ok.stdout, ok.stdout + ok.stderr

    tamper(audit_db, ["UPDATE audit_entry SET outcome = 'refused' WHERE id = 5"])
    rewrite_from(audit_db, 1)
    alone = run_cli(audit_settings, "audit", "verify")
    assert alone.returncode == 0, alone.stdout  # consistent on its own: only the roots can tell
    caught = run_cli(audit_settings, "audit", "verify", "--roots", str(roots))
    assert caught.returncode == 1
    assert "BROKEN at block 1:" in caught.stdout and "differs from the published root" in caught.stdout


def test_published_roots_catch_a_truncated_chain(
    audit_db: Database, audit_settings: Settings, tmp_path: Path
) -> None:
    build_chain(audit_db)
    with audit_db.unit_of_work() as s:
        published = service.list_blocks(s)
    # the last block removed and its entry sent back to pending: the rest is self-consistent
    tamper(
        audit_db,
        [
            "DELETE FROM audit_block WHERE height = 3",
            "UPDATE audit_entry SET block_height = NULL, block_position = NULL WHERE id = 10",
        ],
    )
    with audit_db.unit_of_work() as s:
        assert service.verify_chain(s).ok
        report = service.verify_chain(s, roots=published)
    assert (report.ok, report.first_bad_block) == (False, 3)
    assert "published but is missing" in (report.problem or "")


def test_bad_roots_files_get_a_clear_error(
    audit_db: Database, audit_settings: Settings, tmp_path: Path
) -> None:
    build_chain(audit_db)
    missing = run_cli(audit_settings, "audit", "verify", "--roots", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json: no such file" in missing.stderr

    garbled = tmp_path / "garbled.json"
    garbled.write_text("[{")
    done = run_cli(audit_settings, "audit", "verify", "--roots", str(garbled))
    assert done.returncode == 2 and "not JSON" in done.stderr and "Traceback" not in done.stderr

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"height": -1, "block_hash": "zz"}]))
    done = run_cli(audit_settings, "audit", "verify", "--roots", str(wrong))
    assert done.returncode == 2, done.stdout
    assert "roots[0].height" in done.stderr and "roots[0].block_hash" in done.stderr
    assert "roots[0].merkle_root" in done.stderr  # every problem listed, not just the first
    assert "Traceback" not in done.stderr


def test_seal_command_seals_everything_pending(audit_db: Database, audit_settings: Settings) -> None:
    with audit_db.unit_of_work() as s:
        for i in range(4):
            service.record(s, actor=None, action="test.event", object_type="test", object_id=str(i))
    done = run_cli(audit_settings, "audit", "seal", DATAZONE_AUDIT_BLOCK_MAX_ENTRIES="3")
    assert done.returncode == 0, done.stderr
    assert "sealed 4 entries into 2 block(s): height 0..1" in done.stdout
    again = run_cli(audit_settings, "audit", "seal")
    assert again.returncode == 0 and "nothing sealed" in again.stdout
    with audit_db.unit_of_work() as s:
        assert service.verify_chain(s).entries_checked == 4
