"""The institution's portal: its catalog, contracts, clients, usage and statements, consents, query, jobs.

Pages run over HTTPS in-process against the demo zone (the demo bank with its contract, grants and
consents); every form's effect is read back from the database and the audit trail.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.access import service as access_service
from datazone.audit import service as audit_service
from datazone.audit.models import AuditEntry
from datazone.billing.models import LedgerEntry
from datazone.config import Settings
from datazone.consent.models import Consent
from datazone.console.pages import yuan as yuan_text
from datazone.contract import service as contract_service
from datazone.db import Database
from datazone.metering.models import UsageEvent
from datazone.oauth import service as oauth_service
from datazone.oauth.models import OAuthClient
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.psi.models import PsiJob, PsiKeyEpoch
from datazone.uscc import check_character
from tests.console.conftest import PersonLogin, csrf_of, make_person, sign_in
from tests.factories import add_joint_job

BANK = "demo-bank"
SECRET_ON_PAGE = re.compile(r'id="client-secret">([^<]+)<')
CLIENT_ID_ON_PAGE = re.compile(r'id="client-id">([^<]+)<')


def valid_uscc() -> str:
    """A well-formed code (check digit right) that no demo consent names."""
    first17 = "91110000" + "".join(secrets.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(9))
    return first17 + check_character(first17)


def signed_in(client: TestClient, db: Database, settings: Settings, *, roles: list[str], principal: str | None = BANK) -> tuple[PersonLogin, str]:
    person = make_person(db, settings, kind="institution", roles=roles, principal=principal)
    return person, sign_in(client, person)


def audit_of(db: Database, action: str, object_id: str | None = None) -> list[AuditEntry]:
    with db.unit_of_work() as s:
        q = sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        if object_id is not None:
            q = q.where(AuditEntry.object_id == object_id)
        rows = list(s.scalars(q))
        s.expunge_all()
        return rows


# ---------------------------------------------------------------- catalog and contracts


def test_the_catalog_lists_what_the_bank_may_call_and_searches_it(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    signed_in(browser_like, db, settings, roles=["analyst"])
    page = browser_like.get("/console/institution/catalog")
    assert page.status_code == 200, page.text
    assert 'href="/console/institution/catalog/credit-basic"' in page.text
    assert 'href="/console/institution/catalog/risk-insight"' in page.text

    narrowed = browser_like.get("/console/institution/catalog", params={"category": "credit_lookup", "q": "credit"})
    assert "credit-basic" in narrowed.text and "/catalog/enterprise-portrait" not in narrowed.text
    assert "/catalog/" not in browser_like.get("/console/institution/catalog", params={"q": "no-such-words-xyz"}).text

    detail = browser_like.get("/console/institution/catalog/credit-basic")
    assert detail.status_code == 200
    assert re.search(r'id="product-usable">是<', detail.text)
    assert "/console/institution/query?product=credit-basic" in detail.text


def test_a_bad_catalog_search_and_an_unknown_product_are_refused_in_words(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    signed_in(browser_like, db, settings, roles=["analyst"])
    bad = browser_like.get("/console/institution/catalog", params={"category": "horoscopes"})
    assert bad.status_code == 422
    assert "填写的内容有误" in bad.text and "&#39;horoscopes&#39; is not one of" in bad.text
    missing = browser_like.get("/console/institution/catalog/no-such-product")
    assert missing.status_code == 404 and "未找到" in missing.text


def test_an_institution_without_a_contract_sees_no_product_and_no_other_contract(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    signed_in(browser_like, db, settings, roles=["admin"], principal=None)
    page = browser_like.get("/console/institution/catalog")
    assert page.status_code == 200 and "/console/institution/catalog/" not in page.text
    detail = browser_like.get("/console/institution/catalog/credit-basic")
    assert re.search(r'id="product-usable">否<', detail.text)
    contracts = browser_like.get("/console/institution/contracts")
    assert "贵机构尚无有效合同" in contracts.text and 'id="contract-' not in contracts.text


def test_the_contract_page_shows_the_plan_and_what_is_left(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    with db.unit_of_work() as s:
        bank = principal_service.find_principal(s, name=BANK)
        assert bank is not None
        live = contract_service.remaining_quota(s, viewer=bank)
        expected = [(a.contract_id, a.plan_id, a.allowance.cap_remaining_fen) for a in live]
    assert expected
    signed_in(browser_like, db, settings, roles=["analyst"])
    page = browser_like.get("/console/institution/contracts")
    assert page.status_code == 200
    for contract_id, plan_id, _cap in expected:
        assert f'id="contract-{contract_id}"' in page.text
        assert f'id="quota-remaining-{contract_id}"' in page.text
        assert plan_id in page.text
    assert "credit-basic" in page.text


def test_other_kinds_of_people_get_the_forbidden_page(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="operator", roles=["curator"])
    sign_in(browser_like, person)
    page = browser_like.get("/console/institution/contracts")
    assert page.status_code == 403 and "无权进行此操作" in page.text and "institution" in page.text


# ---------------------------------------------------------------- OAuth clients


def test_an_admin_creates_a_client_sees_its_secret_once_and_the_token_endpoint_accepts_it(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    person, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    created = browser_like.post("/console/institution/clients", data={"csrf": csrf, "name": "console-app"})
    assert created.status_code == 200, created.text
    secret_match, id_match = SECRET_ON_PAGE.search(created.text), CLIENT_ID_ON_PAGE.search(created.text)
    assert secret_match and id_match
    secret, client_id = secret_match.group(1), id_match.group(1)
    with db.unit_of_work() as s:
        client = s.get(OAuthClient, client_id)
        assert client is not None and client.name == "console-app"
        assert oauth_service.check_client_secret(client, secret)
    token = browser_like.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert token.status_code == 200, token.text and token.json()["access_token"]

    listing = browser_like.get("/console/institution/clients")
    assert client_id in listing.text and secret not in listing.text
    [entry] = audit_of(db, "client.create", client_id)
    assert entry.detail["account"] == person.login and secret not in str(entry.detail)

    rotated = browser_like.post(f"/console/institution/clients/{client_id}/rotate", data={"csrf": csrf})
    assert rotated.status_code == 200
    new_match = SECRET_ON_PAGE.search(rotated.text)
    assert new_match and new_match.group(1) != secret
    assert browser_like.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)).status_code == 401
    assert browser_like.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, new_match.group(1))
    ).status_code == 200
    [rotation] = audit_of(db, "client.rotate-secret", client_id)
    assert rotation.detail["account"] == person.login

    revoked = browser_like.post(f"/console/institution/clients/{client_id}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 303 and "inst.notice.client-revoked" in revoked.headers["location"]
    with db.unit_of_work() as s:
        client = s.get(OAuthClient, client_id)
        assert client is not None and client.revoked_at is not None
    [revocation] = audit_of(db, "client.revoke", client_id)
    assert revocation.detail["account"] == person.login


def test_client_refusals_are_shown_and_another_institutions_clients_are_not(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    _, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    blank = browser_like.post("/console/institution/clients", data={"csrf": csrf, "name": " "})
    assert blank.status_code == 422 and "填写的内容有误" in blank.text and "name the application" in blank.text
    with db.unit_of_work() as s:
        other = principal_service.create_principal(s, kind="institution", name=f"other-{secrets.token_hex(4)}")
        theirs = OAuthClient(
            client_id="dzc_" + secrets.token_hex(8), institution_id=other.id, name="theirs",
            token_endpoint_auth_method="client_secret_basic", secret_sha256=b"\0" * 32, created_by="test",
        )
        s.add(theirs)
        s.flush()
        their_id = theirs.client_id
    assert their_id not in browser_like.get("/console/institution/clients").text
    rotate = browser_like.post(f"/console/institution/clients/{their_id}/rotate", data={"csrf": csrf})
    assert rotate.status_code == 404 and "未找到" in rotate.text and "no client" in rotate.text
    revoke = browser_like.post(f"/console/institution/clients/{their_id}/revoke", data={"csrf": csrf})
    assert revoke.status_code == 404
    with db.unit_of_work() as s:
        still = s.get(OAuthClient, their_id)
        assert still is not None and still.revoked_at is None and still.secret_sha256 == b"\0" * 32


def test_an_analyst_manages_neither_clients_nor_consents(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    _, csrf = signed_in(browser_like, db, settings, roles=["analyst"])
    home = browser_like.get("/console/institution")
    assert home.status_code == 200 and "/console/institution/clients" not in home.text
    for path in ("/console/institution/clients", "/console/institution/consents"):
        page = browser_like.get(path)
        assert page.status_code == 403 and "admin" in page.text
    refused = browser_like.post("/console/institution/clients", data={"csrf": csrf, "name": "sneaky"})
    assert refused.status_code == 403
    with db.unit_of_work() as s:
        assert s.scalar(sa.select(sa.func.count()).where(OAuthClient.name == "sneaky")) == 0


# ---------------------------------------------------------------- consents


def consent_csv(*rows: tuple[str, ...]) -> bytes:
    header = "uscc,purpose,products,valid_from,valid_to,evidence_ref,evidence_sha256\r\n"
    return ("\ufeff" + header + "".join(",".join(r) + "\r\n" for r in rows)).encode()


def consent_row(uscc: str, **change: str) -> tuple[str, ...]:
    now = datetime.now(UTC)
    row = {
        "uscc": uscc,
        "purpose": "pre_loan",
        "products": "credit-basic",
        "valid_from": (now - timedelta(days=1)).isoformat(),
        "valid_to": (now + timedelta(days=90)).isoformat(),
        "evidence_ref": f"s3://letters/{uscc}.pdf",
        "evidence_sha256": hashlib.sha256(uscc.encode()).hexdigest(),
    } | change
    return tuple(row.values())


def consents_of(db: Database, uscc: str) -> list[Consent]:
    with db.unit_of_work() as s:
        rows = list(s.scalars(sa.select(Consent).where(Consent.uscc == uscc)))
        s.expunge_all()
        return rows


def test_an_upload_with_a_bad_line_shows_each_problem_and_writes_nothing(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    _, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    good, bad_code, bad_hash = valid_uscc(), valid_uscc()[:-1] + "?", valid_uscc()
    upload = consent_csv(
        consent_row(good), consent_row(bad_code), consent_row(bad_hash, evidence_sha256="ABC", valid_to="tomorrow")
    )
    page = browser_like.post(
        "/console/institution/consents", data={"csrf": csrf}, files={"file": ("c.csv", upload, "text/csv")}
    )
    assert page.status_code == 422, page.text
    problems = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td>', page.text)
    assert ("4", "valid_to") in problems  # line 4: the date does not parse
    assert consents_of(db, good) == []

    # every line parses: the service's own checks find the bad code (line 3) and the bad hash (line 4)
    upload = consent_csv(consent_row(good), consent_row(bad_code), consent_row(bad_hash, evidence_sha256="ABC"))
    page = browser_like.post(
        "/console/institution/consents", data={"csrf": csrf}, files={"file": ("c.csv", upload, "text/csv")}
    )
    assert page.status_code == 422
    problems = re.findall(r'<tr><td class="num">(\d+)</td><td>([^<]*)</td>', page.text)
    assert ("3", "uscc") in problems and ("4", "evidence_sha256") in problems
    assert consents_of(db, good) == [] and consents_of(db, bad_hash) == []


def test_an_admin_uploads_consents_sees_them_live_and_revokes_one(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    person, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    first, second = valid_uscc(), valid_uscc()
    upload = consent_csv(consent_row(first), consent_row(second, products="", purpose="post_loan"))
    done = browser_like.post(
        "/console/institution/consents", data={"csrf": csrf}, files={"file": ("c.csv", upload, "text/csv")}
    )
    assert done.status_code == 303, done.text
    [mine] = consents_of(db, first)
    [other] = consents_of(db, second)
    assert mine.products == ["credit-basic"] and mine.purpose == "pre_loan"
    assert other.products is None and other.purpose == "post_loan"
    registered = [e for e in audit_of(db, "consent.register") if first in e.entities]
    assert len(registered) == 1 and registered[0].detail["account"] == person.login

    page = browser_like.get("/console/institution/consents")
    assert first in page.text and second in page.text

    revoked = browser_like.post(
        f"/console/institution/consents/{mine.id}/revoke", data={"csrf": csrf, "reason": "customer withdrew"}
    )
    assert revoked.status_code == 303
    [mine] = consents_of(db, first)
    assert mine.revoked_at is not None and mine.revoke_reason == "customer withdrew"
    [entry] = audit_of(db, "consent.revoke", str(mine.id))
    assert entry.detail["account"] == person.login
    assert first not in browser_like.get("/console/institution/consents").text

    again = browser_like.post(f"/console/institution/consents/{mine.id}/revoke", data={"csrf": csrf, "reason": "x"})
    assert again.status_code == 409 and "already revoked" in again.text


def test_another_institution_neither_sees_nor_revokes_the_banks_consents(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    consented = synthetic_zone["consented_usccs"][0]
    [theirs, *_] = consents_of(db, consented)
    _, csrf = signed_in(browser_like, db, settings, roles=["admin"], principal=None)
    assert consented not in browser_like.get("/console/institution/consents").text
    refused = browser_like.post(f"/console/institution/consents/{theirs.id}/revoke", data={"csrf": csrf, "reason": "x"})
    assert refused.status_code == 404
    assert all(c.revoked_at is None for c in consents_of(db, consented))


# ---------------------------------------------------------------- query, usage, statements


def lookups_of(db: Database, client_id: str) -> tuple[list[UsageEvent], list[LedgerEntry]]:
    """The usage events billed to a console person's grant, and the ledger debits they rest on."""
    with db.unit_of_work() as s:
        events = list(s.scalars(sa.select(UsageEvent).where(UsageEvent.client_id == client_id)))
        debit_ids = {e.debit_id for e in events if e.debit_id is not None}
        debits = list(s.scalars(sa.select(LedgerEntry).where(LedgerEntry.id.in_(debit_ids)))) if debit_ids else []
        s.expunge_all()
        return events, debits


def test_a_lookup_on_the_query_page_is_answered_billed_once_and_audited_as_the_api(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    person, csrf = signed_in(browser_like, db, settings, roles=["analyst"])
    uscc = synthetic_zone["consented_usccs"][0]
    form = browser_like.get("/console/institution/query?product=credit-basic")
    assert '<option value="credit-basic" selected>' in form.text

    page = browser_like.post(
        "/console/institution/query",
        data={"csrf": csrf, "product": "credit-basic", "uscc": uscc, "purpose": "pre_loan"},
    )
    assert page.status_code == 200, page.text
    assert 'id="query-answer"' in page.text and uscc in page.text
    assert re.search(r'data-field="[a-z_]+">[^<—]+<', page.text)  # at least one field answered

    client_id = f"console:{person.login}"
    events, debits = lookups_of(db, client_id)
    assert [(e.product_id, e.uscc, e.purpose) for e in events] == [("credit-basic", uscc, "pre_loan")]
    [event] = events
    charged = 0 if event.free else event.price_fen * event.quantity
    # billed once: one usage event, and one ledger debit when the call charges anything
    assert [(d.kind, d.amount_fen, d.product_id) for d in debits] == (
        [("debit", charged, "credit-basic")] if charged else []
    )
    assert f'id="query-charged">{yuan_text(charged)}<' in page.text
    [access] = [
        e for e in audit_of(db, audit_service.DATA_ACCESS, "credit-basic") if e.detail.get("client_id") == client_id
    ]
    assert access.outcome != "refused" and access.detail["account"] == person.login and access.entities == [uscc]

    usage = browser_like.get("/console/institution/usage")
    assert usage.status_code == 200 and "credit-basic" in usage.text
    assert 'id="usage-units-chart"' in usage.text and 'id="statement"' in usage.text
    usage_csv = browser_like.get("/console/institution/usage.csv")
    assert usage_csv.headers["content-type"].startswith("text/csv")
    assert usage_csv.content.startswith("\ufeff".encode()) and "credit-basic" in usage_csv.text
    period = datetime.now(UTC).astimezone(access_service.SHANGHAI).strftime("%Y-%m")
    statement = browser_like.get(f"/console/institution/statements/{period}.csv")
    assert statement.status_code == 200 and statement.content.startswith("\ufeff".encode())
    assert any(line.split(",")[2] == "credit-basic" for line in statement.text.splitlines()[1:])


def test_a_refused_lookup_names_its_check_and_bills_nothing(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    person, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    stranger = valid_uscc()
    # risk-insight requires the enterprise's consent, which the bank does not hold for this one
    page = browser_like.post(
        "/console/institution/query",
        data={"csrf": csrf, "product": "risk-insight", "uscc": stranger, "purpose": "pre_loan"},
    )
    assert page.status_code == 403, page.text
    assert "未通过的检查：consent" in page.text and stranger in page.text and 'id="query-answer"' not in page.text
    refusals = [e for e in audit_of(db, audit_service.DATA_ACCESS, "risk-insight") if stranger in e.entities]
    assert len(refusals) == 1 and refusals[0].outcome == "refused"
    assert refusals[0].detail["account"] == person.login

    # credit-basic needs no consent: the zone's registration data is the gate that refuses
    absent = browser_like.post(
        "/console/institution/query",
        data={"csrf": csrf, "product": "credit-basic", "uscc": stranger, "purpose": "pre_loan"},
    )
    assert absent.status_code == 404 and "未通过的检查：zone" in absent.text
    assert lookups_of(db, f"console:{person.login}") == ([], [])

    bad = browser_like.post(
        "/console/institution/query",
        data={"csrf": csrf, "product": "credit-basic", "uscc": "not-a-code", "purpose": "pre_loan"},
    )
    assert bad.status_code in (400, 422) and "uscc" in bad.text


def test_an_institution_without_a_contract_is_refused_on_the_query_page(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    person, csrf = signed_in(browser_like, db, settings, roles=["analyst"], principal=None)
    page = browser_like.post(
        "/console/institution/query",
        data={"csrf": csrf, "product": "credit-basic", "uscc": synthetic_zone["consented_usccs"][0], "purpose": "pre_loan"},
    )
    assert page.status_code == 403 and "未通过的检查：contract" in page.text
    assert lookups_of(db, f"console:{person.login}") == ([], [])


def test_the_console_grant_carries_only_the_products_scope() -> None:
    bank = Principal(id=7, kind="institution", name="b")
    now = datetime(2026, 12, 7, tzinfo=UTC)
    grant = access_service.console_grant(person_login="ana", institution=bank, product_id="credit-basic", now=now)
    again = access_service.console_grant(person_login="ana", institution=bank, product_id="credit-basic", now=now)
    assert grant.client_id == "console:ana" and grant.institution is bank
    assert grant.scopes == frozenset({"product:credit-basic"})
    assert grant.expires_at == now + timedelta(minutes=5) and grant.jti != again.jti


# ---------------------------------------------------------------- jobs


def test_the_jobs_page_shows_the_institutions_own_jobs(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="institution", roles=["analyst"])
    other = make_person(db, settings, kind="institution", roles=["analyst"])
    ids, joint = {}, {}
    with db.unit_of_work() as s:
        epoch = PsiKeyEpoch(key_encrypted=b"not a key", retired_at=datetime(2001, 1, 1, tzinfo=UTC))
        s.add(epoch)
        s.flush()
        for who in (person, other):
            job_id = secrets.token_hex(16)
            created = datetime.now(UTC) - timedelta(minutes=5)
            s.add(
                PsiJob(
                    id=job_id, institution_id=who.principal_id, client_id="app-1", product_id="dishonest-debtor-psi",
                    purpose="pre_loan", contract_id=1, protocol="ecdh", set_size=4321, epoch=epoch.id, slice_key="all",
                    peer_address="127.0.0.1:1", zone_address="127.0.0.1:2", ticket_sha256=b"\0" * 32, status="running",
                    created_at=created, expires_at=created + timedelta(days=1),
                )
            )
            ids[who.login] = job_id
            joint[who.login] = add_joint_job(s, institution_id=who.principal_id, status="receiving", sample_size=2345).id
    sign_in(browser_like, person)
    page = browser_like.get("/console/institution/jobs")
    assert page.status_code == 200
    assert ids[person.login] in page.text and "4321" in page.text and "运行中" in page.text
    assert ids[other.login] not in page.text
    # joint statistics and modeling jobs too, with their kind, sample size and status in words
    joint_table = re.search(r'<table class="data" id="joint-jobs">(.*?)</table>', page.text, re.S)
    assert joint_table is not None
    assert joint[person.login] in joint_table.group(1) and joint[other.login] not in page.text
    assert "2345" in joint_table.group(1) and "等待加密列" in joint_table.group(1) and "联合统计" in joint_table.group(1)


def test_forms_without_their_token_are_refused(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    signed_in(browser_like, db, settings, roles=["admin"])
    refused = browser_like.post("/console/institution/clients", data={"name": "no-token"})
    assert refused.status_code == 403
    with db.unit_of_work() as s:
        assert s.scalar(sa.select(sa.func.count()).where(OAuthClient.name == "no-token")) == 0
    assert csrf_of(browser_like.get("/console/institution/clients").text)


def test_every_page_reads_in_both_languages_with_no_key_showing(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    _, csrf = signed_in(browser_like, db, settings, roles=["admin"])
    pages = ["", "/catalog", "/catalog/credit-basic", "/contracts", "/clients", "/usage", "/consents", "/query", "/jobs"]
    for lang, word in (("en", "Products you may use"), ("zh", "可用产品目录")):
        browser_like.cookies.set("dz_lang", lang)
        for path in pages:
            page = browser_like.get(f"/console/institution{path}")
            assert page.status_code == 200, (lang, path, page.text)
            assert not re.search(r">[^<]*\binst\.[a-z]", page.text), (lang, path)
        assert word in browser_like.get("/console/institution/catalog").text
    no_header = browser_like.post(
        "/console/institution/consents",
        data={"csrf": csrf},
        files={"file": ("c.csv", b"uscc;purpose\n91110000MA00000000;pre_loan\n", "text/csv")},
    )
    assert no_header.status_code == 422 and "首行须为表头" in no_header.text
