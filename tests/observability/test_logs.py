"""Request ids and log lines, unit by unit: which incoming ids are kept, and the shape of a line."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from datazone.observability.context import bind_request_id, request_id_for
from datazone.observability.logs import configure_logging

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("x_request_id", "traceparent", "expected"),
    [
        ("abc-123", None, "abc-123"),
        ("  lb:7f3a/9  ", None, "lb:7f3a/9"),
        ("abc-123", TRACEPARENT, "abc-123"),  # the caller's own id wins
        (None, TRACEPARENT, TRACE_ID),
        ("a" * 129, TRACEPARENT, TRACE_ID),  # too long: not echoed
        ("bad id", TRACEPARENT, TRACE_ID),  # a space
        ("x\nInjected: 1", TRACEPARENT, TRACE_ID),  # a line break would forge a log line or header
        ("名字", TRACEPARENT, TRACE_ID),
    ],
)
def test_request_id_is_the_callers_when_safe_else_the_trace_id(
    x_request_id: str | None, traceparent: str | None, expected: str
) -> None:
    assert request_id_for(x_request_id, traceparent) == expected


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id is invalid
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case is not W3C
        "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
        "garbage",
        "",
    ],
)
def test_an_invalid_traceparent_gets_a_new_id(traceparent: str) -> None:
    first, second = request_id_for(None, traceparent), request_id_for(None, traceparent)
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


def _captured(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    configure_logging(log_format, "INFO")
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return logging.getLogger("datazone.test"), stream


def test_json_lines_carry_zone_time_level_logger_request_id_and_extras() -> None:
    log, stream = _captured("json")
    try:
        bind_request_id("req-42")
        log.info("ingest run %s of %s succeeded", 7, "mr_registration", extra={"run_id": 7, "rows": 1200})
        bind_request_id(None)
        logging.getLogger("apscheduler.executors.default").info("Running job reap (trigger: interval)")
        logging.getLogger("apscheduler.executors.default").warning("Run time of job reap was missed by 0:00:07")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("pass failed")
    finally:
        configure_logging("text", "INFO")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3  # APScheduler's per-tick INFO line is silenced, its warning kept
    first = lines[0]
    assert first["message"] == "ingest run 7 of mr_registration succeeded"
    assert (first["level"], first["logger"], first["request_id"]) == ("INFO", "datazone.test", "req-42")
    assert (first["run_id"], first["rows"]) == (7, 1200)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00", first["timestamp"])
    assert lines[1]["logger"] == "apscheduler.executors.default" and lines[1]["request_id"] is None
    assert lines[2]["level"] == "ERROR" and "ValueError: boom" in lines[2]["exc_info"]


def test_text_lines_for_a_terminal() -> None:
    log, stream = _captured("text")
    bind_request_id("req-7")
    try:
        log.info("hello")
    finally:
        bind_request_id(None)
    assert re.fullmatch(r"\S+\+08:00 INFO datazone\.test \[req-7\] hello\n", stream.getvalue())
