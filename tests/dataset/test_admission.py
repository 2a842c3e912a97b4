"""Data admission, retirement and the use gate (`require_in_use`), through the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from datazone.config import Settings
from datazone.dataset import admission
from datazone.dataset import service as dataset_service
from datazone.dataset.schemas import DatasetSpec
from datazone.db import Database
from datazone.errors import InvalidSpec
from datazone.ingest import service as ingest_service
from datazone.lifecycle import service as lifecycle_service
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import problem
from tests.factories import firm_rows, make_uscc, write_csv


def loaded(
    db: Database, settings: Settings, tmp_path: Path, rows: list[list[str]], **spec: Any
) -> DatasetSpec:
    ds = new_dataset(db, **spec)
    run = ingest(db, settings, ds.id, write_csv(tmp_path / f"{ds.id}.csv", rows))
    assert run.status == "succeeded", run.error
    return ds


def admitted(db: Database, settings: Settings, tmp_path: Path) -> DatasetSpec:
    ds = loaded(db, settings, tmp_path, firm_rows(5))
    with db.unit_of_work() as s:
        admission.review_dataset(
            s, dataset_id=ds.id, decision="admit", by=None, by_name="test", reason="ok"
        )
    return ds


def gate(db: Database, dataset_ids: list[str]) -> dict[str, Any] | None:
    """The use gate's problem for these datasets, or None when they may be served."""
    with db.unit_of_work() as s:
        try:
            admission.require_in_use(s, dataset_ids=dataset_ids)
        except admission.DataNotInUse as exc:
            return exc.problem()
    return None


def transitions(db: Database, dataset_id: str) -> list[tuple[str | None, str, str, str]]:
    """The dataset's moves after its creation (which is recorded as None -> intake)."""
    with db.unit_of_work() as s:
        return [
            (t.from_state, t.to_state, t.by_name, t.reason)
            for t in lifecycle_service.history(s, subject_type="dataset", subject_id=dataset_id)
            if t.from_state is not None
        ]


def test_new_dataset_starts_in_intake_and_is_not_served(db: Database, session: Session) -> None:
    spec = new_dataset(db)
    with pytest.raises(admission.DataNotInUse) as exc:
        admission.require_in_use(session, dataset_ids=[spec.id, "no_such_dataset"])
    body = exc.value.problem()
    assert body["status"] == 403 and body["type"].endswith("/data-not-in-use")
    assert body["dataset_ids"] == [spec.id, "no_such_dataset"]
    assert [e["state"] for e in body["errors"]] == ["intake", None]
    assert spec.id in body["detail"] and "intake" in body["detail"]


def test_admission_with_a_passing_sample(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    ds = loaded(db, settings, tmp_path, firm_rows(20))
    url = f"/v1/datasets/{ds.id}"
    admit = {"decision": "admit", "reason": "sample meets thresholds"}
    # separation of duties: a curator opens the review, only a reviewer decides it
    assert problem(client.post(url + "/admission", json=admit, headers=keys["curator"]))["status"] == 403
    r = client.post(url + "/review", json={"reason": "delivery complete"}, headers=keys["curator"])
    assert r.status_code == 200 and r.json()["admission_state"] == "under_review"
    assert gate(db, [ds.id]) is not None
    r = client.post(url + "/admission", json=admit, headers=keys["reviewer"])
    assert r.status_code == 200, r.text
    review = r.json()
    assert review["passed"] is True and review["override"] is False and review["failures"] == []
    f = review["figures"]
    assert (f["version"], f["rows"], f["rows_received"], f["rows_rejected"]) == (1, 20, 20, 0)
    assert set(f["completeness"].values()) == {1.0} and f["validity"] == 1.0 and f["key_unique"] is True
    assert f["distributions"]["status"] == {"active": 1.0}
    assert gate(db, [ds.id]) is None
    hist = client.get(f"/v1/lifecycle/dataset/{ds.id}/history", headers=keys["auditor"]).json()
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in hist] == [
        (None, "intake", "spec applied"),
        ("intake", "under_review", "delivery complete"),
        ("under_review", "admitted", "sample meets thresholds"),
    ]
    assert hist[1]["by_name"] != hist[2]["by_name"] and all(h["at"] for h in hist)


def test_failing_sample_is_refused_with_each_figure_then_admitted_by_override(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    ds = loaded(db, settings, tmp_path, BAD_BATCH, reject_tolerance=0.2)
    url = f"/v1/datasets/{ds.id}/admission"
    r = client.post(url, json={"decision": "admit", "reason": "looks fine"}, headers=keys["reviewer"])
    body = problem(r)
    assert r.status_code == 409 and body["type"].endswith("/sample-quality-failed")
    failed = {e["location"]: e for e in body["errors"]}
    assert set(failed) == {"completeness.capital", "validity"}
    assert failed["completeness.capital"]["value"] == pytest.approx(6 / 9, abs=1e-6)
    assert failed["completeness.capital"]["threshold"] == 0.95
    assert failed["validity"]["value"] == pytest.approx(0.9) and failed["validity"]["threshold"] == 0.99
    assert "1 of 10 rows" in failed["validity"]["problem"] and "override" in body["detail"]
    figures = body["figures"]
    assert figures["completeness_overall"] == pytest.approx(51 / 54, abs=1e-6)
    assert figures["distributions"]["status"] == pytest.approx(
        {"active": 6 / 9, "deregistered": 3 / 9}, abs=1e-6
    )
    # nothing written: still in intake, no transition, no review
    assert transitions(db, ds.id) == []
    assert client.get(f"/v1/datasets/{ds.id}/reviews", headers=keys["auditor"]).json() == []
    assert gate(db, [ds.id]) is not None
    # an override needs a reason like any decision, and says so in the transition
    r = client.post(url, json={"decision": "admit", "override": True, "reason": ""}, headers=keys["reviewer"])
    assert problem(r)["status"] == 422 and transitions(db, ds.id) == []
    reason = "capital is optional for this use; validity accepted by the data owner"
    r = client.post(
        url, json={"decision": "admit", "override": True, "reason": reason}, headers=keys["reviewer"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["override"] is True and r.json()["passed"] is False
    assert [(t[0], t[1], t[3]) for t in transitions(db, ds.id)] == [
        ("intake", "under_review", "admission review started"),
        ("under_review", "admitted", f"override: {reason}"),
    ]
    assert gate(db, [ds.id]) is None
    reviews = client.get(f"/v1/datasets/{ds.id}/reviews", headers=keys["auditor"]).json()
    assert [(rv["decision"], rv["override"], len(rv["failures"])) for rv in reviews] == [("admit", True, 2)]


def test_required_field_must_be_complete(
    db: Database, settings: Settings, tmp_path: Path, session: Session
) -> None:
    """A required field below 100% fails even at 99%: the check reads the stored version."""
    ds = loaded(db, settings, tmp_path, firm_rows(4))
    with db.engine.begin() as c:
        c.execute(sa.text(f'ALTER TABLE zone."{ds.id}" ALTER COLUMN name DROP NOT NULL'))
        c.execute(sa.text(f"UPDATE zone.\"{ds.id}\" SET name = NULL WHERE uscc = '{make_uscc(0)}'"))
    figures, failures = admission.sample_check(session, dataset_id=ds.id)
    assert figures["completeness"]["name"] == 0.75
    assert [(f["location"], f["threshold"]) for f in failures] == [("completeness.name", 1.0)]
    assert "required field 'name'" in failures[0]["problem"]


def test_reject_then_resubmit(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    ds = loaded(db, settings, tmp_path, BAD_BATCH, reject_tolerance=0.2)
    url = f"/v1/datasets/{ds.id}"
    r = client.post(
        url + "/admission",
        json={"decision": "reject", "reason": "too many rejects"},
        headers=keys["reviewer"],
    )
    assert r.status_code == 200 and r.json()["decision"] == "reject" and r.json()["passed"] is False
    r = client.post(url + "/admission", json={"decision": "admit", "reason": "x"}, headers=keys["reviewer"])
    body = problem(r)
    assert r.status_code == 409 and body["type"].endswith("/illegal-transition")
    assert body["state"] == "rejected" and body["allowed"] == ["under_review"]
    r = client.post(url + "/review", json={"reason": "resent"}, headers=keys["curator"])
    assert r.json()["admission_state"] == "under_review"
    assert [t[1] for t in transitions(db, ds.id)] == ["under_review", "rejected", "under_review"]


def test_review_of_a_given_run(db: Database, settings: Settings, tmp_path: Path, session: Session) -> None:
    ds = loaded(db, settings, tmp_path, firm_rows(3))
    run2 = ingest(db, settings, ds.id, write_csv(tmp_path / "v2.csv", firm_rows(6)))
    figures, _ = admission.sample_check(session, dataset_id=ds.id)
    assert (figures["version"], figures["rows"]) == (2, 6)
    with db.unit_of_work() as s:
        first_id = ingest_service.list_runs(s, dataset_id=ds.id)[-1].id  # newest first
    figures, _ = admission.sample_check(session, dataset_id=ds.id, run_id=first_id)
    assert (figures["version"], figures["rows"], figures["run_id"]) == (1, 3, first_id)
    other = new_dataset(db)
    with pytest.raises(InvalidSpec, match="not"):
        admission.sample_check(session, dataset_id=other.id, run_id=run2.id)


def test_dataset_without_data_cannot_be_admitted_without_override(db: Database, session: Session) -> None:
    ds = new_dataset(db)
    with pytest.raises(admission.SampleFailed) as exc:
        admission.review_dataset(session, dataset_id=ds.id, decision="admit", by=None, reason="r")
    assert exc.value.errors[0]["location"] == "sample" and "ingest" in exc.value.errors[0]["problem"]


def test_deprecate_with_successor_then_retire(
    db: Database, settings: Settings, tmp_path: Path, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    old, new = admitted(db, settings, tmp_path), admitted(db, settings, tmp_path)
    intake = new_dataset(db)
    url = f"/v1/datasets/{old.id}"
    for successor, words in (
        (old.id, "cannot succeed itself"),
        ("nope", "no dataset 'nope'"),
        (intake.id, "is intake"),
    ):
        r = client.post(
            url + "/deprecate", json={"successor": successor, "reason": "r"}, headers=keys["curator"]
        )
        assert r.status_code == 422 and words in problem(r)["detail"], r.text
    assert transitions(db, old.id)[-1][1] == "admitted"
    r = client.post(
        url + "/deprecate",
        json={"successor": new.id, "reason": "merged into the new feed"},
        headers=keys["curator"],
    )
    assert r.json() == {"dataset_id": old.id, "admission_state": "deprecated", "successor_id": new.id}
    assert gate(db, [old.id, new.id]) is None  # deprecated data still serves until retired
    r = client.post(
        url + "/retire", json={"reason": "successor carries all consumers"}, headers=keys["curator"]
    )
    assert r.json()["admission_state"] == "retired" and r.json()["successor_id"] == new.id
    refused = gate(db, [new.id, old.id])
    assert refused is not None and refused["dataset_ids"] == [old.id]
    assert refused["errors"][0]["state"] == "retired" and refused["errors"][0]["successor_id"] == new.id
    # retired is final: every way back is refused with the (empty) list of allowed moves
    before = transitions(db, old.id)
    for path, body in (
        ("/reinstate", {"reason": "r"}),
        ("/admission", {"decision": "admit", "reason": "r"}),
        ("/review", {"reason": "r"}),
    ):
        who = keys["reviewer"] if path == "/admission" else keys["curator"]
        r = client.post(url + path, json=body, headers=who)
        p = problem(r)
        assert r.status_code == 409 and p["allowed"] == [] and "final" in p["detail"], (path, r.text)
    assert transitions(db, old.id) == before


def test_deprecation_can_be_withdrawn(
    db: Database, settings: Settings, tmp_path: Path, session: Session
) -> None:
    old, new = admitted(db, settings, tmp_path), admitted(db, settings, tmp_path)
    admission.deprecate_dataset(session, dataset_id=old.id, successor_id=new.id, by=None, reason="r")
    admission.reinstate_dataset(session, dataset_id=old.id, by=None, reason="successor delayed")
    st = dataset_service.admission_states(session, dataset_ids=[old.id])[old.id]
    assert (st.state, st.successor_id) == ("admitted", None)
