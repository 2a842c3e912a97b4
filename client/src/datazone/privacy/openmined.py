"""OpenMined PSI's wire format, so an institution can use its own `openmined-psi`
client (C++, Go, JavaScript, Python, Rust) against the zone.

The messages are OpenMined's protobufs (`psi_proto.ServerSetup`, `Request`,
`Response`): the zone publishes a ServerSetup (its slice as k·H(item), in a
Golomb-compressed set) once per key epoch; the client sends its items blinded
(a·H(item)); the zone answers k·a·H(item) for each, in the request's order when
the product reveals the intersection, sorted (as OpenMined's server does) when
it returns only the size. The zone's key is the same scalar as `oprf`'s, and
the scalar multiplication the same `oprf.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import private_set_intersection.python as om
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from datazone.privacy import oprf

_SHOWN_PROBLEMS = 20


class MalformedRequest(ValueError):
    """The body is not an acceptable OpenMined PSI Request. `problems` lists
    every problem found (the message joins them); `indices` the positions of
    bad elements, counting from 0 (empty when no element is at fault)."""

    def __init__(self, problems: Sequence[str], indices: Sequence[int] = ()) -> None:
        self.problems = list(problems)
        self.indices = list(indices)
        super().__init__("; ".join(self.problems))


# up to this many slice items the setup is sent raw (about 3.3 MB at the limit)
RAW_SETUP_ITEMS = 100_000


def server_setup(
    key: bytes,
    items: Sequence[str],
    *,
    reveal_intersection: bool,
    max_client_items: int,
    fpr: float = 1e-9,
) -> bytes:
    """The serialized ServerSetup (GCS) of the zone's slice under `key`.

    `fpr` bounds the chance that a request of up to `max_client_items` items
    gets any false match; a larger request raises it proportionally.
    """
    oprf.check_zone_key(key)
    if max_client_items < 1:
        raise ValueError(f"max_client_items must be at least 1; got {max_client_items}")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be between 0 and 1 (exclusive); got {fpr}")
    server = om.server.CreateFromKey(key, reveal_intersection)
    # a small slice goes raw (33 bytes an item, no false match): OpenMined's GCS cannot be built
    # for a set that is tiny against max_client_items / fpr, and would save little there
    structure = om.DataStructure.RAW if len(items) <= RAW_SETUP_ITEMS else om.DataStructure.GCS
    setup = server.CreateSetupMessage(fpr, max_client_items, list(items), structure)
    return cast(bytes, setup.SerializeToString())


def parse_request(
    body: bytes,
    *,
    reveal_intersection: bool,
    max_items: int | None = None,
    check_points: bool = True,
) -> om.Request:
    """Parse and validate a client's Request, listing every problem found.

    With `check_points=False` the curve check of each point (15 us a point) is
    left to `process_request`, which finds invalid points at no extra cost when
    OpenMined's server refuses the batch; sizes, flags, lengths and prefixes are
    still checked here.
    """
    if not body:
        raise MalformedRequest(
            ["the request body is empty; send a serialized OpenMined PSI Request protobuf"]
        )
    request = om.Request()
    try:
        request.ParseFromString(body)
    except DecodeError:
        raise MalformedRequest(_NOT_A_REQUEST) from None
    # Protobuf parses many byte strings as a message made only of unknown fields.
    if len(UnknownFieldSet(request)):
        raise MalformedRequest(_NOT_A_REQUEST)
    problems = []
    flag_problem = _reveal_problem(request, reveal_intersection)
    if flag_problem:
        problems.append(flag_problem)
    elements = list(request.encrypted_elements)
    too_many = max_items is not None and len(elements) > max_items
    if too_many:
        problems.append(
            f"the request holds {len(elements)} items; this product accepts at most {max_items} a request"
        )
    bad = _structurally_bad(elements)
    # A request over the limit is refused anyway: do not spend a decode on each of its points.
    if check_points and not too_many:
        bad = oprf.find_malformed(elements)
    if bad:
        problems.extend(_element_problems(elements, bad))
    if problems:
        raise MalformedRequest(problems, bad)
    return request


def process_request(key: bytes, request: om.Request, *, reveal_intersection: bool, threads: int = 1) -> bytes:
    """The serialized Response: k·P for each point of the request, in its order
    when the product reveals the intersection, sorted (OpenMined's own way of
    hiding which answer is which) when it returns only the size."""
    flag_problem = _reveal_problem(request, reveal_intersection)
    if flag_problem:
        raise MalformedRequest([flag_problem])
    elements = list(request.encrypted_elements)
    try:
        evaluated = oprf.evaluate(key, elements, threads=threads)
    except oprf.MalformedPoints as error:
        raise MalformedRequest(_element_problems(elements, error.indices), error.indices) from None
    if not reveal_intersection:
        evaluated.sort()
    return cast(bytes, om.Response(encrypted_elements=evaluated).SerializeToString())


def request_size(request: om.Request) -> int:
    """How many items the request holds."""
    return len(request.encrypted_elements)


class OpenMinedClient:
    """The institution's side through OpenMined's own client.

    The client key is the blinding scalar: keep `key_bytes()` on the bank's
    machine, and resume with `from_key` to read a response to a request sent
    before a dropped connection. Not safe to share between threads.
    """

    def __init__(self, client: Any, *, reveal_intersection: bool) -> None:
        self._client = client
        self.reveal_intersection = reveal_intersection
        self._request_size: int | None = None

    def __repr__(self) -> str:
        return f"OpenMinedClient(reveal_intersection={self.reveal_intersection})"

    @classmethod
    def new(cls, reveal_intersection: bool) -> OpenMinedClient:
        return cls(om.client.CreateWithNewKey(reveal_intersection), reveal_intersection=reveal_intersection)

    @classmethod
    def from_key(cls, key: bytes, reveal_intersection: bool) -> OpenMinedClient:
        if (
            not isinstance(key, bytes)
            or len(key) != 32
            or not 1 <= int.from_bytes(key, "big") < oprf.CURVE_ORDER
        ):
            raise ValueError(
                "a client key must be 32 bytes, a P-256 scalar in [1, n-1], as key_bytes() gave it"
            )
        return cls(om.client.CreateFromKey(key, reveal_intersection), reveal_intersection=reveal_intersection)

    def key_bytes(self) -> bytes:
        return cast(bytes, self._client.GetPrivateKeyBytes())

    def request(self, items: Sequence[str]) -> bytes:
        """The serialized Request for `items` (blinded: no item leaves in the clear)."""
        self._request_size = len(items)
        return cast(bytes, self._client.CreateRequest(list(items)).SerializeToString())

    def intersection(self, setup: bytes, response: bytes, *, request_size: int | None = None) -> list[int]:
        """Indices (into the request's items) of the items in the zone's slice."""
        if not self.reveal_intersection:
            raise ValueError("this client asked for the intersection size only; use intersection_size")
        parsed_setup, parsed_response = self._parse(setup, response, request_size)
        try:
            found = self._client.GetIntersection(parsed_setup, parsed_response)
        except RuntimeError:
            raise ValueError("the zone's response holds points that are not valid P-256 points") from None
        return sorted(int(index) for index in found)

    def intersection_size(self, setup: bytes, response: bytes, *, request_size: int | None = None) -> int:
        """How many of the request's items are in the zone's slice."""
        parsed_setup, parsed_response = self._parse(setup, response, request_size)
        try:
            return int(self._client.GetIntersectionSize(parsed_setup, parsed_response))
        except RuntimeError:
            raise ValueError("the zone's response holds points that are not valid P-256 points") from None

    def _parse(self, setup: bytes, response: bytes, request_size: int | None) -> tuple[Any, Any]:
        parsed_setup = _parse_message(om.ServerSetup, setup, "server setup")
        parsed_response = _parse_message(om.Response, response, "response")
        expected = request_size if request_size is not None else self._request_size
        # OpenMined's client would silently read a short response as "not found".
        if expected is not None and len(parsed_response.encrypted_elements) != expected:
            raise ValueError(
                f"the zone's response holds {len(parsed_response.encrypted_elements)} points "
                f"for a request of {expected} items; they must match one to one"
            )
        return parsed_setup, parsed_response


_NOT_A_REQUEST = [
    "the body is not an OpenMined PSI Request protobuf (psi_proto.Request: "
    "reveal_intersection = 1, encrypted_elements = 2); send what the client's CreateRequest serializes"
]


def _parse_message(kind: Any, body: bytes, name: str) -> Any:
    message = kind()
    try:
        message.ParseFromString(body)
    except DecodeError:
        raise ValueError(f"the {name} is not an OpenMined PSI {kind.__name__} protobuf") from None
    if len(UnknownFieldSet(message)):
        raise ValueError(f"the {name} is not an OpenMined PSI {kind.__name__} protobuf")
    return message


def _reveal_problem(request: Any, reveal_intersection: bool) -> str | None:
    asked = bool(request.reveal_intersection)
    if asked == reveal_intersection:
        return None
    if reveal_intersection:
        return (
            "the request asks for reveal_intersection=false but this product reveals the intersection; "
            "create the client with reveal_intersection=True"
        )
    return (
        "the request asks for reveal_intersection=true but this product returns only the intersection size; "
        "create the client with reveal_intersection=False"
    )


def _structurally_bad(elements: Sequence[bytes]) -> list[int]:
    return [i for i, point in enumerate(elements) if len(point) != oprf.POINT_BYTES or point[0] not in (2, 3)]


def _element_problems(elements: Sequence[bytes], indices: Sequence[int]) -> list[str]:
    problems = []
    for index in indices[:_SHOWN_PROBLEMS]:
        point = elements[index]
        if len(point) != oprf.POINT_BYTES:
            problems.append(f"element {index} is {len(point)} bytes; compressed P-256 points are 33")
        elif point[0] not in (2, 3):
            problems.append(
                f"element {index} starts with byte 0x{point[0]:02x}; compressed P-256 points start with 02 or 03"
            )
        else:
            problems.append(f"element {index} is not a P-256 point: no point of the curve has that x")
    if len(indices) > _SHOWN_PROBLEMS:
        problems.append(
            f"and {len(indices) - _SHOWN_PROBLEMS} more elements are not valid compressed P-256 points"
        )
    return problems
