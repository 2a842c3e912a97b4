"""/metrics after real calls: a gateway on loopback over the synthetic zone, lookups served and
refused, an ingest run, then the series read back with their labels and the amounts they moved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from datazone.config import Settings
from datazone.db import Database
from tests.conftest import Server, problem, synthetic_zone_settings, unique_id
from tests.factories import apply_spec, bad_check, firm_rows, firm_spec, write_csv
from tests.ingest.test_pipeline import ingest

LOOKUP_ROUTE = "/v1/products/{product_id}/enterprises/{uscc}"

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Series:
    resp = httpx.get(url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    series: Series = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Series, after: Series, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(scope="module")
def gateway(
    synthetic_zone: dict[str, Any], database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Settings]]:
    settings = synthetic_zone_settings(synthetic_zone, database_url, tmp_path_factory, "metrics")
    srv = Server(settings)
    srv.wait_ready()
    yield srv, settings
    srv.stop()


def _token(url: str, zone: dict[str, Any]) -> dict[str, str]:
    resp = httpx.post(
        url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(zone["client_id"], zone["client_secret"]),
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def test_series_move_by_what_the_calls_did(
    gateway: tuple[Server, Settings], synthetic_zone: dict[str, Any], db: Database
) -> None:
    srv, settings = gateway
    auth = _token(srv.url, synthetic_zone)
    firms = synthetic_zone["consented_usccs"][:3]
    spec = firm_spec(unique_id("metrics"))
    with db.unit_of_work() as s:
        apply_spec(s, spec)

    before = scrape(srv.url)
    for firm in firms:
        resp = httpx.get(
            f"{srv.url}/v1/products/credit-basic/enterprises/{firm}",
            params={"purpose": "pre_loan"}, headers=auth, timeout=30,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
    refused = httpx.get(
        f"{srv.url}/v1/products/credit-basic/enterprises/{bad_check(firms[0])}",
        params={"purpose": "pre_loan"}, headers=auth, timeout=30,
    )  # fmt: skip
    body = problem(refused)
    assert body["check"] == "uscc"
    write_csv(settings.drop_path / spec.id / "a_20240101.csv", firm_rows(20))
    run = ingest(db, settings, spec)
    assert run.status == "succeeded", run.error
    after = scrape(srv.url)

    # requests by route template (never the raw path) and status, with their latencies
    assert moved(before, after, "datazone_http_requests_total", method="GET", route=LOOKUP_ROUTE, status="200") == 3
    assert (
        moved(before, after, "datazone_http_requests_total",
              method="GET", route=LOOKUP_ROUTE, status=str(refused.status_code)) == 1
    )  # fmt: skip
    assert moved(before, after, "datazone_http_request_duration_seconds_count", method="GET", route=LOOKUP_ROUTE) == 4
    assert moved(before, after, "datazone_http_request_duration_seconds_sum", method="GET", route=LOOKUP_ROUTE) > 0
    assert not any(firms[0] in labels_value for (_, labels) in after for _, labels_value in labels)
    # product calls by product, channel and outcome; the refusal by the check that refused it
    calls = {"product": "credit-basic", "channel": "lookup"}
    assert moved(before, after, "datazone_product_calls_total", **calls, outcome="served") == 3
    assert moved(before, after, "datazone_product_calls_total", **calls, outcome="refused") == 1
    assert (
        moved(before, after, "datazone_refusals_total", check="uscc", status=str(refused.status_code)) == 1
    )
    # the meter admitted each served call and its one unit
    assert moved(before, after, "datazone_meter_decisions_total", outcome="admitted") == 3
    assert moved(before, after, "datazone_meter_admitted_units_total") == 3
    # the ingest run ran in this test's process: the gateway reads it from the database
    assert value(after, "datazone_ingest_runs_total", dataset=spec.id, status="succeeded") == 1
    assert value(after, "datazone_ingest_rows_total", dataset=spec.id, status="succeeded", kind="loaded") == 20
    assert value(after, "datazone_ingest_rows_total", dataset=spec.id, status="succeeded", kind="rejected") == 0
    assert value(before, "datazone_ingest_runs_total", dataset=spec.id, status="succeeded") == 0
    # and its duration in the process that ran it (this one)
    assert REGISTRY.get_sample_value(
        "datazone_ingest_run_duration_seconds_count", {"dataset": spec.id, "status": "succeeded"}
    ) == 1
    # the zone's queues and this replica's pool
    for queue, status in (("psi_job", "queued"), ("scoring_job", "running"), ("ingest", "new")):
        assert ("datazone_worker_queue_depth", (("queue", queue), ("status", status))) in after
    assert value(after, "datazone_db_pool_size", pool="gateway") == 10
    assert ("datazone_db_pool_waiting", (("pool", "gateway"),)) in after
    assert 0 <= value(after, "datazone_db_pool_in_use", pool="gateway") <= 20


def test_request_id_is_echoed_logged_and_in_problems(
    gateway: tuple[Server, Settings], synthetic_zone: dict[str, Any]
) -> None:
    srv, _ = gateway
    auth = _token(srv.url, synthetic_zone)
    rid = unique_id("req-metrics")
    refused = httpx.get(
        f"{srv.url}/v1/products/credit-basic/enterprises/{bad_check(synthetic_zone['consented_usccs'][0])}",
        params={"purpose": "pre_loan"}, headers={**auth, "X-Request-ID": rid}, timeout=30,
    )  # fmt: skip
    assert refused.headers["x-request-id"] == rid
    assert problem(refused)["request_id"] == rid
    # a traceparent's trace id names the request when no X-Request-ID does
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = httpx.get(
        srv.url + "/v1/nothing-here", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, timeout=10
    )
    assert resp.status_code == 404
    assert resp.headers["x-request-id"] == trace_id
    assert problem(resp)["request_id"] == trace_id
    # an unsafe X-Request-ID is replaced, not echoed
    resp = httpx.get(srv.url + "/livez", headers={"X-Request-ID": "x" * 500}, timeout=10)
    assert len(resp.headers["x-request-id"]) == 32 and resp.headers["x-request-id"] != "x" * 500

    # every line the server wrote is one JSON object
    lines = [json.loads(line) for line in srv.log.read_text().splitlines()]
    assert lines
    mine = [line for line in lines if line.get("request_id") == rid]
    # the refusal's request line carries the id, its route template and status
    assert any(
        line["logger"] == "datazone.request" and line["route"] == LOOKUP_ROUTE and line["status"] == refused.status_code
        for line in mine
    ), mine
    for line in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= line.keys()
        assert line["timestamp"].endswith("+08:00"), line["timestamp"]
        assert "color_message" not in line
