"""The audit trail through the real gateway on loopback and the real CLI, on the shared database."""

from __future__ import annotations

import httpx
import pytest

from datazone.audit import chain, service
from datazone.config import Settings
from datazone.db import Database
from tests.conftest import Server, problem, run_cli
from tests.factories import bearer, principal_key


@pytest.mark.e2e
def test_seal_publish_prove_and_verify_over_http(db: Database, settings: Settings, server: Server) -> None:
    auditor = principal_key(db, "operator", roles=["auditor"])
    bank = principal_key(db, "institution")
    with db.unit_of_work() as s:
        entry_id = service.record(s, actor=None, action="test.e2e", object_type="test", object_id="e2e").id
    sealed = run_cli(settings, "audit", "seal")
    assert sealed.returncode == 0, sealed.stderr
    with httpx.Client(base_url=server.url, timeout=30) as c:
        roots = c.get("/v1/audit/blocks", headers=bearer(bank)).json()
        assert roots and [b["height"] for b in roots] == list(range(len(roots)))
        proof = c.get(f"/v1/audit/entries/{entry_id}/proof", headers=bearer(auditor)).json()
        assert chain.verify_proof(proof, published_block_hash=roots[proof["block"]["height"]]["block_hash"])
        # the bank did not make this entry: it does not exist as far as the bank can tell
        assert c.get(f"/v1/audit/entries/{entry_id}/proof", headers=bearer(bank)).status_code == 404
        report = c.get("/v1/audit/verify", headers=bearer(auditor)).json()
        assert report["ok"] is True and report["entries_checked"] >= 1
        refused = c.get("/v1/audit/verify", headers=bearer(bank))
        assert refused.status_code == 403 and problem(refused)["type"].endswith("/forbidden")
    verified = run_cli(settings, "audit", "verify")
    assert verified.returncode == 0 and "audit chain intact" in verified.stdout
