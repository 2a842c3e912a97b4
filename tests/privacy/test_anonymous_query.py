"""Anonymous query's pure side: buckets by hash prefix that nest, the prefix length chosen for k,
per-product keys, sealed bucket tables of one entry size, and the institution's side opening
exactly its own enterprise's answer."""

from __future__ import annotations

import hashlib
import json

import pytest

from datazone.privacy import anonymous_query as aq
from datazone.privacy import labels, oprf
from tests.privacy import uscc_codes


def test_bucket_is_the_prefix_of_the_tagged_sha256_and_buckets_nest() -> None:
    codes = uscc_codes(300)
    for code in codes[:50]:
        digest = hashlib.sha256(b"datazone/anonymous/v1/bucket" + code.encode()).digest()
        top = int.from_bytes(digest, "big")
        for bits in (0, 1, 5, 11, 24):
            assert aq.bucket_of(code, bits) == top >> (256 - bits)
        # a firm's bucket at b bits is its bucket at b+1 bits without the last bit
        for bits in range(24):
            assert aq.bucket_of(code, bits) == aq.bucket_of(code, bits + 1) >> 1
    assert aq.buckets_of(codes, 7) == [aq.bucket_of(c, 7) for c in codes]
    # the zone hashes codes as it stores them: a lower-case code lands in the same bucket
    assert aq.bucket_of(codes[0].lower() + " ", 9) == aq.bucket_of(codes[0], 9)
    with pytest.raises(ValueError, match=r"0\.\.24"):
        aq.bucket_of(codes[0], 25)
    with pytest.raises(ValueError, match=r"0\.\.24"):
        aq.bucket_of(codes[0], -1)


def test_bucket_sizes_count_each_distinct_code_once() -> None:
    codes = uscc_codes(1000)
    sizes = aq.bucket_sizes(codes + codes[:100], 4)
    assert len(sizes) == 16 and sum(sizes) == 1000
    expected = [0] * 16
    for code in codes:
        expected[aq.bucket_of(code, 4)] += 1
    assert sizes == expected


def test_derived_prefix_is_the_longest_whose_every_bucket_reaches_k() -> None:
    codes = uscc_codes(3000)
    for k in (2, 50, 100, 400, 1500, 3000):
        choice = aq.choose_prefix_bits(codes, k)
        at = aq.bucket_sizes(codes, choice.prefix_bits)
        assert min(at) >= k and choice.smallest_bucket == min(at) and choice.largest_bucket == max(at)
        assert choice.sizes == tuple(at)
        assert choice.candidates == 3000 and choice.buckets == 2**choice.prefix_bits
        if choice.prefix_bits < aq.MAX_PREFIX_BITS:
            assert min(aq.bucket_sizes(codes, choice.prefix_bits + 1)) < k
    assert aq.choose_prefix_bits(codes, 3000).prefix_bits == 0
    # with 3,000 candidates and k = 100 the buckets are a handful of bits long, not an accident of size
    assert 3 <= aq.choose_prefix_bits(codes, 100).prefix_bits <= 5


def test_a_prefix_too_long_for_k_or_too_few_candidates_is_refused_with_figures() -> None:
    codes = uscc_codes(2000)
    fits = aq.choose_prefix_bits(codes, 100)
    too_long = fits.prefix_bits + 2
    smallest = min(aq.bucket_sizes(codes, too_long))
    with pytest.raises(aq.BucketTooSmall) as refused:
        aq.choose_prefix_bits(codes, 100, prefix_bits=too_long)
    text = str(refused.value)
    assert f"at prefix_bits {too_long}" in text and f"holds {smallest:,}" in text and "k = 100" in text
    assert f"use prefix_bits {fits.prefix_bits} or less" in text and "2,000 candidates" in text
    # a declared length that fits is used as declared
    shorter = aq.choose_prefix_bits(codes, 100, prefix_bits=fits.prefix_bits - 1)
    assert shorter.prefix_bits == fits.prefix_bits - 1 and shorter.smallest_bucket >= 100
    with pytest.raises(aq.BucketTooSmall, match="holds 2,000 candidates, fewer than k = 5,000"):
        aq.choose_prefix_bits(codes, 5000)
    with pytest.raises(aq.BucketTooSmall, match="holds 0 candidates"):
        aq.choose_prefix_bits([], 2)
    # repeated codes are one candidate
    with pytest.raises(aq.BucketTooSmall, match="holds 1 candidates"):
        aq.choose_prefix_bits([codes[0]] * 10, 2)


def test_product_keys_are_scalars_of_their_own_per_product_and_epoch() -> None:
    epoch_a, epoch_b = oprf.new_zone_key(), oprf.new_zone_key()
    keys = {
        aq.product_key(epoch, product)
        for epoch in (epoch_a, epoch_b)
        for product in ("dishonest-debtor-anonymous", "credit-basic-anonymous")
    }
    assert len(keys) == 4 and epoch_a not in keys and epoch_b not in keys
    for key in keys:
        oprf.check_zone_key(key)
    assert aq.product_key(epoch_a, "credit-basic-anonymous") == aq.product_key(epoch_a, "credit-basic-anonymous")
    with pytest.raises(ValueError, match="32 bytes"):
        aq.product_key(b"short", "p")


@pytest.fixture(scope="module")
def zone() -> tuple[bytes, list[str], list[str]]:
    """A zone key, 600 candidates and the 40 of them on the list."""
    candidates = uscc_codes(600, seed=11)
    return oprf.new_zone_key(), candidates, candidates[::15]


def _seal(key: bytes, items: list[str], values: list[bytes], bits: int) -> list[bytes]:
    return aq.seal_buckets(oprf.direct(key, items), values, aq.buckets_of(items, bits), prefix_bits=bits)


def test_existence_opens_listed_and_not_listed_and_strangers(zone: tuple[bytes, list[str], list[str]]) -> None:
    epoch, candidates, members = zone
    key = aq.product_key(epoch, "debtors")
    bits = aq.choose_prefix_bits(candidates, 100).prefix_bits
    tables = _seal(key, members, [b""] * len(members), bits)
    assert len(tables) == 2**bits
    assert sum(labels.label_table_stats(t)["entries"] for t in tables) == len(members)
    strangers = uscc_codes(5, seed=99)
    asked = [members[0], members[7], candidates[1], candidates[2], *strangers]
    buckets, blinded = aq.prepare(asked, bits)
    assert buckets == aq.buckets_of(asked, bits)
    evaluated = oprf.evaluate(key, blinded.points)
    opened = aq.open_answers(blinded, evaluated, [tables[b] for b in buckets])
    assert opened == [b"", b"", None, None, *([None] * 5)]
    # the same answer, asked with the wrong bucket's table, finds nothing: only its own bucket opens it
    wrong = [tables[(b + 1) % len(tables)] for b in buckets]
    assert bits >= 1 and aq.open_answers(blinded, evaluated, wrong)[:2] == [None, None]


def test_full_answers_open_as_json_and_every_entry_has_one_size(zone: tuple[bytes, list[str], list[str]]) -> None:
    epoch, candidates, _ = zone
    key = aq.product_key(epoch, "credit")
    bits = aq.choose_prefix_bits(candidates, 100).prefix_bits
    answers: dict[str, dict[str, object] | None] = {c: {"name": f"北京{'测试' * (i % 9)}有限公司", "age_years": i % 30} for i, c in enumerate(candidates)}
    answers[candidates[3]] = None  # not answered by the product
    raw = [json.dumps(answers[c], ensure_ascii=False, separators=(",", ":")).encode() for c in candidates]
    padded = aq.pad_labels(raw)
    assert len({len(v) for v in padded}) == 1
    tables = _seal(key, candidates, padded, bits)
    # one entry size across every bucket: a table's bytes say only how many candidates it holds
    per_entry = {
        (len(t) - 9) / stats["entries"] for t in tables if (stats := labels.label_table_stats(t))["entries"]
    }
    assert len(per_entry) == 1
    asked = [candidates[0], candidates[3], candidates[500], uscc_codes(1, seed=123)[0]]
    buckets, blinded = aq.prepare(asked, bits)
    opened = aq.open_answers(blinded, oprf.evaluate(key, blinded.points), [tables[b] for b in buckets])
    assert opened[0] is not None and json.loads(opened[0]) == answers[candidates[0]]
    assert opened[0] == raw[0]  # the padding is gone
    assert opened[1] == b"null" and opened[2] is not None and json.loads(opened[2]) == answers[candidates[500]]
    assert opened[3] is None


def test_neither_a_psi_output_nor_another_products_opens_an_entry(zone: tuple[bytes, list[str], list[str]]) -> None:
    epoch, _, members = zone
    tables = _seal(aq.product_key(epoch, "debtors"), members, [b""] * len(members), 0)
    asked = members[:5]
    for other in (epoch, aq.product_key(epoch, "credit"), aq.product_key(oprf.new_zone_key(), "debtors")):
        _, blinded = aq.prepare(asked, 0)
        assert aq.open_answers(blinded, oprf.evaluate(other, blinded.points), [tables[0]] * 5) == [None] * 5


def test_the_institution_refuses_buckets_below_k() -> None:
    aq.check_buckets([1000, 1500, 1000], 1000)
    with pytest.raises(aq.BucketTooSmall, match=r"2 answers come from buckets below k = 1000: positions 1 \(999"):
        aq.check_buckets([1000, 999, 1200, 3], 1000)


def test_what_the_institution_sends_hides_the_code() -> None:
    codes = uscc_codes(20, seed=3)
    buckets, blinded = aq.prepare(codes, 10)
    sent = b"".join(blinded.points) + json.dumps(buckets).encode()
    for code in codes:
        for needle in (code.encode(), hashlib.sha256(code.encode()).digest(), oprf.hash_to_point(code)):
            assert needle not in sent
    # blinding is fresh each time: the same firm asked twice sends two unrelated points
    assert aq.prepare(codes[:1], 10)[1].points != aq.prepare(codes[:1], 10)[1].points


def test_base64_is_strict_and_mismatched_answers_are_refused() -> None:
    point = oprf.hash_to_point("x")
    assert aq.b64decode(aq.b64encode(point)) == point
    for bad in ("not base64!", aq.b64encode(point)[:-1], aq.b64encode(point).replace("+", "-") + "_"):
        with pytest.raises(ValueError, match="standard base64"):
            aq.b64decode(bad)
    _, blinded = aq.prepare(uscc_codes(2), 0)
    with pytest.raises(ValueError, match="must match one to one"):
        aq.open_answers(blinded, blinded.points, [b""])
    with pytest.raises(oprf.MalformedPoints):
        aq.open_answers(blinded, [b"\x02" + b"\x00" * 5, blinded.points[0]], [b"", b""])
    with pytest.raises(ValueError, match="at least one"):
        aq.prepare([], 3)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        aq.seal_buckets([b"\x00" * 32], [b""], [4], prefix_bits=2)
