"""Labeled PSI (带标签的隐私求交): the product's fields for matched enterprises only.

The zone seals each enterprise's label (the fields the product authorizes)
under a key derived from that enterprise's OPRF output, and sends the whole
table; the institution, holding the outputs of its own items only (through the
OPRF), can find and open exactly the entries of the enterprises it matched.
The zone never learns which ones: the institution downloads everything and
looks up locally (Password Checkup's design, keyword PIR by download).

For an output o (32 bytes, `oprf`):
    key = HKDF-SHA256(o, info="datazone/psi/v1/label-key", 32 bytes)
    tag = HKDF-SHA256(o, info="datazone/psi/v1/label-tag", 12 bytes)
    entry = tag | nonce (12, random) | length (u32 BE) | AES-256-GCM(key, nonce, label || 80 00.., aad=tag)
Table: "DZLT" | version (1) | entry count (u32 BE) | entries sorted by tag.

Every label is padded (ISO/IEC 7816-4: 0x80 then zeros) to the longest one, so
the table tells the institution nothing about the labels of the enterprises it
did not match (not even a name's length), and entries have one size, which lets
a reader index the table without walking it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# 96 bits: among 2.6 million entries and 10^5 lookups (2.6·10^11 ≈ 2^38 pairs) a
# false tag hit happens with probability about 2^-58, and two table entries share
# a tag with probability about 2^-54. A false hit would only cost one failed
# decryption (it is skipped), so the tag needs no more bits, and each byte less
# saves 2.6 MB of every download.
TAG_BYTES = 12
NONCE_BYTES = 12
GCM_TAG_BYTES = 16
MAGIC = b"DZLT"
VERSION = 1

_KEY_INFO = b"datazone/psi/v1/label-key"
_TAG_INFO = b"datazone/psi/v1/label-tag"
_OUTPUT_BYTES = 32
_HEADER = struct.Struct(">4sBI")
_ENTRY_HEAD = struct.Struct(">12s12sI")
# A sealed label is at least the padding byte and GCM's tag.
_MIN_CIPHERTEXT = 1 + GCM_TAG_BYTES


class MalformedLabelTable(ValueError):
    """The label table is truncated, garbled, or not a label table at all."""


def seal_labels(outputs: Sequence[bytes], labels: Sequence[bytes]) -> bytes:
    """The table sealing labels[i] under outputs[i], for the institution to download.

    One label per distinct output: a repeated output (the same item twice in the
    slice) is refused, since a lookup could not tell which label is meant.
    """
    if len(outputs) != len(labels):
        raise ValueError(f"{len(outputs)} outputs and {len(labels)} labels: they must pair one to one")
    if len(outputs) >= 2**32:
        raise ValueError("a label table holds fewer than 2^32 entries")
    _check_outputs(outputs)
    width = max((len(label) for label in labels), default=0)
    # A fresh random nonce per entry: a key repeats whenever the same item is
    # sealed again in the same key epoch (say, after an ingest changed its
    # label), and GCM must never see a key and nonce pair twice.
    nonces = os.urandom(NONCE_BYTES * len(outputs))
    sealed: list[tuple[bytes, int, bytes, bytes]] = []
    for index, (output, label) in enumerate(zip(outputs, labels, strict=True)):
        key, tag = _entry_key(output), _entry_tag(output)
        nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
        padded = label + b"\x80" + bytes(width - len(label))
        sealed.append((tag, index, nonce, AESGCM(key).encrypt(nonce, padded, tag)))
    sealed.sort()
    repeated = [
        (sealed[i][1], sealed[i + 1][1]) for i in range(len(sealed) - 1) if sealed[i][0] == sealed[i + 1][0]
    ]
    if repeated:
        pairs = ", ".join(f"{a} and {b}" for a, b in sorted(repeated)[:10])
        raise ValueError(
            f"{len(repeated)} outputs repeat an earlier one (positions {pairs}, counting from 0); "
            "seal one label per distinct item"
        )
    parts = [_HEADER.pack(MAGIC, VERSION, len(sealed))]
    for tag, _, nonce, ciphertext in sealed:
        parts.append(_ENTRY_HEAD.pack(tag, nonce, len(ciphertext)))
        parts.append(ciphertext)
    return b"".join(parts)


def open_labels(table: bytes, outputs: Sequence[bytes]) -> dict[int, bytes]:
    """For each position of `outputs` whose entry is in the table, its label.

    An entry whose tag matches but which does not decrypt (a false tag match, or
    a tampered entry) is skipped: only what the zone sealed under that output is
    ever returned.
    """
    _check_outputs(outputs)
    index = _TableIndex.read(table)
    if index.count == 0 or not outputs:
        return {}
    wanted = [_entry_tag(output) for output in outputs]
    positions = np.searchsorted(index.tags, np.frombuffer(b"".join(wanted), dtype=f"S{TAG_BYTES}"))
    found: dict[int, bytes] = {}
    for item, (output, tag, position) in enumerate(zip(outputs, wanted, positions.tolist(), strict=True)):
        if position >= index.count:
            continue
        offset = int(index.offsets[position])
        if table[offset : offset + TAG_BYTES] != tag:
            continue
        nonce = table[offset + TAG_BYTES : offset + TAG_BYTES + NONCE_BYTES]
        (length,) = struct.unpack_from(">I", table, offset + TAG_BYTES + NONCE_BYTES)
        start = offset + _ENTRY_HEAD.size
        try:
            padded = AESGCM(_entry_key(output)).decrypt(nonce, table[start : start + length], tag)
        except InvalidTag:
            continue
        label = padded.rstrip(b"\x00")
        if not label.endswith(b"\x80"):
            raise MalformedLabelTable(
                f"the entry at byte offset {offset} decrypts but its padding is malformed: the zone sealed it wrongly"
            )
        found[item] = label[:-1]
    return found


def label_table_stats(table: bytes) -> dict[str, int]:
    """Entries, total bytes, and the padded label size (the longest label plus one)."""
    index = _TableIndex.read(table)
    widest = int(index.lengths.max()) - GCM_TAG_BYTES if index.count else 0
    return {"entries": index.count, "bytes": len(table), "padded_label_bytes": widest}


@dataclass
class _TableIndex:
    count: int
    tags: npt.NDArray[np.bytes_]
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]

    @classmethod
    def read(cls, table: bytes) -> _TableIndex:
        if len(table) < _HEADER.size:
            raise MalformedLabelTable(
                f"the label table is {len(table)} bytes, shorter than its {_HEADER.size}-byte header: truncated"
            )
        magic, version, count = _HEADER.unpack_from(table, 0)
        if magic != MAGIC:
            raise MalformedLabelTable(
                "the data does not start with DZLT at byte offset 0: not a datazone label table"
            )
        if version != VERSION:
            raise MalformedLabelTable(
                f"the label table is version {version} (byte offset 4); this reader knows version {VERSION}"
            )
        index = cls._read_fixed(table, count) or cls._read_walking(table, count)
        index._check_sorted()
        return index

    @classmethod
    def _read_fixed(cls, table: bytes, count: int) -> _TableIndex | None:
        """The index of a table whose entries all have one size (what seal_labels
        writes), without a Python loop over 2.6 million entries; None otherwise."""
        head = _HEADER.size
        if count == 0 or len(table) < head + _ENTRY_HEAD.size:
            return None
        (length,) = struct.unpack_from(">I", table, head + TAG_BYTES + NONCE_BYTES)
        size = _ENTRY_HEAD.size + length
        if length < _MIN_CIPHERTEXT or len(table) != head + count * size:
            return None
        rows = np.frombuffer(table, dtype=np.uint8, offset=head).reshape(count, size)
        lengths = (
            np.ascontiguousarray(rows[:, TAG_BYTES + NONCE_BYTES : _ENTRY_HEAD.size]).view(">u4").ravel()
        )
        if not bool(np.all(lengths == length)):
            return None
        tags = np.ascontiguousarray(rows[:, :TAG_BYTES]).view(f"S{TAG_BYTES}").ravel()
        offsets = head + np.arange(count, dtype=np.int64) * size
        return cls(count, tags, offsets, lengths.astype(np.int64))

    @classmethod
    def _read_walking(cls, table: bytes, count: int) -> _TableIndex:
        offset = _HEADER.size
        offsets: list[int] = []
        lengths: list[int] = []
        for entry in range(count):
            remaining = len(table) - offset
            if remaining < _ENTRY_HEAD.size:
                raise MalformedLabelTable(
                    f"the label table is truncated: entry {entry} of {count} at byte offset {offset} "
                    f"needs a {_ENTRY_HEAD.size}-byte head, and {remaining} bytes remain"
                )
            (length,) = struct.unpack_from(">I", table, offset + TAG_BYTES + NONCE_BYTES)
            if length < _MIN_CIPHERTEXT:
                raise MalformedLabelTable(
                    f"entry {entry} at byte offset {offset} declares a {length}-byte ciphertext; "
                    f"a sealed label is at least {_MIN_CIPHERTEXT} bytes: the table is garbled"
                )
            if remaining < _ENTRY_HEAD.size + length:
                raise MalformedLabelTable(
                    f"the label table is truncated: entry {entry} of {count} at byte offset {offset} "
                    f"needs {_ENTRY_HEAD.size + length} bytes, and {remaining} remain"
                )
            offsets.append(offset)
            lengths.append(length)
            offset += _ENTRY_HEAD.size + length
        if offset != len(table):
            raise MalformedLabelTable(
                f"the label table has {len(table) - offset} bytes after its last entry (byte offset {offset}); "
                f"its header announces {count} entries: the table is garbled"
            )
        tags = np.frombuffer(b"".join(table[o : o + TAG_BYTES] for o in offsets), dtype=f"S{TAG_BYTES}")
        return cls(count, tags, np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64))

    def _check_sorted(self) -> None:
        # Binary search needs strictly ascending tags; out of order means garbled.
        # (numpy orders fixed-width bytes as memcmp does, the order seal_labels sorts by.)
        disorder = np.flatnonzero(np.less_equal(self.tags[1:], self.tags[:-1]))
        if disorder.size:
            entry = int(disorder[0]) + 1
            raise MalformedLabelTable(
                f"entry {entry} at byte offset {int(self.offsets[entry])} is not after the one before it: "
                "entries must be in ascending order of tag, each tag once; the table is garbled"
            )


def _check_outputs(outputs: Sequence[bytes]) -> None:
    bad = [
        i for i, output in enumerate(outputs) if not isinstance(output, bytes) or len(output) != _OUTPUT_BYTES
    ]
    if bad:
        shown = ", ".join(str(i) for i in bad[:20])
        raise ValueError(
            f"{len(bad)} of {len(outputs)} OPRF outputs are not {_OUTPUT_BYTES} bytes "
            f"(positions {shown}, counting from 0)"
        )


def _entry_key(output: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(output)


def _entry_tag(output: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=TAG_BYTES, salt=None, info=_TAG_INFO).derive(output)
