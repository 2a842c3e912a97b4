"""USCC lists checked, de-duplicated and cut before they are sent."""

from __future__ import annotations

import pytest

from datazone.client import InvalidUSCCs
from datazone.client.enterprises import checked_distinct, chunked, find_invalid, flatten
from tests.client.codes import bad_check, make_uscc


def test_invalid_codes_listed_by_position_with_reasons() -> None:
    good = make_uscc(1)
    codes = [good, bad_check(make_uscc(2)), "123", "", good.replace("1", "I", 1), make_uscc(3)]
    bad = find_invalid(codes)
    assert [b.position for b in bad] == [1, 2, 3, 4]
    assert "check character" in bad[0].reason
    assert "18 characters, this has 3" in bad[1].reason
    assert bad[2].reason == "empty"
    assert "'I' cannot appear" in bad[3].reason
    with pytest.raises(InvalidUSCCs) as info:
        checked_distinct(codes)
    assert [b.position for b in info.value.bad] == [1, 2, 3, 4]
    assert str(info.value).startswith("4 of 6 USCCs are invalid, nothing was sent: #2 ")


def test_many_invalid_codes_are_summarised() -> None:
    with pytest.raises(InvalidUSCCs) as info:
        checked_distinct(["x"] * 25)
    assert len(info.value.bad) == 25 and str(info.value).endswith("; and 5 more")


def test_normalised_and_asked_once_in_first_order() -> None:
    a, b = make_uscc(10), make_uscc(11)
    lower = a.lower() if any(c.isalpha() for c in a) else a
    assert checked_distinct([f"  {b} ", lower, b, a]) == [b, a]


def test_chunks_never_exceed_the_gateway_limit() -> None:
    items = [str(i) for i in range(2501)]
    sizes = [len(c) for c in chunked(items, 1000)]
    assert sizes == [1000, 1000, 501]
    assert [x for c in chunked(items, 7) for x in c] == items
    for size in (0, 1001):
        with pytest.raises(ValueError, match="between 1 and 1000"):
            list(chunked(items, size))


def test_flatten_nested_answers() -> None:
    answer = {"name": "A", "risk": {"level": "high", "reasons": ["penalty"]}, "n": None}
    assert dict(flatten(answer)) == {
        "name": "A",
        "risk.level": "high",
        "risk.reasons": ["penalty"],
        "n": None,
    }
