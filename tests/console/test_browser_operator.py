"""In real Chromium: the operator's day. A dataset admitted on its sample's figures, a product
published and signed into a bank's contract (it appears in the bank's catalog), a registered
scoring model approved, a failed ingest run's rejects downloaded, the audit chain verified."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from datazone.client.scoring import generate_key_file
from datazone.client.sdk import ZoneClient
from datazone.config import Settings
from datazone.db import Database
from datazone.privacy import scoring as circuits
from tests.admission import BAD_BATCH, ingest, new_dataset
from tests.conftest import Server
from tests.console.browser import Visit
from tests.console.conftest import make_person
from tests.factories import firm_rows, retire_model, write_csv

PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"
OP = "/console/operator"


def registered_model(live_console: Server, zone: dict[str, Any], tmp_path: Path) -> str:
    """A scoring model the demo bank registers through its SDK, pending the operator's review."""
    key = generate_key_file(tmp_path / "bank.key")
    model = circuits.parse_model({
        "format": circuits.MODEL_FORMAT, "name": f"sme-pre-loan-{secrets.token_hex(2)}",
        "product": "secure-credit-score", "purpose": "pre_loan", "kind": "logistic", "scale": 1000,
        "intercept": -1.5,
        "features": [{"name": "years_since_founding", "weight": 0.031}, {"name": "tax_grade_code", "weight": 0.35},
                     {"name": "dishonest_listed", "weight": -2.5}, {"name": "abnormal_listed", "weight": -0.9}],
    })
    with ZoneClient(live_console.url, zone["client_id"], zone["client_secret"]) as bank:
        view = bank.register_model(model, key)
    assert view["state"] == "pending_review"
    model_id: str = view["id"]
    return model_id


def test_an_operator_admits_publishes_approves_reads_rejects_and_verifies_the_chain(
    db: Database, settings: Settings, synthetic_zone: dict[str, Any], live_console: Server,
    visit: Callable[..., Visit], tmp_path: Path,
) -> None:
    # what awaits the operator: a new dataset's sample, a failed run, a registered model
    intake = new_dataset(db)
    ingest(db, settings, intake.id, write_csv(tmp_path / "sample.csv", firm_rows(12)))
    broken = new_dataset(db)
    failed = ingest(db, settings, broken.id, write_csv(tmp_path / "bad.csv", BAD_BATCH))
    assert failed.status == "failed"
    model_id = registered_model(live_console, synthetic_zone, tmp_path)

    operator = make_person(db, settings, kind="operator", roles=["curator", "reviewer", "auditor"],
                           principal="demo-operator")
    v = visit()
    v.sign_in(operator.login, operator.password, operator.totp_secret)
    assert v.page.url.endswith(OP), v.page.url
    v.page.wait_for_selector("canvas[data-drawn=yes]")
    v.shoot("operator-dashboard")

    # dataset admission on the sample's figures
    v.page.goto(f"{OP}/datasets")
    card = v.page.locator(f"#admission-{intake.id}")
    assert card.locator("dd[data-figure=rows]").inner_text() == "12"
    assert card.locator("dd[data-figure=validity]").inner_text() == "100.00%"
    v.shoot("operator-dataset-admission")
    card.locator("input[name=reason]").fill("抽检合格，准予入库")
    card.locator(f"#admit-{intake.id}").click()
    v.page.wait_for_load_state()
    assert v.page.locator(f"#admission-{intake.id}").count() == 0

    # a product applied and published, then signed into the bank's contract
    product_id = f"browser-{secrets.token_hex(3)}"
    spec = {**yaml.safe_load((PRODUCTS_DIR / "credit-basic.yaml").read_text(encoding="utf-8")), "id": product_id}
    v.page.goto(f"{OP}/catalog")
    v.page.fill("textarea[name=spec]", yaml.safe_dump(spec, allow_unicode=True))
    v.page.click("form[action='/console/operator/catalog/apply'] button[type=submit]")
    v.page.wait_for_load_state()
    v.page.click(f"#publish-{product_id}")
    v.page.wait_for_load_state()
    assert "published" in (v.page.locator(f"#product-{product_id} .badge").get_attribute("class") or "") or \
        v.page.locator(f"#product-{product_id} .badge.ok").count() == 1
    v.shoot("operator-catalog")
    v.page.goto(f"{OP}/institutions")
    bank_id = v.page.locator("form[id^=sign-contract-]").evaluate_all(
        "(forms, name) => forms.map(f => f.closest('section').innerText.includes(name) ? f.id : null).filter(Boolean)",
        "demo-bank",
    )[0].removeprefix("sign-contract-")
    form = v.page.locator(f"#sign-contract-{bank_id}")
    form.locator("xpath=ancestor::details").locator("summary").click()
    form.locator(f"input[name=products][value='{product_id}']").check()
    form.locator("input[name=purposes][value=pre_loan]").check()
    form.locator("button[type=submit]").click()
    v.page.wait_for_load_state()
    assert v.page.locator(".refusal").count() == 0, v.page.locator("main").inner_text()[:800]

    bank = make_person(db, settings, kind="institution", roles=["analyst"], principal="demo-bank", second_factor=False)
    b = visit()
    b.sign_in(bank.login, bank.password, None)
    b.page.goto(f"/console/institution/catalog?q={product_id}")
    assert product_id in b.page.locator("main").inner_text()

    # the registered model approved from the review queue
    v.page.goto(f"{OP}/review")
    row = v.page.locator(f"#model-{model_id}")
    row.locator("input[name=reason]").fill("模型评审通过")
    row.locator(f"#approve-{model_id}").click()
    v.page.wait_for_load_state()
    assert v.page.locator(f"#model-{model_id}").count() == 0
    retire_model(db, model_id)  # approved: later workers would fill a factor pool for its key

    # the failed run's rejects, on the page and as a CSV
    v.page.goto(f"{OP}/ingest/{failed.id}")
    assert "not a valid USCC" in v.page.locator("#rejects").inner_text()
    v.shoot("operator-ingest-run")
    with v.page.expect_download() as download:
        v.page.click("#download-rejects")
    rejects = Path(download.value.path()).read_text(encoding="utf-8-sig")
    assert rejects.splitlines()[0].startswith("line") and len(rejects.splitlines()) >= 2

    # the audit chain verified
    v.page.goto(f"{OP}/audit")
    v.page.click("#verify")
    v.page.wait_for_load_state()
    report = v.page.locator("#chain-report")
    assert "notice" in (report.get_attribute("class") or ""), report.inner_text()
    v.shoot("operator-audit", full_page=False)  # the trail is long: its first screen
    assert v.console_errors == []
