"""The ECDH OPRF over P-256: the bank's blinded path gives the zone's direct outputs,
the zone's answer is OpenMined's bit for bit, and bad points are named precisely."""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import private_set_intersection.python as om
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from datazone.privacy import oprf
from tests.privacy import off_curve_point, uscc_codes

P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


def reference_x(scalar: int, point: bytes) -> bytes:
    """x(scalar·P) through OpenSSL's ECDH in `cryptography`: an implementation apart from OpenMined's."""
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    return ec.derive_private_key(scalar, ec.SECP256R1()).exchange(ec.ECDH(), public)


@pytest.fixture(scope="module")
def key() -> bytes:
    return oprf.new_zone_key()


def test_blinded_path_equals_the_zones_direct_outputs(key: bytes) -> None:
    items = uscc_codes(500)
    blinded = oprf.blind(items)
    assert len(blinded.points) == 500
    assert all(len(p) == oprf.POINT_BYTES and p[0] == 2 for p in blinded.points)
    outputs = oprf.finalize(blinded, oprf.evaluate(key, blinded.points))
    assert outputs == oprf.direct(key, items)
    assert all(len(o) == oprf.OUTPUT_BYTES for o in outputs)
    assert len(set(outputs)) == 500


def test_output_is_the_hash_of_x_of_k_times_h(key: bytes) -> None:
    item = "91110105000000001X"
    point = oprf.hash_to_point(item)
    expected = hashlib.sha256(
        b"datazone/psi/v1/out" + reference_x(int.from_bytes(key, "big"), point)
    ).digest()
    assert oprf.direct(key, [item]) == [expected]
    one = (1).to_bytes(32, "big")
    assert oprf.direct(one, [item]) == [hashlib.sha256(b"datazone/psi/v1/out" + point[1:]).digest()]


def test_hash_to_point_is_try_and_increment_over_the_tagged_sha256() -> None:
    seen_counter_above_zero = False
    for item in [*uscc_codes(40), "企业", ""]:
        point = oprf.hash_to_point(item)
        assert point == oprf.hash_to_point(item)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        for counter in range(64):
            digest = hashlib.sha256(
                b"datazone/psi/v1/h2c" + counter.to_bytes(4, "big") + item.encode()
            ).digest()
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + digest)
            except ValueError:
                continue
            assert point == b"\x02" + digest
            seen_counter_above_zero |= counter > 0
            break
    assert seen_counter_above_zero
    # Pinned: the zone's cached outputs and every SDK must agree on it across versions.
    assert oprf.hash_to_point("91110105000000001X").hex() == PINNED_H2C


PINNED_H2C = "02ca1d2a4daf3e45c48dd9c9c007fd7b60e85687296a1541d3dd5fb16069d97da4"


def test_outputs_are_stable_and_depend_on_the_key(key: bytes) -> None:
    items = uscc_codes(50, seed=9)
    first = oprf.direct(key, items)
    assert oprf.direct(key, items) == first
    again = oprf.blind(items)
    other = oprf.blind(items)
    assert again.points != other.points  # a fresh blinding scalar per request
    assert oprf.finalize(again, oprf.evaluate(key, again.points)) == first
    assert oprf.finalize(other, oprf.evaluate(key, other.points)) == first
    other_key = oprf.new_zone_key()
    assert other_key != key
    assert not set(oprf.direct(other_key, items)) & set(first)


def test_evaluate_answers_what_openmined_answers(key: bytes) -> None:
    zone = uscc_codes(60, seed=1)
    bank = zone[:20] + uscc_codes(30, seed=2)
    client = om.client.CreateWithNewKey(True)
    request = client.CreateRequest(bank)
    ours = oprf.evaluate(key, list(request.encrypted_elements))
    theirs = om.server.CreateFromKey(key, True).ProcessRequest(request)
    assert ours == list(theirs.encrypted_elements)
    for point, answer in zip(request.encrypted_elements, ours, strict=True):
        assert answer[1:] == reference_x(int.from_bytes(key, "big"), point)
    setup = om.server.CreateFromKey(key, True).CreateSetupMessage(1e-9, len(bank), zone, om.DataStructure.GCS)
    found = client.GetIntersection(setup, om.Response(encrypted_elements=ours))
    assert sorted(found) == [i for i, item in enumerate(bank) if item in set(zone)]


def test_evaluate_over_threads_gives_the_same_answer(key: bytes) -> None:
    points = [oprf.hash_to_point(str(i)) for i in range(oprf._THREAD_MIN_POINTS)]
    assert oprf.evaluate(key, points, threads=2) == oprf.evaluate(key, points)


def test_malformed_points_are_all_named_by_position_and_never_shown(key: bytes) -> None:
    good = oprf.blind(uscc_codes(20, seed=4)).points
    points = list(good)
    points[3] = good[3][:20]  # wrong length
    points[7] = b"\x04" + good[7][1:]  # uncompressed prefix
    points[11] = off_curve_point()  # x with no y
    points[12] = b"\x02" + (P256_P + 5).to_bytes(32, "big")  # x not below p
    points[15] = b""
    with pytest.raises(oprf.MalformedPoints) as caught:
        oprf.evaluate(key, points)
    assert caught.value.indices == [3, 7, 11, 12, 15]
    message = str(caught.value)
    assert message.startswith("5 of 20 points are not valid compressed P-256 points")
    assert "3, 7, 11, 12, 15" in message
    for point in points:
        if point:
            assert point.hex() not in message and point[1:9].hex() not in message
    assert oprf.find_malformed(points) == [3, 7, 11, 12, 15]
    assert oprf.find_malformed(good) == []


def test_an_off_curve_point_alone_is_found_after_openmined_refuses_the_batch(key: bytes) -> None:
    points = oprf.blind(uscc_codes(10, seed=6)).points
    points[6] = off_curve_point()  # passes the length and prefix check: only the C++ decode refuses it
    with pytest.raises(oprf.MalformedPoints) as caught:
        oprf.evaluate(key, points)
    assert caught.value.indices == [6]
    assert str(caught.value).startswith("1 of 10 points")


def test_a_long_list_of_bad_positions_is_cut_short_in_the_message(key: bytes) -> None:
    with pytest.raises(oprf.MalformedPoints) as caught:
        oprf.evaluate(key, [b"\x02"] * 30)
    assert caught.value.indices == list(range(30))
    assert "and 10 more" in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        (0).to_bytes(32, "big"),
        oprf.CURVE_ORDER.to_bytes(32, "big"),
        (oprf.CURVE_ORDER + 1).to_bytes(32, "big"),
        b"\xff" * 32,
        b"\x07" * 31,
        b"\x07" * 33,
    ],
)
def test_check_zone_key_refuses_what_is_not_a_scalar_without_showing_it(bad: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        oprf.check_zone_key(bad)
    assert bad.hex() not in str(caught.value) and "07070707" not in str(caught.value)
    with pytest.raises(ValueError):
        oprf.evaluate(bad, [oprf.hash_to_point("x")])
    with pytest.raises(ValueError):
        oprf.direct(bad, ["x"])


def test_zone_keys_are_fresh_scalars_in_range() -> None:
    keys = {oprf.new_zone_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 32
        oprf.check_zone_key(key)
    oprf.check_zone_key((1).to_bytes(32, "big"))
    oprf.check_zone_key((oprf.CURVE_ORDER - 1).to_bytes(32, "big"))


def test_blinded_points_show_neither_the_items_nor_their_hashes() -> None:
    items = uscc_codes(200, seed=8)
    blinded = oprf.blind(items)
    blob = b"".join(blinded.points)
    blob_hex = blob.hex().encode()
    for item in items:
        data = item.encode()
        point = oprf.hash_to_point(item)
        needles = [data, point, point[1:], point[1:17]]
        for digest in (hashlib.sha256, hashlib.sha1, hashlib.md5):
            needles += [digest(data).digest(), digest(data).hexdigest().encode()]
            needles += [digest(data.lower()).digest(), digest(data.lower()).hexdigest().encode()]
        for needle in needles:
            assert needle not in blob
            assert needle not in blob_hex
            assert needle.hex().encode() not in blob_hex
    assert str(blinded.scalar) not in repr(blinded)
    assert format(blinded.scalar, "x") not in repr(blinded)


def test_finalize_refuses_an_answer_that_does_not_match_the_request(key: bytes) -> None:
    blinded = oprf.blind(uscc_codes(5, seed=3))
    evaluated = oprf.evaluate(key, blinded.points)
    with pytest.raises(ValueError, match="answered 4 points for 5 blinded items"):
        oprf.finalize(blinded, evaluated[:4])
    spoiled = [*evaluated[:2], off_curve_point(), *evaluated[3:]]
    with pytest.raises(oprf.MalformedPoints) as caught:
        oprf.finalize(blinded, spoiled)
    assert caught.value.indices == [2]
    # The zone may answer either sign of k·P: x-only arithmetic gives the same output.
    flipped = [bytes([5 - p[0]]) + p[1:] for p in evaluated]
    assert oprf.finalize(blinded, flipped) == oprf.finalize(blinded, evaluated)


def test_direct_parallel_equals_direct(key: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    items = uscc_codes(1200, seed=11)
    expected = oprf.direct(key, items)
    assert oprf.direct_parallel(key, items) == expected  # small: stays in this process
    pools: list[int] = []

    class CountingPool(ProcessPoolExecutor):
        def __init__(self, max_workers: int, **kwargs: Any) -> None:
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(oprf, "ProcessPoolExecutor", CountingPool)
    assert oprf.direct_parallel(key, items, processes=2) == expected
    assert pools == []  # under the size that pays for processes
    monkeypatch.setattr(oprf, "_PARALLEL_MIN_ITEMS", 100)
    monkeypatch.setattr(oprf, "_CHUNK_MIN_ITEMS", 250)
    assert oprf.direct_parallel(key, items, processes=2) == expected  # 5 chunks over 2 processes
    assert pools == [2]
    with pytest.raises(ValueError):
        oprf.direct_parallel(b"\x00" * 32, items)
