"""Tests of the privacy package. Shared inputs for its test modules live here."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric import ec

from datazone import uscc


def uscc_codes(n: int, seed: int = 5) -> list[str]:
    """n distinct valid USCCs, sorted, reproducible from the seed."""
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n:
        body = "".join(rng.choice("0123456789") for _ in range(8)) + "".join(
            rng.choice(uscc.ALPHABET) for _ in range(9)
        )
        codes.add(body + uscc.check_character(body))
    return sorted(codes)


def off_curve_point() -> bytes:
    """A 33-byte 02-prefixed string whose x is below p but has no y on P-256."""
    for x in range(1, 1000):
        candidate = b"\x02" + x.to_bytes(32, "big")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), candidate)
        except ValueError:
            return candidate
    raise AssertionError("no off-curve x below 1000")
