"""USCC lists before they are sent: checked locally, asked once each, cut into batches.

Checking every code on the bank's side first means a typo in row 900 of a file is
reported with its position before anything is sent or billed, not as a refusal of
the batch it happened to land in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from datazone import uscc
from datazone.client.errors import BadUSCC, InvalidUSCCs

MAX_BATCH = 1000  # the gateway's limit per batch call
# below this many codes the pure-Python check is quicker than loading NumPy for the vectorised one
# (a few microseconds a code against a tenth of a second), so a lookup of one code never loads it
BULK_CHECK_FROM = 10_000


def normalize(code: str) -> str:
    """As people paste them: surrounding blanks dropped, letters upper-cased."""
    return code.strip().upper()


def find_invalid(codes: Sequence[str]) -> list[BadUSCC]:
    normalized = [normalize(raw) if isinstance(raw, str) else raw for raw in codes]
    # the vectorised check clears the valid codes at once (a million in well under a second);
    # only the rest are explained one by one
    strings = [c if isinstance(c, str) else "" for c in normalized]
    if len(strings) < BULK_CHECK_FROM:
        suspects = [i for i, code in enumerate(strings) if not uscc.is_valid(code)]
    else:
        suspects = [i for i, ok in enumerate(uscc.valid_mask(strings)) if not ok]
    bad = []
    for position in suspects:
        code = normalized[position]
        if not isinstance(code, str):
            bad.append(BadUSCC(position, repr(code), "not a string"))
        elif not code:
            bad.append(BadUSCC(position, code, "empty"))
        elif (reason := uscc.explain_invalid(code)) is not None:
            bad.append(BadUSCC(position, code, reason))
    return bad


def checked_distinct(codes: Sequence[str]) -> list[str]:
    """The codes normalized and each kept once, in order of first appearance; raises InvalidUSCCs."""
    bad = find_invalid(codes)
    if bad:
        raise InvalidUSCCs(bad, len(codes))
    return list(dict.fromkeys(normalize(c) for c in codes))


def chunked(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"chunk_size must be between 1 and {MAX_BATCH}, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def flatten(answer: object, prefix: str = "") -> Iterable[tuple[str, object]]:
    """Nested objects as dotted keys (`risk.level`); lists and scalars stay whole."""
    if isinstance(answer, dict):
        for key, value in answer.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, answer
