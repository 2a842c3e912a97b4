"""The audit chain's hashing: pure functions, no database, so anyone can re-implement them.

Format version 1. All hashes are SHA-256; hex is lower case.

Entry content (one leaf). The JSON object with exactly these members, taken from the
stored entry:

    id, at, actor_id, actor_name, actor_kind, action, object_type, object_id, purpose,
    entity_count, entities, outcome, reason, detail, supplier_ids, institution_id,
    block_height, block_position

`at` is the entry's time in UTC as ISO 8601 with microseconds and the offset written
`+00:00` (`2026-11-21T08:30:00.123456+00:00`); `entities` and `supplier_ids` are JSON
arrays of strings in stored order; `detail` is the stored JSON object; absent values are
`null`. Canonical bytes = UTF-8 of
`json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.

    leaf        = SHA-256(0x00 || canonical bytes)
    node        = SHA-256(0x01 || left || right)

Merkle tree over a block's leaves in position order, as in RFC 6962 section 2.1: the
root of n > 1 leaves is node(root(first k), root(rest)) with k the largest power of two
below n; building it level by level, an odd node at the end of a level is promoted
unchanged (never paired with a copy of itself). A block holds at least one entry.

Block hash = SHA-256 of these 105 bytes (integers big-endian):

    0x02                      1 byte, domain separation from leaves and nodes
    height                    8 bytes unsigned
    prev_hash                 32 bytes (block height-1's hash; 32 zero bytes for block 0)
    merkle_root               32 bytes
    entry_count               8 bytes unsigned
    first_entry_id            8 bytes unsigned (entry at position 0)
    last_entry_id             8 bytes unsigned (entry at position entry_count-1)
    sealed_at                 8 bytes signed: microseconds since 1970-01-01T00:00:00Z

An entry's position and block height are inside its leaf, so moving or reordering
entries changes the root; each block hash covers the previous one, so editing,
removing or reordering blocks breaks every later link, and a chain rewritten to hide
that no longer matches roots published before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

GENESIS_PREV_HASH = bytes(32)
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
BLOCK_PREFIX = b"\x02"

ENTRY_FIELDS = (
    "id",
    "at",
    "actor_id",
    "actor_name",
    "actor_kind",
    "action",
    "object_type",
    "object_id",
    "purpose",
    "entity_count",
    "entities",
    "outcome",
    "reason",
    "detail",
    "supplier_ids",
    "institution_id",
    "block_height",
    "block_position",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BLOCK_LAYOUT = struct.Struct(">1sQ32s32sQQQq")


class PathStep(NamedTuple):
    """One sibling on the way from a leaf to the root: `side` is where the sibling sits."""

    side: Literal["left", "right"]
    hash: bytes


def timestamp_text(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def epoch_microseconds(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def entry_content(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The hashed content of a stored entry (a mapping with the column names)."""
    content = {name: row[name] for name in ENTRY_FIELDS}
    content["at"] = timestamp_text(row["at"])
    content["entities"] = list(row["entities"] or [])
    content["supplier_ids"] = list(row["supplier_ids"] or [])
    return content


def canonical_json(content: Mapping[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def leaf_hash(content: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + canonical_json(content)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        raise ValueError("a block holds at least one entry")
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # promoted, not duplicated: no second tree has the same root
        level = paired
    return level[0]


def audit_path(leaves: Sequence[bytes], index: int) -> list[PathStep]:
    """The siblings from leaf `index` up to the root (RFC 6962 audit path), nearest first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside a tree of {len(leaves)}")
    path: list[PathStep] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(PathStep("left" if sibling < index else "right", level[sibling]))
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
        index //= 2
    return path


def root_from_path(leaf: bytes, path: Sequence[PathStep]) -> bytes:
    current = leaf
    for step in path:
        current = node_hash(step.hash, current) if step.side == "left" else node_hash(current, step.hash)
    return current


def verify_inclusion(*, leaf_hash: bytes, audit_path: Sequence[PathStep], merkle_root: bytes) -> bool:
    """True when the path leads from `leaf_hash` to `merkle_root`."""
    return hmac.compare_digest(root_from_path(leaf_hash, audit_path), merkle_root)


def block_hash(
    *,
    height: int,
    prev_hash: bytes,
    merkle_root: bytes,
    entry_count: int,
    first_entry_id: int,
    last_entry_id: int,
    sealed_at: datetime,
) -> bytes:
    if len(prev_hash) != 32 or len(merkle_root) != 32:
        raise ValueError("prev_hash and merkle_root are 32 bytes")
    packed = _BLOCK_LAYOUT.pack(
        BLOCK_PREFIX,
        height,
        prev_hash,
        merkle_root,
        entry_count,
        first_entry_id,
        last_entry_id,
        epoch_microseconds(sealed_at),
    )
    return hashlib.sha256(packed).digest()


def verify_proof(proof: Mapping[str, Any], *, published_block_hash: str | None = None) -> bool:
    """Check an inclusion proof as served by `GET /v1/audit/entries/{id}/proof`.

    Recomputes the leaf from the entry's content, folds the audit path into the root,
    recomputes the block hash from the block header, and, given the block hash from
    roots published earlier, checks it is the same block.
    """
    block = proof["block"]
    leaf = leaf_hash(proof["entry"])
    if leaf.hex() != proof["leaf_hash"]:
        return False
    path = [PathStep(step["side"], bytes.fromhex(step["hash"])) for step in proof["audit_path"]]
    root = bytes.fromhex(block["merkle_root"])
    if not verify_inclusion(leaf_hash=leaf, audit_path=path, merkle_root=root):
        return False
    recomputed = block_hash(
        height=block["height"],
        prev_hash=bytes.fromhex(block["prev_hash"]),
        merkle_root=root,
        entry_count=block["entry_count"],
        first_entry_id=block["first_entry_id"],
        last_entry_id=block["last_entry_id"],
        sealed_at=datetime.fromisoformat(block["sealed_at"]),
    )
    if recomputed.hex() != block["block_hash"]:
        return False
    return published_block_hash is None or hmac.compare_digest(published_block_hash, block["block_hash"])
