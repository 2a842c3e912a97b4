"""The gateway app with the metering and billing routers (mounted here until app.py mounts them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from datazone.app import create_app
from datazone.billing.api import router as billing_router
from datazone.config import Settings
from datazone.db import Database
from datazone.metering.api import router as metering_router


def app_with_billing(db: Database, settings: Settings) -> FastAPI:
    app = create_app(db=db, settings=settings)
    paths = {getattr(r, "path", None) for r in app.routes}
    if "/v1/plans" not in paths:
        app.include_router(metering_router)
    if "/v1/statements/{period}" not in paths:
        app.include_router(billing_router)
    return app


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    with TestClient(app_with_billing(db, settings)) as c:
        yield c
