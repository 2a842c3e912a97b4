"""`datazone demo`: the synthetic zone loads through the real pipeline, and a second run reuses it."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

from datazone.config import Settings
from datazone.consent import service as consent_service
from datazone.contract import service as contract_service
from datazone.dataset import admission as dataset_admission
from datazone.db import Database
from datazone.demo.setup import DEMO_PRODUCTS, JOINT_SAMPLE, demo_file, prepare_demo
from datazone.principal import service as principal_service
from datazone.product import service as product_service
from tests.conftest import fresh_database


def test_demo_zone_loads_cleanly_and_is_reused(database_url: str, settings: Settings) -> None:
    # a database of its own: the shared test database holds the session's synthetic zone
    with fresh_database(database_url) as db:
        _demo_loads_and_is_reused(db, settings)


def _demo_loads_and_is_reused(db: Database, settings: Settings) -> None:
    first = prepare_demo(db, settings, entities=1500)
    assert not first.reused
    assert len(first.runs) == 13
    for run in first.runs:
        assert run.status == "succeeded", (run.dataset_id, run.error)
        assert run.rows_rejected == 0 and run.rows_loaded > 0 and run.version == 1, run.dataset_id
    registration = next(r for r in first.runs if r.dataset_id == "mr_registration")
    assert registration.rows_loaded == 1500 and registration.encoding == "gb18030"
    assert next(r for r in first.runs if r.dataset_id == "sci_certification").source.endswith(".xlsx")

    info = json.loads(demo_file(settings).read_text(encoding="utf-8"))
    assert {"url", "database_url", "entities", "operator_token", "institution_token"} <= info.keys()
    assert info["client_id"].startswith("dzc_") and len(info["client_secret"]) >= 32
    assert info["entities"] == 1500
    assert stat.S_IMODE(demo_file(settings).stat().st_mode) == 0o600
    with db.unit_of_work() as s:
        assert principal_service.authenticate(s, token=info["operator_token"]).kind == "operator"
        bank = principal_service.authenticate(s, token=info["institution_token"])
        assert bank.kind == "institution" and bank.name == "demo-bank"
        # the tour's products are published over admitted data, and the bank may call them
        for product_id in DEMO_PRODUCTS:
            product = product_service.get_product(s, product_id=product_id)
            assert product.state == "published"
            spec = product_service.spec_of(product)
            dataset_admission.require_in_use(s, dataset_ids=sorted(spec.sources))
            contract_service.require_contract(
                s, institution_id=bank.id, product_id=product_id, purpose=spec.purposes[0].value, at=datetime.now(UTC)
            )
        assert len(info["consented_usccs"]) == 20
        # the joint-modeling tour's files: a label for every consented firm of its sample
        labelled = Path(info["joint_labels"]).read_text(encoding="utf-8").splitlines()
        assert labelled[0] == "uscc,label" and len(labelled) == JOINT_SAMPLE + 1
        assert {line.rsplit(",", 1)[1] for line in labelled[1:]} == {"0", "1"}
        consent_service.require_consents(
            s, institution_id=bank.id, usccs=info["consented_usccs"], purpose="pre_loan",
            product_id="risk-insight", at=datetime.now(UTC),
        )

    second = prepare_demo(db, settings, entities=1500)
    assert second.reused and second.runs == []
    assert second.info["operator_token"] == info["operator_token"]
    assert second.info["institution_token"] == info["institution_token"]
    assert (second.info["client_id"], second.info["client_secret"]) == (info["client_id"], info["client_secret"])
    with db.unit_of_work() as s:
        bank = principal_service.authenticate(s, token=info["institution_token"])
        # a second run adds no second contract, grant or consent
        assert len(contract_service.list_contracts(s, viewer=bank)) == 1
        consents = consent_service.list_consents(s, viewer=bank, limit=1000)
        consents += consent_service.list_consents(s, viewer=bank, limit=1000, after_id=consents[-1].id)
        # 20 firms for pre- and post-loan use, and the joint-modeling tour's sample for risk modeling
        assert len(consents) == 40 + JOINT_SAMPLE
        assert sum(c.purpose == "risk_modeling" for c in consents) == JOINT_SAMPLE
