"""USCC rules: the scalar and bulk paths agree with each other and with python-stdnum."""

from __future__ import annotations

import random

from stdnum.cn import uscc as stdnum_uscc

from datazone import uscc


def _random_codes(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = "".join(rng.choice("0123456789") for _ in range(8)) + "".join(
            rng.choice(uscc.ALPHABET) for _ in range(9)
        )
        check = uscc.check_character(body)
        roll = rng.random()
        if roll < 0.3:  # a wrong check character
            check = uscc.ALPHABET[(uscc.ALPHABET.index(check) + rng.randint(1, 30)) % 31]
        code = body + check
        if 0.3 <= roll < 0.4:  # a forbidden letter somewhere
            pos = rng.randrange(18)
            code = code[:pos] + rng.choice("IOSVZ") + code[pos + 1 :]
        out.append(code)
    return out


def test_bulk_and_scalar_agree_with_stdnum() -> None:
    codes = _random_codes(2000)
    bulk = uscc.valid_mask(codes)
    for code, ok in zip(codes, bulk, strict=True):
        assert ok == uscc.is_valid(code) == bool(stdnum_uscc.is_valid(code)), code
    assert 0.4 < bulk.mean() < 0.8  # both kinds are exercised


def test_known_codes() -> None:
    assert uscc.is_valid("91100000100003962T")
    assert uscc.check_character("91100000100003962") == "T"
    assert "check character is 'X'" in (uscc.explain_invalid("91100000100003962X") or "")


def test_no_silent_truncation_or_wide_characters() -> None:
    valid = "91100000100003962T"
    got = uscc.valid_mask([valid, valid + "ZZZ", valid[:-1], "91100000100003962Ｔ", ""])
    assert got.tolist() == [True, False, False, False, False]
    assert uscc.explain_invalid(valid + "ZZZ") == "a USCC has 18 characters, this has 21"


def test_letters_allowed_where_gb32100_allows_them() -> None:
    # registration authority 'Y' (other): valid under GB 32100, though stdnum insists on digits
    body = "Y1110105MA01ABCD5"
    code = body + uscc.check_character(body)
    assert uscc.is_valid(code) and uscc.valid_mask([code]).tolist() == [True]
    assert uscc.explain_invalid("91AB0105MA01ABCD5R") == (
        "characters 3-8 of a USCC are the administrative division code and must be digits"
    )
