"""Signing in to the console: password then TOTP, lock-out, sessions, CSRF, the security headers."""

from __future__ import annotations

import pyotp
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.audit.models import AuditEntry
from datazone.config import Settings
from datazone.console import service as console_service
from datazone.console.models import Account, ConsoleSession
from datazone.db import Database
from datazone.errors import InvalidSpec
from tests.console.conftest import csrf_of, make_person, sign_in


def entries(db: Database, login: str) -> list[tuple[str, str, str | None]]:
    with db.unit_of_work() as s:
        rows = s.execute(
            sa.select(AuditEntry.action, AuditEntry.outcome, AuditEntry.reason)
            .where(AuditEntry.object_type == "account", AuditEntry.object_id == login)
            .order_by(AuditEntry.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def post_sign_in(client: TestClient, login: str, password: str) -> object:
    page = client.get("/console/sign-in")
    return client.post(
        "/console/sign-in", data={"csrf": csrf_of(page.text), "login": login, "password": password}
    )


def test_an_operator_signs_in_with_password_and_code_and_lands_on_their_portal(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="operator", roles=["curator"])
    page = browser_like.get("/console/operator")
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in?next=")
    r = post_sign_in(browser_like, person.login, person.password)
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in/code"  # type: ignore[attr-defined]
    cookie = r.headers["set-cookie"]  # type: ignore[attr-defined]
    assert "__Host-dz_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/" in cookie
    # the password alone opens no page
    assert browser_like.get("/console/operator").status_code == 303
    code_page = browser_like.get("/console/sign-in/code")
    r = browser_like.post(
        "/console/sign-in/code", data={"csrf": csrf_of(code_page.text), "code": person.code()}
    )
    assert r.status_code == 303
    home = browser_like.get("/console/operator")
    assert home.status_code == 200 and person.principal_name in home.text
    assert [e[:2] for e in entries(db, person.login)][-1] == ("console.sign-in", "ok")
    # the secret in the cookie is not what the table keeps
    secret = browser_like.cookies.get("__Host-dz_session")
    with db.unit_of_work() as s:
        stored = s.scalars(sa.select(ConsoleSession.id_sha256)).all()
    assert secret and secret.encode() not in stored and all(len(x) == 32 for x in stored)


def test_pages_carry_a_content_security_policy_without_inline_script(browser_like: TestClient) -> None:
    page = browser_like.get("/console/sign-in")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " on" + "click=" not in page.text
    assert browser_like.get("/console/static/console.js").status_code == 200
    chart = browser_like.get("/console/static/vendor/chart-4.6.2.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4.6.2" in chart.text


def test_a_form_without_its_token_is_refused_and_changes_nothing(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
    browser_like.get("/console/sign-in")
    r = browser_like.post("/console/sign-in", data={"login": person.login, "password": person.password})
    assert r.status_code == 403 and "security token" in r.text
    csrf = sign_in(browser_like, person)
    r = browser_like.post(
        "/console/account/password", data={"current": person.password, "new": "x" * 20, "repeat": "x" * 20}
    )
    assert r.status_code == 403
    r = browser_like.post(
        "/console/account/password",
        data={"csrf": csrf[:-1] + ("1" if csrf.endswith("0") else "0"), "current": person.password, "new": "x" * 20, "repeat": "x" * 20},
    )
    assert r.status_code == 403
    assert ("console.password.change", "ok", None) not in entries(db, person.login)
    r = browser_like.post(
        "/console/account/password",
        data={
            "csrf": csrf,
            "current": person.password,
            "new": "a new passphrase 42",
            "repeat": "a new passphrase 42",
        },
    )
    assert r.status_code == 303
    assert ("console.password.change", "ok", None) in entries(db, person.login)


def test_repeated_failures_lock_the_account_even_for_the_right_password(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="department", roles=["officer"])
    for _ in range(settings.console_lockout_failures):
        r = post_sign_in(browser_like, person.login, "not the password at all")
        assert r.status_code == 401 and "the login or the password is wrong" in r.text  # type: ignore[attr-defined]
    r = post_sign_in(browser_like, person.login, person.password)
    assert r.status_code == 429 and "try again after" in r.text  # type: ignore[attr-defined]
    seen = entries(db, person.login)
    assert [e[2] for e in seen].count("wrong password") == settings.console_lockout_failures - 1
    assert ("console.sign-in", "refused", "wrong password; account locked") in seen
    assert seen[-1] == ("console.sign-in", "refused", "locked")
    # an unknown login is refused in the same words, and audited under the name tried
    r = post_sign_in(browser_like, "nobody-here", "whatever it is")
    assert r.status_code == 401 and "the login or the password is wrong" in r.text  # type: ignore[attr-defined]
    assert entries(db, "nobody-here") == [("console.sign-in", "refused", "unknown login")]


def test_a_code_is_accepted_once_and_a_wrong_code_is_refused(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="operator", roles=["auditor"])
    code = person.code()
    sign_in(browser_like, person, code=code)
    other = TestClient(browser_like.app, base_url="https://testserver", follow_redirects=False)
    r = post_sign_in(other, person.login, person.password)
    assert r.status_code == 303  # type: ignore[attr-defined]
    page = other.get("/console/sign-in/code")
    r2 = other.post("/console/sign-in/code", data={"csrf": csrf_of(page.text), "code": code})
    assert r2.status_code == 401 and "used already" in r2.text
    r3 = other.post(
        "/console/sign-in/code",
        data={"csrf": csrf_of(page.text), "code": "000000" if code != "000000" else "111111"},
    )
    assert r3.status_code == 401
    assert other.get("/console/operator").status_code == 303
    reasons = [e[2] for e in entries(db, person.login) if e[0] == "console.second-factor"]
    assert reasons[:1] == ["code used already"] and len(reasons) == 2


def test_an_operator_without_a_second_factor_sets_one_up_before_any_page(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="operator", roles=["curator"], second_factor=False)
    r = post_sign_in(browser_like, person.login, person.password)
    assert r.headers["location"] == "/console/enroll"  # type: ignore[attr-defined]
    assert browser_like.get("/console/operator").status_code == 303
    page = browser_like.get("/console/enroll")
    secret = page.text.split('id="totp-secret">')[1].split("<")[0]
    assert len(secret) == 32 and "otpauth://totp/datazone:" in page.text
    with db.unit_of_work() as s:
        sealed = s.scalar(sa.select(Account.totp_sealed).where(Account.login == person.login))
    assert sealed is not None and secret.encode() not in sealed  # kept sealed, not in the clear
    r = browser_like.post(
        "/console/enroll", data={"csrf": csrf_of(page.text), "code": pyotp.TOTP(secret).now()}
    )
    assert r.status_code == 303
    assert browser_like.get("/console/operator").status_code == 200
    actions = [e[0] for e in entries(db, person.login)]
    assert actions[-2:] == ["console.second-factor.enroll", "console.sign-in"]


def test_an_institution_analyst_may_sign_in_with_the_password_alone(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="institution", roles=["analyst"], second_factor=False)
    r = post_sign_in(browser_like, person.login, person.password)
    assert r.headers["location"] == "/console/institution"  # type: ignore[attr-defined]
    assert browser_like.get("/console/institution").status_code == 200


def test_a_session_ends_when_idle_and_on_sign_out(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    person = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
    csrf = sign_in(browser_like, person)
    r = browser_like.post("/console/sign-out", data={"csrf": csrf})
    assert r.status_code == 303
    assert browser_like.get("/console/institution").status_code == 303
    assert entries(db, person.login)[-1][0] == "console.sign-out"
    # idle: the session's last page was longer ago than the idle time-out
    sign_in(browser_like, person)
    with db.unit_of_work() as s:
        s.execute(
            sa.update(ConsoleSession)
            .where(ConsoleSession.ended_at.is_(None))
            .values(last_seen_at=sa.func.now() - sa.text("interval '31 minutes'"))
        )
    r = browser_like.get("/console/institution")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    # absolute: even a busy session ends after console_absolute_hours
    sign_in(browser_like, person)
    with db.unit_of_work() as s:
        s.execute(
            sa.update(ConsoleSession)
            .where(ConsoleSession.ended_at.is_(None))
            .values(created_at=sa.func.now() - sa.text("interval '13 hours'"))
        )
    assert browser_like.get("/console/institution").status_code == 303


def test_people_of_one_kind_cannot_open_another_kinds_pages(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    officer = make_person(db, settings, kind="department", roles=["officer"])
    sign_in(browser_like, officer)
    for path in ("/console/operator", "/console/institution", "/console/people"):
        r = browser_like.get(path)
        assert r.status_code == 403 and "text/html" in r.headers["content-type"], path
        assert officer.principal_name in r.text or "role" in r.text


def test_account_rules_list_every_problem_and_write_nothing(db: Database, settings: Settings) -> None:
    person = make_person(db, settings, kind="operator", roles=["curator"], principal_roles=["curator"])
    with db.unit_of_work() as s, pytest.raises(InvalidSpec) as refused:
        console_service.create_account(
            s,
            principal_name=person.principal_name,
            login="Bad Login!",
            display_name=" ",
            roles=["reviewer"],
            password="short",
            created_by="test",
        )
    locations = [e["location"] for e in refused.value.errors]
    assert locations == ["login", "display_name", "roles", "password"]
    assert "holds only curator" in refused.value.detail
    with db.unit_of_work() as s, pytest.raises(InvalidSpec, match="take one or more of admin, analyst"):
        bank = make_person(db, settings, kind="institution", roles=["admin"], second_factor=False)
        console_service.create_account(
            s,
            principal_name=bank.principal_name,
            login="bank-x",
            display_name="X",
            roles=["curator"],
            password="long enough password",
            created_by="test",
        )
    with db.unit_of_work() as s:
        assert (
            s.scalar(sa.select(sa.func.count()).select_from(Account).where(Account.login.in_(["bank-x"])))
            == 0
        )


def test_a_reviewer_resets_someone_elses_second_factor_never_their_own(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    reviewer = make_person(db, settings, kind="operator", roles=["reviewer"])
    officer = make_person(db, settings, kind="department", roles=["officer"])
    csrf = sign_in(browser_like, reviewer)
    people = browser_like.get("/console/people")
    assert people.status_code == 200 and officer.login in people.text
    r = browser_like.post(f"/console/people/{reviewer.login}/reset-second-factor", data={"csrf": csrf})
    assert r.status_code == 403 and "your own" in r.text
    r = browser_like.post(f"/console/people/{officer.login}/reset-second-factor", data={"csrf": csrf})
    assert r.status_code == 303
    with db.unit_of_work() as s:
        account = s.scalar(sa.select(Account).where(Account.login == officer.login))
        assert account is not None and account.totp_sealed is None and account.totp_confirmed_at is None
    assert entries(db, officer.login)[-1][:2] == ("console.second-factor.reset", "ok")
    # the officer now sets up a new factor at sign-in
    again = TestClient(browser_like.app, base_url="https://testserver", follow_redirects=False)
    r2 = post_sign_in(again, officer.login, officer.password)
    assert r2.headers["location"] == "/console/enroll"  # type: ignore[attr-defined]


def test_a_person_s_actions_through_pages_name_them_on_the_audit_trail(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    reviewer = make_person(db, settings, kind="operator", roles=["reviewer"])
    csrf = sign_in(browser_like, reviewer)
    r = browser_like.post(
        "/console/people",
        data={
            "csrf": csrf,
            "principal": reviewer.principal_name,
            "login": "new.person",
            "display_name": "新同事",
            "roles": ["reviewer"],
            "password": "a long initial password",
        },
    )
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        entry = s.scalar(
            sa.select(AuditEntry).where(
                AuditEntry.action == "console.account.create", AuditEntry.object_id == "new.person"
            )
        )
        assert entry is not None and entry.actor_name == reviewer.principal_name
        assert entry.detail["account"] == reviewer.login


def test_the_language_switches_between_chinese_and_english(browser_like: TestClient) -> None:
    assert "登录" in browser_like.get("/console/sign-in").text
    r = browser_like.get("/console/language/en", params={"next": "/console/sign-in"})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    assert "Sign in" in browser_like.get("/console/sign-in").text
    # a language link cannot send anyone off the console
    r = browser_like.get("/console/language/zh", params={"next": "https://evil.example/"})
    assert r.headers["location"] == "/console"
