"""OpenTelemetry tracing of the gateway (FastAPI), its database (SQLAlchemy) and its outbound
HTTP (httpx). Off unless `DATAZONE_TRACING=true`; where the spans go is OpenTelemetry's
standard environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, ...), read by the SDK and the OTLP exporter themselves.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# probes and scrapes every few seconds would be most of the spans and tell nothing
_UNTRACED_URLS = "/metrics,/livez,/readyz,/healthz"


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


def trace_app(app: FastAPI, provider: trace.TracerProvider) -> None:
    """Server spans for each request (before the app starts: this adds a middleware)."""
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=_UNTRACED_URLS)


def trace_engine(engine: Engine, provider: trace.TracerProvider) -> None:
    """Child spans for each statement on this engine, and for outbound httpx calls."""
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def untrace_engines() -> None:
    SQLAlchemyInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
