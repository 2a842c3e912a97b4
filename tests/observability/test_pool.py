"""The database pool series are read from the engine when scraped: in use, and threads waiting."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from prometheus_client import REGISTRY

from datazone.db import sqlalchemy_url
from datazone.observability import metrics


def _sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"pool": "test-tiny"})


def test_pool_in_use_and_waiting_follow_the_engine(database_url: str) -> None:
    tiny = sa.create_engine(sqlalchemy_url(database_url), pool_size=1, max_overflow=0, pool_timeout=10)
    metrics.watch_pool("test-tiny", tiny)
    try:
        held = tiny.connect()
        assert (_sample("datazone_db_pool_in_use"), _sample("datazone_db_pool_waiting")) == (1, 0)
        waiter = threading.Thread(target=lambda: tiny.connect().close())
        waiter.start()
        deadline = time.monotonic() + 5
        while _sample("datazone_db_pool_waiting") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sample("datazone_db_pool_waiting") == 1
        held.close()
        waiter.join(10)
        assert (_sample("datazone_db_pool_in_use"), _sample("datazone_db_pool_waiting")) == (0, 0)
    finally:
        metrics.unwatch(tiny)
        tiny.dispose()
    assert _sample("datazone_db_pool_in_use") is None  # no longer reported
