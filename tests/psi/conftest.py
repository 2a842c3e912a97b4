"""The PSI tests' zone: the synthetic zone served by a real gateway on loopback, with the
demo bank's access token and the zone's lists read from its tables (the plaintext truth)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from datazone.config import Settings
from datazone.db import Database
from tests.conftest import Server, column, synthetic_zone_settings
from tests.factories import bearer, make_uscc


@dataclass
class Zone:
    db: Database
    settings: Settings
    url: str
    token: dict[str, str]
    listed: list[str]  # enterprises on the dishonest-debtor list
    active: list[str]  # registered, active enterprises
    unlisted: list[str]  # registered enterprises not on the list
    drop_dir: Path


@pytest.fixture(scope="module")
def zone(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Zone]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "psi")
    # earlier modules may have ingested a new version of a slice (the same rows again): the zone's
    # side must match the slices as they are now, as a worker pass leaves it
    from datazone.psi import worker

    worker.run_once(db, settings)
    server = Server(settings)
    server.wait_ready()
    r = httpx.post(
        f"{server.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(synthetic_zone["client_id"], synthetic_zone["client_secret"]),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    listed = column(db, "SELECT DISTINCT uscc FROM zone.court_dishonest WHERE _vto IS NULL ORDER BY uscc")
    active = column(db, "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL AND status = 'active'")
    registered = column(db, "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL ORDER BY uscc")
    try:
        yield Zone(
            db=db,
            settings=settings,
            url=server.url,
            token=bearer(r.json()["access_token"]),
            listed=listed,
            active=active,
            unlisted=sorted(set(registered) - set(listed)),
            drop_dir=Path(synthetic_zone["drop_dir"]),
        )
    finally:
        server.stop()


def bank_list(zone: Zone, *, listed: int, unlisted: int, outsiders: int) -> list[str]:
    """A bank's customer list: some on the list, some registered but not listed, some not in the zone."""
    known = set(zone.listed) | set(zone.unlisted)
    strangers = [c for c in (make_uscc(900_000 + i) for i in range(outsiders * 2)) if c not in known][:outsiders]
    return zone.listed[:listed] + zone.unlisted[:unlisted] + strangers
