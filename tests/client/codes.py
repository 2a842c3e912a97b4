"""Valid and broken USCCs for the client's tests, with nothing of the server imported.

tests/factories.py re-exports these; the client's own tests take them from here, so they also
run where only the client distribution is installed (tests/client/test_distribution.py).
"""

from __future__ import annotations

import random

from datazone import uscc


def make_uscc(n: int, rng: random.Random | None = None) -> str:
    """A valid USCC, distinct for each n."""
    body = f"91110105{n:09d}"
    return body + uscc.check_character(body)


def bad_check(code: str) -> str:
    alphabet = uscc.ALPHABET
    return code[:17] + alphabet[(alphabet.index(code[17]) + 1) % len(alphabet)]
