"""The product gateway end to end: real servers on loopback, the synthetic zone, real grants.

Covers the issue's "done when" lines for the control plane: every lifecycle path
(including the seamless switch), revocation cutting access on the next request while
another replica serves, consent, masking per grade and contract, refusals naming
the check, and departments seeing every use of their data.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from datazone.config import Settings
from datazone.db import Database
from datazone.oauth import service as oauth_service
from tests.conftest import Server, problem
from tests.factories import bad_check, bearer, make_uscc, new_principal

PRODUCTS_DIR = Path(__file__).resolve().parents[2] / "products"
NOW = datetime.now(UTC)
YEAR = timedelta(days=365)


@dataclass
class Gateway:
    db: Database
    url: str
    url_b: str  # a second replica on the same database
    operator: dict[str, str]
    departments: dict[str, dict[str, str]]  # supplier id -> bearer header of its department principal
    usccs: list[str]  # enterprises registered in the zone


@pytest.fixture(scope="module")
def gw(
    synthetic_zone: dict[str, Any], db: Database, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    replicas = []
    for name in ("a", "b"):
        # replicas behind one load balancer share one issuer name
        settings = Settings(
            home=root / name, database_url=database_url, drop_dir=root / "drop", oauth_issuer="https://zone.test"
        )
        replicas.append(Server(settings))
    for r in replicas:
        r.wait_ready()
    try:
        yield gateway_of(db, replicas[0].url, replicas[1].url)
    finally:
        for r in replicas:
            r.stop()


def gateway_of(db: Database, url: str, url_b: str) -> Gateway:
    """The servers at `url` and `url_b` over the synthetic zone: 50 active enterprises, an operator,
    and a department principal for every supplier."""
    with db.engine.connect() as conn:
        usccs = list(
            conn.execute(
                sa.text(
                    "SELECT uscc FROM zone.mr_registration WHERE _vto IS NULL AND status = 'active' ORDER BY uscc LIMIT 50"
                )
            ).scalars()
        )
        suppliers = list(conn.execute(sa.text("SELECT DISTINCT supplier_id FROM dataset")).scalars())
    departments = {sid: bearer(new_principal(db, "department", supplier_id=sid)[1]) for sid in suppliers}
    return Gateway(
        db=db,
        url=url,
        url_b=url_b,
        operator=bearer(new_principal(db, "operator")[1]),
        departments=departments,
        usccs=usccs,
    )


def _datasets_by_department(gw: Gateway, product_id: str) -> dict[str, list[str]]:
    with httpx.Client(base_url=gw.url, headers=gw.operator) as c:
        entry = c.get(f"/v1/catalog/products/{product_id}").json()
    with gw.db.engine.connect() as conn:
        owners = dict(conn.execute(sa.text("SELECT id, supplier_id FROM dataset")).all())
    out: dict[str, list[str]] = {}
    for ds in entry["datasets"]:
        out.setdefault(owners[ds], []).append(ds)
    return out


def _token(gw: Gateway, inst_id: int, scopes: list[str] | None = None) -> dict[str, str]:
    """An OAuth client of the institution and a client-credentials access token (RFC 6749 4.4)."""
    with gw.db.unit_of_work() as s:
        client, secret = oauth_service.create_client(s, institution_id=inst_id, name="loan-app", by_name="test")
        client_id = client.client_id
    assert secret is not None
    data = {"grant_type": "client_credentials"}
    if scopes is not None:
        data["scope"] = " ".join(f"product:{p}" for p in scopes)
    r = httpx.post(f"{gw.url}/oauth/token", data=data, auth=(client_id, secret), timeout=30)
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def _institution(
    gw: Gateway,
    products: list[str],
    *,
    clearance: int = 2,
    purposes: tuple[str, ...] = ("pre_loan", "post_loan"),
    grant: bool = True,
    plan: dict[str, Any] | None = None,
) -> tuple[int, dict[str, str], dict[str, str], dict[str, str]]:
    """A new institution with a contract for `products`, and grants from every department
    concerned naming this institution. Returns (id, its control-plane key headers, its
    product-API token headers (empty without grants: no scope can be issued), {department: grant id})."""
    inst_id, key = new_principal(gw.db, "institution")
    window = {"valid_from": (NOW - timedelta(days=1)).isoformat(), "valid_to": (NOW + YEAR).isoformat()}
    grants: dict[str, str] = {}
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        terms: dict[str, Any] = {}
        if plan is not None:
            # a private plan negotiated for this institution
            plan_id = f"plan-{secrets.token_hex(4)}"
            r = c.post("/v1/plans", headers=gw.operator,
                       json={"id": plan_id, "name": "negotiated", "institution_id": inst_id, **plan})
            assert r.status_code == 201, r.text
            terms["plan_id"] = plan_id
        r = c.post(
            "/v1/contracts",
            headers=gw.operator,
            json={"institution_id": inst_id, "purposes": list(purposes), "products": products,
                  "clearance": clearance, **terms, **window},
        )
        assert r.status_code == 201, r.text
        if grant:
            wanted: dict[str, set[str]] = {}
            for p in products:
                for dept, datasets in _datasets_by_department(gw, p).items():
                    wanted.setdefault(dept, set()).update(datasets)
            for dept, datasets in wanted.items():
                r = c.post(
                    "/v1/grants",
                    headers=gw.departments[dept],
                    json={"datasets": sorted(datasets), "purposes": list(purposes), "products": None,
                          "institutions": [inst_id], **window},
                )
                assert r.status_code == 201, r.text
                grants[dept] = r.json()["id"]
    token = _token(gw, inst_id) if grant else {}
    return inst_id, bearer(key), token, grants


def _consent(
    c: httpx.Client, headers: dict[str, str], uscc: str, purpose: str = "pre_loan"
) -> httpx.Response:
    evidence = f"授权书-{uscc}.pdf".encode()
    return c.post(
        "/v1/consents",
        headers=headers,
        json={
            "uscc": uscc,
            "purpose": purpose,
            "products": None,
            "valid_from": (NOW - timedelta(days=1)).isoformat(),
            "valid_to": (NOW + YEAR).isoformat(),
            "evidence_ref": f"oss://consents/{uscc}.pdf",
            "evidence_sha256": hashlib.sha256(evidence).hexdigest(),
        },
    )


def _registration(gw: Gateway, uscc: str) -> dict[str, Any]:
    with gw.db.engine.connect() as conn:
        row = (
            conn.execute(
                sa.text("SELECT * FROM zone.mr_registration WHERE uscc = :u AND _vto IS NULL"), {"u": uscc}
            )
            .mappings()
            .one()
        )
    return dict(row)


# ------------------------------------------------------------------ consent


def test_paid_product_is_refused_without_consent_and_answered_with_it(gw: Gateway) -> None:
    _, key, inst, _ = _institution(gw, ["risk-insight"])
    uscc = gw.usccs[0]
    with httpx.Client(base_url=gw.url, headers=inst, timeout=30) as c:
        url = f"/v1/products/risk-insight/enterprises/{uscc}"
        refused = c.get(url, params={"purpose": "pre_loan"})
        assert refused.status_code == 403
        body = problem(refused)
        assert body["type"].endswith("/consent-required") and body["check"] == "consent"
        assert body["missing"] == [uscc]

        assert _consent(c, key, uscc).status_code == 201
        ok = c.get(url, params={"purpose": "pre_loan"})
        assert ok.status_code == 200, ok.text
        answer = ok.json()
        assert answer["uscc"] == uscc and answer["product"]["id"] == "risk-insight"
        assert answer["answer"]["risk_level"] in ("low", "medium", "high", "severe")
        assert set(answer["data_versions"]) >= {"court_dishonest", "court_enforcement", "mr_registration"}
        assert all(v >= 1 for v in answer["data_versions"].values())

        # consent is per purpose: post-loan monitoring of the same firm is not covered
        other = c.get(url, params={"purpose": "post_loan"})
        assert other.status_code == 403 and problem(other)["check"] == "consent"

        # a batch names exactly the enterprises without consent
        batch = c.post(
            "/v1/products/risk-insight/enterprises",
            json={"purpose": "pre_loan", "usccs": [uscc, gw.usccs[1], gw.usccs[2]]},
        )
        assert batch.status_code == 403
        assert sorted(problem(batch)["missing"]) == sorted(gw.usccs[1:3])


# ------------------------------------------------------------------ revocation across replicas


def test_revocation_cuts_access_on_the_next_request_on_another_replica(gw: Gateway) -> None:
    _inst_id, _key, inst, grants = _institution(gw, ["credit-basic"])
    uscc = gw.usccs[3]
    url = f"/v1/products/credit-basic/enterprises/{uscc}"
    outcomes: list[tuple[float, float, int, dict[str, Any]]] = []
    stop = threading.Event()

    def call_replica_b() -> None:
        with httpx.Client(base_url=gw.url_b, headers=inst, timeout=30) as c:
            while not stop.is_set():
                started = time.monotonic()
                r = c.get(url, params={"purpose": "pre_loan"})
                outcomes.append((started, time.monotonic(), r.status_code, r.json()))

    worker = threading.Thread(target=call_replica_b)
    worker.start()
    try:
        while len(outcomes) < 5:
            time.sleep(0.05)
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            # revoke the tax department's grant through replica A
            r = c.post(
                f"/v1/grants/{grants['tax']}/revoke",
                headers=gw.departments["tax"],
                json={"reason": "纳税信用数据授权到期前收回"},
            )
            assert r.status_code == 200, r.text
            revoked_at = time.monotonic()
        while not any(start > revoked_at for start, *_ in outcomes):
            time.sleep(0.02)
        # the very next request on replica B
        with httpx.Client(base_url=gw.url_b, headers=inst, timeout=30) as c:
            after = c.get(url, params={"purpose": "pre_loan"})
    finally:
        stop.set()
        worker.join()
    served_before = [o for o in outcomes if o[1] < revoked_at and o[2] == 200]
    assert served_before, "replica B was serving before the revocation"
    later = [o for o in outcomes if o[0] > revoked_at]
    assert later and all(status == 403 for _, _, status, _ in later), [o[2] for o in later]
    body = problem(after)
    assert after.status_code == 403
    assert body["type"].endswith("/grant-revoked") and body["check"] == "grant"
    assert body["grant_id"] == grants["tax"] and body["department"] == "tax"
    assert grants["tax"] in body["detail"]


# ------------------------------------------------------------------ masking


def test_masking_follows_field_grade_and_contract_clearance(gw: Gateway) -> None:
    uscc = gw.usccs[4]
    reg = _registration(gw, uscc)
    answers = {}
    for clearance in (1, 2, 3):
        _, _key, inst, _ = _institution(gw, ["credit-basic"], clearance=clearance)
        with httpx.Client(base_url=gw.url, headers=inst, timeout=30) as c:
            r = c.get(f"/v1/products/credit-basic/enterprises/{uscc}", params={"purpose": "pre_loan"})
            assert r.status_code == 200, r.text
            answers[clearance] = r.json()
    # legal representative: a natural person's name, grade 3
    assert answers[3]["answer"]["legal_rep"] == reg["legal_rep"]
    assert answers[3]["masking"]["fields"]["legal_rep"] == "clear"
    for clearance in (1, 2):
        masked = answers[clearance]["answer"]["legal_rep"]
        assert masked != reg["legal_rep"] and masked[0] == reg["legal_rep"][0] and "*" in masked
        assert answers[clearance]["masking"]["fields"]["legal_rep"] == "person_name"
    # address and registered capital: grade 2, clear from clearance 2 up, masked below
    assert answers[2]["answer"]["address"] == reg["address"]
    assert answers[1]["masking"]["fields"]["address"] == "address"
    assert answers[1]["answer"]["address"] != reg["address"] and answers[1]["answer"]["address"].endswith(
        "****"
    )
    if reg["reg_capital"] is not None:
        fen = int(reg["reg_capital"] * 1_000_000)
        assert answers[2]["answer"]["reg_capital_fen"] == fen
        band = answers[1]["answer"]["reg_capital_fen"]
        assert band["min_fen"] <= fen and (band["max_fen"] is None or fen < band["max_fen"])
    # grade-1 facts are identical whatever the contract
    assert {answers[c]["answer"]["status"] for c in (1, 2, 3)} == {reg["status"]}
    assert [answers[c]["masking"]["clearance"] for c in (1, 2, 3)] == [1, 2, 3]


# ------------------------------------------------------------------ lifecycle


def _copy_product(gw: Gateway, c: httpx.Client, source: str) -> str:
    spec = yaml.safe_load((PRODUCTS_DIR / f"{source}.yaml").read_text(encoding="utf-8"))
    spec["id"] = f"{source}-{secrets.token_hex(3)}"
    r = c.put(f"/v1/products/{spec['id']}", json=spec, headers=gw.operator)
    assert r.status_code in (200, 201), r.text
    r = c.post(f"/v1/products/{spec['id']}/publish", json={"reason": "上线"}, headers=gw.operator)
    assert r.status_code == 200, r.text
    return str(spec["id"])


@pytest.mark.parametrize("seamless", [False, True])
def test_deprecate_then_retire_with_and_without_seamless_switch(gw: Gateway, seamless: bool) -> None:
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        old, new = _copy_product(gw, c, "credit-basic"), _copy_product(gw, c, "credit-basic")
        _, _key, inst, _ = _institution(gw, [old, new])
        uscc = gw.usccs[5]
        call = lambda pid: c.get(  # noqa: E731
            f"/v1/products/{pid}/enterprises/{uscc}", params={"purpose": "pre_loan"}, headers=inst
        )
        assert call(old).status_code == 200

        # published -> retired directly is not a lifecycle path
        illegal = c.post(f"/v1/products/{old}/retire", json={"reason": "x"}, headers=gw.operator)
        assert illegal.status_code == 409
        assert problem(illegal)["allowed"] == ["deprecated"]

        r = c.post(
            f"/v1/products/{old}/deprecate",
            json={"reason": "口径升级", "successor": new, "seamless": seamless},
            headers=gw.operator,
        )
        assert r.status_code == 200, r.text
        deprecated = call(old)
        assert deprecated.status_code == 200 and deprecated.headers["Deprecation"] == "true"
        assert f"/v1/catalog/products/{new}" in deprecated.headers["Link"]

        r = c.post(f"/v1/products/{old}/retire", json={"reason": "下线"}, headers=gw.operator)
        assert r.status_code == 200, r.text
        retired = call(old)
        if seamless:
            assert retired.status_code == 200, retired.text
            assert retired.json()["product"] == {"id": new, "requested": old, "state": "published"}
            assert retired.json()["answer"] == call(new).json()["answer"]
        else:
            assert retired.status_code == 410
            body = problem(retired)
            assert body["successor"] == new and body["check"] == "product"

        history = c.get(f"/v1/products/{old}/history", headers=gw.operator).json()
        moves = [(h["from_state"], h["to_state"]) for h in history]
        assert moves[-3:] == [("draft", "published"), ("published", "deprecated"), ("deprecated", "retired")]
        assert all(h["by_name"] and h["reason"] and h["at"] for h in history)


# ------------------------------------------------------------------ refusals name the check


def test_each_refusal_names_its_check_and_is_audited(gw: Gateway) -> None:
    inst_id, _key, inst, _ = _institution(gw, ["credit-basic"], purposes=("pre_loan",))
    uscc = gw.usccs[6]
    with httpx.Client(base_url=gw.url, headers=inst, timeout=30) as c:
        bad = c.get(f"/v1/products/credit-basic/enterprises/{bad_check(uscc)}", params={"purpose": "pre_loan"})
        assert bad.status_code == 422 and problem(bad)["check"] == "uscc"
        assert problem(bad)["title"] == "Not a valid unified social credit code"
        # a product the catalog does not hold: 404 naming the catalog, not a scope to go and request
        unknown = c.get(f"/v1/products/no-such-product/enterprises/{uscc}", params={"purpose": "pre_loan"})
        assert unknown.status_code == 404 and problem(unknown)["check"] == "product"
        assert "/v1/catalog/products" in problem(unknown)["detail"]
        assert "WWW-Authenticate" not in unknown.headers
        purpose = c.get(f"/v1/products/credit-basic/enterprises/{uscc}", params={"purpose": "marketing"})
        assert purpose.status_code == 403 and problem(purpose)["check"] == "contract"
        other = c.get(f"/v1/products/risk-insight/enterprises/{uscc}", params={"purpose": "pre_loan"})
        assert other.status_code == 403 and problem(other)["check"] == "scope"
        assert problem(other)["scope"] == "product:risk-insight"
        absent = make_uscc(987_654_321)
        missing = c.get(f"/v1/products/credit-basic/enterprises/{absent}", params={"purpose": "pre_loan"})
        assert missing.status_code == 404 and problem(missing)["check"] == "zone"
        too_many = c.post(
            "/v1/products/credit-basic/enterprises",
            json={"purpose": "pre_loan", "usccs": [make_uscc(i) for i in range(1001)]},
        )
        assert too_many.status_code == 422
        ok = c.get(f"/v1/products/credit-basic/enterprises/{uscc}", params={"purpose": "pre_loan"})
        assert ok.status_code == 200
    # products take OAuth access tokens only: a control-plane key, or nothing, is a 401 challenge
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for headers in (gw.departments["tax"], _key, {}):
            r = c.get(f"/v1/products/credit-basic/enterprises/{uscc}", params={"purpose": "pre_loan"}, headers=headers)
            assert r.status_code == 401 and problem(r)["check"] == "token"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # no grant: a contract alone does not open a department's data, so no scope is issued at all
    ungranted_id, _, _, _ = _institution(gw, ["credit-basic"], grant=False)
    with gw.db.unit_of_work() as s:
        client, secret = oauth_service.create_client(s, institution_id=ungranted_id, name="app", by_name="test")
        client_id = client.client_id
    r = httpx.post(
        f"{gw.url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "product:credit-basic"},
        auth=(client_id, secret or ""),
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"

    with gw.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT outcome, reason, object_id FROM audit_entry WHERE institution_id = :i"
                " AND action = 'product.answer' ORDER BY id"
            ),
            {"i": inst_id},
        ).all()
    assert [r.outcome for r in rows] == ["refused"] * 5 + ["ok"]
    assert [r.reason for r in rows[:5]] == [
        "invalid-uscc",
        "not-found",
        "contract-required",
        "insufficient-scope",
        "enterprise-not-found",
    ]


def test_a_department_sees_every_use_of_its_data_and_only_its_own(gw: Gateway) -> None:
    inst_id, _key, inst, _ = _institution(gw, ["credit-basic"])
    batch = gw.usccs[10:15]
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        r = c.post(
            "/v1/products/credit-basic/enterprises",
            headers=inst,
            json={"purpose": "post_loan", "usccs": batch},
        )
        assert r.status_code == 200, r.text
        assert [x["uscc"] for x in r.json()["results"]] == batch and all(
            x["found"] for x in r.json()["results"]
        )
        uses = c.get("/v1/audit/uses", headers=gw.departments["tax"]).json()
        mine = [u for u in uses if u["institution_id"] == inst_id]
        assert len(mine) == 1
        assert (mine[0]["product_id"], mine[0]["entity_count"], mine[0]["purpose"]) == (
            "credit-basic",
            5,
            "post_loan",
        )
        # the courts' data is not in credit-basic: the courts do not see this use
        courts = c.get("/v1/audit/uses", headers=gw.departments["courts"]).json()
        assert not [u for u in courts if u["institution_id"] == inst_id]


# ------------------------------------------------------------------ rate limit, quota, spend cap


def _usage_events(gw: Gateway, inst_id: int) -> int:
    with gw.db.engine.connect() as conn:
        return int(
            conn.execute(sa.text("SELECT count(*) FROM usage_event WHERE institution_id = :i"), {"i": inst_id}).scalar_one()
        )


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers(gw: Gateway) -> None:
    inst_id, _key, inst, _ = _institution(gw, ["credit-basic"], plan={"rate_per_second": 1.0, "burst": 2})
    url = f"/v1/products/credit-basic/enterprises/{gw.usccs[20]}"
    with httpx.Client(base_url=gw.url, headers=inst, timeout=30) as c:
        answers = [c.get(url, params={"purpose": "pre_loan"}) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    ok, limited = answers[0], answers[2]
    # httpx headers are case-insensitive
    assert all(h in ok.headers for h in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))
    body = problem(limited)
    assert body["type"].endswith("/rate-limited") and body["check"] == "rate_limit"
    assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["RateLimit-Remaining"] == "0"
    assert "headers" not in body  # they travel as HTTP headers
    assert _usage_events(gw, inst_id) == 2


def test_quota_and_spend_cap_are_exact_under_concurrent_calls(gw: Gateway) -> None:
    inst_id, key, inst, _ = _institution(
        gw, ["risk-insight"], plan={"rate_per_second": 1000.0, "burst": 1000, "quota_units": 4, "quota_period": "day"}
    )
    firms = gw.usccs[21:33]
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for firm in firms:
            assert _consent(c, key, firm).status_code == 201
    statuses: list[int] = []
    bodies: list[dict[str, Any]] = []

    def call(firm: str) -> None:
        r = httpx.get(f"{gw.url}/v1/products/risk-insight/enterprises/{firm}", params={"purpose": "pre_loan"},
                      headers=inst, timeout=60)
        statuses.append(r.status_code)
        bodies.append(r.json())

    threads = [threading.Thread(target=call, args=(f,)) for f in firms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 4 + [429] * 8
    refused = [b for b in bodies if b.get("status") == 429]
    assert all(b["type"].endswith("/quota-exceeded") and b["check"] == "quota" for b in refused)
    # exactly the quota was answered and billed: 4 events, 4 x the list price on the ledger
    assert _usage_events(gw, inst_id) == 4
    with gw.db.engine.connect() as conn:
        debits = conn.execute(
            sa.text("SELECT coalesce(sum(amount_fen), 0) FROM ledger_entry WHERE institution_id = :i AND kind = 'debit'"),
            {"i": inst_id},
        ).scalar_one()
    assert debits == 4 * 500 == sum(b["charged_fen"] for b in bodies if "charged_fen" in b)

    # a spend cap: 2 calls of 500 fen fit under 1,200, the third does not (402)
    capped_id, ckey, capped, _ = _institution(
        gw, ["risk-insight"], plan={"rate_per_second": 1000.0, "burst": 1000, "monthly_cap_fen": 1200}
    )
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        for firm in firms[:3]:
            assert _consent(c, ckey, firm).status_code == 201
        got = [
            c.get(f"/v1/products/risk-insight/enterprises/{f}", params={"purpose": "pre_loan"}, headers=capped)
            for f in firms[:3]
        ]
    assert [r.status_code for r in got] == [200, 200, 402]
    assert problem(got[2])["type"].endswith("/spend-cap-reached") and problem(got[2])["check"] == "quota"
    assert _usage_events(gw, capped_id) == 2


def test_idempotent_retry_is_free_and_returns_the_same_answer(gw: Gateway) -> None:
    inst_id, key, inst, _ = _institution(gw, ["risk-insight"])
    firm = gw.usccs[40]
    with httpx.Client(base_url=gw.url, headers=inst, timeout=30) as c:
        assert _consent(c, key, firm).status_code == 201
        url = f"/v1/products/risk-insight/enterprises/{firm}"
        first = c.get(url, params={"purpose": "pre_loan"}, headers={"Idempotency-Key": "loan-42"})
        again = c.get(url, params={"purpose": "pre_loan"}, headers={"Idempotency-Key": "loan-42"})
        other = c.get(url, params={"purpose": "post_loan"}, headers={"Idempotency-Key": "loan-42"})
        fresh = c.get(url, params={"purpose": "pre_loan"}, headers={"Idempotency-Key": "loan-43"})
    assert first.status_code == again.status_code == fresh.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and problem(other)["type"].endswith("/idempotency-key-reused")
    assert _usage_events(gw, inst_id) == 2  # the first call and the fresh key; the retry was free


def test_a_blacklisted_supplier_takes_its_products_offline_until_reinstated(gw: Gateway) -> None:
    _, key, inst, _ = _institution(gw, ["enterprise-portrait"])
    firm = gw.usccs[45]
    url = f"/v1/products/enterprise-portrait/enterprises/{firm}"
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        assert _consent(c, key, firm).status_code == 201
        assert c.get(url, params={"purpose": "pre_loan"}, headers=inst).status_code == 200
        r = c.post("/v1/suppliers/intellectual-property/blacklist", json={"reason": "数据造假"}, headers=gw.operator)
        assert r.status_code == 200, r.text
        try:
            refused = c.get(url, params={"purpose": "pre_loan"}, headers=inst)
            body = problem(refused)
            assert refused.status_code == 403 and body["check"] == "data"
            assert body["type"].endswith("/data-not-in-use") and "intellectual-property" in body["detail"]
        finally:
            r = c.post("/v1/suppliers/intellectual-property/reinstate", json={"reason": "整改完成"}, headers=gw.operator)
            assert r.status_code == 200, r.text
        assert c.get(url, params={"purpose": "pre_loan"}, headers=inst).status_code == 200
