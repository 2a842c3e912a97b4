"""In real Chromium: a department officer withdraws an authorization (授权退出) and sees the uses of its data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from datazone.config import Settings
from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.principal import service as principal_service
from tests.conftest import Server
from tests.console.browser import Visit
from tests.console.conftest import make_person


def bank_token(live_console: Server, zone: dict[str, Any]) -> str:
    r = httpx.post(f"{live_console.url}/oauth/token", data={"grant_type": "client_credentials"},
                   auth=(zone["client_id"], zone["client_secret"]), timeout=30)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture
def tax_grant(db: Database, synthetic_zone: dict[str, Any]) -> Iterator[str]:
    """The demo tax department's live grant that lets the demo bank use tax data in credit-basic for
    pre-loan checks (other tests add grants of their own); put back (as a new grant) after the test."""
    with db.unit_of_work() as s:
        tax = principal_service.find_principal(s, name="demo-tax")
        bank = principal_service.find_principal(s, name="demo-bank")
        assert tax is not None and bank is not None
        covering = [
            g for g in grant_service.list_grants(s, viewer=tax, live=True)
            if (g.institutions is None or bank.id in g.institutions)
            and (g.products is None or "credit-basic" in g.products) and "pre_loan" in g.purposes
        ]
        assert len(covering) == 1, [g.id for g in covering]
        grant = covering[0]
        kept = dict(datasets=list(grant.datasets), purposes=list(grant.purposes),
                    products=list(grant.products) if grant.products is not None else None,
                    institutions=list(grant.institutions) if grant.institutions is not None else None,
                    valid_from=grant.valid_from, valid_to=grant.valid_to, department=grant.department)
        grant_id = grant.id
    yield grant_id
    with db.unit_of_work() as s:
        tax = principal_service.find_principal(s, name="demo-tax")
        assert tax is not None
        if grant_service.get_grant(s, grant_id=grant_id, viewer=tax).revoked_at is not None:
            grant_service.create_grant(s, by=tax, **kept)  # type: ignore[arg-type]


def test_an_officer_revokes_a_grant_and_the_banks_next_call_is_refused_naming_it(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any], live_console: Server,
    visit: Callable[..., Visit], tax_grant: str,
) -> None:
    firm = synthetic_zone["consented_usccs"][0]
    lookup = f"{live_console.url}/v1/products/credit-basic/enterprises/{firm}?purpose=pre_loan"
    bank = {"Authorization": f"Bearer {bank_token(live_console, synthetic_zone)}"}
    before = httpx.get(lookup, headers=bank, timeout=30)
    assert before.status_code == 200, before.text

    officer = make_person(db, settings, kind="department", roles=["officer"], principal="demo-tax")
    v = visit()
    v.sign_in(officer.login, officer.password, officer.totp_secret)
    v.page.goto("/console/department/grants")
    row = v.page.locator(f"#grant-{tax_grant}")
    assert "demo-bank" in row.inner_text()
    v.shoot("department-grants")
    row.locator("input[name=reason]").fill("授权退出：合作协议到期")
    row.locator("button.danger").click()  # the browser's confirmation is accepted (Visit)
    v.page.wait_for_load_state()
    assert v.page.locator(f"#grant-{tax_grant}").get_attribute("data-status") == "revoked"

    after = httpx.get(lookup, headers=bank, timeout=30)
    assert after.status_code == 403, after.text
    problem = after.json()
    assert problem["check"] == "grant" and tax_grant in problem["detail"], problem

    # the officer sees the bank's earlier call in the use history, with the chart drawn
    v.page.goto("/console/department/uses")
    uses = v.page.locator("#uses").inner_text()
    assert "demo-bank" in uses and "credit-basic" in uses
    assert v.page.locator("canvas[data-chart]").first.get_attribute("data-drawn") == "yes"
    v.shoot("department-uses")
    assert v.console_errors == []
