"""Fixtures for the OAuth tests: an institution of its own on the synthetic zone, clients, servers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.config import Settings
from datazone.contract import service as contract_service
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.demo.setup import DEMO_OPERATOR
from datazone.grant import service as grant_service
from datazone.oauth import service as oauth_service
from datazone.principal import service as principal_service
from datazone.product import service as product_service
from tests.conftest import Server

ISSUER = "https://zone.example.test"
TOKEN_URL = ISSUER + "/oauth/token"
# the institution of these tests holds a contract for these, not for admission-analysis
CONTRACTED = ("credit-basic", "risk-insight", "enterprise-portrait")
PURPOSES = ("pre_loan", "post_loan")


def oauth_app(db: Database, settings: Settings) -> FastAPI:
    return create_app(db=db, settings=settings)


@pytest.fixture
def oauth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"oauth_issuer": ISSUER})


@pytest.fixture
def api(db: Database, oauth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(oauth_app(db, oauth_settings)) as c:
        yield c


class OAuthServer(Server):
    """The real gateway in a subprocess on loopback."""


@pytest.fixture
def zone_server(oauth_settings: Settings) -> Iterator[OAuthServer]:
    srv = OAuthServer(oauth_settings)
    srv.wait_ready()
    yield srv
    srv.stop()


@dataclass
class Institution:
    id: int
    name: str
    key: str  # control-plane bearer key
    grants: dict[str, str] = field(default_factory=dict)  # department -> grant id
    departments_of: dict[str, list[str]] = field(default_factory=dict)  # product -> departments


@pytest.fixture
def institution(db: Database, synthetic_zone: dict[str, Any]) -> Institution:
    """A new institution with a contract for CONTRACTED and every department's grant for it."""
    now = datetime.now(UTC)
    with db.unit_of_work() as s:
        inst = principal_service.create_principal(s, kind="institution", name=f"bank_{secrets.token_hex(4)}")
        key = principal_service.issue_key(s, principal=inst).token
        operator = principal_service.find_principal(s, name=DEMO_OPERATOR)
        assert operator is not None
        contract_service.create_contract(
            s,
            institution_id=inst.id,
            purposes=list(PURPOSES),
            products=list(CONTRACTED),
            clearance=2,
            valid_from=now - timedelta(days=1),
            valid_to=now + timedelta(days=30),
            by=operator,
        )
        departments_of = {
            p: product_service.product_departments(s, product=product_service.get_product(s, product_id=p))
            for p in (*CONTRACTED, "admission-analysis")
        }
        grants: dict[str, str] = {}
        for dept in sorted({d for ds in departments_of.values() for d in ds}):
            dept_principal = principal_service.find_principal(s, name=f"demo-{dept}")
            assert dept_principal is not None, dept
            datasets = [d.id for d in dataset_service.list_datasets(s, department=dept)]
            grant = grant_service.create_grant(
                s,
                department=dept,
                datasets=datasets,
                purposes=list(PURPOSES),
                products=None,
                institutions=[inst.id],
                valid_from=now - timedelta(hours=1),
                valid_to=now + timedelta(days=30),
                by=dept_principal,
            )
            grants[dept] = grant.id
        return Institution(id=inst.id, name=inst.name, key=key, grants=grants, departments_of=departments_of)


def new_client(
    db: Database,
    institution_id: int,
    *,
    auth_method: str = "client_secret_basic",
    jwks: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """A committed client: (client_id, secret or None)."""
    with db.unit_of_work() as s:
        client, secret = oauth_service.create_client(
            s,
            institution_id=institution_id,
            name="test-app",
            auth_method=auth_method,
            jwks=jwks,
            by_name="test",
        )
        return client.client_id, secret


def token_request(
    client: httpx.Client | TestClient, client_id: str, secret: str, scope: str | None = None
) -> httpx.Response:
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope is not None else {})
    return client.post("/oauth/token", data=data, auth=(client_id, secret))
