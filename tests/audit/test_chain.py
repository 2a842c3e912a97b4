"""The chain maths against an independent computation: RFC 6962's recursive definition,
hand-built small trees, and the documented block-hash byte layout."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from datazone.audit import chain


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 section 2.1 writes it (recursive split at a power of two)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sha(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:]))


def rfc6962_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962 section 2.1.1 (sibling hashes, nearest first)."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*rfc6962_path(m, leaves[:k]), rfc6962_root(leaves[k:])]
    return [*rfc6962_path(m - k, leaves[k:]), rfc6962_root(leaves[:k])]


def leaves(n: int) -> list[bytes]:
    return [sha(b"\x00" + f"entry {i}".encode()) for i in range(n)]


def test_small_trees_by_hand() -> None:
    a, b, c, d, e = leaves(5)

    def node(x: bytes, y: bytes) -> bytes:
        return sha(b"\x01" + x + y)

    assert chain.merkle_root([a]) == a
    assert chain.merkle_root([a, b]) == node(a, b)
    # odd node promoted: c is NOT paired with itself
    assert chain.merkle_root([a, b, c]) == node(node(a, b), c)
    assert chain.merkle_root([a, b, c]) != node(node(a, b), node(c, c))
    assert chain.merkle_root([a, b, c, d, e]) == node(node(node(a, b), node(c, d)), e)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 100])
def test_root_and_every_path_match_rfc6962(n: int) -> None:
    ls = leaves(n)
    root = chain.merkle_root(ls)
    assert root == rfc6962_root(ls)
    for m in range(n):
        path = chain.audit_path(ls, m)
        assert [s.hash for s in path] == rfc6962_path(m, ls)
        assert chain.verify_inclusion(leaf_hash=ls[m], audit_path=path, merkle_root=root)
        # the same path does not prove another leaf, nor this leaf under another root
        other = ls[(m + 1) % n]
        if n > 1:
            assert not chain.verify_inclusion(leaf_hash=other, audit_path=path, merkle_root=root)
        assert not chain.verify_inclusion(leaf_hash=ls[m], audit_path=path, merkle_root=sha(b"x"))


def test_path_sides_matter() -> None:
    ls = leaves(7)
    path = chain.audit_path(ls, 4)
    flipped = [chain.PathStep("right" if s.side == "left" else "left", s.hash) for s in path]
    assert not chain.verify_inclusion(leaf_hash=ls[4], audit_path=flipped, merkle_root=chain.merkle_root(ls))


def test_empty_block_and_bad_index_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        chain.merkle_root([])
    with pytest.raises(IndexError, match="outside a tree of 3"):
        chain.audit_path(leaves(3), 3)


def entry_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": 7,
        "at": datetime(2026, 11, 21, 16, 30, 0, 5, tzinfo=timezone(timedelta(hours=8))),
        "actor_id": 3,
        "actor_name": "市场监督管理局",
        "actor_kind": "department",
        "action": "grant.create",
        "object_type": "grant",
        "object_id": "g-1",
        "purpose": "pre_loan",
        "entity_count": 0,
        "entities": [],
        "outcome": "ok",
        "reason": None,
        "detail": {"b": 1, "a": [1, 2]},
        "supplier_ids": ["market"],
        "institution_id": None,
        "block_height": 2,
        "block_position": 0,
    }
    row.update(overrides)
    return row


def test_leaf_is_sha256_of_the_documented_canonical_json() -> None:
    content = chain.entry_content(entry_row())
    # the time is written in UTC with microseconds, whatever zone it was read in
    assert content["at"] == "2026-11-21T08:30:00.000005+00:00"
    expected_json = (
        '{"action":"grant.create","actor_id":3,"actor_kind":"department","actor_name":"市场监督管理局",'
        '"at":"2026-11-21T08:30:00.000005+00:00","block_height":2,"block_position":0,'
        '"detail":{"a":[1,2],"b":1},"entities":[],"entity_count":0,"id":7,"institution_id":null,'
        '"object_id":"g-1","object_type":"grant","outcome":"ok","purpose":"pre_loan","reason":null,'
        '"supplier_ids":["market"]}'
    )
    assert chain.canonical_json(content) == expected_json.encode("utf-8")
    assert chain.leaf_hash(content) == sha(b"\x00" + expected_json.encode("utf-8"))
    # every member counts, including where the entry sits
    changes: list[dict[str, object]] = [
        {"outcome": "refused"},
        {"block_position": 1},
        {"block_height": 3},
        {"detail": {}},
    ]
    for change in changes:
        assert chain.leaf_hash(chain.entry_content(entry_row(**change))) != chain.leaf_hash(content)
    with pytest.raises(ValueError, match="timezone-aware"):
        chain.entry_content(entry_row(at=datetime(2026, 1, 1)))


def test_block_hash_follows_the_documented_byte_layout() -> None:
    sealed_at = datetime(2026, 11, 21, 8, 30, 0, 123456, tzinfo=UTC)
    prev, root = sha(b"prev"), sha(b"root")
    layout = (
        b"\x02"
        + (5).to_bytes(8, "big")
        + prev
        + root
        + (3).to_bytes(8, "big")
        + (100).to_bytes(8, "big")
        + (102).to_bytes(8, "big")
        + int(sealed_at.timestamp() * 1_000_000).to_bytes(8, "big", signed=True)
    )
    assert len(layout) == 105
    got = chain.block_hash(
        height=5,
        prev_hash=prev,
        merkle_root=root,
        entry_count=3,
        first_entry_id=100,
        last_entry_id=102,
        sealed_at=sealed_at,
    )
    assert got == sha(layout)
    # the same instant in another zone hashes the same
    assert got == chain.block_hash(
        height=5,
        prev_hash=prev,
        merkle_root=root,
        entry_count=3,
        first_entry_id=100,
        last_entry_id=102,
        sealed_at=sealed_at.astimezone(timezone(timedelta(hours=8))),
    )
    with pytest.raises(ValueError, match="32 bytes"):
        chain.block_hash(
            height=0,
            prev_hash=b"short",
            merkle_root=root,
            entry_count=1,
            first_entry_id=1,
            last_entry_id=1,
            sealed_at=sealed_at,
        )


def test_canonical_json_keeps_chinese_as_utf8() -> None:
    assert (
        chain.canonical_json({"名": "值"})
        == json.dumps({"名": "值"}, ensure_ascii=False).replace(" ", "").encode()
    )
