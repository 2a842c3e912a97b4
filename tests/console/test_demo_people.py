"""The demo's people (demo.json, "console") sign in to their portals as the README's tour says."""

from __future__ import annotations

from typing import Any

import pyotp
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database
from tests.console.conftest import csrf_of


def test_each_demo_person_signs_in_to_their_portal(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any]
) -> None:
    people = synthetic_zone["console"]
    assert set(people) == {"operator.admin", "tax.officer", "bank.admin", "bank.analyst"}
    homes = {"operator.admin": "/console/operator", "tax.officer": "/console/department",
             "bank.admin": "/console/institution", "bank.analyst": "/console/institution"}
    for login, person in people.items():
        with TestClient(create_app(db=db, settings=settings), base_url="https://testserver",
                        follow_redirects=False) as client:
            page = client.get("/console/sign-in")
            r = client.post("/console/sign-in", data={"csrf": csrf_of(page.text), "login": login,
                                                      "password": person["password"]})
            assert r.status_code == 303, (login, r.text)
            # every demo person has a second factor set up: the code comes from demo.json's secret
            assert r.headers["location"].startswith("/console/sign-in/code")
            page = client.get("/console/sign-in/code")
            r = client.post("/console/sign-in/code", data={"csrf": csrf_of(page.text),
                                                           "code": pyotp.TOTP(person["totp_secret"]).now()})
            assert r.status_code == 303, (login, r.text)
            home = client.get("/console")
            assert home.headers["location"] == homes[login]
            assert client.get(homes[login]).status_code == 200
