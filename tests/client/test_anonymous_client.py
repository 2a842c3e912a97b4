"""The SDK's and `datazone-client`'s anonymous query against the real gateway on loopback.

The zone is the anonymous-query tests' (tests/anonymous/conftest.py): the synthetic zone, test
products with k = 100 and institutions of their own. Answers are checked against the plaintext
read from the zone's tables (the dishonest-debtor list) and against the plain lookup at
clearance 1; every byte the SDK sends is searched for the codes and their plain hashes.
Faults (a swallowed answer, a rebuild between the parameters and the query, a bucket below k)
are injected at the HTTP layer between the SDK and the real gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from datazone.client import InvalidUSCCs, RetryPolicy, ZoneClient, ZoneError
from datazone.client import cli as client_cli
from datazone.client.anonymous import AnonymityNotMet
from datazone.oauth import service as oauth_service
from datazone.privacy import anonymous_query as aq
from datazone.privacy import labels
from tests.anonymous import conftest as anonymous_zone
from tests.anonymous.conftest import CREDIT, DEBTORS, K, Zone, anonymous_product, put_product
from tests.anonymous.test_queries import assert_blind
from tests.client.relay import Relay
from tests.client.wire import Sent
from tests.client.wire import Wire as RecordingWire
from tests.factories import bad_check

pytestmark = pytest.mark.e2e

# the anonymous-query tests' zone (module scope), here for this module's tests
zone = anonymous_zone.zone
QUICK = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


class Wire(RecordingWire):
    def queries(self) -> list[Sent]:
        return [s for s in self.sent if s.method == "POST" and s.path.endswith("/queries")]


def credentials(zone: Zone, products: list[str], **terms: Any) -> tuple[int, str, str]:
    """A new institution for `products` (contract, grants) and an OAuth client of its own."""
    inst = zone.institution(products, **terms)
    with zone.db.unit_of_work() as s:
        client, secret = oauth_service.create_client(
            s, institution_id=inst.id, name="sdk", by_name="sdk tests"
        )
        client_id = client.client_id
    assert secret is not None
    return inst.id, client_id, secret


def sdk(
    zone: Zone, client_id: str, secret: str, *, url: str | None = None, wire: Wire | None = None
) -> ZoneClient:
    return ZoneClient(
        url=url or zone.url, client_id=client_id, client_secret=secret, retry=QUICK, transport=wire
    )


@dataclass
class Bank:
    id: int
    client_id: str
    secret: str


def usage(zone: Zone, bank_id: int) -> tuple[int, int]:
    """(usage events, fen) of the institution so far."""
    with zone.db.engine.connect() as conn:
        count, fen = conn.execute(
            sa.text(
                "SELECT coalesce(sum(quantity), 0), coalesce(sum(quantity * price_fen), 0) FROM usage_event WHERE institution_id = :i"
            ),
            {"i": bank_id},
        ).one()
    return int(count), int(fen)


@pytest.fixture(scope="module")
def bank(zone: Zone) -> Bank:
    return Bank(*credentials(zone, [DEBTORS, CREDIT, "credit-basic"], clearance=1))


def test_existence_answers_equal_the_list_and_nothing_recognisable_is_sent(zone: Zone, bank: Bank) -> None:
    asked = [zone.listed[0], zone.unlisted[0], zone.listed[1], zone.strangers(1)[0], zone.unlisted[1]]
    asked += zone.listed[2:6] + zone.unlisted[2:5]  # 12 codes: three requests of at most 5 (max_queries)
    wire = Wire()
    before = usage(zone, bank.id)
    with sdk(zone, bank.client_id, bank.secret, wire=wire) as client:
        result = client.anonymous_lookup(
            DEBTORS, [c.lower() for c in asked] + [asked[0]], purpose="anti_fraud"
        )
    # the plaintext truth: membership in the zone's list; asked once each, in order, as normalized
    assert [r.uscc for r in result.results] == asked
    assert [r.found for r in result.results] == [c in zone.listed for c in asked]
    assert sum(r.found for r in result.results) == 6 and all(r.answer is None for r in result.results)
    assert result.answer_kind == "existence" and result.k == K
    # each answer came from the code's own bucket, of at least k candidates
    sizes = aq.bucket_sizes(zone.registered, result.prefix_bits)
    for r in result.results:
        assert r.bucket == aq.bucket_of(r.uscc, result.prefix_bits)
        assert r.candidates == sizes[r.bucket] >= K
    # three requests, each under its own Idempotency-Key; no code, nor a plain hash of one, in any
    queries = wire.queries()
    assert [len(json.loads(q.body)["queries"]) for q in queries] == [5, 5, 2]
    assert len({q.headers["idempotency-key"] for q in queries}) == 3
    for sent in wire.sent:
        assert_blind(sent.body, asked)
        assert all(code not in sent.path for code in asked)
    # 12 evaluations billed at 3 fen each, the same as the SDK reports
    count, fen = usage(zone, bank.id)
    assert (count - before[0], fen - before[1]) == (12, 36) and result.charged_fen == 36


def test_full_answers_equal_the_plain_lookup_at_clearance_1(zone: Zone, bank: Bank) -> None:
    asked = [*zone.registered[200:206], zone.strangers(2)[1]]
    with sdk(zone, bank.client_id, bank.secret) as client:
        result = client.anonymous_lookup(CREDIT, asked, purpose="pre_loan")
        assert result.answer_kind == "full"
        for code, r in zip(asked, result.results, strict=True):
            if code not in zone.registered:
                assert not r.found and r.answer is None  # not a candidate: no entry opens
                continue
            plain = client.lookup("credit-basic", code, purpose="pre_loan")
            assert plain["masking"]["clearance"] == 1
            assert r.found and r.answer == plain["answer"]
            # a withheld field opens as null: the SDK names it, so null there does not read as "no value"
            withheld = tuple(sorted(n for n, how in plain["masking"]["fields"].items() if how == "withheld"))
            assert withheld and r.withheld == withheld and all(r.answer[n] is None for n in withheld)
    assert result.charged_fen == 0  # free, metered


def test_a_swallowed_answer_is_asked_again_under_the_same_key_and_billed_once(zone: Zone, bank: Bank) -> None:
    asked = [zone.listed[7], zone.unlisted[7], zone.listed[8]]
    before = usage(zone, bank.id)
    with Relay(zone.url, drop=lambda m, p, n: m == "POST" and p.endswith("/queries") and n == 1) as relay:
        with sdk(zone, bank.client_id, bank.secret, url=relay.url) as client:
            result = client.anonymous_lookup(DEBTORS, asked, purpose="pre_loan")
        posts = [(p, h) for m, p, h in relay.seen if m == "POST" and p.endswith("/queries")]
    assert len(relay.dropped) == 1 and relay.dropped[0][2] == 200  # the gateway answered (and billed) it
    assert len(posts) == 2 and posts[0][1]["Idempotency-Key"] == posts[1][1]["Idempotency-Key"]
    assert [r.found for r in result.results] == [True, False, True]
    count, fen = usage(zone, bank.id)
    assert (count - before[0], fen - before[1]) == (3, 9)  # the replay was free


def test_a_rebuild_between_parameters_and_query_is_refetched_and_redone_once(zone: Zone) -> None:
    product = "anon-debtors-sdk-rebuild"
    bits = aq.choose_prefix_bits(zone.registered, K).prefix_bits
    r = put_product(zone, anonymous_product("dishonest-debtor-anonymous", product, k=K, prefix_bits=bits))
    assert r.status_code in (200, 201), r.text
    zone.build()
    _, client_id, secret = credentials(zone, [product])

    rebuilt: list[bool] = []

    def rebuild_first(request: httpx.Request) -> None:
        # the operator shortens the prefix and the worker seals a new table, after the SDK read the old one
        if request.url.path.endswith("/queries") and not rebuilt:
            rebuilt.append(True)
            changed = anonymous_product("dishonest-debtor-anonymous", product, k=K, prefix_bits=bits - 1)
            assert put_product(zone, changed).status_code == 200
            zone.build()

    wire = Wire(before=rebuild_first)
    asked = [zone.listed[9], zone.unlisted[9]]
    with sdk(zone, client_id, secret, wire=wire) as client:
        result = client.anonymous_lookup(product, asked, purpose="pre_loan")
    first, second = wire.queries()
    assert (
        json.loads(first.body)["prefix_bits"] == bits and json.loads(second.body)["prefix_bits"] == bits - 1
    )
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]  # a new body, a new key
    assert result.prefix_bits == bits - 1 and [r.found for r in result.results] == [True, False]
    assert [r.bucket for r in result.results] == [aq.bucket_of(c, bits - 1) for c in asked]


def test_an_answer_from_a_bucket_below_k_is_refused_unopened(zone: Zone, bank: Bank) -> None:
    def shrink(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/queries") or response.status_code != 200:
            return response
        body = response.json()
        body["answers"][1]["candidates"] = K - 1
        return httpx.Response(200, json=body)

    with (
        sdk(zone, bank.client_id, bank.secret, wire=Wire(after=shrink)) as client,
        pytest.raises(AnonymityNotMet) as refused,
    ):
        client.anonymous_lookup(DEBTORS, [zone.listed[10], zone.unlisted[10]], purpose="pre_loan")
    assert refused.value.type == "bucket-below-k"
    assert f"k = {K}" in str(refused.value) and f"1 ({K - 1} candidates)" in str(refused.value)

    def small_parameters(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.method == "GET" and request.url.path == f"/v1/anonymous/{DEBTORS}":
            return httpx.Response(200, json={**response.json(), "smallest_bucket": K - 1})
        return response

    wire = Wire(after=small_parameters)
    with (
        sdk(zone, bank.client_id, bank.secret, wire=wire) as client,
        pytest.raises(AnonymityNotMet, match="no query was sent"),
    ):
        client.anonymous_lookup(DEBTORS, [zone.listed[10]], purpose="pre_loan")
    assert wire.queries() == []


def test_a_full_answer_with_fewer_than_k_entries_is_refused_whatever_the_zone_says(
    zone: Zone, bank: Bank
) -> None:
    """A full answer holds every candidate's sealed entry, so the SDK counts them: a table of
    k - 1 entries is refused even when the answer claims k candidates."""
    short = labels.seal_labels([os.urandom(32) for _ in range(K - 1)], [b"{}"] * (K - 1))

    def thin(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if not request.url.path.endswith("/queries") or response.status_code != 200:
            return response
        body = response.json()
        body["answers"][0]["entries"] = aq.b64encode(short)
        return httpx.Response(200, json=body)

    with (
        sdk(zone, bank.client_id, bank.secret, wire=Wire(after=thin)) as client,
        pytest.raises(AnonymityNotMet) as refused,
    ):
        client.anonymous_lookup(CREDIT, [zone.unlisted[11]], purpose="pre_loan")
    assert f"0 ({K - 1} candidates)" in str(refused.value)


def test_bad_codes_are_refused_before_anything_is_sent(zone: Zone, bank: Bank) -> None:
    wire = Wire()
    with sdk(zone, bank.client_id, bank.secret, wire=wire) as client:
        with pytest.raises(InvalidUSCCs) as bad:
            client.anonymous_lookup(
                DEBTORS, [zone.listed[0], bad_check(zone.listed[1]), "91"], purpose="pre_loan"
            )
        with pytest.raises(ZoneError) as refused:  # a product of another channel: the zone's problem
            client.anonymous_lookup("credit-basic", [zone.listed[0]], purpose="pre_loan")
    assert [b.position for b in bad.value.bad] == [1, 2]
    assert wire.paths() == [("GET", "/v1/anonymous/credit-basic")]
    assert refused.value.status == 409 and refused.value.type == "not-an-anonymous-product"


# -- the command line --------------------------------------------------------------------------------


@pytest.fixture
def cli_env(bank: Bank, zone: Zone, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DATAZONE_URL", zone.url)
    monkeypatch.setenv("DATAZONE_CLIENT_ID", bank.client_id)
    monkeypatch.setenv("DATAZONE_CLIENT_SECRET", bank.secret)
    monkeypatch.setenv("DATAZONE_PROFILE", "/nonexistent/client.toml")
    yield


def invoke(*args: str) -> Any:
    return CliRunner().invoke(client_cli.app, list(args))


def test_cli_lookup_anonymous_existence_and_full(zone: Zone, cli_env: None) -> None:
    listed, unlisted = zone.listed[11], zone.unlisted[11]
    result = invoke("lookup", "--anonymous", DEBTORS, listed, unlisted, "--purpose", "anti_fraud")
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[1]: line for line in result.output.splitlines() if listed in line or unlisted in line
    }
    assert "yes" in rows[listed] and "no" in rows[unlisted]
    assert f"k = {K}" in result.output
    result = invoke("lookup", "--anonymous", DEBTORS, listed, "--purpose", "anti_fraud", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["results"][0]["uscc"] == listed and shown["results"][0]["found"] is True
    code = zone.registered[300]
    result = invoke("lookup", "--anonymous", CREDIT, code, "--purpose", "pre_loan", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["results"][0]
    answer = shown["answer"]
    assert answer["name"] and answer["status"] in ("active", "revoked", "deregistered")
    assert shown["withheld"] and all(answer[n] is None for n in shown["withheld"])
    # printed, a withheld field says "withheld", never None
    result = invoke("lookup", "--anonymous", CREDIT, code, "--purpose", "pre_loan")
    assert result.exit_code == 0, result.output
    for name in shown["withheld"]:
        (row,) = [line for line in result.output.splitlines() if f" {name} " in line]
        assert "withheld" in row, row
    assert "None" not in result.output


def test_cli_lookup_bad_input_exits_2_and_refusals_exit_1(zone: Zone, cli_env: None) -> None:
    result = invoke(
        "lookup", "--anonymous", DEBTORS, zone.listed[0], bad_check(zone.listed[1]), "--purpose", "pre_loan"
    )
    assert result.exit_code == 2 and "#2" in result.output and "check character" in result.output
    assert "nothing was sent" in result.output
    result = invoke("lookup", "credit-basic", zone.listed[0], zone.listed[1], "--purpose", "pre_loan")
    assert result.exit_code == 2 and "--anonymous" in result.output
    result = invoke("lookup", "--anonymous", "credit-basic", zone.listed[0], "--purpose", "pre_loan")
    assert result.exit_code == 1 and "409 not-an-anonymous-product" in result.output
