"""HTTP-native PSI end to end: the real gateway on loopback, the synthetic zone, OpenMined's
own client library, and plaintext intersections computed from the zone tables.

Covers: the `openmined-psi` client and our OPRF both get the right intersection (plain,
size-only, labeled); nothing the institution sends holds a USCC or its plain hash; the floor,
the limits, replays, conflicts and malformed points; grants revoked mid-session; key rotation;
the zone's precomputed side refreshed after an ingest changes the slice.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import private_set_intersection.python as om
import pytest
import sqlalchemy as sa

from datazone.ingest import service as ingest_service
from datazone.ingest.pipeline import execute_run
from datazone.privacy import labels, oprf
from datazone.psi import service as psi_service
from datazone.psi import worker
from tests.conftest import problem
from tests.factories import grants_revoked
from tests.psi.conftest import Zone, bank_list

PROTOBUF = "application/x-protobuf"


def open_session(http: httpx.Client, product: str, set_size: int, **extra: Any) -> httpx.Response:
    return http.post(
        "/v1/psi/sessions", json={"product": product, "purpose": "pre_loan", "set_size": set_size, **extra}
    )


def put_chunk(http: httpx.Client, session: dict[str, Any], index: int, body: bytes) -> httpx.Response:
    url = session["chunks_url"].replace("{index}", str(index))
    return http.put(url, content=body, headers={"Content-Type": PROTOBUF})


def assert_blind(body: bytes, items: list[str]) -> None:
    """No USCC, nor any plain hash of one, appears in what the institution sends."""
    for code in items:
        raw = code.encode()
        digests = [hashlib.new(h, raw).digest() for h in ("sha256", "sha1", "md5")]
        for needle in [raw, *digests, *(d.hex().encode() for d in digests), oprf.hash_to_point(code)]:
            assert needle not in body, f"the request carries {code} in a recognisable form"


@pytest.fixture
def http(zone: Zone) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=zone.url, headers=zone.token, timeout=60) as c:
        yield c


def test_openmined_client_gets_the_plaintext_intersection(zone: Zone, http: httpx.Client) -> None:
    items = bank_list(zone, listed=40, unlisted=100, outsiders=60)
    usage = sa.text(
        "SELECT coalesce(sum(quantity), 0), coalesce(sum(quantity * price_fen), 0) FROM usage_event"
        " WHERE product_id = 'dishonest-debtor-psi' AND uscc IS NULL"
    )
    with zone.db.engine.connect() as conn:
        events_before, fen_before = conn.execute(usage).one()
    opened = open_session(http, "dishonest-debtor-psi", len(items))
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert session["result"] == "intersection" and session["set_size"] == len(items)
    assert session["charged_fen"] == 2 * len(items)  # paid per item of the set, up front
    # a unit per item (no enterprise named: the zone never sees them), and the charge, billed as
    # one usage event carrying the set's quantity rather than a row per item
    with zone.db.engine.connect() as conn:
        events, fen = conn.execute(usage).one()
        rows = conn.execute(
            sa.text("SELECT quantity, price_fen, free FROM usage_event WHERE idempotency_key IS NOT DISTINCT FROM"
                    " NULL AND product_id = 'dishonest-debtor-psi' ORDER BY at DESC LIMIT 1")
        ).one()
    assert (events - events_before, fen - fen_before) == (len(items), session["charged_fen"])
    assert tuple(rows) == (len(items), 2, False)
    setup_resp = http.get(session["setup_url"])
    assert setup_resp.status_code == 200 and setup_resp.headers["content-type"] == PROTOBUF
    setup = om.ServerSetup()
    setup.ParseFromString(setup_resp.content)

    # the institution's own library, OpenMined's client, with no datazone code on its side
    client = om.client.CreateWithNewKey(True)
    request = client.CreateRequest(items)
    body = request.SerializeToString()
    assert_blind(body, items)
    answered = put_chunk(http, session, 0, body)
    assert answered.status_code == 200, answered.text
    response = om.Response()
    response.ParseFromString(answered.content)
    matched = {items[i] for i in client.GetIntersection(setup, response)}
    assert matched == set(items) & set(zone.listed)
    assert len(matched) == min(40, len(zone.listed)) > 5

    status = http.get(f"/v1/psi/sessions/{session['session_id']}").json()
    assert status["items_received"] == len(items) and status["chunks_done"] == [0]

    # a resent chunk is answered the same and costs nothing; another body under its index is refused
    again = put_chunk(http, session, 0, body)
    assert again.content == answered.content and again.headers["Idempotent-Replayed"] == "true"
    other = client.CreateRequest(items[:10]).SerializeToString()
    conflict = put_chunk(http, session, 0, other)
    assert conflict.status_code == 409 and problem(conflict)["type"].endswith("/psi-chunk-conflict")
    # the session paid for len(items): one more item is over what it declared
    over = put_chunk(http, session, 1, other)
    assert over.status_code == 422 and problem(over)["type"].endswith("/psi-set-over-limit")


def test_size_only_product_reveals_only_the_count(zone: Zone, http: httpx.Client) -> None:
    items = bank_list(zone, listed=0, unlisted=150, outsiders=50)
    session = open_session(http, "registered-enterprises-count", len(items)).json()
    assert session["result"] == "size" and session["charged_fen"] == 0
    setup = om.ServerSetup()
    setup.ParseFromString(http.get(session["setup_url"]).content)
    # a client asking for the intersection itself is refused: the product reveals the size only
    revealing = om.client.CreateWithNewKey(True).CreateRequest(items).SerializeToString()
    refused = put_chunk(http, session, 0, revealing)
    assert refused.status_code == 400 and "reveal_intersection" in problem(refused)["detail"]
    client = om.client.CreateWithNewKey(False)
    chunks = [items[:120], items[120:]]
    total = 0
    for i, chunk in enumerate(chunks):
        answered = put_chunk(http, session, i, client.CreateRequest(chunk).SerializeToString())
        assert answered.status_code == 200, answered.text
        response = om.Response()
        response.ParseFromString(answered.content)
        total += client.GetIntersectionSize(setup, response)
    assert total == len(set(items) & set(zone.active))


def test_labeled_psi_gives_the_fields_of_matched_enterprises_only(zone: Zone, http: httpx.Client) -> None:
    items = bank_list(zone, listed=25, unlisted=60, outsiders=30)
    opened = open_session(http, "dishonest-debtor-labeled", len(items), labeled=True)
    assert opened.status_code == 201, opened.text
    session = opened.json()
    assert session["labels_url"] and session["charged_fen"] == 5 * len(items)
    table = http.get(session["labels_url"])
    assert table.status_code == 200
    # every listed enterprise has an entry, so the zone cannot tell which ones the bank opens
    assert labels.label_table_stats(table.content)["entries"] == len(zone.listed)
    blinded = oprf.blind(items)
    request = om.Request()
    request.reveal_intersection = True
    request.encrypted_elements.extend(blinded.points)
    body = request.SerializeToString()
    assert_blind(body, items)
    answered = put_chunk(http, session, 0, body)
    assert answered.status_code == 200, answered.text
    response = om.Response()
    response.ParseFromString(answered.content)
    outputs = oprf.finalize(blinded, list(response.encrypted_elements))
    opened_labels = {items[i]: json.loads(v) for i, v in labels.open_labels(table.content, outputs).items()}
    assert set(opened_labels) == set(items) & set(zone.listed)

    # the labels equal what the zone tables say, field by field
    with zone.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT uscc, count(*), count(*) FILTER (WHERE performance = 'unperformed'), max(listed_on)"
                " FROM zone.court_dishonest WHERE _vto IS NULL AND uscc = ANY(:c) GROUP BY uscc"
            ),
            {"c": list(opened_labels)},
        ).all()
        names = dict(
            conn.execute(
                sa.text("SELECT uscc, name FROM zone.mr_registration WHERE _vto IS NULL AND uscc = ANY(:c)"),
                {"c": list(opened_labels)},
            ).all()
        )
    for uscc, cases, unperformed, latest in rows:
        label = opened_labels[uscc]
        assert label["listed_cases"] == cases and label["unperformed_cases"] == unperformed
        assert label["latest_listed_on"] == latest.isoformat()
        assert label["name"] == names[uscc]
        assert set(label) == {"name", "listed_cases", "unperformed_cases", "latest_listed_on", "latest_case_no"}


def test_floor_limits_and_bad_requests_are_refused_with_what_to_fix(zone: Zone, http: httpx.Client) -> None:
    small = open_session(http, "dishonest-debtor-psi", 10)
    body = problem(small)
    assert small.status_code == 422 and body["type"].endswith("/psi-set-below-floor")
    assert body["floor"] == 100 and body["check"] == "psi_set"
    large = open_session(http, "dishonest-debtor-psi", 1_000_001)
    assert large.status_code == 422 and problem(large)["type"].endswith("/psi-set-over-limit")
    assert problem(large)["limit"] == 1_000_000
    not_labeled = open_session(http, "dishonest-debtor-psi", 200, labeled=True)
    assert not_labeled.status_code == 422 and "no labels" in problem(not_labeled)["detail"]
    # a lookup product is not served by PSI, and a PSI product not by lookups
    lookup = open_session(http, "credit-basic", 200)
    assert lookup.status_code == 409 and problem(lookup)["type"].endswith("/not-a-psi-product")
    probe = http.get(f"/v1/products/dishonest-debtor-psi/enterprises/{zone.listed[0]}", params={"purpose": "pre_loan"})
    assert probe.status_code == 409 and problem(probe)["type"].endswith("/psi-only-product")

    session = open_session(http, "dishonest-debtor-psi", 150).json()
    items = bank_list(zone, listed=5, unlisted=5, outsiders=0)
    good = om.client.CreateWithNewKey(True).CreateRequest(items)
    bad = om.Request()
    bad.CopyFrom(good)
    bad.encrypted_elements[3] = b"\x02" + b"\xff" * 32  # x not on the curve
    bad.encrypted_elements[7] = b"\x05" * 20
    refused = put_chunk(http, session, 0, bad.SerializeToString())
    detail = problem(refused)
    assert refused.status_code == 400 and detail["type"].endswith("/malformed-psi-request")
    assert detail["positions"] == [3, 7]
    garbage = put_chunk(http, session, 0, b"not a protobuf at all \x00\xff")
    assert garbage.status_code == 400
    wrong_type = http.put(session["chunks_url"].replace("{index}", "0"), content=good.SerializeToString())
    assert wrong_type.status_code == 422 and PROTOBUF in problem(wrong_type)["detail"]
    # nothing of the refused chunks was kept
    assert http.get(f"/v1/psi/sessions/{session['session_id']}").json()["items_received"] == 0
    # another institution's session does not exist for this one
    assert http.get("/v1/psi/sessions/psi_doesnotexist0000").status_code == 404


def test_key_rotation_keeps_open_sessions_and_new_ones_wait_for_the_worker(zone: Zone, http: httpx.Client) -> None:
    items = bank_list(zone, listed=20, unlisted=100, outsiders=0)
    old = open_session(http, "dishonest-debtor-psi", len(items)).json()
    old_setup = http.get(old["setup_url"]).content
    with zone.db.unit_of_work() as s:
        rotated = psi_service.rotate_key(s, settings=zone.settings, by=None, by_name="test", reason="test rotation").id
    # a session opened before the rotation finishes on its own epoch
    client = om.client.CreateWithNewKey(True)
    answered = put_chunk(http, old, 0, client.CreateRequest(items).SerializeToString())
    setup = om.ServerSetup()
    setup.ParseFromString(old_setup)
    response = om.Response()
    response.ParseFromString(answered.content)
    assert {items[i] for i in client.GetIntersection(setup, response)} == set(items) & set(zone.listed)
    # a new one waits until the worker has precomputed the new epoch: nothing charged meanwhile
    waiting = open_session(http, "dishonest-debtor-psi", len(items))
    assert waiting.status_code == 503 and waiting.headers["Retry-After"] == "30"
    assert problem(waiting)["type"].endswith("/psi-setup-building")
    done = worker.run_once(zone.db, zone.settings)
    assert "dishonest-debtor-psi/setup" in done.built and not done.failed
    fresh = open_session(http, "dishonest-debtor-psi", len(items)).json()
    # the epoch the rotation started (ids are a sequence: other tests' rolled-back epochs leave gaps)
    assert fresh["epoch"] == rotated > old["epoch"]
    new_setup = http.get(fresh["setup_url"]).content
    assert new_setup != old_setup
    # the old session's blinded set means nothing under the new key
    client = om.client.CreateWithNewKey(True)
    answered = put_chunk(http, fresh, 0, client.CreateRequest(items).SerializeToString())
    setup.ParseFromString(new_setup)
    response.ParseFromString(answered.content)
    assert {items[i] for i in client.GetIntersection(setup, response)} == set(items) & set(zone.listed)


def _ingest(zone: Zone, path: Path) -> None:
    with zone.db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id="court_dishonest", trigger="cli", file=str(path)).id
    run = execute_run(zone.db, run_id=run_id, settings=zone.settings)
    assert run.status == "succeeded", run.error


def test_an_ingest_that_changes_the_slice_refreshes_the_zone_side(
    zone: Zone, http: httpx.Client, tmp_path: Path
) -> None:
    delivered = sorted((zone.drop_dir / "court_dishonest").rglob("*.csv"))[-1]
    original = tmp_path / "court_dishonest_as_delivered.csv"
    original.write_bytes(delivered.read_bytes())
    with original.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    newcomer = zone.unlisted[0]
    extra = list(rows[1])
    extra[0] = newcomer
    extra[1] = "(2026)京0105执9999号"
    changed = tmp_path / "court_dishonest_plus_one.csv"
    with changed.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([*rows, extra])
    items = [newcomer, *zone.listed[:30], *zone.unlisted[1:100]]
    try:
        _ingest(zone, changed)
        stale = open_session(http, "dishonest-debtor-psi", len(items))
        assert stale.status_code == 503  # the slice moved on: the old setup is not served for it
        done = worker.run_once(zone.db, zone.settings)
        assert "dishonest-debtor-psi/setup" in done.built
        session = open_session(http, "dishonest-debtor-psi", len(items)).json()
        assert session["slice"].startswith("court_dishonest@v")
        setup = om.ServerSetup()
        setup.ParseFromString(http.get(session["setup_url"]).content)
        client = om.client.CreateWithNewKey(True)
        response = om.Response()
        response.ParseFromString(put_chunk(http, session, 0, client.CreateRequest(items).SerializeToString()).content)
        matched = {items[i] for i in client.GetIntersection(setup, response)}
        assert newcomer in matched and matched == {newcomer, *zone.listed[:30]}
    finally:
        # the shared synthetic zone goes back to its own list for the tests after this one
        _ingest(zone, original)
        worker.run_once(zone.db, zone.settings)


def test_a_revoked_grant_stops_the_session_at_its_next_chunk(zone: Zone, http: httpx.Client) -> None:
    items = bank_list(zone, listed=10, unlisted=100, outsiders=0)
    session = open_session(http, "dishonest-debtor-psi", len(items)).json()
    with grants_revoked(zone.db, department="courts", reason="test: revoked mid-session"):
        client = om.client.CreateWithNewKey(True)
        refused = put_chunk(http, session, 0, client.CreateRequest(items[:50]).SerializeToString())
        body = problem(refused)
        assert refused.status_code == 403 and body["check"] == "grant"
        assert "courts" in body["detail"]
        assert http.get(f"/v1/psi/sessions/{session['session_id']}").json()["items_received"] == 0
