"""An ECDH OPRF over P-256 (128-bit security): the HTTP-native PSI path.

The zone holds a key k per key epoch; an item's output is
SHA-256("datazone/psi/v1/out" || x(k·H(item))). The institution learns the
outputs of its own items without showing them to the zone:

    bank:  a random;  sends  02 || x(a·H(item))                 (`blind`)
    zone:  returns k·P for each point P                           (`evaluate`)
    bank:  x(a⁻¹·k·P) = x(k·H(item)), hashed into the output      (`finalize`)
    zone:  computes x(k·H(item)) for its own slice directly       (`direct`)

Arithmetic is x-only: a point and its negation have the same x, and the output
keeps only x, so the bank can send 02 || x without the sign and the zone may
answer either sign. The zone's answer is nevertheless exactly k·P with the right
sign, the same bytes OpenMined's server gives, so `openmined.py` reuses it.

Scalar multiplications run in OpenMined's C++ server (`ProcessRequest`,
BoringSSL underneath: 53 us a point here against 68 us for a decode and an
ECDH exchange through `cryptography`); `cryptography` decodes points to
validate them and hashes items to the curve.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, cast

import private_set_intersection.python as om
from cryptography.hazmat.primitives.asymmetric import ec

POINT_BYTES = 33
OUTPUT_BYTES = 32
CURVE_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_H2C_TAG = b"datazone/psi/v1/h2c"
_OUTPUT_TAG = b"datazone/psi/v1/out"
_CURVE = ec.SECP256R1()
# A candidate x is on the curve with probability 1/2, so 256 failures in a row
# happen with probability 2^-256: the cap only turns a bug into an error.
_H2C_MAX_TRIES = 256
# Below these sizes the set-up of threads or processes costs more than it saves.
_THREAD_MIN_POINTS = 4_000
_PARALLEL_MIN_ITEMS = 50_000
_CHUNK_MIN_ITEMS = 10_000
_BATCH_POINTS = 65_536
_SHOWN_POSITIONS = 20


class MalformedPoints(ValueError):
    """Some elements are not valid compressed P-256 points. `indices` lists all
    of them (counting from 0); the message names positions, never bytes."""

    def __init__(self, indices: Sequence[int], total: int) -> None:
        self.indices = list(indices)
        self.total = total
        shown = ", ".join(str(i) for i in self.indices[:_SHOWN_POSITIONS])
        more = len(self.indices) - _SHOWN_POSITIONS
        if more > 0:
            shown += f" and {more} more"
        super().__init__(
            f"{len(self.indices)} of {total} points are not valid compressed P-256 points "
            f"(33 bytes, prefix 02 or 03, x on the curve); positions counting from 0: {shown}"
        )


def new_zone_key() -> bytes:
    """A fresh zone key: a uniform scalar in [1, n-1] from the OS CSPRNG, 32 bytes big-endian."""
    return _scalar_bytes(secrets.randbelow(CURVE_ORDER - 1) + 1)


def check_zone_key(key: bytes) -> None:
    """ValueError unless `key` is a 32-byte big-endian scalar in [1, n-1]."""
    if not isinstance(key, bytes) or len(key) != 32:
        size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
        raise ValueError(f"a zone key must be 32 bytes (a big-endian P-256 scalar); got {size}")
    if not 1 <= int.from_bytes(key, "big") < CURVE_ORDER:
        raise ValueError("the zone key is out of range: it must be a P-256 scalar in [1, n-1]")


def hash_to_point(item: str) -> bytes:
    """Hash an item (UTF-8) to a compressed P-256 point with even y, deterministically.

    Try-and-increment: x = SHA-256(tag || counter || item) until x is on the curve.
    `cryptography` has no RFC 9380 hash-to-curve, and try-and-increment's
    variable time is harmless here: it depends only on the item, and the bank
    runs it on its own machine over its own items (the zone runs it only over
    its own slice).
    """
    data = item.encode("utf-8")
    for counter in range(_H2C_MAX_TRIES):
        candidate = b"\x02" + hashlib.sha256(_H2C_TAG + counter.to_bytes(4, "big") + data).digest()
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, candidate)
        except ValueError:
            continue
        return candidate
    raise RuntimeError("hash_to_point found no curve point in 256 tries")  # pragma: no cover


@dataclass
class Blinded:
    """A request's blinded points and its blinding scalar (one per request, as
    OpenMined's client does). The scalar stays on the bank's machine; keep it to
    finalize a response that arrives after a dropped connection."""

    points: list[bytes]
    scalar: int = field(repr=False)


def blind(items: Sequence[str]) -> Blinded:
    """Blind each item: 02 || x(a·H(item)) under one fresh random scalar a."""
    scalar = secrets.randbelow(CURVE_ORDER - 1) + 1
    hashed = [hash_to_point(item) for item in items]
    multiplied = _multiply(_scalar_bytes(scalar), hashed)
    return Blinded(points=[b"\x02" + point[1:] for point in multiplied], scalar=scalar)


def evaluate(key: bytes, points: Sequence[bytes], *, threads: int = 1) -> list[bytes]:
    """The zone's step: the compressed point k·P for each P, OpenMined-compatible.

    Raises MalformedPoints naming every invalid element. `threads` > 1 splits a
    large request over threads (OpenMined's C++ releases the GIL); a gateway
    serving many requests at once gains nothing from it.
    """
    check_zone_key(key)
    if any(len(point) != POINT_BYTES or point[0] not in (2, 3) for point in points):
        raise MalformedPoints(find_malformed(points), len(points))
    try:
        return _multiply(key, points, threads=threads, cache=True)
    except RuntimeError:
        # OpenMined refuses the whole batch without saying which point: find them all.
        bad = find_malformed(points)
        if bad:
            raise MalformedPoints(bad, len(points)) from None
        raise


def find_malformed(points: Sequence[bytes]) -> list[int]:
    """Positions of the elements that are not valid compressed P-256 points."""
    bad = []
    for index, point in enumerate(points):
        if not isinstance(point, bytes) or len(point) != POINT_BYTES or point[0] not in (2, 3):
            bad.append(index)
            continue
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(_CURVE, point)
        except ValueError:
            bad.append(index)
    return bad


def finalize(blinded: Blinded, evaluated: Sequence[bytes]) -> list[bytes]:
    """Unblind the zone's answer: SHA-256(out-tag || x(a⁻¹·k·a·H(item))) for each item."""
    if len(evaluated) != len(blinded.points):
        raise ValueError(
            f"the zone answered {len(evaluated)} points for {len(blinded.points)} blinded items; "
            "they must match one to one"
        )
    if any(len(point) != POINT_BYTES or point[0] not in (2, 3) for point in evaluated):
        raise MalformedPoints(find_malformed(evaluated), len(evaluated))
    inverse = pow(blinded.scalar, -1, CURVE_ORDER)
    try:
        unblinded = _multiply(_scalar_bytes(inverse), evaluated)
    except RuntimeError:
        bad = find_malformed(evaluated)
        if bad:
            raise MalformedPoints(bad, len(evaluated)) from None
        raise
    return [_output(point) for point in unblinded]


def direct(key: bytes, items: Sequence[str]) -> list[bytes]:
    """The zone's own outputs for its slice, without blinding: the same values
    blind → evaluate → finalize gives the bank for the same items."""
    check_zone_key(key)
    hashed = [hash_to_point(item) for item in items]
    return [_output(point) for point in _multiply(key, hashed, cache=True)]


def direct_parallel(key: bytes, items: Sequence[str], processes: int | None = None) -> list[bytes]:
    """`direct` over a process pool for a large slice (2.6 million items take
    about 90 us each on one core: hashing to the curve holds the GIL, so threads
    would not do). Small lists run in this process. The processes are spawned,
    so the calling program's main module must be safe to import (its work under
    `if __name__ == "__main__":`), as for any spawned pool."""
    check_zone_key(key)
    workers = processes or os.cpu_count() or 1
    if workers <= 1 or len(items) < _PARALLEL_MIN_ITEMS:
        return direct(key, items)
    # Several chunks per process so a slow one does not hold up the end.
    size = max(_CHUNK_MIN_ITEMS, -(-len(items) // (workers * 8)))
    chunks = [list(items[start : start + size]) for start in range(0, len(items), size)]
    # spawn, not fork: a gateway or worker process may hold threads (database
    # pools, BoringSSL state) that a forked child would inherit half-locked.
    context = multiprocessing.get_context("spawn")
    outputs: list[bytes] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for packed in pool.map(_direct_packed, repeat(key), chunks):
            outputs.extend(packed[i : i + OUTPUT_BYTES] for i in range(0, len(packed), OUTPUT_BYTES))
    return outputs


def _direct_packed(key: bytes, items: list[str]) -> bytes:
    # One bytes object back per chunk: pickling millions of small objects costs more.
    return b"".join(direct(key, items))


def _output(point: bytes) -> bytes:
    return hashlib.sha256(_OUTPUT_TAG + point[1:]).digest()


def _scalar_bytes(scalar: int) -> bytes:
    return scalar.to_bytes(32, "big")


# OpenMined's server object shares one BoringSSL context between calls, so two
# threads using the same object corrupt each other's results; creating one costs
# 1.3 ms. Each thread keeps its own few, keyed by the zone key (in memory only).
_servers = threading.local()
_SERVERS_PER_THREAD = 4


def _server(key: bytes, *, cache: bool) -> Any:
    if not cache:
        return om.server.CreateFromKey(key, True)
    held: OrderedDict[bytes, Any] | None = getattr(_servers, "by_key", None)
    if held is None:
        held = _servers.by_key = OrderedDict()
    server = held.get(key)
    if server is None:
        server = held[key] = om.server.CreateFromKey(key, True)
        while len(held) > _SERVERS_PER_THREAD:
            held.popitem(last=False)
    else:
        held.move_to_end(key)
    return server


def _multiply(key: bytes, points: Sequence[bytes], *, threads: int = 1, cache: bool = False) -> list[bytes]:
    """Compressed key·P for each point, through OpenMined's server.

    reveal_intersection=True so that the answer keeps the request's order
    (OpenMined sorts it otherwise). RuntimeError if a point does not decode.
    """
    if threads > 1 and len(points) >= _THREAD_MIN_POINTS:
        size = -(-len(points) // threads)
        chunks = [points[start : start + size] for start in range(0, len(points), size)]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            parts = pool.map(lambda chunk: _multiply(key, chunk, cache=cache), chunks)
            return [point for part in parts for point in part]
    server = _server(key, cache=cache)
    answered: list[bytes] = []
    # In batches: a slice of millions as one protobuf would hold several copies of it in memory.
    for start in range(0, len(points), _BATCH_POINTS):
        request = om.Request(
            reveal_intersection=True, encrypted_elements=points[start : start + _BATCH_POINTS]
        )
        answered.extend(cast(list[bytes], server.ProcessRequest(request).encrypted_elements))
    return answered
