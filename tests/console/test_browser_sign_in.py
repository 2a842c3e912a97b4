"""In real Chromium: signing in with a password and a TOTP code, the CSRF refusal, the lock-out,
the content security policy (a violation would show as a console error), the language switch."""

from __future__ import annotations

from collections.abc import Callable

import pyotp

from datazone.config import Settings
from datazone.db import Database
from tests.console.browser import TABLET, Visit
from tests.console.conftest import make_person


def test_an_officer_signs_in_with_password_and_code(
    db: Database, settings: Settings, visit: Callable[..., Visit]
) -> None:
    officer = make_person(db, settings, kind="department", roles=["officer"], principal="demo-tax")
    v = visit()
    v.page.goto("/console/sign-in")
    assert v.page.locator("h1").inner_text() == "登录"
    v.shoot("sign-in")
    v.sign_in(officer.login, officer.password, officer.totp_secret)
    assert v.page.url.endswith("/console/department"), v.page.url
    assert "demo-tax" in v.page.locator("header").inner_text()
    assert v.console_errors == []  # a script or style the policy blocked would be reported here


def test_a_wrong_code_keeps_the_person_out(
    db: Database, settings: Settings, visit: Callable[..., Visit]
) -> None:
    operator = make_person(db, settings, kind="operator", roles=["auditor"], principal="demo-operator")
    v = visit()
    v.page.goto("/console/sign-in")
    v.page.fill("input[name=login]", operator.login)
    v.page.fill("input[name=password]", operator.password)
    v.page.click("form[action='/console/sign-in'] button[type=submit]")
    assert "/console/sign-in/code" in v.page.url
    assert operator.totp_secret is not None
    right = pyotp.TOTP(operator.totp_secret).now()
    v.page.fill("input[name=code]", "000000" if right != "000000" else "111111")
    v.page.click("form[action='/console/sign-in/code'] button[type=submit]")
    assert "动态口令" in v.page.locator("h1").inner_text() and v.page.locator(".refusal").is_visible()
    v.page.goto("/console/operator")
    assert "/console/sign-in" in v.page.url


def test_a_form_posted_without_its_csrf_token_is_refused(
    db: Database, settings: Settings, visit: Callable[..., Visit]
) -> None:
    analyst = make_person(
        db, settings, kind="institution", roles=["analyst"], principal="demo-bank", second_factor=False
    )
    v = visit()
    v.sign_in(analyst.login, analyst.password, None)
    v.page.goto("/console/account")
    v.page.fill("input[name=current]", analyst.password)
    v.page.fill("input[name=new]", "another long passphrase")
    v.page.fill("input[name=repeat]", "another long passphrase")
    v.page.evaluate(
        "document.querySelector(\"form[action='/console/account/password'] input[name=csrf]\").remove()"
    )
    response = None
    with v.page.expect_navigation() as nav:
        v.page.click("form[action='/console/account/password'] button[type=submit]")
    response = nav.value
    assert response is not None and response.status == 403
    assert "csrf" in v.page.locator(".refusal").inner_text()


def test_sign_in_is_locked_after_repeated_failures(
    db: Database, settings: Settings, visit: Callable[..., Visit]
) -> None:
    officer = make_person(db, settings, kind="department", roles=["officer"], principal="demo-tax")
    v = visit()
    for _ in range(5):
        v.page.goto("/console/sign-in")
        v.page.fill("input[name=login]", officer.login)
        v.page.fill("input[name=password]", "wrong wrong wrong")
        v.page.click("form[action='/console/sign-in'] button[type=submit]")
    v.sign_in(officer.login, officer.password, officer.totp_secret)
    assert "/console/sign-in" in v.page.url
    assert "账号已锁定" in v.page.locator(".refusal").inner_text()


def test_pages_switch_to_english_and_fit_a_tablet(
    db: Database, settings: Settings, visit: Callable[..., Visit]
) -> None:
    analyst = make_person(
        db, settings, kind="institution", roles=["analyst"], principal="demo-bank", second_factor=False
    )
    v = visit(viewport=TABLET)
    v.sign_in(analyst.login, analyst.password, None)
    v.page.click("a[lang=en]")
    assert "My account" in v.page.locator("header").inner_text()
    # nothing wider than the tablet's screen: the page does not scroll sideways
    overflow = v.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    v.page.click("a[lang=zh-CN]")
    assert "我的账号" in v.page.locator("header").inner_text()
