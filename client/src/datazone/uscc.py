"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

Rules: 18 characters from 0-9 and A-Y without I, O, S, V, Z; characters 3-8 are the
administrative division code (digits); the 18th is a check character over the first
17 (weights 3^i mod 31). python-stdnum's `cn.uscc` additionally demands digits in
positions 1-2, which GB 32100 does not (registration authority 'Y' means "other"),
so the rules are ours, one set for the scalar and the bulk path, and the tests
check them against stdnum on every code whose first two characters are digits.

This module is pure Python: a command that checks one code (`datazone-client lookup`)
never loads NumPy. The bulk path, vectorized with NumPy over the bytes pyarrow already
holds because one Python call per code would dominate a large ingest, lives in
`datazone.uscc_bulk`; `valid_bytes` and `valid_mask` here hand over to it, importing it
on first use, for start-up time (not to dodge an import cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# 3^i mod 31 for positions 1-17
WEIGHTS: tuple[int, ...] = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_VALUE = {c: i for i, c in enumerate(ALPHABET)}


def check_character(first17: str) -> str:
    """The 18th character for the first 17 (used to make synthetic codes)."""
    if len(first17) != 17 or any(c not in _VALUE for c in first17):
        raise ValueError("a USCC body is 17 characters from 0-9 and A-Y without I, O, S, V, Z")
    total = sum(_VALUE[c] * w for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def explain_invalid(code: str) -> str | None:
    """None when valid; otherwise a sentence saying what is wrong, for reject reports and errors."""
    if len(code) != 18:
        return f"a USCC has 18 characters, this has {len(code)}"
    bad = [c for c in code if c not in _VALUE]
    if bad:
        return f"character {bad[0]!r} cannot appear in a USCC (0-9 and A-Y without I, O, S, V, Z)"
    if not code[2:8].isdigit():
        return "characters 3-8 of a USCC are the administrative division code and must be digits"
    expected = check_character(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, GB 32100-2015 gives {expected!r} for the first 17"
    return None


def is_valid(code: str) -> bool:
    return explain_invalid(code) is None


def valid_bytes(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Validity of an (n, 18) matrix of ASCII bytes, one code a row, position by position."""
    from datazone import uscc_bulk  # NumPy: here for start-up time (see the module docstring)

    return uscc_bulk.valid_bytes(codes)


def valid_mask(codes: list[str] | npt.NDArray[np.str_]) -> npt.NDArray[np.bool_]:
    """Validity of many codes (already stripped and upper-cased); any length, any characters."""
    from datazone import uscc_bulk  # NumPy: here for start-up time (see the module docstring)

    return uscc_bulk.valid_mask(codes)
