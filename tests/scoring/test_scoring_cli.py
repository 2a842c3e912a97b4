"""`datazone scoring ...` in a subprocess against the test database: the operator reviews
institutions' scoring models through the scoring service the API calls, as a named reviewer.

The models are stored as registration leaves them, pending review (their ciphertexts play no
part in a review: the operator sees features, bins and purpose, never a weight)."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from datazone.config import Settings
from datazone.db import Database
from datazone.principal.models import Principal
from datazone.scoring.models import ScoringModel
from tests.conftest import run_cli
from tests.grant.builders import committed_parties
from tests.shell import audited


def pending_model(db: Database, institution: Principal, name: str) -> str:
    """A model of `institution` pending review, as the registration stores it."""
    model_id = "mdl_" + secrets.token_urlsafe(12)
    with db.unit_of_work() as s:
        s.add(
            ScoringModel(
                id=model_id, institution_id=institution.id, client_id="dzc_tests", name=name,
                product_id="secure-credit-score", purpose="pre_loan", kind="logistic", scale=1000,
                description="", features=[{"name": "tax_grade_code"}, {"name": "dishonest_listed"}],
                registration={}, registration_sha256="0" * 64, key_fingerprint="f" * 32, key_bits=2048,
                score_bits=64, slot_bits=96, slots=20, resolution=1, state="pending_review",
                created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    return model_id


def state_of(db: Database, model_id: str) -> tuple[str, int | None, str | None]:
    with db.unit_of_work() as s:
        model = s.get(ScoringModel, model_id)
        assert model is not None
        return model.state, model.reviewed_by, model.review_reason


def test_list_pending_approve_and_reject(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    first, second = pending_model(db, p.bank1, "pre-loan v1"), pending_model(db, p.bank1, "pre-loan v2")

    listed = run_cli(settings, "scoring", "models", "--pending", "--institution", p.bank1.name, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == {first, second} and {r["state"] for r in rows} == {"pending_review"}
    table = run_cli(settings, "scoring", "models", "--institution", p.bank1.name, COLUMNS="250")
    assert table.returncode == 0 and first in table.stdout and "tax_grade_code, dishonest_listed" in table.stdout

    done = run_cli(settings, "scoring", "approve", first, "--as", p.reviewer.name, "--reason", "features fit pre_loan")
    assert done.returncode == 0, done.stderr
    assert f"scoring model {first}: approved" in done.stdout
    assert state_of(db, first) == ("approved", p.reviewer.id, "features fit pre_loan")
    done = run_cli(settings, "scoring", "reject", second, "--as", p.reviewer.name, "--reason", "too few features")
    assert done.returncode == 0, done.stderr
    assert state_of(db, second) == ("rejected", p.reviewer.id, "too few features")
    assert audited(db, object_type="scoring_model", object_id=first) == [
        ("scoring.model.approve", "operator", p.reviewer.name)
    ]
    assert audited(db, object_type="scoring_model", object_id=second) == [
        ("scoring.model.reject", "operator", p.reviewer.name)
    ]
    listed = run_cli(settings, "scoring", "models", "--pending", "--institution", p.bank1.name, "--json")
    assert json.loads(listed.stdout) == []

    done = run_cli(settings, "scoring", "retire", first, "--as", p.curator.name, "--reason", "superseded")
    assert done.returncode == 0, done.stderr
    assert state_of(db, first)[0] == "retired"


def test_review_is_refused_to_a_non_reviewer_and_twice(db: Database, settings: Settings) -> None:
    p = committed_parties(db)
    model_id = pending_model(db, p.bank2, "post-loan v1")
    done = run_cli(settings, "scoring", "approve", model_id, "--as", p.curator.name, "--reason", "ok")
    assert done.returncode == 2
    assert "only an operator with the reviewer role may review scoring models" in done.stderr
    assert state_of(db, model_id) == ("pending_review", None, None)
    assert run_cli(settings, "scoring", "reject", model_id, "--as", p.reviewer.name, "--reason", "no").returncode == 0
    done = run_cli(settings, "scoring", "approve", model_id, "--as", p.reviewer.name, "--reason", "changed my mind")
    assert done.returncode == 2
    assert f"model {model_id} is rejected: only a model pending review can be reviewed" in done.stderr
    assert state_of(db, model_id)[0] == "rejected"
