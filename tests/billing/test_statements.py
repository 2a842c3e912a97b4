"""The ledger, credits, statements (JSON and CSV), usage by day and the CloudEvents export,
through the HTTP API on a database billed by real admissions."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from cloudevents.core.formats.json import JSONFormat
from fastapi.testclient import TestClient

from datazone.db import Database
from datazone.metering import service as metering
from datazone.metering.service import SpendCapReached
from tests.conftest import problem
from tests.factories import bearer, new_principal
from tests.metering.apps import client
from tests.metering.builders import Bank, call, catalog, committed_bank

pytestmark = pytest.mark.usefixtures("catalog")
assert catalog and client

PRODUCTS = ("risk-insight", "credit-basic", "enterprise-portrait")


def billed_bank(db: Database, **plan: Any) -> Bank:
    """risk-insight 5 units (3 free, 2 at 500), credit-basic 2 units (free product),
    enterprise-portrait 4 units at 300: debits 1000 and 1200."""
    bank = committed_bank(db, products=PRODUCTS, free_units=3, **plan)
    assert call(db, bank, units=5, price_fen=500, product_id="risk-insight").error is None
    assert call(db, bank, units=2, price_fen=0, product_id="credit-basic").error is None
    assert call(db, bank, units=4, price_fen=300, product_id="enterprise-portrait").error is None
    return bank


def this_month() -> str:
    return metering.month_of(datetime.now(UTC))


def ledger(client: TestClient, token: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/ledger", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


def test_credits_reverse_debits_and_statements_add_up_to_the_ledger(client: TestClient, db: Database) -> None:
    bank = billed_bank(db)
    _, cur = new_principal(db, roles=["curator"])
    debits = ledger(client, bank.token)
    assert [(d["kind"], d["product_id"], d["amount_fen"], d["usage_count"]) for d in debits] == [
        ("debit", "risk-insight", 1000, 5),
        ("debit", "enterprise-portrait", 1200, 4),
    ]
    portrait = debits[1]["id"]
    r = client.post(
        f"/v1/ledger/{portrait}/credits",
        json={"amount_fen": 500, "reason": "wrong data"},
        headers=bearer(cur),
    )
    assert r.status_code == 201, r.text
    assert (r.json()["kind"], r.json()["amount_fen"], r.json()["reverses_id"]) == ("credit", 500, portrait)
    # more than remains (700) is refused, naming what remains; nothing is written
    r = client.post(
        f"/v1/ledger/{portrait}/credits", json={"amount_fen": 701, "reason": "x"}, headers=bearer(cur)
    )
    assert r.status_code == 409
    p = problem(r)
    assert (
        p["type"].endswith("/credit-exceeds-debit") and p["remaining_fen"] == 700 and "700 fen" in p["detail"]
    )
    # no amount: all that remains
    r = client.post(f"/v1/ledger/{portrait}/credits", json={"reason": "goodwill"}, headers=bearer(cur))
    assert r.status_code == 201 and r.json()["amount_fen"] == 700
    r = client.post(f"/v1/ledger/{portrait}/credits", json={"reason": "again"}, headers=bearer(cur))
    assert r.status_code == 409 and "wholly credited" in problem(r)["detail"]
    entries = ledger(client, bank.token, period=this_month())
    assert len(entries) == 4
    with db.unit_of_work() as s:
        audited = s.execute(
            sa.text(
                "SELECT detail->>'amount_fen', institution_id, reason FROM audit_entry"
                " WHERE action = 'ledger.credit' AND institution_id = :i ORDER BY id"
            ),
            {"i": bank.institution.id},
        ).all()
    assert [tuple(a) for a in audited] == [
        ("500", bank.institution.id, "wrong data"),
        ("700", bank.institution.id, "goodwill"),
    ]

    r = client.get(f"/v1/statements/{this_month()}", headers=bearer(bank.token))
    assert r.status_code == 200, r.text
    st = r.json()
    lines = {ln["product_id"]: ln for ln in st["lines"]}
    assert {
        k: (v["units"], v["free_units"], v["debit_fen"], v["credit_fen"], v["net_fen"])
        for k, v in lines.items()
    } == {
        "credit-basic": (2, 0, 0, 0, 0),
        "enterprise-portrait": (4, 0, 1200, 1200, 0),
        "risk-insight": (5, 3, 1000, 0, 1000),
    }
    # the totals are the ledger's sums, and name its entries
    debit_sum = sum(e["amount_fen"] for e in entries if e["kind"] == "debit")
    credit_sum = sum(e["amount_fen"] for e in entries if e["kind"] == "credit")
    assert (st["debit_fen"], st["credit_fen"], st["net_fen"]) == (
        debit_sum,
        credit_sum,
        debit_sum - credit_sum,
    )
    assert (st["debit_fen"], st["credit_fen"], st["net_fen"], st["net_yuan"]) == (2200, 1200, 1000, "10.00")
    assert st["entry_ids"] == [e["id"] for e in entries]
    assert (st["units"], st["free_units"]) == (11, 3)

    for url in (f"/v1/statements/{this_month()}.csv", f"/v1/statements/{this_month()}?format=csv"):
        r = client.get(url, headers=bearer(bank.token))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        total = rows[-1]
        assert total["product_id"] == "TOTAL"
        for col in ("units", "free_units", "debit_fen", "credit_fen", "net_fen"):
            assert sum(int(row[col]) for row in rows[:-1]) == int(total[col]) == st[col]
        assert total["net_yuan"] == "10.00"


def test_a_credit_gives_the_spend_cap_back(db: Database, client: TestClient) -> None:
    bank = billed_bank(db, monthly_cap_fen=2200)
    r = call(db, bank, units=1, price_fen=500)
    assert isinstance(r.error, SpendCapReached) and r.error.extra["spent_fen"] == 2200
    _, cur = new_principal(db, roles=["curator"])
    debit = ledger(client, bank.token)[0]["id"]
    assert (
        client.post(
            f"/v1/ledger/{debit}/credits", json={"amount_fen": 500, "reason": "refund"}, headers=bearer(cur)
        ).status_code
        == 201
    )
    assert call(db, bank, units=1, price_fen=500).error is None
    assert isinstance(call(db, bank, units=1, price_fen=500).error, SpendCapReached)


def test_bad_credits_and_who_may_credit(client: TestClient, db: Database) -> None:
    bank = billed_bank(db)
    other = committed_bank(db)
    _, cur = new_principal(db, roles=["curator"])
    _, auditor = new_principal(db, roles=["auditor"])
    debit = ledger(client, bank.token)[0]["id"]
    r = client.post(
        f"/v1/ledger/{debit}/credits", json={"amount_fen": -3, "reason": " "}, headers=bearer(cur)
    )
    assert r.status_code == 422 and [e["location"] for e in problem(r)["errors"]] == ["reason", "amount_fen"]
    for token in (bank.token, auditor):
        r = client.post(f"/v1/ledger/{debit}/credits", json={"reason": "mine"}, headers=bearer(token))
        assert r.status_code == 403
    r = client.post("/v1/ledger/999999999/credits", json={"reason": "x"}, headers=bearer(cur))
    assert r.status_code == 404
    # another institution cannot see the entry: 404, not 403
    assert client.get(f"/v1/ledger/{debit}", headers=bearer(other.token)).status_code == 404
    assert client.get(f"/v1/ledger/{debit}", headers=bearer(bank.token)).status_code == 200
    credit = client.post(
        f"/v1/ledger/{debit}/credits", json={"amount_fen": 1, "reason": "x"}, headers=bearer(cur)
    )
    r = client.post(f"/v1/ledger/{credit.json()['id']}/credits", json={"reason": "x"}, headers=bearer(cur))
    assert r.status_code == 409 and "is a credit" in problem(r)["detail"]
    assert sum(e["amount_fen"] for e in ledger(client, bank.token) if e["kind"] == "credit") == 1


def test_statement_requests_that_make_no_sense(client: TestClient, db: Database) -> None:
    bank = billed_bank(db)
    _, auditor = new_principal(db, roles=["auditor"])
    r = client.get("/v1/statements/2026-13", headers=bearer(bank.token))
    assert r.status_code == 422 and "YYYY-MM" in problem(r)["detail"]
    r = client.get(f"/v1/statements/{this_month()}?format=pdf", headers=bearer(bank.token))
    assert r.status_code == 422 and "json or csv" in problem(r)["detail"]
    r = client.get(f"/v1/statements/{this_month()}", headers=bearer(auditor))
    assert r.status_code == 422 and "institution_id" in problem(r)["detail"]
    r = client.get(
        f"/v1/statements/{this_month()}?institution_id={bank.institution.id}", headers=bearer(auditor)
    )
    assert r.status_code == 200 and r.json()["net_fen"] == 2200
    # an institution asking for another's statement gets its own
    other = committed_bank(db)
    r = client.get(
        f"/v1/statements/{this_month()}?institution_id={bank.institution.id}", headers=bearer(other.token)
    )
    assert (
        r.status_code == 200
        and r.json()["institution_id"] == other.institution.id
        and r.json()["lines"] == []
    )


def test_usage_by_product_and_day(client: TestClient, db: Database) -> None:
    bank = billed_bank(db)
    assert call(db, bank, units=2, found=1, price_fen=500).error is None
    r = client.get("/v1/usage", headers=bearer(bank.token))
    assert r.status_code == 200, r.text
    u = r.json()
    today = metering.shanghai_day(datetime.now(UTC)).isoformat()
    days = {
        (d["product_id"], d["day"]): (d["calls"], d["units"], d["free_units"], d["charged_fen"])
        for d in u["days"]
    }
    assert days == {
        ("risk-insight", today): (2, 6, 3, 1500),
        ("credit-basic", today): (1, 2, 0, 0),
        ("enterprise-portrait", today): (1, 4, 0, 1200),
    }
    assert (u["units"], u["charged_fen"]) == (12, 2700)
    other = committed_bank(db)
    assert client.get("/v1/usage", headers=bearer(other.token)).json()["days"] == []
    _, auditor = new_principal(db, roles=["auditor"])
    r = client.get("/v1/usage", params={"institution_id": bank.institution.id}, headers=bearer(auditor))
    assert r.json()["units"] == 12
    r = client.get(
        "/v1/usage",
        params={"since": "2026-01-02T00:00:00+08:00", "until": "2026-01-01T00:00:00+08:00"},
        headers=bearer(bank.token),
    )
    assert r.status_code == 422 and "after since" in problem(r)["detail"]


def test_usage_events_as_a_cloudevents_batch(client: TestClient, db: Database) -> None:
    bank = billed_bank(db)
    r = client.get("/v1/usage/events", headers=bearer(bank.token))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/cloudevents-batch+json")
    batch = r.json()
    assert isinstance(batch, list) and len(batch) == 11
    fmt = JSONFormat()
    events = [fmt.read(None, json.dumps(item)) for item in batch]
    for e in events:
        assert e.get_specversion() == "1.0"
        assert e.get_type() == "zone.datazone.usage.v1"
        assert e.get_subject() == str(bank.institution.id)
        assert e.get_time() is not None and e.get_time().tzinfo is not None
        data = e.get_data()
        assert isinstance(data, dict)
        assert e.get_source() == f"/datazone/products/{data['product']}"
        assert set(data) == {"product", "purpose", "uscc", "quantity", "price_fen", "amount_fen", "free", "client_id"}
        # each of these named one enterprise: one unit
        assert data["quantity"] == 1 and data["amount_fen"] == data["price_fen"]
    prices = sorted(
        (ev.get_data()["product"], ev.get_data()["price_fen"], ev.get_data()["free"]) for ev in events
    )  # type: ignore[index]
    assert (
        prices.count(("risk-insight", 0, True)) == 3
        and prices.count(("enterprise-portrait", 300, False)) == 4
    )
    assert len({e.get_id() for e in events}) == 11
    # pages: a full page links to the next, which goes on after its last event
    r = client.get("/v1/usage/events", params={"limit": 6}, headers=bearer(bank.token))
    assert len(r.json()) == 6 and 'rel="next"' in r.headers["link"]
    nxt = r.headers["link"].split(";")[0].strip("<>")
    rest = client.get(nxt, headers=bearer(bank.token)).json()
    assert [e["id"] for e in r.json() + rest] == [e["id"] for e in batch]
    # another institution sees none of them
    other = committed_bank(db)
    assert client.get("/v1/usage/events", headers=bearer(other.token)).json() == []
    r = client.get("/v1/usage/events", params={"limit": 0}, headers=bearer(bank.token))
    assert r.status_code == 422 and "limit" in problem(r)["detail"]
