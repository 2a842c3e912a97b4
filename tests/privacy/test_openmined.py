"""OpenMined PSI's wire format: the institution's own `openmined-psi` client gets the
plaintext intersection from the zone's setup and answers; bad requests are refused
with the exact problem."""

from __future__ import annotations

import hashlib

import private_set_intersection.python as om
import pytest

from datazone.privacy import openmined, oprf
from tests.privacy import off_curve_point, uscc_codes


@pytest.fixture(scope="module")
def key() -> bytes:
    return oprf.new_zone_key()


@pytest.fixture(scope="module")
def zone() -> list[str]:
    return uscc_codes(2000, seed=21)


@pytest.fixture(scope="module")
def bank(zone: list[str]) -> list[str]:
    # 120 of the zone's enterprises among 180 it does not hold, shuffled together
    mixed = zone[::16][:120] + uscc_codes(180, seed=22)
    return sorted(mixed, key=lambda code: hashlib.sha256(code.encode()).digest())


@pytest.fixture(scope="module")
def setups(key: bytes, zone: list[str]) -> dict[bool, bytes]:
    return {
        reveal: openmined.server_setup(key, zone, reveal_intersection=reveal, max_client_items=300)
        for reveal in (True, False)
    }


def plaintext_matches(bank: list[str], zone: list[str]) -> list[int]:
    held = set(zone)
    return [i for i, code in enumerate(bank) if code in held]


def test_openmineds_own_client_finds_exactly_the_plaintext_intersection(
    key: bytes, zone: list[str], bank: list[str], setups: dict[bool, bytes]
) -> None:
    expected = plaintext_matches(bank, zone)
    assert len(expected) == 120
    client = om.client.CreateWithNewKey(True)
    body = client.CreateRequest(bank).SerializeToString()
    request = openmined.parse_request(body, reveal_intersection=True, max_items=300)
    assert openmined.request_size(request) == 300
    answer = openmined.process_request(key, request, reveal_intersection=True)
    found = client.GetIntersection(om.ServerSetup.FromString(setups[True]), om.Response.FromString(answer))
    assert sorted(found) == expected
    # the request the bank sent holds none of its codes nor their plain hashes
    for code in bank:
        assert code.encode() not in body
        assert hashlib.sha256(code.encode()).digest() not in body


def test_size_only_gives_the_right_size_and_answers_as_openmined_does(
    key: bytes, zone: list[str], bank: list[str], setups: dict[bool, bytes]
) -> None:
    client = om.client.CreateWithNewKey(False)
    request = client.CreateRequest(bank)
    answer = openmined.process_request(
        key,
        openmined.parse_request(request.SerializeToString(), reveal_intersection=False),
        reveal_intersection=False,
    )
    response = om.Response.FromString(answer)
    assert client.GetIntersectionSize(om.ServerSetup.FromString(setups[False]), response) == 120
    # sorted, not in the request's order: byte for byte what OpenMined's server sends
    assert list(response.encrypted_elements) == sorted(response.encrypted_elements)
    assert answer == om.server.CreateFromKey(key, False).ProcessRequest(request).SerializeToString()


def test_our_client_wrapper_matches_and_resumes_from_its_key(
    key: bytes, zone: list[str], bank: list[str], setups: dict[bool, bytes]
) -> None:
    expected = plaintext_matches(bank, zone)
    first = openmined.OpenMinedClient.new(True)
    body = first.request(bank)
    answer = openmined.process_request(
        key, openmined.parse_request(body, reveal_intersection=True), reveal_intersection=True
    )
    assert first.intersection(setups[True], answer) == expected
    # the connection dropped: a new client from the saved key reads the answer to the first request
    saved = first.key_bytes()
    resumed = openmined.OpenMinedClient.from_key(saved, True)
    assert resumed.intersection(setups[True], answer, request_size=len(bank)) == expected
    assert resumed.intersection_size(setups[True], answer) == 120
    # another key cannot read it
    stranger = openmined.OpenMinedClient.new(True)
    assert stranger.intersection(setups[True], answer) != expected
    assert saved.hex() not in repr(resumed)


def test_size_only_client_wrapper(key: bytes, bank: list[str], setups: dict[bool, bytes]) -> None:
    client = openmined.OpenMinedClient.new(False)
    body = client.request(bank)
    answer = openmined.process_request(
        key, openmined.parse_request(body, reveal_intersection=False), reveal_intersection=False
    )
    assert client.intersection_size(setups[False], answer) == 120
    with pytest.raises(ValueError, match="intersection size only"):
        client.intersection(setups[False], answer)


def test_the_client_wrapper_refuses_a_short_or_garbled_answer(key: bytes, setups: dict[bool, bytes]) -> None:
    client = openmined.OpenMinedClient.new(True)
    body = client.request(uscc_codes(10, seed=30))
    answer = om.Response.FromString(
        openmined.process_request(key, om.Request.FromString(body), reveal_intersection=True)
    )
    short = om.Response(encrypted_elements=list(answer.encrypted_elements)[:9]).SerializeToString()
    with pytest.raises(ValueError, match="holds 9 points for a request of 10 items"):
        client.intersection(setups[True], short)
    with pytest.raises(ValueError, match="server setup is not an OpenMined PSI ServerSetup"):
        client.intersection(b"\xff\xff\xff", answer.SerializeToString())
    with pytest.raises(ValueError, match="response is not an OpenMined PSI Response"):
        client.intersection(setups[True], b"\x18\x01")
    spoiled = list(answer.encrypted_elements)
    spoiled[4] = off_curve_point()
    with pytest.raises(ValueError, match="not valid P-256 points"):
        client.intersection(setups[True], om.Response(encrypted_elements=spoiled).SerializeToString())
    for bad in (b"\x00" * 32, b"\x01" * 31, oprf.CURVE_ORDER.to_bytes(32, "big")):
        with pytest.raises(ValueError, match="client key must be 32 bytes"):
            openmined.OpenMinedClient.from_key(bad, True)


def request_body(points: list[bytes], reveal: bool = True) -> bytes:
    return om.Request(reveal_intersection=reveal, encrypted_elements=points).SerializeToString()


@pytest.fixture(scope="module")
def points() -> list[bytes]:
    return list(om.client.CreateWithNewKey(True).CreateRequest(uscc_codes(10, seed=31)).encrypted_elements)


@pytest.mark.parametrize(
    "body", [b"\xff\xff\xff", b"hello world", b"\x18\x01", b"\x0a\x05ab", b"\x12\x10abc"]
)
def test_garbage_is_not_a_request(body: bytes) -> None:
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.parse_request(body, reveal_intersection=True)
    assert str(caught.value).startswith("the body is not an OpenMined PSI Request protobuf")
    assert caught.value.indices == []


def test_an_empty_body_is_named_as_such() -> None:
    with pytest.raises(openmined.MalformedRequest, match="the request body is empty"):
        openmined.parse_request(b"", reveal_intersection=True)


def test_a_flipped_reveal_flag_is_refused_both_ways(key: bytes, points: list[bytes]) -> None:
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.parse_request(request_body(points, reveal=False), reveal_intersection=True)
    assert str(caught.value).startswith(
        "the request asks for reveal_intersection=false but this product reveals the intersection"
    )
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.parse_request(request_body(points, reveal=True), reveal_intersection=False)
    assert str(caught.value).startswith(
        "the request asks for reveal_intersection=true but this product returns only the intersection size"
    )
    # process_request checks it too, rather than let OpenMined's server fail obscurely
    with pytest.raises(openmined.MalformedRequest, match="reveal_intersection=true"):
        openmined.process_request(key, om.Request.FromString(request_body(points)), reveal_intersection=False)


def test_each_bad_element_is_named(points: list[bytes]) -> None:
    bad = list(points)
    bad[2] = bad[2][:20]
    bad[5] = b"\x04" + bad[5][1:]
    bad[8] = off_curve_point()
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.parse_request(request_body(bad), reveal_intersection=True)
    assert caught.value.indices == [2, 5, 8]
    assert caught.value.problems == [
        "element 2 is 20 bytes; compressed P-256 points are 33",
        "element 5 starts with byte 0x04; compressed P-256 points start with 02 or 03",
        "element 8 is not a P-256 point: no point of the curve has that x",
    ]
    for point in bad:
        assert point.hex() not in str(caught.value)


def test_an_invalid_point_left_to_processing_is_still_named(key: bytes, points: list[bytes]) -> None:
    bad = list(points)
    bad[3] = off_curve_point()
    request = openmined.parse_request(request_body(bad), reveal_intersection=True, check_points=False)
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.process_request(key, request, reveal_intersection=True)
    assert caught.value.indices == [3]
    assert caught.value.problems == ["element 3 is not a P-256 point: no point of the curve has that x"]


def test_too_many_items_and_every_other_problem_are_listed_together(points: list[bytes]) -> None:
    bad = [*points, points[0][:20]]
    with pytest.raises(openmined.MalformedRequest) as caught:
        openmined.parse_request(request_body(bad, reveal=False), reveal_intersection=True, max_items=10)
    assert caught.value.problems == [
        "the request asks for reveal_intersection=false but this product reveals the intersection; "
        "create the client with reveal_intersection=True",
        "the request holds 11 items; this product accepts at most 10 a request",
        "element 10 is 20 bytes; compressed P-256 points are 33",
    ]
    assert caught.value.indices == [10]
    # exactly at the limit is fine
    assert (
        openmined.request_size(
            openmined.parse_request(request_body(points), reveal_intersection=True, max_items=10)
        )
        == 10
    )


def test_server_setup_refuses_bad_parameters(key: bytes) -> None:
    with pytest.raises(ValueError, match="max_client_items must be at least 1"):
        openmined.server_setup(key, ["a"], reveal_intersection=True, max_client_items=0)
    with pytest.raises(ValueError, match="fpr must be between 0 and 1"):
        openmined.server_setup(key, ["a"], reveal_intersection=True, max_client_items=5, fpr=0)
    with pytest.raises(ValueError, match="zone key must be 32 bytes"):
        openmined.server_setup(b"\x01" * 31, ["a"], reveal_intersection=True, max_client_items=5)
