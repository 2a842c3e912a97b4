"""`datazone grant ...`: the operator's shell view of grants, and a department's grants created
and revoked from the shell through the grant service the API calls."""

from __future__ import annotations

import json

from datazone.config import Settings
from datazone.db import Database
from datazone.grant import service
from tests.conftest import run_cli
from tests.grant.builders import committed_parties, days, now
from tests.shell import audited


def test_grant_list_json_filters_by_department(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    with db.unit_of_work() as s:
        ga = service.create_grant(
            s, department=p.dept_a, datasets=[p.ds_a1], purposes=["pre_loan"], products=None,
            institutions=[p.bank1.id], valid_from=now() - days(1), valid_to=now() + days(30), by=p.dept_a_user,
        )  # fmt: skip
        service.create_grant(
            s, department=p.dept_b, datasets=[p.ds_b1], purposes=["anti_fraud"], products=None,
            institutions=None, valid_from=now() - days(1), valid_to=now() + days(30), by=p.dept_b_user,
        )  # fmt: skip
    done = run_cli(settings, "grant", "list", "--department", p.dept_a, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["id"], r["status"], r["institutions"]) for r in rows] == [(ga.id, "live", [p.bank1.id])]
    table = run_cli(settings, "grant", "list", "--department", p.dept_b, COLUMNS="250")
    assert table.returncode == 0 and p.ds_b1 in table.stdout and "anti_fraud" in table.stdout


def test_grant_create_as_the_department_and_revoke(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    done = run_cli(
        settings, "grant", "create", "--as", p.dept_a_user.name, "--dataset", p.ds_a1, "--dataset", p.ds_a2,
        "--purpose", "pre_loan", "--purpose", "post_loan", "--institution", p.bank1.name,
        "--from", "2026-01-01", "--to", "2099-01-01",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with db.unit_of_work() as s:
        (grant,) = service.list_grants(s, viewer=p.dept_a_user)
        assert (grant.department, grant.datasets, grant.purposes, grant.products, grant.institutions) == (
            p.dept_a, [p.ds_a1, p.ds_a2], ["pre_loan", "post_loan"], None, [p.bank1.id],
        )  # fmt: skip
        assert grant.created_by == p.dept_a_user.id
    assert f"grant {grant.id} of {p.dept_a}: live" in done.stdout
    assert audited(db, object_type="grant", object_id=grant.id) == [
        ("grant.create", "department", p.dept_a_user.name)
    ]

    done = run_cli(settings, "grant", "revoke", grant.id, "--as", p.dept_b_user.name, "--reason", "not mine")
    assert done.returncode == 2 and f"no grant {grant.id!r}" in done.stderr
    done = run_cli(settings, "grant", "revoke", grant.id, "--as", p.dept_a_user.name, "--reason", "授权退出")
    assert done.returncode == 0, done.stderr
    assert f"grant {grant.id}: revoked" in done.stdout
    with db.unit_of_work() as s:
        revoked = service.get_grant(s, grant_id=grant.id, viewer=p.dept_a_user)
        assert revoked.revoked_at is not None and revoked.revoked_by == p.dept_a_user.id
    assert audited(db, object_type="grant", object_id=grant.id)[-1] == (
        "grant.revoke", "department", p.dept_a_user.name,
    )  # fmt: skip


def test_grant_create_is_refused_and_writes_nothing(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    common = ["--purpose", "pre_loan", "--to", "2099-01-01"]
    done = run_cli(settings, "grant", "create", "--as", p.dept_a_user.name, "--dataset", p.ds_b1, *common)
    assert done.returncode == 2
    assert f"a department grants only its own datasets: {p.ds_b1} belongs to {p.dept_b}" in done.stderr
    done = run_cli(settings, "grant", "create", "--as", p.curator.name, "--dataset", p.ds_a1, *common)
    assert done.returncode == 2 and "only a department grants use of its data" in done.stderr
    first = run_cli(settings, "grant", "create", "--as", p.dept_a_user.name, "--dataset", p.ds_a1, *common)
    assert first.returncode == 0, first.stderr
    again = run_cli(settings, "grant", "create", "--as", p.dept_a_user.name, "--dataset", p.ds_a1, *common)
    assert again.returncode == 2 and "already covers this scope" in again.stderr
    with db.unit_of_work() as s:
        assert len(service.list_grants(s, viewer=p.dept_a_user)) == 1
        assert service.list_grants(s, viewer=p.dept_b_user) == []
