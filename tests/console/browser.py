"""Real Chromium (Debian's package) driven by Playwright against the real gateway on loopback.

No browser is downloaded: Playwright launches /usr/bin/chromium (`make test` installs it when
missing). Screenshots go to the test's folder, and to $DATAZONE_SCREENSHOTS when it is set
(`make screenshots` refreshes the README's pictures in docs/screenshots/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyotp
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = os.environ.get("DATAZONE_CHROMIUM", "/usr/bin/chromium")
# what the machine's closed network needs: no sandbox as root, no calls home at start-up
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DESKTOP = {"width": 1280, "height": 860}
TABLET = {"width": 820, "height": 1180}


def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise RuntimeError(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Visit:
    """One person's browser (its own cookies) on the console, with the page's problems collected."""

    def __init__(
        self, browser: Browser, base_url: str, shots: Path, *, viewport: dict[str, int] = DESKTOP
    ) -> None:
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport=viewport, locale="zh-CN"
        )
        self.page: Page = self.context.new_page()
        self.shots = shots
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())  # the one-click confirmations are accepted

    def sign_in(self, login: str, password: str, totp_secret: str | None) -> None:
        page = self.page
        page.goto("/console/sign-in")
        page.fill("input[name=login]", login)
        page.fill("input[name=password]", password)
        page.click("form[action='/console/sign-in'] button[type=submit]")
        if totp_secret is not None and "/console/sign-in/code" in page.url:
            page.fill("input[name=code]", pyotp.TOTP(totp_secret).now())
            page.click("form[action='/console/sign-in/code'] button[type=submit]")

    def shoot(self, name: str, *, full_page: bool = True) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        published = os.environ.get("DATAZONE_SCREENSHOTS")
        if published:
            Path(published).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(published) / path.name)
        return path

    def close(self) -> None:
        self.context.close()
