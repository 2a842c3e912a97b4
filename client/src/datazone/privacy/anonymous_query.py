"""Anonymous query (匿踪查询): keyword PIR by bucket download, Password Checkup's design.

The institution wants one enterprise's answer without the zone learning which enterprise:

    bank:  b = bucket_of(uscc, prefix_bits); P = blind(uscc)        (`prepare`)
           sends (b, P)                       -- the zone learns b, one of >= k candidates
    zone:  returns key·P and bucket b's sealed table               (oprf.evaluate, `seal_buckets`)
    bank:  o = finalize(key·P); opens the entry sealed under o     (`open_answers`)

bucket(uscc) is the first `prefix_bits` bits of SHA-256("datazone/anonymous/v1/bucket" || uscc):
the same for every product and epoch, so the buckets of one enterprise at different lengths
nest (bucket at b bits = its bucket at b+1 bits >> 1), and asking about one firm under two
lengths tells the zone no more than the longer one. The zone chooses the longest length whose
every bucket still holds at least k candidates (`choose_prefix_bits`), or uses the product's.

Each bucket's table is a `labels` table: one entry per enterprise of the bucket, sealed under
a key derived from that enterprise's OPRF output under the product's key (`product_key`, from
the zone's key epoch: a PSI output never opens an anonymous answer, nor one product's
another's). Labels are padded to one width across the whole table (compact JSON takes trailing
spaces), so no bucket's entry size says anything about its enterprises.

Points and tables travel in JSON as standard base64 (RFC 4648 section 4, padded): `b64encode`
and `b64decode` here.

The institution's side, for an SDK:

    buckets, blinded = prepare(usccs, prefix_bits)          # prefix_bits from GET /v1/anonymous/{id}
    body = {"purpose": ..., "prefix_bits": prefix_bits,
            "queries": [{"bucket": b, "point": b64encode(p)} for b, p in zip(buckets, blinded.points)]}
    answers = response["answers"]
    check_buckets([a["candidates"] for a in answers], k)   # refuse a bucket below k
    opened = open_answers(blinded, [b64decode(a["point"]) for a in answers],
                          [b64decode(a["entries"]) for a in answers])
    # existence: b"" listed, None not listed; full: compact JSON (b"null": no answer), None not a candidate
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datazone.privacy import labels, oprf

BUCKET_TAG = b"datazone/anonymous/v1/bucket"
# 2^24 buckets of k = 2 each is 33 million candidates: more than any zone holds
MAX_PREFIX_BITS = 24
# label padding: compact JSON never ends in a space, and JSON readers skip trailing ones
PAD = b" "

_KEY_INFO = b"datazone/anonymous/v1/oprf-key|"


class BucketTooSmall(ValueError):
    """A bucket holds fewer than k candidates: the privacy promise does not hold for it."""


@dataclass(frozen=True)
class BucketChoice:
    """The prefix length a table uses and what it gives at that length."""

    prefix_bits: int
    candidates: int
    smallest_bucket: int
    largest_bucket: int
    # the candidates in each of the 2^prefix_bits buckets
    sizes: tuple[int, ...]

    @property
    def buckets(self) -> int:
        return 1 << self.prefix_bits


# ---------------------------------------------------------------- buckets


def _normal(uscc: str) -> str:
    # the zone hashes codes as it stores them: upper case, no spaces
    return uscc.strip().upper()


def _check_bits(prefix_bits: int) -> None:
    if isinstance(prefix_bits, bool) or not isinstance(prefix_bits, int) or not 0 <= prefix_bits <= MAX_PREFIX_BITS:
        raise ValueError(f"prefix_bits must be an integer in 0..{MAX_PREFIX_BITS}, not {prefix_bits!r}")


def bucket_hash(uscc: str) -> int:
    """The top 24 bits of SHA-256(tag || uscc): every prefix length's bucket is a shift of it."""
    digest = hashlib.sha256(BUCKET_TAG + _normal(uscc).encode("utf-8")).digest()
    return int.from_bytes(digest[:3], "big")


def bucket_of(uscc: str, prefix_bits: int) -> int:
    """The enterprise's bucket: the first `prefix_bits` bits of SHA-256(tag || uscc)."""
    _check_bits(prefix_bits)
    return bucket_hash(uscc) >> (MAX_PREFIX_BITS - prefix_bits)


def _hashes(usccs: Sequence[str]) -> npt.NDArray[np.int64]:
    return np.fromiter((bucket_hash(u) for u in usccs), dtype=np.int64, count=len(usccs))


def buckets_of(usccs: Sequence[str], prefix_bits: int) -> list[int]:
    """bucket_of for many enterprises."""
    _check_bits(prefix_bits)
    return (_hashes(usccs) >> (MAX_PREFIX_BITS - prefix_bits)).tolist()  # type: ignore[no-any-return]


def bucket_sizes(usccs: Sequence[str], prefix_bits: int) -> list[int]:
    """How many of `usccs` fall in each of the 2^prefix_bits buckets (distinct codes)."""
    _check_bits(prefix_bits)
    codes = sorted({_normal(u) for u in usccs})
    shifted = _hashes(codes) >> (MAX_PREFIX_BITS - prefix_bits)
    return np.bincount(shifted, minlength=1 << prefix_bits).tolist()  # type: ignore[no-any-return]


def choose_prefix_bits(candidates: Sequence[str], k: int, *, prefix_bits: int | None = None) -> BucketChoice:
    """The prefix length to use: `prefix_bits` if given, else the longest at which every one of
    the 2^b buckets holds at least k candidates. Raises BucketTooSmall, with figures, when the
    given length has a bucket below k or when even one bucket (b = 0) holds fewer than k."""
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    codes = sorted({_normal(u) for u in candidates})
    total = len(codes)
    if total < k:
        raise BucketTooSmall(
            f"the zone holds {total:,} candidates, fewer than k = {k:,}: no bucketing reaches k "
            "(lower k, or widen the candidates)"
        )
    hashed = _hashes(codes)

    def sizes(bits: int) -> npt.NDArray[np.int64]:
        return np.bincount(hashed >> (MAX_PREFIX_BITS - bits), minlength=1 << bits)

    if prefix_bits is not None:
        _check_bits(prefix_bits)
        at = sizes(prefix_bits)
        smallest = int(at.min())
        if smallest < k:
            fits = choose_prefix_bits(codes, k)
            raise BucketTooSmall(
                f"at prefix_bits {prefix_bits} the smallest of the {1 << prefix_bits:,} buckets holds {smallest:,} "
                f"of the {total:,} candidates, below k = {k:,}: use prefix_bits {fits.prefix_bits} or less "
                f"(its smallest bucket holds {fits.smallest_bucket:,}), or a smaller k"
            )
        return BucketChoice(prefix_bits, total, smallest, int(at.max()), tuple(at.tolist()))
    # nesting makes the smallest bucket shrink as b grows: the first b that fails ends the search
    best = 0
    for bits in range(1, MAX_PREFIX_BITS + 1):
        if int(sizes(bits).min()) < k:
            break
        best = bits
    at = sizes(best)
    return BucketChoice(best, total, int(at.min()), int(at.max()), tuple(at.tolist()))


def check_buckets(candidates: Sequence[int], k: int) -> None:
    """The institution's check on the zone's answer: every bucket it was answered from holds at
    least k candidates. Raises BucketTooSmall naming the positions below k."""
    low = [(i, n) for i, n in enumerate(candidates) if not isinstance(n, int) or n < k]
    if low:
        shown = ", ".join(f"{i} ({n} candidates)" for i, n in low[:20])
        raise BucketTooSmall(
            f"{len(low)} answers come from buckets below k = {k}: positions {shown}; "
            "the zone could tell those enterprises apart: do not use these answers"
        )


# ---------------------------------------------------------------- keys and tables (the zone's side)


def product_key(epoch_key: bytes, product_id: str) -> bytes:
    """The product's OPRF key under a key epoch: HKDF-SHA256 of the epoch's key with the product
    named in `info`, 48 bytes reduced to a P-256 scalar in [1, n-1] (the reduction's bias is
    2^-128). A PSI output, or another product's, never opens this product's entries."""
    oprf.check_zone_key(epoch_key)
    if not product_id:
        raise ValueError("name the product the key is for")
    wide = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=_KEY_INFO + product_id.encode()).derive(
        epoch_key
    )
    scalar = int.from_bytes(wide, "big") % (oprf.CURVE_ORDER - 1) + 1
    return scalar.to_bytes(32, "big")


def pad_labels(values: Sequence[bytes]) -> list[bytes]:
    """Every label padded with spaces to the longest: one entry size across all buckets."""
    width = max((len(v) for v in values), default=0)
    return [v + PAD * (width - len(v)) for v in values]


def seal_buckets(
    outputs: Sequence[bytes], values: Sequence[bytes], buckets: Sequence[int], *, prefix_bits: int
) -> list[bytes]:
    """One sealed label table per bucket (all 2^prefix_bits of them, empty ones too): entry i
    seals values[i] under outputs[i] in table buckets[i]. Values should already be padded to one
    width (`pad_labels`) so that every bucket's entries have one size."""
    _check_bits(prefix_bits)
    if not len(outputs) == len(values) == len(buckets):
        raise ValueError(f"{len(outputs)} outputs, {len(values)} values and {len(buckets)} buckets must pair up")
    count = 1 << prefix_bits
    grouped: list[tuple[list[bytes], list[bytes]]] = [([], []) for _ in range(count)]
    for output, value, bucket in zip(outputs, values, buckets, strict=True):
        if not 0 <= bucket < count:
            raise ValueError(f"bucket {bucket} is outside 0..{count - 1}")
        grouped[bucket][0].append(output)
        grouped[bucket][1].append(value)
    return [labels.seal_labels(outs, vals) for outs, vals in grouped]


# ---------------------------------------------------------------- the institution's side


def prepare(usccs: Sequence[str], prefix_bits: int) -> tuple[list[int], oprf.Blinded]:
    """The buckets and blinded points to send for these enterprises (one query each). Keep the
    returned `Blinded` (its scalar never leaves the institution) to open the answers."""
    codes = [_normal(u) for u in usccs]
    if not codes:
        raise ValueError("ask about at least one enterprise")
    return buckets_of(codes, prefix_bits), oprf.blind(codes)


def open_answers(
    blinded: oprf.Blinded, evaluated_points: Sequence[bytes], tables: Sequence[bytes]
) -> list[bytes | None]:
    """Each query's answer from the zone's evaluated point and its bucket's table: the label
    sealed for the enterprise (padding removed), or None when the table holds no entry for it.
    Raises oprf.MalformedPoints or labels.MalformedLabelTable for a garbled answer."""
    if len(tables) != len(blinded.points):
        raise ValueError(f"{len(tables)} tables for {len(blinded.points)} queries: they must match one to one")
    outputs = oprf.finalize(blinded, evaluated_points)
    opened: list[bytes | None] = []
    for output, table in zip(outputs, tables, strict=True):
        found = labels.open_labels(table, [output])
        opened.append(found[0].rstrip(PAD) if 0 in found else None)
    return opened


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard base64 (padded, no other characters); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a base64 string, not {type(text).__name__}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not standard base64 (RFC 4648 section 4, padded)") from exc
