"""The gateway over real HTTP on loopback: datasets, runs, reports, problem+json, keys."""

from __future__ import annotations

import csv
import io

import httpx

from datazone.config import Settings
from datazone.db import Database
from tests.conftest import Server, problem, unique_id
from tests.factories import (
    apply_spec,
    bad_check,
    bearer,
    ensure_department,
    firm_rows,
    firm_spec,
    principal_key,
    write_csv,
)
from tests.ingest.test_pipeline import ingest


def _key(db: Database, kind: str = "operator") -> str:
    if kind == "operator":
        return principal_key(db, "operator", roles=["curator"])
    return principal_key(db, kind)


def test_datasets_runs_and_reports_over_http(db: Database, settings: Settings, server: Server) -> None:
    spec = firm_spec(unique_id("api"), reject_tolerance=0.5)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    rows = firm_rows(6)
    rows[1][0] = bad_check(rows[1][0])
    write_csv(settings.drop_path / spec.id / "a.csv", rows)
    run = ingest(db, settings, spec)
    assert run.status == "succeeded"
    op = {"Authorization": f"Bearer {_key(db)}"}
    with httpx.Client(base_url=server.url, headers=op, timeout=10) as c:
        listed = c.get("/v1/datasets").json()
        mine = next(d for d in listed if d["id"] == spec.id)
        assert (mine["current_version"], mine["current_rows"], mine["department"]) == (1, 5, "test-dept")
        assert mine["spec"]["fields"][0]["name"] == "uscc"
        # a new dataset enters the lifecycle at intake, and that move is on its record
        assert (mine["admission_state"], mine["successor_id"]) == ("intake", None)
        history = c.get(f"/v1/lifecycle/dataset/{spec.id}/history").json()
        assert [(h["from_state"], h["to_state"], h["reason"]) for h in history] == [(None, "intake", "spec applied")]
        assert c.get("/v1/departments").json()[0]["id"]
        assert [v["version"] for v in c.get(f"/v1/datasets/{spec.id}/versions").json()] == [1]

        report = c.get(f"/v1/ingest/runs/{run.id}").json()
        assert report["run"]["status"] == "succeeded" and report["run"]["rows_rejected"] == 1
        assert report["rejects"][0]["line"] == 3 and report["rejects_reported"] == 1
        got = c.get(f"/v1/ingest/runs/{run.id}/rejects.csv")
        assert got.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(got.text)))
        assert table[0] == ["line", "column", "reason", "value"]
        assert table[1][0] == "3" and "check character" in table[1][2]

        queued = c.post(f"/v1/datasets/{spec.id}/runs")
        assert queued.status_code == 202 and queued.json()["status"] == "new"
        assert queued.json()["trigger"] == "manual"
        runs = c.get("/v1/ingest/runs", params={"dataset": spec.id}).json()
        assert [r["status"] for r in runs] == ["new", "succeeded"]


def test_errors_are_problem_json(db: Database, server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        anonymous = c.get("/v1/datasets")
        assert anonymous.status_code == 401 and "Bearer" in problem(anonymous)["detail"]
        forged = c.get("/v1/datasets", headers={"Authorization": "Bearer dzk_0000_nope"})
        assert forged.status_code == 401 and problem(forged)["type"].endswith("/unauthorized")
        institution = {"Authorization": f"Bearer {_key(db, 'institution')}"}
        denied = c.post("/v1/datasets/whatever/runs", headers=institution)
        assert denied.status_code == 403 and "operator" in problem(denied)["detail"]
        op = {"Authorization": f"Bearer {_key(db)}"}
        missing = c.get("/v1/datasets/no_such_dataset", headers=op)
        assert missing.status_code == 404 and "no_such_dataset" in problem(missing)["detail"]
        bad = c.get("/v1/ingest/runs", params={"status": "exploded", "limit": 0}, headers=op)
        body = problem(bad)
        assert bad.status_code == 422 and len(body["errors"]) == 2
        assert c.get("/v1/ingest/runs/999999999", headers=op).status_code == 404


def test_runs_are_seen_by_the_supplying_department_only(db: Database, settings: Settings, server: Server) -> None:
    spec = firm_spec(unique_id("runs"), reject_tolerance=0.5)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
        ensure_department(s, "other-dept")
    rows = firm_rows(4)
    rows[2][0] = bad_check(rows[2][0])
    write_csv(settings.drop_path / spec.id / "a.csv", rows)
    run = ingest(db, settings, spec)
    own = bearer(principal_key(db, "department", supplier_id="test-dept"))
    other = bearer(principal_key(db, "department", supplier_id="other-dept"))
    auditor = bearer(principal_key(db, "operator", roles=["auditor"]))
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert run.id in [r["id"] for r in c.get("/v1/ingest/runs", headers=own).json()]
        report = c.get(f"/v1/ingest/runs/{run.id}", headers=own).json()
        assert report["run"]["rows_rejected"] == 1 and report["rejects"][0]["line"] == 4
        assert "line" in c.get(f"/v1/ingest/runs/{run.id}/rejects.csv", headers=own).text
        # another department neither lists nor reads it: 404, as if it did not exist
        assert run.id not in [r["id"] for r in c.get("/v1/ingest/runs", headers=other).json()]
        assert c.get(f"/v1/ingest/runs/{run.id}", headers=other).status_code == 404
        assert c.get(f"/v1/ingest/runs/{run.id}/rejects.csv", headers=other).status_code == 404
        # an auditor reads reports but does not trigger runs: that is a curator's power
        assert c.get(f"/v1/ingest/runs/{run.id}", headers=auditor).status_code == 200
        denied = c.post(f"/v1/datasets/{spec.id}/runs", headers=auditor)
        assert denied.status_code == 403 and "curator" in problem(denied)["detail"]
        assert c.post(f"/v1/datasets/{spec.id}/runs", headers=own).status_code == 403
        # the run and who asked for it are on the department's part of the audit trail
        trail = c.get("/v1/audit/entries", headers=own, params={"action": "ingest.run"}).json()
        mine = [e for e in trail if e["object_id"] == spec.id]
        assert [(e["outcome"], e["detail"]["version"], e["detail"]["rows_rejected"]) for e in mine] == [("ok", 1, 1)]
        assert not [
            e for e in c.get("/v1/audit/entries", headers=other).json() if e["object_id"] == spec.id
        ]
