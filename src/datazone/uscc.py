"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

Scalar validation delegates to python-stdnum (`stdnum.cn.uscc`), the maintained
implementation. The bulk path is our own because validating millions of codes one
Python call at a time would dominate an ingest; it is vectorized with NumPy and
tested against stdnum on every code it sees in the tests.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from stdnum.cn import uscc as _stdnum_uscc

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)

# byte value -> position in ALPHABET, -1 for characters a USCC never contains
_VALUE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(ALPHABET):
    _VALUE[ord(_c)] = _i


def check_character(first17: str) -> str:
    """The 18th character for the first 17 (used to make synthetic codes)."""
    if len(first17) != 17 or any(c not in ALPHABET for c in first17):
        raise ValueError("a USCC body is 17 characters from 0-9 and A-Y without I, O, S, V, Z")
    total = sum(ALPHABET.index(c) * int(w) for c, w in zip(first17, WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def is_valid(code: str) -> bool:
    return bool(_stdnum_uscc.is_valid(code))


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
    if not is_valid(code):  # anything stdnum knows that the rules above do not
        return "not a valid USCC"
    return None


def valid_mask(codes: npt.NDArray[np.str_] | list[str]) -> npt.NDArray[np.bool_]:
    """Vectorized validity of many codes (already stripped and upper-cased)."""
    arr = np.asarray(codes, dtype="U18")
    if arr.size == 0:
        return np.zeros(0, dtype=bool)
    lengths = np.char.str_len(arr)
    # U18 is 18 UCS-4 code points per element; non-ASCII maps outside the table
    cps = arr.view(np.uint32).reshape(arr.shape[0], 18).astype(np.int64)
    in_range = cps < 256
    vals = np.where(in_range, _VALUE[np.clip(cps, 0, 255)], -1)
    ok = (lengths == 18) & (vals >= 0).all(axis=1)
    digits = (cps[:, 2:8] >= ord("0")) & (cps[:, 2:8] <= ord("9"))
    ok &= digits.all(axis=1)
    total = (np.where(vals[:, :17] >= 0, vals[:, :17], 0) * WEIGHTS).sum(axis=1)
    expected = (31 - total % 31) % 31
    ok &= vals[:, 17] == expected
    return ok
