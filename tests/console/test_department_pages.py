"""The department's portal: its datasets and ingest runs (with rejects), its grants (created and
revoked through the grant service), the uses of its data; never another department's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datazone.audit import service as audit_service
from datazone.audit.models import AuditEntry
from datazone.config import Settings
from datazone.console.department import USES_PAGE
from datazone.console.pages import SHANGHAI
from datazone.db import Database
from datazone.grant import service as grant_service
from datazone.grant.models import Grant
from datazone.ingest import service as ingest_service
from datazone.ingest.models import IngestRun
from datazone.ingest.pipeline import execute_run
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from tests.conftest import unique_id
from tests.console.conftest import PersonLogin, make_person, sign_in
from tests.factories import apply_spec, bad_check, bearer, firm_rows, firm_spec, write_csv
from tests.grant.builders import Parties, committed_parties

TODAY = datetime.now(UTC).astimezone(SHANGHAI).date()


@pytest.fixture
def parties(db: Database) -> Parties:
    return committed_parties(db)


def officer_of(db: Database, settings: Settings, department_user: Principal) -> PersonLogin:
    return make_person(db, settings, kind="department", roles=["officer"], principal=department_user.name)


def signed_in(client: TestClient, person: PersonLogin) -> str:
    return sign_in(client, person)


def audit_entries(db: Database, action: str, object_id: str) -> list[AuditEntry]:
    with db.unit_of_work() as s:
        return list(
            s.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action == action, AuditEntry.object_id == object_id)
                .order_by(AuditEntry.id)
            )
        )


def give_grant(db: Database, parties: Parties, *, department_user: Principal, dataset: str) -> str:
    """A live grant of the department's dataset to bank1, made through the service."""
    now = datetime.now(UTC)
    with db.unit_of_work() as s:
        grant = grant_service.create_grant(
            s,
            department=department_user.supplier_id or "",
            datasets=[dataset],
            purposes=["pre_loan"],
            products=None,
            institutions=[parties.bank1.id],
            valid_from=now - timedelta(days=1),
            valid_to=now + timedelta(days=30),
            by=department_user,
        )
        return grant.id


def grant_row(db: Database, grant_id: str) -> Grant:
    with db.unit_of_work() as s:
        grant = s.get(Grant, grant_id)
        assert grant is not None
        return grant


# ---------------------------------------------------------------- datasets and runs


def ingest_with_rejects(db: Database, settings: Settings, department: str) -> tuple[str, IngestRun]:
    """A dataset of the department loaded once, two of its 30 rows rejected (lines 6 and 12)."""
    spec = firm_spec(unique_id("dpt"), department=department, reject_tolerance=0.1)
    with db.unit_of_work() as s:
        apply_spec(s, spec)
    rows = firm_rows(30)
    rows[4][0] = bad_check(rows[4][0])  # line 6
    rows[10][3] = "2023-02-29"  # line 12
    write_csv(settings.drop_path / spec.id / "a.csv", rows)
    with db.unit_of_work() as s:
        run_id = ingest_service.request_run(s, dataset_id=spec.id, trigger="cli", file=None).id
    run = execute_run(db, run_id=run_id, settings=settings)
    assert run.status == "succeeded" and run.rows_rejected == 2, run.error
    return spec.id, run


def test_home_shows_its_datasets_versions_and_runs_and_a_run_its_rejects_with_csv(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    dataset_id, run = ingest_with_rejects(db, settings, parties.dept_a)
    signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    home = browser_like.get("/console/department")
    assert home.status_code == 200, home.text
    text = home.text
    # its three datasets, the loaded one at version 1 with 28 rows and its run
    for own in (parties.ds_a1, parties.ds_a2, dataset_id):
        assert f'id="dataset-{own}"' in text
    assert parties.ds_b1 not in text
    shelf = text.split(f'id="dataset-{dataset_id}"')[1].split("</section>")[0]
    assert f'id="run-{run.id}"' in shelf and "成功" in shelf and ">28<" in shelf and ">2<" in shelf
    assert f'href="/console/department/runs/{run.id}"' in shelf

    page = browser_like.get(f"/console/department/runs/{run.id}")
    assert page.status_code == 200, page.text
    rejects = page.text.split("<tbody>")[1]
    cells = re.findall(r'<td class="num">(\d+)</td><td>([^<]+)</td><td>([^<]+)</td>', rejects)
    assert [(line, column) for line, column, _ in cells] == [("6", "统一社会信用代码"), ("12", "成立日期")]
    assert "check character" in cells[0][2] and "2023-02-29" in cells[1][2]

    csv_answer = browser_like.get(f"/console/department/runs/{run.id}/rejects.csv")
    assert csv_answer.status_code == 200
    assert csv_answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in csv_answer.headers["content-disposition"]
    assert csv_answer.content.startswith("\ufeff".encode())
    lines = csv_answer.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "line,column,reason,value"
    assert [row.split(",")[:2] for row in lines[1:]] == [["6", "统一社会信用代码"], ["12", "成立日期"]]


def test_another_departments_run_is_a_404_page_without_its_rejects(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    _, run = ingest_with_rejects(db, settings, parties.dept_a)
    signed_in(browser_like, officer_of(db, settings, parties.dept_b_user))
    page = browser_like.get(f"/console/department/runs/{run.id}")
    assert page.status_code == 404
    assert "未找到" in page.text and f"no ingest run {run.id}" in page.text
    assert "统一社会信用代码" not in page.text and "check character" not in page.text
    download = browser_like.get(f"/console/department/runs/{run.id}/rejects.csv")
    assert download.status_code == 404 and "check character" not in download.text
    home = browser_like.get("/console/department")
    assert f'id="run-{run.id}"' not in home.text and parties.ds_b1 in home.text


def test_an_institution_person_gets_the_403_page_not_the_portal(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    bank_person = make_person(db, settings, kind="institution", roles=["admin"], principal=parties.bank1.name)
    signed_in(browser_like, bank_person)
    for path in ("/console/department", "/console/department/grants", "/console/department/uses"):
        page = browser_like.get(path)
        assert page.status_code == 403, path
        assert "无权进行此操作" in page.text and "this page is for department accounts" in page.text
        assert parties.ds_a1 not in page.text


# ---------------------------------------------------------------- grants


def test_the_grants_page_lists_its_grants_with_their_state_not_anothers(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    live = give_grant(db, parties, department_user=parties.dept_a_user, dataset=parties.ds_a1)
    revoked = give_grant(db, parties, department_user=parties.dept_a_user, dataset=parties.ds_a2)
    with db.unit_of_work() as s:
        grant_service.revoke_grant(s, grant_id=revoked, by=parties.dept_a_user, reason="合作结束")
    foreign = give_grant(db, parties, department_user=parties.dept_b_user, dataset=parties.ds_b1)
    signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    page = browser_like.get("/console/department/grants")
    assert page.status_code == 200, page.text
    live_row = page.text.split(f'id="grant-{live}"')[1].split("</tr>")[0]
    assert 'data-status="live"' in live_row and "生效中" in live_row and parties.ds_a1 in live_row
    assert "贷前审批" in live_row and parties.bank1.name in live_row and "任意产品" in live_row
    assert f"/console/department/grants/{live}/revoke" in live_row and "撤销授权" in live_row
    revoked_row = page.text.split(f'id="grant-{revoked}"')[1].split("</tr>")[0]
    assert "已撤销" in revoked_row and "合作结束" in revoked_row and "/revoke" not in revoked_row
    assert foreign not in page.text and parties.ds_b1 not in page.text.split('id="new-grant"')[0]
    # the status filter
    only_revoked = browser_like.get("/console/department/grants?status=revoked")
    assert f'id="grant-{revoked}"' in only_revoked.text and f'id="grant-{live}"' not in only_revoked.text
    # one grant's page; another department's is a 404 page that shows none of it
    one = browser_like.get(f"/console/department/grants/{live}")
    assert one.status_code == 200 and parties.bank1.name in one.text and "生效中" in one.text
    theirs = browser_like.get(f"/console/department/grants/{foreign}")
    assert theirs.status_code == 404 and "未找到" in theirs.text
    assert parties.ds_b1 not in theirs.text and parties.bank1.name not in theirs.text


def test_creating_a_grant_writes_it_through_the_service_with_the_persons_audit_entry(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    person = officer_of(db, settings, parties.dept_a_user)
    csrf = signed_in(browser_like, person)
    first, last = TODAY, TODAY + timedelta(days=89)
    answer = browser_like.post(
        "/console/department/grants",
        data={
            "csrf": csrf,
            "datasets": [parties.ds_a1, parties.ds_a2],
            "purposes": ["pre_loan", "post_loan"],
            "products_scope": "any",
            "institutions_scope": "listed",
            "institutions": [str(parties.bank2.id)],
            "valid_from": first.isoformat(),
            "valid_to": last.isoformat(),
        },
    )
    assert answer.status_code == 303, answer.text
    grant_id = re.search(r"grant=(grt_[0-9a-f]+)", answer.headers["location"])
    assert grant_id and answer.headers["location"].startswith("/console/department/grants?notice=")
    grant = grant_row(db, grant_id.group(1))
    assert grant.department == parties.dept_a and grant.datasets == [parties.ds_a1, parties.ds_a2]
    assert grant.purposes == ["pre_loan", "post_loan"] and grant.products is None
    assert grant.institutions == [parties.bank2.id] and grant.created_by == parties.dept_a_user.id
    # whole Shanghai days: from the first's midnight to the midnight after the last
    assert grant.valid_from.astimezone(SHANGHAI).isoformat() == f"{first.isoformat()}T00:00:00+08:00"
    assert (
        grant.valid_to.astimezone(SHANGHAI).isoformat()
        == f"{(last + timedelta(days=1)).isoformat()}T00:00:00+08:00"
    )
    [entry] = audit_entries(db, "grant.create", grant.id)
    assert entry.detail["account"] == person.login and entry.actor_id == parties.dept_a_user.id
    page = browser_like.get(answer.headers["location"])
    assert "授权已创建" in page.text and f'id="grant-{grant.id}"' in page.text


def test_a_grant_the_service_refuses_is_shown_in_words_and_nothing_is_written(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    csrf = signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))

    def post(**form: object) -> tuple[int, str]:
        data = {
            "csrf": csrf,
            "valid_from": TODAY.isoformat(),
            "valid_to": (TODAY + timedelta(days=9)).isoformat(),
        }
        answer = browser_like.post("/console/department/grants", data={**data, **form})
        return answer.status_code, answer.text

    def count() -> int:
        with db.unit_of_work() as s:
            return (
                s.scalar(
                    sa.select(sa.func.count()).select_from(Grant).where(Grant.department == parties.dept_a)
                )
                or 0
            )

    # no dataset, no purpose: every problem listed, in the page
    status, text = post(products_scope="any", institutions_scope="all")
    assert status == 422 and "授权内容有误" in text
    assert "name at least one of your datasets" in text and "name at least one purpose" in text
    assert 'role="alert"' in text and 'id="new-grant"' in text
    # another department's dataset: refused naming its owner
    status, text = post(datasets=[parties.ds_b1], purposes=["pre_loan"])
    assert (
        status == 403 and "无权进行此操作" in text and f"{parties.ds_b1} belongs to {parties.dept_b}" in text
    )
    # the form keeps what was entered
    assert 'value="pre_loan" checked' in text
    # a term that ends before it starts
    status, text = post(
        datasets=[parties.ds_a1], purposes=["pre_loan"], valid_to=(TODAY - timedelta(days=3)).isoformat()
    )
    assert status == 422 and "must be after valid_from" in text
    # an overlapping live grant
    existing = give_grant(db, parties, department_user=parties.dept_a_user, dataset=parties.ds_a1)
    before = count()
    status, text = post(datasets=[parties.ds_a1], purposes=["pre_loan"], institutions_scope="all")
    assert status == 409 and "与生效中的授权重叠" in text and f"grant {existing} already covers" in text
    assert count() == before


def test_revoking_a_grant_with_a_reason_revokes_it_and_audits_the_person(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    grant_id = give_grant(db, parties, department_user=parties.dept_a_user, dataset=parties.ds_a1)
    person = officer_of(db, settings, parties.dept_a_user)
    csrf = signed_in(browser_like, person)
    page = browser_like.get("/console/department/grants")
    row = page.text.split(f'id="grant-{grant_id}"')[1].split("</tr>")[0]
    assert 'data-confirm="确定撤销授权' in row and 'name="reason"' in row
    # without a reason: refused in words, the grant still live
    empty = browser_like.post(
        f"/console/department/grants/{grant_id}/revoke", data={"csrf": csrf, "reason": " "}
    )
    assert empty.status_code == 422 and "授权内容有误" in empty.text and "reason" in empty.text
    assert grant_row(db, grant_id).revoked_at is None
    answer = browser_like.post(
        f"/console/department/grants/{grant_id}/revoke", data={"csrf": csrf, "reason": "企业投诉，暂停授权"}
    )
    assert answer.status_code == 303 and "notice=dept.notice.grant-revoked" in answer.headers["location"]
    grant = grant_row(db, grant_id)
    assert grant.revoked_at is not None and grant.revoke_reason == "企业投诉，暂停授权"
    assert grant.revoked_by == parties.dept_a_user.id
    [entry] = audit_entries(db, "grant.revoke", grant_id)
    assert entry.detail["account"] == person.login and entry.reason == "企业投诉，暂停授权"
    # revoking it again: the service's conflict, in words
    again = browser_like.post(
        f"/console/department/grants/{grant_id}/revoke", data={"csrf": csrf, "reason": "再次"}
    )
    assert again.status_code == 409 and "与当前状态冲突" in again.text and "already revoked" in again.text
    assert len(audit_entries(db, "grant.revoke", grant_id)) == 1


def test_another_departments_grant_cannot_be_revoked_from_the_page(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    foreign = give_grant(db, parties, department_user=parties.dept_b_user, dataset=parties.ds_b1)
    csrf = signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    answer = browser_like.post(
        f"/console/department/grants/{foreign}/revoke", data={"csrf": csrf, "reason": "x"}
    )
    assert (
        answer.status_code == 404
        and "未找到" in answer.text
        and parties.ds_b1 not in answer.text.split('id="new-grant"')[0]
    )
    assert grant_row(db, foreign).revoked_at is None
    assert audit_entries(db, "grant.revoke", foreign) == []
    # and without the form's token nothing happens either
    no_token = browser_like.post(f"/console/department/grants/{foreign}/revoke", data={"reason": "x"})
    assert no_token.status_code == 403 and grant_row(db, foreign).revoked_at is None


# ---------------------------------------------------------------- uses


def record_use(
    db: Database,
    *,
    department: str,
    institution: Principal,
    product: str,
    enterprises: int,
    outcome: str = "ok",
) -> int:
    """A data access as the call pipeline records it (action product.answer, the supplier's id)."""
    with db.unit_of_work() as s:
        entry = audit_service.record(
            s,
            actor=institution,
            action=audit_service.DATA_ACCESS,
            object_type="product",
            object_id=product,
            outcome=outcome,
            reason=None if outcome == "ok" else "grant-revoked",
            purpose="pre_loan",
            entity_count=enterprises,
            supplier_ids=[department],
        )
        return entry.id


def test_the_uses_page_shows_every_use_of_its_data_with_a_chart_not_other_departments(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    product = unique_id("prod")
    ours = record_use(
        db, department=parties.dept_a, institution=parties.bank1, product=product, enterprises=7
    )
    refused = record_use(
        db,
        department=parties.dept_a,
        institution=parties.bank1,
        product=product,
        enterprises=0,
        outcome="refused",
    )
    theirs = record_use(
        db, department=parties.dept_b, institution=parties.bank2, product=product, enterprises=5
    )
    signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    page = browser_like.get(f"/console/department/uses?product={product}")
    assert page.status_code == 200, page.text
    row = page.text.split(f'id="use-{ours}"')[1].split("</tr>")[0]
    assert (
        parties.bank1.name in row
        and product in row
        and ">7<" in row
        and "贷前审批" in row
        and "已应答" in row
    )
    refused_row = page.text.split(f'id="use-{refused}"')[1].split("</tr>")[0]
    assert "已拒绝" in refused_row and "grant-revoked" in refused_row
    assert f'id="use-{theirs}"' not in page.text and parties.bank2.name not in page.text
    # the chart: today's bar holds one answered and one refused call
    chart = re.search(r'<script type="application/json" id="uses-per-day-data">(.*?)</script>', page.text)
    assert chart and '"stacked": true' in chart.group(1)
    labels = re.search(r'"labels": \[(.*?)\]', chart.group(1))
    assert labels and labels.group(1).count('"') == 2 * 30
    series = re.findall(r'"values": \[([^\]]*)\]', chart.group(1))
    assert [s.split(", ")[-1] for s in series] == ["1", "1"]
    # another product's filter shows none of these
    other = browser_like.get(f"/console/department/uses?product={unique_id('none')}")
    assert f'id="use-{ours}"' not in other.text and "该期间内没有使用记录" in other.text
    # a period before these uses shows none of them either
    earlier = browser_like.get(
        f"/console/department/uses?from={(TODAY - timedelta(days=20)).isoformat()}&to={(TODAY - timedelta(days=10)).isoformat()}"
    )
    assert earlier.status_code == 200 and f'id="use-{ours}"' not in earlier.text


def test_a_bad_period_on_the_uses_page_is_refused_in_words(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    backwards = browser_like.get("/console/department/uses?from=2026-12-10&to=2026-12-01")
    assert (
        backwards.status_code == 422
        and "填写的内容有误" in backwards.text
        and "after it ends" in backwards.text
    )
    too_long = browser_like.get("/console/department/uses?from=2024-01-01&to=2026-01-01")
    assert too_long.status_code == 422 and "at most 366" in too_long.text
    not_a_date = browser_like.get("/console/department/uses?from=yesterday")
    assert not_a_date.status_code == 422 and "填写的内容有误" in not_a_date.text


def test_the_uses_table_pages_on_to_older_uses(
    db: Database, settings: Settings, browser_like: TestClient, parties: Parties
) -> None:
    product = unique_id("prod")
    ids = [
        record_use(db, department=parties.dept_a, institution=parties.bank1, product=product, enterprises=1)
        for _ in range(USES_PAGE + 2)
    ]
    signed_in(browser_like, officer_of(db, settings, parties.dept_a_user))
    first = browser_like.get(f"/console/department/uses?product={product}")
    shown = [int(i) for i in re.findall(r'id="use-(\d+)"', first.text)]
    assert shown == sorted(ids, reverse=True)[:USES_PAGE]
    older = re.search(r'href="(/console/department/uses\?[^"]*before=\d+)"', first.text)
    assert older, "no link to older uses"
    second = browser_like.get(older.group(1).replace("&amp;", "&"))
    assert [int(i) for i in re.findall(r'id="use-(\d+)"', second.text)] == sorted(ids, reverse=True)[
        USES_PAGE:
    ]
    assert "before=" not in second.text.split('class="pager"')[1].split("</p>")[0].split("最新记录")[0]


# ---------------------------------------------------------------- the demo zone


def test_the_tax_officer_sees_the_grant_to_the_demo_bank_and_the_banks_calls(
    db: Database, settings: Settings, browser_like: TestClient, synthetic_zone: dict[str, Any]
) -> None:
    """What the browser test does first: the tax department's grant to demo-bank has a row and a
    revoke button (not pressed: the shared zone's later tests rely on the grant), and a call of the
    bank to a product reading tax data is in the use history."""
    with db.unit_of_work() as s:
        tax = principal_service.find_principal(s, name="demo-tax")
        bank = principal_service.find_principal(s, name=synthetic_zone["institution"])
        assert tax is not None and bank is not None
        live = grant_service.list_grants(s, viewer=tax, live=True)
        [grant] = [g for g in live if g.institutions is not None and bank.id in g.institutions]
    token = browser_like.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "product:credit-basic"},
        auth=(synthetic_zone["client_id"], synthetic_zone["client_secret"]),
    )
    assert token.status_code == 200, token.text
    uscc = synthetic_zone["consented_usccs"][0]
    call = browser_like.get(
        f"/v1/products/credit-basic/enterprises/{uscc}",
        params={"purpose": "pre_loan"},
        headers=bearer(token.json()["access_token"]),
    )
    assert call.status_code == 200, call.text
    signed_in(
        browser_like, make_person(db, settings, kind="department", roles=["officer"], principal="demo-tax")
    )
    grants = browser_like.get("/console/department/grants")
    row = grants.text.split(f'id="grant-{grant.id}"')[1].split("</tr>")[0]
    assert bank.name in row and "生效中" in row and "撤销授权" in row
    assert f'action="/console/department/grants/{grant.id}/revoke"' in row
    uses = browser_like.get("/console/department/uses?product=credit-basic")
    assert uses.status_code == 200, uses.text
    rows = re.findall(r'<tr id="use-\d+">(.*?)</tr>', uses.text, flags=re.S)
    assert any(bank.name in r and "贷前审批" in r and "已应答" in r for r in rows)
