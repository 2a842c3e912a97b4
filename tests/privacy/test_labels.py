"""Labeled PSI: the institution opens exactly the labels of the outputs it holds,
nothing else; tampering and truncation never yield a label."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import re
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from datazone.privacy import labels, oprf
from tests.privacy import uscc_codes

HEADER = 9
ENTRY_HEAD = 28


def hkdf_sha256(secret: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with an empty salt, written out apart from the module under test."""
    prk = hmac.digest(b"\x00" * 32, secret, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")[:length]


def spec_tag(output: bytes) -> bytes:
    return hkdf_sha256(output, b"datazone/psi/v1/label-tag", labels.TAG_BYTES)


def spec_key(output: bytes) -> bytes:
    return hkdf_sha256(output, b"datazone/psi/v1/label-key", 32)


def entries(table: bytes) -> list[tuple[int, bytes, bytes, bytes]]:
    """(offset, tag, nonce, ciphertext) of each entry, read by the format's definition."""
    magic, version, count = struct.unpack_from(">4sBI", table, 0)
    assert (magic, version) == (b"DZLT", 1)
    out, offset = [], HEADER
    for _ in range(count):
        tag, nonce, length = struct.unpack_from(">12s12sI", table, offset)
        out.append((offset, tag, nonce, table[offset + ENTRY_HEAD : offset + ENTRY_HEAD + length]))
        offset += ENTRY_HEAD + length
    assert offset == len(table)
    return out


def company_label(i: int) -> bytes:
    # variable lengths, so the padding is exercised
    fields = {
        "name": f"北京测试企业{i}有限公司" + "分" * (i % 7),
        "penalties": i % 5,
        "marker": f"label-{i:06d}",
    }
    return json.dumps(fields, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def sealed() -> tuple[list[bytes], list[bytes], bytes]:
    outputs = [os.urandom(32) for _ in range(1000)]
    values = [company_label(i) for i in range(1000)]
    return outputs, values, labels.seal_labels(outputs, values)


def test_round_trip_returns_exactly_the_present_entries(
    sealed: tuple[list[bytes], list[bytes], bytes],
) -> None:
    outputs, values, table = sealed
    rng = random.Random(7)
    present = rng.sample(range(1000), 50)
    lookups = [outputs[i] for i in present] + [os.urandom(32) for _ in range(50)]
    rng.shuffle(lookups)
    where = {output: i for i, output in enumerate(outputs)}
    expected = {pos: values[where[o]] for pos, o in enumerate(lookups) if o in where}
    assert len(expected) == 50
    assert labels.open_labels(table, lookups) == expected


def test_an_output_not_in_the_table_finds_nothing(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    _, _, table = sealed
    assert labels.open_labels(table, [os.urandom(32) for _ in range(200)]) == {}
    assert labels.open_labels(table, []) == {}


def test_the_table_follows_the_documented_format(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    outputs, values, table = sealed
    read = entries(table)
    assert len(read) == 1000
    tags = [tag for _, tag, _, _ in read]
    assert tags == sorted(tags) and len(set(tags)) == 1000
    assert set(tags) == {spec_tag(o) for o in outputs}
    # every label padded to the longest: one entry size, so lengths tell nothing
    width = max(len(v) for v in values)
    assert {len(ciphertext) for _, _, _, ciphertext in read} == {width + 1 + 16}
    assert len({nonce for _, _, nonce, _ in read}) == 1000
    by_tag = {tag: (nonce, ciphertext) for _, tag, nonce, ciphertext in read}
    nonce, ciphertext = by_tag[spec_tag(outputs[10])]
    padded = AESGCM(spec_key(outputs[10])).decrypt(nonce, ciphertext, spec_tag(outputs[10]))
    assert padded == values[10] + b"\x80" + b"\x00" * (width - len(values[10]))
    assert labels.label_table_stats(table) == {
        "entries": 1000,
        "bytes": len(table),
        "padded_label_bytes": width + 1,
    }


def test_the_table_holds_no_label_in_the_clear(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    _, values, table = sealed
    for i, value in enumerate(values):
        assert value not in table
        assert f"label-{i:06d}".encode() not in table
        assert "北京测试企业".encode() not in table


def test_a_tampered_entry_is_skipped_not_returned(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    outputs, values, table = sealed
    offsets = {tag: offset for offset, tag, _, _ in entries(table)}
    spoiled = bytearray(table)
    ciphertext_at = offsets[spec_tag(outputs[3])] + ENTRY_HEAD + 5
    spoiled[ciphertext_at] ^= 0x01
    nonce_at = offsets[spec_tag(outputs[4])] + 12
    spoiled[nonce_at] ^= 0x80
    gcm_tag_at = offsets[spec_tag(outputs[6])] + ENTRY_HEAD + len(entries(table)[0][3]) - 1
    spoiled[gcm_tag_at] ^= 0x10
    opened = labels.open_labels(bytes(spoiled), outputs[:8])
    assert opened == {i: values[i] for i in (0, 1, 2, 5, 7)}


def test_a_label_opens_only_under_its_own_output(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    outputs, _, table = sealed
    # an entry moved under another output's tag: the tag hits, the key does not open it
    read = entries(table)
    first, second = read[0], read[1]
    swapped = bytearray(table)
    swapped[first[0] + 12 : second[0]] = table[second[0] + 12 : second[0] + ENTRY_HEAD + len(second[3])]
    swapped[second[0] + 12 : second[0] + ENTRY_HEAD + len(second[3])] = table[first[0] + 12 : second[0]]
    owners = {spec_tag(o): o for o in outputs}
    assert labels.open_labels(bytes(swapped), [owners[first[1]], owners[second[1]]]) == {}


@pytest.mark.parametrize("cut", [0, 4, 8, HEADER + 3, HEADER + 40, -1])
def test_a_truncated_table_is_refused_with_its_offset(
    sealed: tuple[list[bytes], list[bytes], bytes], cut: int
) -> None:
    _, _, table = sealed
    short = table[:cut]
    with pytest.raises(labels.MalformedLabelTable) as caught:
        labels.open_labels(short, [os.urandom(32)])
    message = str(caught.value)
    assert "truncated" in message
    if len(short) >= HEADER:
        assert "byte offset" in message
    with pytest.raises(labels.MalformedLabelTable):
        labels.label_table_stats(short)


def test_a_garbled_table_is_refused_with_its_offset(sealed: tuple[list[bytes], list[bytes], bytes]) -> None:
    _, _, table = sealed
    read = entries(table)
    size = ENTRY_HEAD + len(read[0][3])
    with pytest.raises(labels.MalformedLabelTable, match="not a datazone label table"):
        labels.open_labels(b"PK\x03\x04" + table[4:], [])
    with pytest.raises(
        labels.MalformedLabelTable, match=re.escape("version 2 (byte offset 4); this reader knows version 1")
    ):
        labels.open_labels(table[:4] + b"\x02" + table[5:], [])
    with pytest.raises(
        labels.MalformedLabelTable,
        match=re.escape(f"3 bytes after its last entry (byte offset {len(table)})"),
    ):
        labels.open_labels(table + b"abc", [])
    # two entries swapped: out of order
    third, fourth = HEADER + 2 * size, HEADER + 3 * size
    swapped = table[:third] + table[fourth : fourth + size] + table[third:fourth] + table[fourth + size :]
    with pytest.raises(
        labels.MalformedLabelTable, match=f"entry 3 at byte offset {fourth} is not after the one before"
    ):
        labels.open_labels(swapped, [])
    # an entry's length field spoiled
    spoiled = bytearray(table)
    spoiled[HEADER + size + 24 : HEADER + size + 28] = (5).to_bytes(4, "big")
    with pytest.raises(
        labels.MalformedLabelTable, match=f"entry 1 at byte offset {HEADER + size} declares a 5-byte"
    ):
        labels.open_labels(bytes(spoiled), [])
    # the count claims one entry more than there is
    more = table[:5] + (1001).to_bytes(4, "big") + table[9:]
    with pytest.raises(labels.MalformedLabelTable, match=f"entry 1000 of 1001 at byte offset {len(table)}"):
        labels.open_labels(more, [])


def test_a_table_of_unequal_entries_written_to_the_format_opens() -> None:
    """Another writer of the format may not pad: the reader walks such a table."""
    outputs = [os.urandom(32) for _ in range(30)]
    values = [b"x" * i for i in range(30)]
    rows = []
    for output, value in zip(outputs, values, strict=True):
        nonce = os.urandom(12)
        ciphertext = AESGCM(spec_key(output)).encrypt(nonce, value + b"\x80", spec_tag(output))
        rows.append(spec_tag(output) + nonce + len(ciphertext).to_bytes(4, "big") + ciphertext)
    table = b"DZLT\x01" + (30).to_bytes(4, "big") + b"".join(sorted(rows))
    opened = labels.open_labels(table, [*outputs[::3], os.urandom(32)])
    assert opened == {k: values[3 * k] for k in range(10)}
    assert labels.label_table_stats(table)["entries"] == 30
    with pytest.raises(labels.MalformedLabelTable, match="truncated: entry 29 of 30"):
        labels.open_labels(table[:-3], outputs)


def test_seal_refuses_what_it_cannot_seal() -> None:
    outputs = [os.urandom(32) for _ in range(5)]
    with pytest.raises(ValueError, match="5 outputs and 4 labels"):
        labels.seal_labels(outputs, [b"a"] * 4)
    with pytest.raises(ValueError, match=r"1 outputs repeat an earlier one \(positions 1 and 4"):
        labels.seal_labels([*outputs[:4], outputs[1]], [b"a"] * 5)
    with pytest.raises(ValueError, match=r"2 of 5 OPRF outputs are not 32 bytes \(positions 1, 3"):
        labels.seal_labels([outputs[0], b"short", outputs[2], outputs[3] + b"!", outputs[4]], [b"a"] * 5)
    with pytest.raises(ValueError, match="not 32 bytes"):
        labels.open_labels(labels.seal_labels(outputs, [b"a"] * 5), [b"short"])


def test_an_empty_table() -> None:
    table = labels.seal_labels([], [])
    assert table == b"DZLT\x01\x00\x00\x00\x00"
    assert labels.open_labels(table, [os.urandom(32)]) == {}
    assert labels.label_table_stats(table) == {"entries": 0, "bytes": 9, "padded_label_bytes": 0}


def test_labeled_psi_end_to_end_over_the_oprf() -> None:
    """The zone seals its slice under its direct outputs; the bank, through blind →
    evaluate → finalize, opens the labels of the enterprises it holds, and only those."""
    key = oprf.new_zone_key()
    zone = uscc_codes(300, seed=41)
    table = labels.seal_labels(oprf.direct(key, zone), [f'{{"uscc": "{code}"}}'.encode() for code in zone])
    bank = zone[::10] + uscc_codes(40, seed=42)
    blinded = oprf.blind(bank)
    outputs = oprf.finalize(blinded, oprf.evaluate(key, blinded.points))
    opened = labels.open_labels(table, outputs)
    held = set(zone)
    assert opened == {i: f'{{"uscc": "{code}"}}'.encode() for i, code in enumerate(bank) if code in held}
    assert len(opened) == 30
    # under another epoch's key the same bank outputs open nothing
    stale = labels.seal_labels(oprf.direct(oprf.new_zone_key(), zone), [b"x"] * len(zone))
    assert labels.open_labels(stale, outputs) == {}
    for code in zone:
        assert code.encode() not in table
        assert hashlib.sha256(code.encode()).digest() not in table
