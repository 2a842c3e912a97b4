"""In real Chromium: a bank's administrator creates an OAuth client (its secret shown once), uploads
consents, runs a lookup on the query page, and finds it in the usage and statement, billed once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from datazone.billing.models import LedgerEntry
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.metering.models import UsageEvent
from tests.conftest import Server
from tests.console.browser import Visit
from tests.console.conftest import make_person


def unconsented_firm(db: Database, consented: list[str]) -> str:
    with db.unit_of_work() as s:
        firms = dataset_service.current_entities(s, dataset_id="mr_registration", limit=800)
    return next(f for f in reversed(firms) if f not in set(consented))


def test_an_administrator_signs_up_a_client_records_consent_and_queries_billed_once(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any], live_console: Server,
    visit: Callable[..., Visit], tmp_path: Path,
) -> None:
    admin = make_person(db, settings, kind="institution", roles=["admin"], principal="demo-bank")
    v = visit()
    v.sign_in(admin.login, admin.password, admin.totp_secret)
    assert v.page.url.endswith("/console/institution"), v.page.url
    v.shoot("institution-home")

    # an OAuth client: its secret is on the answer page once, and the token endpoint takes it
    v.page.goto("/console/institution/clients")
    v.page.fill("#client-name", "browser-test-client")
    v.page.click("#create-client")
    client_id = v.page.locator("#client-id").inner_text()
    secret = v.page.locator("#client-secret").inner_text()
    assert client_id and len(secret) >= 32
    v.page.goto("/console/institution/clients")
    assert client_id in v.page.locator("#clients").inner_text() and secret not in v.page.content()
    token = httpx.post(f"{live_console.url}/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret), timeout=30)
    assert token.status_code == 200 and token.json()["token_type"].lower() == "bearer", token.text

    # consent of an enterprise that had none, uploaded as a CSV with its evidence hash
    firm = unconsented_firm(db, synthetic_zone["consented_usccs"])
    today = date.today()
    evidence = hashlib.sha256(f"browser consent {firm}".encode()).hexdigest()
    csv = tmp_path / "consents.csv"
    csv.write_text(
        "uscc,purpose,products,valid_from,valid_to,evidence_ref,evidence_sha256\n"
        f"{firm},pre_loan,,{today - timedelta(days=1)},{today + timedelta(days=180)},s3://evidence/{firm}.pdf,{evidence}\n",
        encoding="utf-8",
    )
    v.page.goto("/console/institution/consents")
    v.page.set_input_files("#consent-file", str(csv))
    v.page.click("#upload-consents")
    v.page.wait_for_load_state()
    assert firm in v.page.locator("#consents").inner_text(), v.page.locator("main").inner_text()[:1500]

    # the query page answers a paid product for that enterprise as the API would
    v.page.goto("/console/institution/query")
    v.page.select_option("#query-product", "risk-insight")
    v.page.fill("#query-uscc", firm)
    v.page.select_option("#query-purpose", "pre_loan")
    v.page.click("#run-query")
    v.page.wait_for_load_state()
    assert v.page.locator("#query-answer").is_visible(), v.page.locator("main").inner_text()
    v.shoot("institution-query")
    with db.unit_of_work() as s:
        events = s.execute(
            sa.select(UsageEvent.product_id, UsageEvent.uscc, UsageEvent.price_fen, UsageEvent.debit_id)
            .where(UsageEvent.client_id == f"console:{admin.login}")
        ).all()
        assert len(events) == 1, events  # billed once
        product_id, uscc, price_fen, debit_id = events[0]
        assert (product_id, uscc) == ("risk-insight", firm) and price_fen > 0 and debit_id is not None
        debit = s.get(LedgerEntry, debit_id)
        assert debit is not None and debit.kind == "debit" and debit.amount_fen == price_fen
    assert f"¥{price_fen // 100:,}.{price_fen % 100:02d}" in v.page.locator("#query-charged").inner_text()

    # the same call in the usage and in the month's statement
    v.page.goto("/console/institution/usage")
    assert "risk-insight" in v.page.locator("#usage").inner_text()
    assert "risk-insight" in v.page.locator("#statement").inner_text()
    assert v.page.locator("canvas[data-chart]").first.get_attribute("data-drawn") == "yes"
    v.shoot("institution-usage")
    assert v.console_errors == []
