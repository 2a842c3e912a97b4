"""`datazone grant list`: the operator's shell view of grants."""

from __future__ import annotations

import json

from datazone.config import Settings
from datazone.db import Database
from datazone.grant import service
from tests.conftest import run_cli
from tests.grant.builders import committed_parties, days, now


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
