"""The scoring domain's share of a worker pass."""

from __future__ import annotations

from datazone.config import Settings
from datazone.db import Database


def run_once(db: Database, settings: Settings, *, worker_name: str = "worker") -> list[str]:
    """One pass; returns what it built or ran, each failure as 'failed:<name>'."""
    return []
