"""`datazone consent ...` in a subprocess against the test database: an institution's consents
registered from a CSV file, listed and revoked through the consent service the API calls."""

from __future__ import annotations

import csv
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from datazone.config import Settings
from datazone.consent import service
from datazone.consent.models import Consent
from datazone.db import Database
from tests.conftest import run_cli
from tests.factories import make_uscc
from tests.grant.builders import committed_parties, table_count
from tests.shell import audited

HEADER = ["uscc", "purpose", "products", "valid_from", "valid_to", "evidence_ref", "evidence_sha256"]


def consent_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return path


def row(code: str, purpose: str = "pre_loan", products: str = "", sha: str | None = None) -> list[str]:
    evidence = f"s3://consents/{code}.pdf"
    digest = sha if sha is not None else hashlib.sha256(evidence.encode()).hexdigest()
    return [code, purpose, products, "2026-01-01", "2099-01-01T00:00:00+08:00", evidence, digest]


def test_register_from_csv_list_and_revoke(
    db: Database, settings: Settings, tmp_path: Path, synthetic_zone: dict[str, Any]
) -> None:
    p = committed_parties(db)
    start = 500_000 + secrets.randbelow(10**6)
    codes = [make_uscc(start + i) for i in range(3)]
    path = consent_csv(
        tmp_path / "consents.csv",
        [row(codes[0]), row(codes[1], "post_loan", "credit-basic;risk-insight"), row(codes[2].lower())],
    )
    done = run_cli(settings, "consent", "register", str(path), "--as", p.bank1.name)
    assert done.returncode == 0, done.stderr
    assert f"{p.bank1.name}: 3 consents registered" in done.stdout
    with db.unit_of_work() as s:
        stored = service.list_consents(s, viewer=p.bank1)
        assert [(c.uscc, c.purpose, c.products) for c in stored] == [
            (codes[0], "pre_loan", None),
            (codes[1], "post_loan", ["credit-basic", "risk-insight"]),
            (codes[2], "pre_loan", None),
        ]
        assert stored[0].evidence_sha256 == hashlib.sha256(f"s3://consents/{codes[0]}.pdf".encode()).hexdigest()
        assert stored[0].valid_from.isoformat() == "2025-12-31T16:00:00+00:00"  # midnight in Shanghai
        ids = [c.id for c in stored]
    assert audited(db, object_type="consent", object_id="3 consents")[-1] == (
        "consent.register", "institution", p.bank1.name,
    )  # fmt: skip

    listed = run_cli(settings, "consent", "list", "--institution", p.bank1.name, "--live", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["id"] for c in json.loads(listed.stdout)] == ids
    table = run_cli(settings, "consent", "list", "--institution", p.bank1.name, COLUMNS="250")
    assert table.returncode == 0 and codes[1] in table.stdout and "credit-basic, risk-insight" in table.stdout

    done = run_cli(settings, "consent", "revoke", str(ids[0]), "--as", p.bank1.name, "--reason", "withdrawn")
    assert done.returncode == 0, done.stderr
    assert f"consent {ids[0]} ({codes[0]}, pre_loan): revoked" in done.stdout
    with db.unit_of_work() as s:
        revoked = s.get(Consent, ids[0])
        assert revoked is not None and revoked.revoked_at is not None and revoked.revoke_reason == "withdrawn"
    assert audited(db, object_type="consent", object_id=str(ids[0])) == [
        ("consent.revoke", "institution", p.bank1.name)
    ]
    done = run_cli(settings, "consent", "revoke", str(ids[0]), "--as", p.bank1.name, "--reason", "again")
    assert done.returncode == 2 and f"consent {ids[0]} was already revoked" in done.stderr
    # another institution's consent does not exist for it
    done = run_cli(settings, "consent", "revoke", str(ids[1]), "--as", p.bank2.name, "--reason", "x")
    assert done.returncode == 2 and f"no consent {ids[1]}" in done.stderr


def test_a_bad_line_refuses_the_whole_file(db: Database, settings: Settings, tmp_path: Path) -> None:
    p = committed_parties(db)
    start = 600_000 + secrets.randbelow(10**6)
    good, bad = make_uscc(start), make_uscc(start + 1)
    path = consent_csv(
        tmp_path / "consents.csv",
        [row(good), row(bad[:-1] + ("0" if bad[-1] != "0" else "1")), row(make_uscc(start + 2), sha="ABC")],
    )
    done = run_cli(settings, "consent", "register", str(path), "--as", p.bank1.name)
    assert done.returncode == 2
    assert "2 of 3 consents are not valid, none was registered" in done.stderr
    assert "line 3: uscc:" in done.stderr and "is not a valid USCC" in done.stderr
    assert "line 4: evidence_sha256: the evidence hash must be the SHA-256" in done.stderr
    # the institution registers its own consents: an operator cannot
    done = run_cli(settings, "consent", "register", str(consent_csv(tmp_path / "ok.csv", [row(good)])),
                   "--as", p.curator.name)  # fmt: skip
    assert done.returncode == 2
    assert "only an institution registers the consents of the enterprises it queries" in done.stderr
    # a line the file format itself refuses, before the service is asked
    undated = consent_csv(tmp_path / "undated.csv", [[good, "pre_loan", "", "", "tomorrow", "ref", "0" * 64]])
    done = run_cli(settings, "consent", "register", str(undated), "--as", p.bank1.name)
    assert done.returncode == 2 and "line 2: valid_to: 'tomorrow' is not a time" in done.stderr
    headless = tmp_path / "headless.csv"
    headless.write_text(f"uscc,purpose,valid_from,valid_to,evidence_ref\n{good},pre_loan,2026-01-01,2099-01-01,x\n")
    done = run_cli(settings, "consent", "register", str(headless), "--as", p.bank1.name)
    assert done.returncode == 2 and "no column evidence_sha256" in done.stderr
    assert table_count(db, Consent, Consent.institution_id == p.bank1.id) == 0
