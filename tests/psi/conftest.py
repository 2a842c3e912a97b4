"""The PSI tests' zone: the synthetic zone served by a real gateway on loopback, with the
demo bank's access token and the zone's lists read from its tables (the plaintext truth)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datazone.config import Settings
from datazone.db import Database
from tests.conftest import SIGNING_KEY_SECRET, Server
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


def _column(db: Database, query: str) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(query)).scalars())


@pytest.fixture(scope="module")
def zone(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Zone]:
    root = tmp_path_factory.mktemp("psi")
    settings = Settings(
        home=root / "home",
        database_url=database_url,
        drop_dir=synthetic_zone["drop_dir"],
        signing_key_secret=SIGNING_KEY_SECRET,
    )
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
    listed = _column(db, "SELECT DISTINCT uscc FROM zone.court_dishonest WHERE _vto IS NULL ORDER BY uscc")
    active = _column(db, "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL AND status = 'active'")
    registered = _column(db, "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL ORDER BY uscc")
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




@contextmanager
def courts_grants_revoked(zone: Zone, *, reason: str) -> Iterator[None]:
    """Every live grant of the courts department revoked for the block, then given again with
    the same terms (the shared synthetic zone's later tests rely on them)."""
    from datazone.grant import service as grant_service
    from datazone.grant.models import Grant
    from datazone.principal import service as principal_service

    with zone.db.unit_of_work() as s:
        courts = principal_service.find_principal(s, name="demo-courts")
        assert courts is not None
        live = s.scalars(sa.select(Grant).where(Grant.department == "courts", Grant.revoked_at.is_(None))).all()
        assert live
        terms = [(g.datasets, g.purposes, g.products, g.institutions, g.valid_from, g.valid_to) for g in live]
        for g in live:
            grant_service.revoke_grant(s, grant_id=g.id, by=courts, reason=reason)
    try:
        yield
    finally:
        with zone.db.unit_of_work() as s:
            courts = principal_service.find_principal(s, name="demo-courts")
            assert courts is not None
            for datasets, purposes, products, institutions, valid_from, valid_to in terms:
                grant_service.create_grant(
                    s,
                    department="courts",
                    datasets=datasets,
                    purposes=purposes,
                    products=products,
                    institutions=institutions,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    by=courts,
                )
