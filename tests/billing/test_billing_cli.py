"""`datazone billing ...` in a subprocess against the test database: the ledger read and a
charge credited through the billing service the API calls, as a named curator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from datazone.billing import service
from datazone.billing.models import LedgerEntry
from datazone.config import Settings
from datazone.db import Database
from datazone.metering.service import month_of
from tests.conftest import run_cli
from tests.grant.builders import committed_parties, table_count
from tests.shell import audited


def test_credit_a_debit_in_part_then_the_rest_and_no_more(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    at = datetime.now(UTC)
    with db.unit_of_work() as s:
        debit = service.post_debit(
            s, institution_id=p.bank1.id, amount_fen=1500, period=month_of(at), product_id="risk-insight",
            usage_count=3, memo="3 lookups", at=at,
        )  # fmt: skip
    ledger = run_cli(settings, "billing", "ledger", "--institution", p.bank1.name, "--json")
    assert ledger.returncode == 0, ledger.stderr
    assert [(e["id"], e["kind"], e["amount_fen"]) for e in json.loads(ledger.stdout)] == [
        (debit.id, "debit", 1500)
    ]

    done = run_cli(
        settings, "billing", "credit", str(debit.id), "--as", p.auditor.name, "--reason", "complaint"
    )
    assert done.returncode == 2 and "only an operator with the curator role may credit charges" in done.stderr
    done = run_cli(
        settings, "billing", "credit", str(debit.id), "--as", p.curator.name, "--reason", "one answer was empty",
        "--amount-fen", "500",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"credit of 500 fen against debit {debit.id}" in done.stdout
    done = run_cli(settings, "billing", "credit", str(debit.id), "--as", p.curator.name, "--reason", "goodwill")
    assert done.returncode == 0, done.stderr
    assert f"credit of 1000 fen against debit {debit.id}" in done.stdout
    done = run_cli(settings, "billing", "credit", str(debit.id), "--as", p.curator.name, "--reason", "again")
    assert done.returncode == 2 and "it is wholly credited already" in done.stderr
    with db.unit_of_work() as s:
        credits = [e for e in service.list_entries(s, viewer=p.curator, institution_id=p.bank1.id) if e.kind == "credit"]
        assert [(c.amount_fen, c.reverses_id, c.created_by) for c in credits] == [
            (500, debit.id, p.curator.id), (1000, debit.id, p.curator.id),
        ]  # fmt: skip
        assert [a for a in audited(db, object_type="ledger_entry", object_id=str(credits[0].id))] == [
            ("ledger.credit", "operator", p.curator.name)
        ]
    assert table_count(db, LedgerEntry, LedgerEntry.institution_id == p.bank1.id) == 3
    table = run_cli(settings, "billing", "ledger", "--institution", p.bank1.name, COLUMNS="250")
    assert table.returncode == 0 and "one answer was empty" in table.stdout and "3 lookups" in table.stdout
