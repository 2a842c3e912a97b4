"""/docs and /redoc work on a closed network: every script, style sheet and icon they reference
is served by the gateway itself, and no page names a host outside it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_pages_load_everything_from_the_gateway(db: Database, settings: Settings, page: str) -> None:
    with TestClient(create_app(db=db, settings=settings)) as client:
        resp = client.get(page)
        assert resp.status_code == 200
        html = resp.text
        # nothing outside the gateway: no absolute http(s) URL and no protocol-relative one
        assert re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", html) == []
        parser = _References()
        parser.feed(html)
        # the page's scripts load its assets and the API document by these paths
        referenced = set(parser.urls) | set(re.findall(r"""url:\s*['"]([^'"]+)['"]""", html))
        referenced |= set(re.findall(r"""spec-url=['"]([^'"]+)['"]""", html))
        assert "/openapi.json" in referenced
        assets = {u for u in referenced if u != "/openapi.json"}
        assert any(u.endswith(".js") for u in assets), assets
        for url in referenced:
            assert url.startswith("/"), url
            fetched = client.get(url)
            assert fetched.status_code == 200, url
            assert len(fetched.content) > 100, url
