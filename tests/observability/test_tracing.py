"""OpenTelemetry tracing: off by default; on, a request makes a server span with the database
statements it ran as child spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from datazone.app import create_app
from datazone.config import Settings
from datazone.db import Database

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    # the process's provider, as an embedding program would set it: the gateway keeps it
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield EXPORTER


def test_off_by_default(db: Database, settings: Settings, spans: InMemorySpanExporter) -> None:
    assert settings.tracing is False
    spans.clear()
    with TestClient(create_app(db=db, settings=settings)) as client:
        assert client.get("/v1/catalog/dcat").status_code == 200
    # no server span and no statement span (FastAPI's own internal spans follow whatever
    # provider the process has; with tracing off the gateway sets none)
    assert [s.name for s in spans.get_finished_spans() if s.kind != trace.SpanKind.INTERNAL] == []


def test_a_request_is_a_server_span_with_its_statements_as_children(
    db: Database, settings: Settings, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    # no background sealer: its statements would be traces of their own, beside the request's
    traced = settings.model_copy(update={"tracing": True, "audit_seal_seconds": 0})
    with TestClient(create_app(db=db, settings=traced)) as client:
        resp = client.get("/v1/catalog/dcat", headers={"X-Request-ID": "traced-1"})
        assert resp.status_code == 200
        assert client.get("/livez").status_code == 200  # probes are not traced
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert [s.attributes.get("http.route") for s in servers] == ["/v1/catalog/dcat"]
    server = servers[0]
    statements = [
        s for s in finished
        if s.kind == trace.SpanKind.CLIENT and s.attributes.get("db.system") in ("postgresql", "postgres")
    ]  # fmt: skip
    assert statements, [s.name for s in finished]
    # every statement belongs to the request's trace, under its server span
    by_id = {s.context.span_id: s for s in finished}
    for statement in statements:
        assert statement.context.trace_id == server.context.trace_id
        parent = statement.parent
        while parent is not None and parent.span_id != server.context.span_id:
            parent = by_id[parent.span_id].parent
        assert parent is not None, statement.name
    # after shutdown the engine is no longer traced
    spans.clear()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert spans.get_finished_spans() == ()
