"""The operator's set-up pages: principals and keys, plans, department and dataset specs, PSI key epochs."""

from __future__ import annotations

import re

import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from datazone.audit.models import AuditEntry
from datazone.config import Settings
from datazone.dataset import service as dataset_service
from datazone.db import Database
from datazone.errors import DomainError
from datazone.metering.models import Plan
from datazone.principal import service as principal_service
from datazone.psi import service as psi_service
from datazone.psi import worker as psi_worker
from datazone.supplier import service as supplier_service
from tests.conftest import unique_id
from tests.console.conftest import make_person, sign_in
from tests.factories import firm_spec

OP = "/console/operator"


def entry(db: Database, action: str, object_id: str) -> AuditEntry:
    with db.unit_of_work() as s:
        found = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == action, AuditEntry.object_id == object_id)
                          .order_by(AuditEntry.id.desc())).first()
        assert found is not None, (action, object_id)
        s.expunge(found)
        return found


def test_a_reviewer_creates_a_principal_whose_key_is_shown_once_and_works(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    reviewer = make_person(db, settings, kind="operator", roles=["reviewer"])
    csrf = sign_in(browser_like, reviewer)
    name = unique_id("bank").replace("_", "-")
    r = browser_like.post(f"{OP}/principals", data={"csrf": csrf, "kind": "institution", "name": name})
    assert r.status_code == 201, r.text
    key = re.search(r'id="issued-key">([^<]+)<', r.text)
    assert key
    with db.unit_of_work() as s:
        assert principal_service.authenticate(s, token=key.group(1)).name == name
    assert key.group(1) not in browser_like.get(f"{OP}/principals").text
    created = entry(db, "principal.create", name)
    assert created.detail["account"] == reviewer.login and created.detail["key_id"] in key.group(1)
    # a second principal of that name is refused in words, and nothing is written
    r = browser_like.post(f"{OP}/principals", data={"csrf": csrf, "kind": "institution", "name": name})
    assert r.status_code == 409 and "exists already" in r.text and 'id="issued-key"' not in r.text
    # the key revoked: refused from the next request
    r = browser_like.post(f"{OP}/keys/{created.detail['key_id']}/revoke", data={"csrf": csrf})
    assert r.status_code == 303
    with db.unit_of_work() as s:
        try:
            principal_service.authenticate(s, token=key.group(1))
            raise AssertionError("a revoked key still authenticates")
        except DomainError as exc:
            assert exc.status == 401
    # suspended and reinstated, each with its audit entry naming the person
    r = browser_like.post(f"{OP}/principals/{name}/suspend", data={"csrf": csrf, "reason": "合同到期"})
    assert r.status_code == 303
    assert entry(db, "principal.suspend", name).reason == "合同到期"
    r = browser_like.post(f"{OP}/principals/{name}/reinstate", data={"csrf": csrf})
    assert r.status_code == 303
    with db.unit_of_work() as s:
        assert principal_service.named_principal(s, name=name).suspended_at is None


def test_a_curator_creates_a_plan_and_a_bad_one_lists_its_problems(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    curator = make_person(db, settings, kind="operator", roles=["curator"])
    csrf = sign_in(browser_like, curator)
    plan_id = unique_id("plan").replace("_", "-")
    r = browser_like.post(f"{OP}/plans", data={
        "csrf": csrf, "id": plan_id, "name": "标准版 2027", "unit_price_fen": "420", "free_units": "10",
        "free_period": "day", "rate_per_second": "50", "burst": "50", "monthly_cap_fen": "1000000",
    })
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        plan = s.get(Plan, plan_id)
        assert plan is not None and (plan.unit_price_fen, plan.free_units, plan.burst) == (420, 10, 50)
    assert entry(db, "plan.create", plan_id).detail["account"] == curator.login
    assert f'id="plan-{plan_id}"' in browser_like.get(f"{OP}/plans").text
    r = browser_like.post(f"{OP}/plans", data={"csrf": csrf, "id": "Bad Id", "name": "x", "rate_per_second": "-1",
                                               "burst": "0"})
    assert r.status_code == 422 and 'class="refusal"' in r.text
    with db.unit_of_work() as s:
        assert s.get(Plan, "Bad Id") is None


def test_specs_apply_departments_and_datasets_all_or_nothing(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    curator = make_person(db, settings, kind="operator", roles=["curator"])
    csrf = sign_in(browser_like, curator)
    dept = unique_id("dept").replace("_", "-")
    r = browser_like.post(f"{OP}/specs/departments", data={
        "csrf": csrf, "spec": yaml.safe_dump([{"id": dept, "name": "测试局", "name_en": "Test bureau"}], allow_unicode=True)})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert any(x.id == dept for x in supplier_service.list_suppliers(s))
    good = firm_spec(unique_id("ds"), department=dept).model_dump(mode="json", exclude_none=True)
    bad = {**firm_spec(unique_id("ds"), department=dept).model_dump(mode="json", exclude_none=True), "fields": []}
    r = browser_like.post(f"{OP}/specs/datasets", data={
        "csrf": csrf, "spec": yaml.safe_dump(good, allow_unicode=True) + "---\n" + yaml.safe_dump(bad, allow_unicode=True)})
    assert r.status_code == 422 and 'class="refusal"' in r.text and "document 2" in r.text
    with db.unit_of_work() as s:
        assert good["id"] not in {d.id for d in dataset_service.list_datasets(s)}  # all or nothing
    r = browser_like.post(f"{OP}/specs/datasets", data={"csrf": csrf, "spec": yaml.safe_dump(good, allow_unicode=True)})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        assert good["id"] in {d.id for d in dataset_service.list_datasets(s)}
    r = browser_like.post(f"{OP}/specs/datasets", data={"csrf": csrf, "spec": "id: [unclosed"})
    assert r.status_code == 422 and "not YAML" in r.text


def test_a_curator_rotates_the_psi_key_with_a_reason(
    db: Database, settings: Settings, browser_like: TestClient
) -> None:
    curator = make_person(db, settings, kind="operator", roles=["curator"])
    csrf = sign_in(browser_like, curator)
    with db.unit_of_work() as s:
        before = len(psi_service.list_epochs(s))
    r = browser_like.post(f"{OP}/psi/rotate", data={"csrf": csrf, "reason": ""})
    assert r.status_code == 422 and "reason" in r.text
    r = browser_like.post(f"{OP}/psi/rotate", data={"csrf": csrf, "reason": "季度轮换"})
    assert r.status_code == 303, r.text
    with db.unit_of_work() as s:
        epochs = psi_service.list_epochs(s)
    assert len(epochs) == before + 1 and epochs[-1].retired_at is None
    assert f'id="epoch-{epochs[-1].id}"' in browser_like.get(f"{OP}/psi").text
    assert entry(db, "psi.key.rotate", str(epochs[-1].id)).detail["account"] == curator.login
    # what the worker does after a rotation, so the zone's PSI products serve the new epoch
    # for the tests after this one
    assert not psi_worker.run_once(db, settings).failed


def test_set_up_pages_are_for_their_roles(db: Database, settings: Settings, browser_like: TestClient) -> None:
    auditor = make_person(db, settings, kind="operator", roles=["auditor"])
    csrf = sign_in(browser_like, auditor)
    for path in ("/principals", "/plans", "/specs", "/psi"):
        assert browser_like.get(OP + path).status_code == 403, path
    r = browser_like.post(f"{OP}/principals", data={"csrf": csrf, "kind": "institution", "name": "sneaky-bank"})
    assert r.status_code == 403
    with db.unit_of_work() as s:
        assert principal_service.find_principal(s, name="sneaky-bank") is None
