"""The operator's ledger page and credits, and retiring an approved model from the review queue."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.audit.models import AuditEntry
from datazone.billing.models import LedgerEntry
from datazone.config import Settings
from datazone.db import Database
from datazone.principal import service as principal_service
from datazone.scoring import service as scoring_service
from datazone.scoring.models import ScoringModel
from tests.console.conftest import make_person, sign_in
from tests.factories import registered_model

OP = "/console/operator"


def paid_call(client: TestClient, zone: dict[str, Any]) -> None:
    """A paid lookup by the demo bank through the API (its debit is the bank's latest)."""
    token = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        auth=(zone["client_id"], zone["client_secret"])).json()["access_token"]
    firm = zone["consented_usccs"][1]
    r = client.get(f"/v1/products/risk-insight/enterprises/{firm}", params={"purpose": "pre_loan"},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["charged_fen"] > 0, r.text


def latest_debit(db: Database) -> LedgerEntry:
    with db.unit_of_work() as s:
        bank = principal_service.named_principal(s, name="demo-bank")
        debit = s.scalars(sa.select(LedgerEntry).where(LedgerEntry.institution_id == bank.id, LedgerEntry.kind == "debit")
                          .order_by(LedgerEntry.id.desc())).first()
        assert debit is not None
        s.expunge(debit)
        return debit


def test_a_curator_credits_part_of_a_charge_and_not_more_than_remains(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    paid_call(browser_like, synthetic_zone)
    debit = latest_debit(db)
    curator = make_person(db, settings, kind="operator", roles=["curator"])
    csrf = sign_in(browser_like, curator)
    page = browser_like.get(f"{OP}/ledger", params={"period": debit.period})
    row = re.search(rf'<tr id="entry-{debit.id}">(.*?)</tr>', page.text, re.S)
    assert row and "demo-bank" in row.group(1) and f'id="credit-{debit.id}"' in row.group(1)
    r = browser_like.post(f"{OP}/ledger/{debit.id}/credit",
                          data={"csrf": csrf, "amount_fen": "1", "reason": "服务中断补偿", "period": debit.period})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        credits = s.scalars(sa.select(LedgerEntry).where(LedgerEntry.reverses_id == debit.id)).all()
        assert [(c.kind, c.amount_fen) for c in credits] == [("credit", 1)]
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.detail["account"].astext == curator.login)
                          .order_by(AuditEntry.id.desc())).first()
        assert entry is not None and "credit" in entry.action
    r = browser_like.post(f"{OP}/ledger/{debit.id}/credit",
                          data={"csrf": csrf, "amount_fen": str(debit.amount_fen), "reason": "再补", "period": debit.period})
    assert r.status_code == 409 and 'role="alert"' in r.text
    r = browser_like.post(f"{OP}/ledger/{debit.id}/credit", data={"csrf": csrf, "amount_fen": "abc", "reason": "x"})
    assert r.status_code == 422
    with db.unit_of_work() as s:
        assert len(s.scalars(sa.select(LedgerEntry).where(LedgerEntry.reverses_id == debit.id)).all()) == 1


def test_an_auditor_reads_the_ledger_but_cannot_credit(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    paid_call(browser_like, synthetic_zone)
    debit = latest_debit(db)
    auditor = make_person(db, settings, kind="operator", roles=["auditor"])
    csrf = sign_in(browser_like, auditor)
    page = browser_like.get(f"{OP}/ledger", params={"period": debit.period})
    assert page.status_code == 200 and f'id="entry-{debit.id}"' in page.text and f'id="credit-{debit.id}"' not in page.text
    r = browser_like.post(f"{OP}/ledger/{debit.id}/credit", data={"csrf": csrf, "reason": "x", "period": debit.period})
    assert r.status_code == 403
    with db.unit_of_work() as s:
        assert s.scalars(sa.select(LedgerEntry).where(LedgerEntry.reverses_id == debit.id)).first() is None


def test_a_reviewer_retires_an_approved_model(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    model_id = registered_model(db)
    reviewer = make_person(db, settings, kind="operator", roles=["reviewer"], principal="demo-operator")
    with db.unit_of_work() as s:
        by = principal_service.named_principal(s, name="demo-operator")
        scoring_service.review_model(s, model_id=model_id, by=by, decision="approve", reason="ok")
    csrf = sign_in(browser_like, reviewer)
    assert f'id="retire-{model_id}"' in browser_like.get(f"{OP}/review").text
    r = browser_like.post(f"{OP}/models/{model_id}/retire", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422
    r = browser_like.post(f"{OP}/models/{model_id}/retire", data={"csrf": csrf, "reason": "模型到期"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert s.get_one(ScoringModel, model_id).state == "retired"
