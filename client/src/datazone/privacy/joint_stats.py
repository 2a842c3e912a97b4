"""Joint statistics (联合统计): WOE and IV of zone features against a bank's labels the zone never sees.

The bank encrypts its label column (and one 0/1 indicator column per segment) under its own
Okamoto-Uchiyama key (SecretFlow's HEU, 2048 bits); the zone bins its features over the bank's
sample and sums the ciphertexts per bin, and for grouped features sums label_i * x_i; the bank
decrypts the aggregates only. Every sum is exact (integers, scale 1), so the bank's report equals
the plaintext computation.

    bank                                   zone
    LabelKey.generate()
    public_key_bytes(), encrypt_column()   ->  load_public_key(), load_column()
                                               quantile_edges(), bin_index(), merge_small_bins()
                                               bin_sums(), weighted_sums_by_feature(), column_sums()
    decrypt(), woe_iv(), build_report()    <-  compute_result() (the JSON of GET .../result)

Bytes from the other side are never unpickled: keys and columns travel in HEU's own (msgpack)
serialization, and a column's outer structure is read here first, so its length, shape and
ciphertext values are checked before HEU allocates anything from a header the bank wrote.

WOE convention: WOE_b = ln((pos_b / P) / (neg_b / N)), a bin's zero count taken as 0.5 (in
the WOE and in its IV term alike); IV = sum_b (pos_b / P - neg_b / N) * WOE_b.

What this cannot check: that the bank's ciphertexts hold 0 or 1. A column of other values
(2^i per row, say) would make the per-bin sums reveal which rows fall in which bin; without a
range proof the zone relies on the bank encrypting labels (the leakage spec must say so).
Results are re-randomized (a fresh encryption of zero added), so the bank's own encryption
randomness cannot be used to trace rows through the sums either.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from heu import numpy as hnp
from heu import phe

KEY_BITS = 2048
MIN_MODULUS_BITS = 2040  # OU's n = p^2 q: 2054 bits for a 2048-bit key
MAX_MODULUS_BITS = 4200  # up to 4096-bit keys; beyond that the zone's sums would be needlessly slow
MAX_KEY_BYTES = 16 * 1024
MAX_BINS = 127  # HEU's bucket sum takes int8 bin indices
DIGIT_BASE = 128  # grouped sums split each feature into base-128 digits, one bucket sum per digit
CIPHERTEXT_OVERHEAD = 32  # msgpack headers and HEU's trailer around a ciphertext's magnitude
COLUMN_OVERHEAD = 64
INT64_MAX = 2**63 - 1


class MalformedColumn(ValueError):
    """Bytes that are not a column of this job's ciphertexts; the message never holds the bytes."""


class MalformedKey(ValueError):
    """Bytes that are not an Okamoto-Uchiyama public key of an accepted size."""


class BinsTooSmall(ValueError):
    """Declared edges leave a bin under the minimum count; quantile bins are merged instead."""

    def __init__(self, feature: str, small_bins: list[int], min_count: int) -> None:
        self.feature = feature
        self.small_bins = small_bins
        shown = ", ".join(str(b) for b in small_bins)
        super().__init__(
            f"the declared edges of {feature} leave bin(s) {shown} with fewer than {min_count} enterprises"
            " of the sample; declare wider bins or let the zone choose quantile bins"
        )


def _encoder() -> Any:
    # integers at scale 1: the default IntegerEncoder would scale every value by 10^6
    return phe.BigintEncoder(phe.SchemaType.OU)


def _integer_matrix(values: Any, what: str) -> npt.NDArray[np.int64]:
    array = np.asarray(values)
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise ValueError(f"{what} must be integers")
    return array.astype(np.int64)


# -- msgpack, as far as HEU's array format needs it (no general unpacker: nothing else is accepted)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, count: int) -> memoryview:
        if self.pos + count > len(self.data):
            raise MalformedColumn("the column ends early: it is cut short or not a HEU ciphertext array")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def _uint(self, count: int) -> int:
        return int.from_bytes(self._take(count), "big")

    def unsigned(self) -> int:
        tag = self._uint(1)
        if tag <= 0x7F:
            return tag
        if 0xCC <= tag <= 0xCF:
            return self._uint(1 << (tag - 0xCC))
        raise MalformedColumn("the column is not a HEU ciphertext array (a size is not an unsigned integer)")

    def array_header(self) -> int:
        tag = self._uint(1)
        if 0x90 <= tag <= 0x9F:
            return tag - 0x90
        if tag == 0xDC:
            return self._uint(2)
        if tag == 0xDD:
            return self._uint(4)
        raise MalformedColumn("the column is not a HEU ciphertext array (no msgpack array where one belongs)")

    def raw_header(self) -> int:
        tag = self._uint(1)
        if 0xA0 <= tag <= 0xBF:
            return tag - 0xA0
        if tag in (0xD9, 0xC4):
            return self._uint(1)
        if tag in (0xDA, 0xC5):
            return self._uint(2)
        if tag in (0xDB, 0xC6):
            return self._uint(4)
        raise MalformedColumn("the column is not a HEU ciphertext array (an element is not a byte string)")

    def raw(self) -> memoryview:
        return self._take(self.raw_header())


def _ciphertext_value(element: memoryview) -> int:
    """An OU ciphertext's value, from HEU 0.5.2's layout: msgpack [magnitude, little-endian] and a
    trailer (tests/privacy/test_joint_stats.py holds this against HEU's own reading)."""
    inner = _Reader(bytes(element))
    if inner.array_header() != 1:
        raise MalformedColumn("the column is not a HEU ciphertext array (an element is not a ciphertext)")
    return int.from_bytes(inner.raw(), "little")


def _check_array_bytes(blob: bytes, expected: int, modulus: int, what: str) -> None:
    """Length, shape and ciphertext range checked on the bytes, before HEU parses them."""
    if not isinstance(blob, (bytes, bytearray)):
        raise MalformedColumn(f"{what} must be bytes")
    limit = expected * ((modulus.bit_length() + 7) // 8 + CIPHERTEXT_OVERHEAD) + COLUMN_OVERHEAD
    if len(blob) > limit:
        raise MalformedColumn(
            f"{what} is too large: {len(blob)} bytes, at most {limit} for {expected} ciphertexts under this key"
        )
    reader = _Reader(bytes(blob))
    if reader.array_header() != 4:
        raise MalformedColumn(f"{what} is not a HEU ciphertext array")
    rows, cols, ndim = reader.unsigned(), reader.unsigned(), reader.unsigned()
    count = reader.array_header()
    if ndim not in (1, 2) or cols != 1 or count != rows * cols:
        raise MalformedColumn(f"{what} is not one column of ciphertexts (shape {rows} x {cols})")
    if rows != expected:
        raise MalformedColumn(f"{what} holds {rows} ciphertexts, {expected} expected (one per sample row)")
    for index in range(count):
        value = _ciphertext_value(reader.raw())
        if not 0 < value < modulus:
            raise MalformedColumn(
                f"{what} is not under this job's public key (ciphertext {index} is outside its modulus)"
            )
    if reader.pos != len(reader.data):
        raise MalformedColumn(f"{what} has bytes after its last ciphertext")


# -- the bank's key ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """An OU public key as the zone holds it: HEU's key and kit, its modulus, its bytes' digest."""

    key: Any = field(repr=False)
    kit: Any = field(repr=False)
    modulus: int = field(repr=False)
    fingerprint: str  # sha256 of its serialization

    @property
    def modulus_bits(self) -> int:
        return self.modulus.bit_length()


_MODULUS = re.compile(r"\bn=([0-9A-Fa-f]+)\[")


def _public_key(key: Any, data: bytes) -> PublicKey:
    kit = hnp.setup(key)
    if kit.get_schema() != phe.SchemaType.OU:
        raise MalformedKey(
            f"the public key is a {kit.get_schema()} key; joint statistics use Okamoto-Uchiyama (OU)"
        )
    found = _MODULUS.search(str(key))  # HEU gives the modulus only in its text form
    if found is None:
        raise MalformedKey("the public key has no modulus")
    modulus = int(found.group(1), 16)
    if not MIN_MODULUS_BITS <= modulus.bit_length() <= MAX_MODULUS_BITS:
        raise MalformedKey(
            f"the public key's modulus has {modulus.bit_length()} bits; keys of 2048 to 4096 bits are accepted"
        )
    return PublicKey(key, kit, modulus, hashlib.sha256(data).hexdigest())


def load_public_key(data: bytes) -> PublicKey:
    """The bank's public key from HEU's serialization (never pickle); `MalformedKey` otherwise."""
    if not isinstance(data, (bytes, bytearray)) or not 0 < len(data) <= MAX_KEY_BYTES:
        raise MalformedKey(f"a public key is 1 to {MAX_KEY_BYTES} bytes of HEU's serialization")
    # HEU's own msgpack key: an array of 4 (n, G, H, max plaintext); pickle and the rest stop here
    if not 0x90 <= data[0] <= 0x9F:
        raise MalformedKey("the bytes are not a HEU public key")
    try:
        key = phe.PublicKey.load_from(bytes(data))
    except Exception:  # HEU raises RuntimeError or its own PheRuntimeError, with parser details
        raise MalformedKey("the bytes are not a HEU public key") from None
    return _public_key(key, bytes(data))


@dataclass(frozen=True)
class Column:
    """A column of ciphertexts, checked: `rows` ciphertexts under `public_key`, shape (rows, 1)."""

    array: Any = field(repr=False)
    rows: int


def load_column(public_key: PublicKey, blob: bytes, expected: int, *, what: str = "the column") -> Column:
    """The bank's column; `MalformedColumn` (saying why, never quoting bytes) unless it is exactly
    `expected` ciphertexts under `public_key`."""
    _check_array_bytes(blob, expected, public_key.modulus, what)
    try:
        array = hnp.CiphertextArray.load_from(bytes(blob))
    except Exception:  # the structure passed: a ciphertext's inner bytes are broken
        raise MalformedColumn(f"{what} is not a HEU ciphertext array") from None
    if array.rows != expected or array.cols != 1:
        raise MalformedColumn(f"{what} is not one column of {expected} ciphertexts")
    return Column(array, expected)


@dataclass(frozen=True)
class LabelKey:
    """The bank's OU key pair. It stays in memory: a stats job needs it only until it is decrypted."""

    kit: Any = field(repr=False)

    @classmethod
    def generate(cls, bits: int = KEY_BITS) -> LabelKey:
        if bits < KEY_BITS:
            raise ValueError(f"an OU key has at least {KEY_BITS} bits")
        return cls(hnp.setup(phe.SchemaType.OU, bits))

    def public_key_bytes(self) -> bytes:
        return bytes(self.kit.public_key().serialize())

    def public_key(self) -> PublicKey:
        data = self.public_key_bytes()
        return _public_key(self.kit.public_key(), data)

    def encrypt_column(self, values: Sequence[int] | npt.NDArray[np.integer[Any]]) -> bytes:
        """One ciphertext per row, as an (n, 1) HEU array in its own serialization."""
        column = _integer_matrix(values, "a column").reshape(-1, 1)
        if column.shape[0] == 0:
            raise ValueError("a column holds at least one row")
        plain = self.kit.array(column, _encoder())
        return bytes(self.kit.encryptor().encrypt(plain).serialize())

    def decrypt(self, blob: bytes, expected: int) -> npt.NDArray[np.int64]:
        """The `expected` integers in an array of ciphertexts (sums the zone sent back)."""
        public = self.public_key()
        _check_array_bytes(blob, expected, public.modulus, "the zone's array")
        try:
            array = hnp.CiphertextArray.load_from(bytes(blob))
        except Exception:
            raise MalformedColumn("the zone's array is not a HEU ciphertext array") from None
        values = [int(v) for v in np.asarray(self.kit.decryptor().decrypt(array).to_numpy()).reshape(-1)]
        if any(abs(v) > INT64_MAX for v in values):
            raise MalformedColumn("the zone's array decrypts to sums beyond 64-bit integers")
        return np.array(values, dtype=np.int64)


# -- the zone's side: bins and sums -----------------------------------------------------------


def quantile_edges(values: npt.NDArray[Any], bins: int) -> list[float]:
    """Equal-frequency edges over the sample: the values at ranks k*n/bins (k = 1..bins-1), each a
    value of the sample, distinct; ties collapse bins, so a constant feature has one bin (no edge).
    A feature of at most `bins` distinct values gets a bin per value."""
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be 2 to {MAX_BINS}")
    ordered = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if ordered.size == 0:
        raise ValueError("no values to bin")
    if not np.all(np.isfinite(ordered)):
        raise ValueError("values must be finite")
    distinct = np.unique(ordered)
    if distinct.size <= bins:
        # few values (a flag, a grade, a count): a bin each, as a bank would bin them by hand
        return [float(v) for v in distinct[1:]]
    n = ordered.size
    cuts = {float(ordered[min(n - 1, (k * n) // bins)]) for k in range(1, bins)}
    cuts.discard(float(ordered[0]))  # a cut at the minimum would leave the first bin empty
    if len(cuts) < bins - 1:
        # ties at the minimum took several ranks (most firms with no case, no penalty): the
        # minimum gets a bin of its own, so "none" and "some" are told apart
        cuts.add(float(distinct[1]))
    return sorted(cuts)


def bin_index(values: npt.NDArray[Any], edges: Sequence[float]) -> npt.NDArray[np.int64]:
    """Bin b holds edges[b-1] <= x < edges[b]; the first and last bins are open."""
    return np.searchsorted(
        np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right"
    )


def bin_totals(bins: npt.NDArray[np.integer[Any]], count: int) -> list[int]:
    return [int(t) for t in np.bincount(np.asarray(bins, dtype=np.int64), minlength=count)]


def merge_small_bins(
    totals: Sequence[int], edges: Sequence[float], min_count: int
) -> tuple[list[float], list[int]]:
    """Merge each bin under `min_count` with its smaller neighbour (the smallest bin first) until none
    is under it or one bin is left; the edges and totals after merging."""
    if len(totals) != len(edges) + 1:
        raise ValueError("a feature has one bin more than it has edges")
    merged_edges = list(edges)
    merged_totals = [int(t) for t in totals]
    while len(merged_totals) > 1:
        smallest = min(range(len(merged_totals)), key=lambda b: merged_totals[b])
        if merged_totals[smallest] >= min_count:
            break
        if smallest == 0:
            neighbour = 1
        elif smallest == len(merged_totals) - 1:
            neighbour = smallest - 1
        else:
            left, right = smallest - 1, smallest + 1
            neighbour = left if merged_totals[left] <= merged_totals[right] else right
        low = min(smallest, neighbour)
        merged_totals[low : low + 2] = [merged_totals[low] + merged_totals[low + 1]]
        del merged_edges[low]  # the edge between the two
    return merged_edges, merged_totals


def _rerandomized(public_key: PublicKey, array: Any, rows: int) -> Any:
    """The array plus a fresh encryption of zero: the bank cannot trace rows through its randomness."""
    zeros = public_key.kit.encryptor().encrypt(
        public_key.kit.array(np.zeros((rows, 1), dtype=np.int64), _encoder())
    )
    return public_key.kit.evaluator().add(array, zeros)


def bin_sums(
    public_key: PublicKey,
    column: Column,
    bin_idx: npt.NDArray[np.integer[Any]],
    bins_per_feature: Sequence[int],
) -> list[bytes]:
    """For each feature, an array of one ciphertext per bin: the sum of the column over the rows in
    that bin (the positives, for the label column). One pass of HEU's bucket sum for all features."""
    idx = np.asarray(bin_idx)
    if idx.ndim != 2 or idx.shape[0] != column.rows or idx.shape[1] != len(bins_per_feature):
        raise ValueError(f"bin indices must be ({column.rows}, {len(bins_per_feature)})")
    if not bins_per_feature:
        return []
    buckets = max(bins_per_feature)
    if min(bins_per_feature) < 1 or buckets > MAX_BINS:
        raise ValueError(f"each feature has 1 to {MAX_BINS} bins")
    if idx.size and (idx.min() < 0 or np.any(idx >= np.asarray(bins_per_feature)[None, :])):
        raise ValueError("a bin index is outside its feature's bins")
    order = np.ascontiguousarray(idx, dtype=np.int8)
    everyone = np.ones((1, column.rows), dtype=np.int8)
    sums = public_key.kit.evaluator().feature_wise_bucket_sum(column.array, everyone, order, buckets, False)
    out: list[bytes] = []
    for f, count in enumerate(bins_per_feature):
        feature_sums = sums[f * buckets : f * buckets + count]
        out.append(bytes(_rerandomized(public_key, feature_sums, count).serialize()))
    return out


def _digits(values: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], list[int]]:
    """Values (n, G) less each feature's minimum, split into base-128 digits: (n, sum of digit
    counts) and each feature's digit count."""
    shifted = values - values.min(axis=0, keepdims=True)
    columns: list[npt.NDArray[np.int64]] = []
    counts: list[int] = []
    for g in range(values.shape[1]):
        top = int(shifted[:, g].max())
        count = max(1, math.ceil(top.bit_length() / 7))
        rest = shifted[:, g].copy()
        for _ in range(count):
            columns.append(rest % DIGIT_BASE)
            rest //= DIGIT_BASE
        counts.append(count)
    return np.stack(columns, axis=1), counts


def _weighted_sums(public_key: PublicKey, column: Column, values: npt.NDArray[np.int64]) -> list[Any]:
    """sum_i c_i * x_i per feature of `values` (signed integers), each a (1, 1) ciphertext array.

    HEU's scalar multiplication is an exponentiation per row (100,000 x 5 took 55 s); instead each
    feature (less its minimum m) is split into base-128 digits and the column summed per digit value
    with the bucket sum (additions only), then sum_k 128^k sum_d d * S_kd + m * sum_i c_i."""
    kit = public_key.kit
    evaluator = kit.evaluator()
    digits, counts = _digits(values)
    everyone = np.ones((1, column.rows), dtype=np.int8)
    sums = evaluator.feature_wise_bucket_sum(
        column.array, everyone, np.ascontiguousarray(digits, dtype=np.int8), DIGIT_BASE, False
    )
    total = evaluator.sum(column.array)
    minimums = values.min(axis=0)
    out: list[Any] = []
    start = 0
    for g, count in enumerate(counts):
        rows = count * DIGIT_BASE
        weights = np.array(
            [[d * DIGIT_BASE**k] for k in range(count) for d in range(DIGIT_BASE)], dtype=object
        )
        part = evaluator.sum(
            evaluator.mul(
                sums[start * DIGIT_BASE : start * DIGIT_BASE + rows], kit.array(weights, _encoder())
            )
        )
        shift = evaluator.mul(
            kit.array(np.array([[int(minimums[g])]], dtype=object), _encoder()),
            _single(kit, total),
        )
        out.append(evaluator.add(_single(kit, part), shift))
        start += count
    return out


def _single(kit: Any, ciphertext: Any) -> Any:
    """A (1, 1) array holding one ciphertext (HEU's sum answers a bare ciphertext)."""
    return hnp.CiphertextArray.load_from(_array_bytes([ciphertext.serialize()]))


def _array_bytes(elements: Sequence[bytes]) -> bytes:
    """HEU's array serialization of (len, 1) ciphertexts: msgpack [rows, cols, ndim, [elements]]."""

    def uint(v: int) -> bytes:
        return bytes([v]) if v <= 0x7F else b"\xce" + v.to_bytes(4, "big")

    def array(n: int) -> bytes:
        return bytes([0x90 + n]) if n <= 15 else b"\xdd" + n.to_bytes(4, "big")

    def raw(b: bytes) -> bytes:
        return b"\xdb" + len(b).to_bytes(4, "big") + b

    return (
        array(4)
        + uint(len(elements))
        + uint(1)
        + uint(2)
        + array(len(elements))
        + b"".join(raw(e) for e in elements)
    )


def _concat(kit: Any, arrays: Sequence[Any]) -> Any:
    """One (k, 1) array from k (1, 1) arrays."""
    return hnp.CiphertextArray.load_from(_array_bytes([a[0, 0].serialize() for a in arrays]))


def weighted_sum(public_key: PublicKey, column: Column, values: npt.NDArray[Any]) -> bytes:
    """An array of one ciphertext per feature (column of `values`): sum_i c_i * x_i, x signed integers."""
    matrix = _integer_matrix(values, "grouped values")
    if matrix.ndim != 2 or matrix.shape[0] != column.rows or matrix.shape[1] == 0:
        raise ValueError(f"grouped values must be ({column.rows}, G) with G >= 1")
    sums = _weighted_sums(public_key, column, matrix)
    return bytes(_rerandomized(public_key, _concat(public_key.kit, sums), len(sums)).serialize())


def weighted_sums_by_feature(
    public_key: PublicKey, columns: Sequence[Column], values: npt.NDArray[Any]
) -> list[bytes]:
    """For each feature (column of `values`), an array of one ciphertext per bank column:
    sum_i c_i * x_i (the result's `label_sum` with [label], `segment_sums` with the segments)."""
    matrix = _integer_matrix(values, "grouped values")
    if matrix.ndim != 2 or matrix.shape[1] == 0 or any(matrix.shape[0] != c.rows for c in columns):
        raise ValueError("grouped values must be (rows, G) with G >= 1, rows as the columns'")
    per_column = [_weighted_sums(public_key, c, matrix) for c in columns]
    out: list[bytes] = []
    for g in range(matrix.shape[1]):
        feature = _concat(public_key.kit, [sums[g] for sums in per_column])
        out.append(bytes(_rerandomized(public_key, feature, len(columns)).serialize()))
    return out


def column_sums(public_key: PublicKey, columns: Sequence[Column]) -> bytes:
    """An array of one ciphertext per column: its sum (a segment column's: the segment's count)."""
    evaluator = public_key.kit.evaluator()
    totals = [_single(public_key.kit, evaluator.sum(c.array)) for c in columns]
    return bytes(_rerandomized(public_key, _concat(public_key.kit, totals), len(columns)).serialize())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def compute_result(
    public_key: PublicKey,
    label: Column,
    segments: Sequence[Column],
    names: Sequence[str],
    values: npt.NDArray[Any],
    *,
    bins: int,
    min_count: int,
    declared_edges: Mapping[str, Sequence[float]] | None = None,
    grouped: Sequence[str] = (),
    job_id: str = "",
) -> dict[str, Any]:
    """The zone's whole computation: the JSON body of `GET /v1/joint/jobs/{id}/result`.

    `values` (n, F) are the zone's clamped features for the sample rows, in `names` order.
    Quantile bins under `min_count` are merged; declared edges leaving one raise `BinsTooSmall`."""
    matrix = _integer_matrix(values, "zone features")
    if matrix.ndim != 2 or matrix.shape != (label.rows, len(names)):
        raise ValueError(f"zone features must be ({label.rows}, {len(names)})")
    declared = dict(declared_edges or {})
    all_edges: list[list[float]] = []
    all_totals: list[list[int]] = []
    merged: list[dict[str, Any]] = []
    for f, name in enumerate(names):
        column = matrix[:, f]
        if name in declared:
            edges = [float(e) for e in declared[name]]
            totals = bin_totals(bin_index(column, edges), len(edges) + 1)
            small = [b for b, t in enumerate(totals) if t < min_count]
            if small:
                raise BinsTooSmall(name, small, min_count)
        else:
            quantiles = quantile_edges(column, bins)
            edges, totals = merge_small_bins(
                bin_totals(bin_index(column, quantiles), len(quantiles) + 1), quantiles, min_count
            )
            if len(edges) < len(quantiles):
                merged.append({"feature": name, "from_bins": len(quantiles) + 1, "to_bins": len(edges) + 1})
        all_edges.append(edges)
        all_totals.append(totals)
    index = np.stack([bin_index(matrix[:, f], all_edges[f]) for f in range(len(names))], axis=1)
    positives = bin_sums(public_key, label, index, [len(t) for t in all_totals])
    result_grouped: list[dict[str, Any]] = []
    if grouped:
        positions = [list(names).index(g) for g in grouped]
        chosen = matrix[:, positions]
        label_sums = weighted_sums_by_feature(public_key, [label], chosen)
        segment_sums = weighted_sums_by_feature(public_key, segments, chosen) if segments else None
        segment_counts = _b64(column_sums(public_key, segments)) if segments else None
        for g, name in enumerate(grouped):
            result_grouped.append(
                {
                    "name": name,
                    "count": int(label.rows),
                    "sum": int(chosen[:, g].sum()),
                    "label_sum": _b64(label_sums[g]),
                    "segment_counts": segment_counts,
                    "segment_sums": _b64(segment_sums[g]) if segment_sums is not None else None,
                }
            )
    return {
        "job_id": job_id,
        "sample_size": int(label.rows),
        "features": [
            {"name": name, "edges": all_edges[f], "totals": all_totals[f], "positives": _b64(positives[f])}
            for f, name in enumerate(names)
        ],
        "grouped": result_grouped,
        "merged": merged,
    }


# -- the bank's side: the report ---------------------------------------------------------------


def woe_iv(positives: Sequence[int], totals: Sequence[int]) -> tuple[list[float], float]:
    """WOE per bin and the feature's IV (the module's convention: a zero count counts as 0.5)."""
    if len(positives) != len(totals):
        raise ValueError("one positive count per bin")
    pos = [int(p) for p in positives]
    neg = [int(t) - int(p) for p, t in zip(positives, totals, strict=True)]
    if any(p < 0 for p in pos) or any(n < 0 for n in neg):
        raise ValueError("a bin holds more positives than enterprises, or fewer than none")
    all_pos, all_neg = sum(pos), sum(neg)
    if all_pos == 0 or all_neg == 0:
        raise ValueError(
            "WOE needs both labels in the sample: it has no " + ("positive" if all_pos == 0 else "negative")
        )
    woe: list[float] = []
    iv = 0.0
    for p, n in zip(pos, neg, strict=True):
        share_pos = (p if p else 0.5) / all_pos
        share_neg = (n if n else 0.5) / all_neg
        w = math.log(share_pos / share_neg)
        woe.append(w)
        iv += (share_pos - share_neg) * w
    return woe, iv


@dataclass(frozen=True)
class FeatureStats:
    name: str
    edges: list[float]
    totals: list[int]
    positives: list[int]
    negatives: list[int]
    woe: list[float]
    iv: float


@dataclass(frozen=True)
class Group:
    count: int
    sum: int

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


@dataclass(frozen=True)
class GroupedStats:
    name: str
    count: int
    sum: int
    by_label: dict[int, Group]  # 0 and 1
    by_segment: dict[int, Group]  # segment k: the enterprises the bank put in it


@dataclass(frozen=True)
class StatsReport:
    sample_size: int
    features: list[FeatureStats]
    grouped: list[GroupedStats]
    merged: list[dict[str, Any]] = field(default_factory=list)
    job_id: str = ""  # the zone's statistics job (a scorecard's training names it for its bins)

    def by_iv(self) -> list[FeatureStats]:
        return sorted(self.features, key=lambda f: (-f.iv, f.name))


def _feature_stats(
    name: str, edges: Sequence[float], totals: Sequence[int], positives: Sequence[int]
) -> FeatureStats:
    woe, iv = woe_iv(positives, totals)
    return FeatureStats(
        name,
        [float(e) for e in edges],
        [int(t) for t in totals],
        [int(p) for p in positives],
        [int(t) - int(p) for t, p in zip(totals, positives, strict=True)],
        woe,
        iv,
    )


def _grouped_stats(
    name: str, count: int, total: int, positives: int, label_sum: int, segments: Sequence[tuple[int, int]]
) -> GroupedStats:
    return GroupedStats(
        name,
        count,
        total,
        {0: Group(count - positives, total - label_sum), 1: Group(positives, label_sum)},
        {k: Group(c, s) for k, (c, s) in enumerate(segments)},
    )


class MalformedResult(ValueError):
    """The zone's result is not what the design's `GET .../result` answers."""


def _decoded(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedResult(f"{where} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise MalformedResult(f"{where} is not base64") from None


def build_report(
    result: Mapping[str, Any], key: LabelKey, *, positives: int, segments: int = 0
) -> StatsReport:
    """The bank's report from the zone's result: sums decrypted, WOE and IV computed, and every
    decrypted count checked against what the bank knows (its positives, each bin's total)."""
    sample_size = result.get("sample_size")
    if not isinstance(sample_size, int) or sample_size <= 0:
        raise MalformedResult("the result has no sample size")
    features: list[FeatureStats] = []
    for i, item in enumerate(result.get("features") or []):
        where = f"features[{i}]"
        name, edges, totals = item.get("name"), item.get("edges"), item.get("totals")
        if not isinstance(name, str) or not isinstance(edges, list) or not isinstance(totals, list):
            raise MalformedResult(f"{where} lacks its name, edges or totals")
        if len(totals) != len(edges) + 1 or sum(totals) != sample_size:
            raise MalformedResult(f"{where}: {len(totals)} totals for {len(edges)} edges, or not the sample")
        pos = key.decrypt(_decoded(item.get("positives"), f"{where}.positives"), len(totals))
        if int(pos.sum()) != positives or np.any(pos < 0) or np.any(pos > np.asarray(totals)):
            raise MalformedResult(f"{where}: the decrypted positives do not add up to the sample's labels")
        features.append(_feature_stats(name, edges, totals, [int(p) for p in pos]))
    grouped: list[GroupedStats] = []
    for i, item in enumerate(result.get("grouped") or []):
        where = f"grouped[{i}]"
        name, count, total = item.get("name"), item.get("count"), item.get("sum")
        if not isinstance(name, str) or count != sample_size or not isinstance(total, int):
            raise MalformedResult(f"{where} lacks its name, count or sum")
        (label_sum,) = key.decrypt(_decoded(item.get("label_sum"), f"{where}.label_sum"), 1)
        by_segment: list[tuple[int, int]] = []
        if segments:
            counts = key.decrypt(_decoded(item.get("segment_counts"), f"{where}.segment_counts"), segments)
            sums = key.decrypt(_decoded(item.get("segment_sums"), f"{where}.segment_sums"), segments)
            by_segment = [(int(c), int(s)) for c, s in zip(counts, sums, strict=True)]
        grouped.append(_grouped_stats(name, count, total, positives, int(label_sum), by_segment))
    merged = [dict(m) for m in result.get("merged") or [] if isinstance(m, Mapping)]
    job_id = result.get("job_id")
    return StatsReport(sample_size, features, grouped, merged, job_id if isinstance(job_id, str) else "")


def plain_stats(
    names: Sequence[str],
    values: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    *,
    bins: int,
    min_count: int,
    declared_edges: Mapping[str, Sequence[float]] | None = None,
    grouped: Sequence[str] = (),
    segments: npt.NDArray[Any] | None = None,
    segment_count: int = 0,
) -> StatsReport:
    """The same statistics in plaintext (the reference the encrypted computation must equal)."""
    matrix = _integer_matrix(values, "zone features")
    y = _integer_matrix(labels, "labels").reshape(-1)
    declared = dict(declared_edges or {})
    features: list[FeatureStats] = []
    merged: list[dict[str, Any]] = []
    for f, name in enumerate(names):
        column = matrix[:, f]
        if name in declared:
            edges = [float(e) for e in declared[name]]
        else:
            quantiles = quantile_edges(column, bins)
            edges, _ = merge_small_bins(
                bin_totals(bin_index(column, quantiles), len(quantiles) + 1), quantiles, min_count
            )
            if len(edges) < len(quantiles):
                merged.append({"feature": name, "from_bins": len(quantiles) + 1, "to_bins": len(edges) + 1})
        # counted with a mask per bin, not with the bucket sums' indices: an independent route
        lower = [-math.inf, *edges]
        upper = [*edges, math.inf]
        in_bin = [(column >= lo) & (column < hi) for lo, hi in zip(lower, upper, strict=True)]
        features.append(
            _feature_stats(name, edges, [int(m.sum()) for m in in_bin], [int(y[m].sum()) for m in in_bin])
        )
    segs = (
        np.zeros(len(y), dtype=np.int64)
        if segments is None
        else _integer_matrix(segments, "segments").reshape(-1)
    )
    grouped_stats: list[GroupedStats] = []
    for name in grouped:
        x = matrix[:, list(names).index(name)]
        per_segment = [(int((segs == k).sum()), int(x[segs == k].sum())) for k in range(segment_count)]
        grouped_stats.append(
            _grouped_stats(name, len(x), int(x.sum()), int(y.sum()), int(x[y == 1].sum()), per_segment)
        )
    return StatsReport(len(y), features, grouped_stats, merged)
