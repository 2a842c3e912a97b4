"""USCC checks over many codes at once, vectorized with NumPy (the rules: `datazone.uscc`).

One Python call per code would dominate a large ingest, so the check runs position by
position over the bytes pyarrow already holds. `datazone.uscc.valid_bytes` and
`valid_mask` hand over to this module, so only callers of the bulk path load NumPy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from datazone.uscc import ALPHABET, WEIGHTS

# byte -> value (position in ALPHABET), 255 for bytes a USCC never holds; positions 3-8 take digits only
_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _VALUE[ord(_c)] = _i
_DIGIT = np.full(256, 255, dtype=np.uint8)
_DIGIT[ord("0") : ord("9") + 1] = np.arange(10, dtype=np.uint8)
_WEIGHTS = [np.int32(w) for w in WEIGHTS]


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
