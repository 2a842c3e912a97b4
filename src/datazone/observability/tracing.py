"""OpenTelemetry tracing of the gateway (FastAPI), its database (SQLAlchemy) and its outbound
HTTP (httpx). Off unless `DATAZONE_TRACING=true`; where the spans go is OpenTelemetry's
standard environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, ...), read by the SDK and the OTLP exporter themselves.

FastAPI traces its own requests (its native telemetry: server spans, and spans for dependency
resolution and the endpoint); the SQLAlchemy and httpx instrumentations add the statements and
outbound calls as their children.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.engine import Engine

from datazone.config import Settings

log = logging.getLogger(__name__)

# probes and scrapes every few seconds would be most of the spans and tell nothing
_UNTRACED_PATHS = frozenset({"/metrics", "/livez", "/readyz", "/healthz"})


def tracer_provider(service: str) -> trace.TracerProvider:
    """The process's tracer provider: one already set (by an embedding program or a test) is
    kept; otherwise an SDK provider exporting over OTLP/HTTP is made and set."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans exported over OTLP/HTTP")
    return provider


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in _UNTRACED_PATHS


def fastapi_telemetry(settings: Settings) -> TelemetryConfig:
    """FastAPI's own telemetry: tracing as the settings say, never its metrics or log records
    (the zone has its Prometheus series and its JSON lines), and whatever provider the process
    happens to have is not enough to turn it on."""
    return {
        "tracing": settings.tracing,
        "tracer_provider": tracer_provider("datazone-gateway") if settings.tracing else None,
        "metrics": False,
        "logs": False,
        "exclude": _untraced,
    }


def trace_engine(engine: Engine, provider: trace.TracerProvider) -> None:
    """Child spans for each statement on this engine, and for outbound httpx calls."""
    # its declared range stops below SQLAlchemy 2.1, whose engine events it uses are unchanged
    # (the test of a traced request checks the statement spans)
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider, skip_dep_check=True)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def untrace_engines() -> None:
    SQLAlchemyInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
