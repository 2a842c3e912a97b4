"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

Rules: 18 characters from 0-9 and A-Y without I, O, S, V, Z; characters 3-8 are the
administrative division code (digits); the 18th is a check character over the first
17 (weights 3^i mod 31). python-stdnum's `cn.uscc` additionally demands digits in
positions 1-2, which GB 32100 does not (registration authority 'Y' means "other"),
so the rules are ours, one set for the scalar and the bulk path, and the tests
check them against stdnum on every code whose first two characters are digits.

The bulk path is vectorized with NumPy over the bytes pyarrow already holds,
because one Python call per code would dominate a large ingest.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)

# byte -> value (position in ALPHABET), 255 for bytes a USCC never holds; positions 3-8 take digits only
_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _VALUE[ord(_c)] = _i
_DIGIT = np.full(256, 255, dtype=np.uint8)
_DIGIT[ord("0") : ord("9") + 1] = np.arange(10, dtype=np.uint8)
_WEIGHTS = [np.int32(w) for w in WEIGHTS.tolist()]


def check_character(first17: str) -> str:
    """The 18th character for the first 17 (used to make synthetic codes)."""
    if len(first17) != 17 or any(c not in ALPHABET for c in first17):
        raise ValueError("a USCC body is 17 characters from 0-9 and A-Y without I, O, S, V, Z")
    total = sum(ALPHABET.index(c) * int(w) for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def explain_invalid(code: str) -> str | None:
    """None when valid; otherwise a sentence saying what is wrong, for reject reports and errors."""
    if len(code) != 18:
        return f"a USCC has 18 characters, this has {len(code)}"
    bad = [c for c in code if c not in ALPHABET]
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
    n = codes.shape[0]
    by_position = np.ascontiguousarray(codes.T)
    seen = np.zeros(n, dtype=np.uint8)  # OR of all values: 255 iff some character is invalid
    total = np.zeros(n, dtype=np.int32)
    for j in range(17):
        v = (_DIGIT if 2 <= j < 8 else _VALUE)[by_position[j]]
        seen |= v
        # int32 product explicitly: NumPy 1.x casts uint8 * int32-scalar to uint8 (and overflows)
        total += np.multiply(v, _WEIGHTS[j], dtype=np.int32)
    check = _VALUE[by_position[17]]
    seen |= check
    return np.asarray((seen != 255) & (check == (31 - total % 31) % 31), dtype=bool)


def valid_mask(codes: list[str] | npt.NDArray[np.str_]) -> npt.NDArray[np.bool_]:
    """Validity of many codes (already stripped and upper-cased); any length, any characters."""
    items = [str(c) for c in codes]
    out = np.zeros(len(items), dtype=bool)
    encoded = [c.encode("utf-8") for c in items]
    idx = [i for i, b in enumerate(encoded) if len(b) == 18]  # 18 bytes: 18 ASCII characters or invalid
    if idx:
        matrix = np.frombuffer(b"".join(encoded[i] for i in idx), dtype=np.uint8).reshape(len(idx), 18)
        out[idx] = valid_bytes(matrix)
    return out
