"""Logging for every datazone process: one JSON object a line (or plain text for a terminal),
timestamps in the zone's time zone, and the request id on every line of a request."""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pythonjsonlogger.json import JsonFormatter

from datazone.observability.context import current_request_id

ZONE_TZ = ZoneInfo("Asia/Shanghai")

# APScheduler logs "Running job" and "executed successfully" at INFO on every tick (each few
# seconds); its warnings (a missed run, a job that raised) are the events worth a line
_CHATTY = {"apscheduler.executors": logging.WARNING, "apscheduler.scheduler": logging.WARNING}


def zone_time(created: float) -> str:
    return datetime.fromtimestamp(created, ZONE_TZ).isoformat(timespec="milliseconds")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request id of the context it was logged in (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class ZoneJsonFormatter(JsonFormatter):
    """timestamp, level, logger, message, request_id, then any `extra=` fields of the call."""

    def __init__(self) -> None:
        super().__init__(
            "%(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*_RESERVED],
            json_ensure_ascii=False,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["timestamp"] = zone_time(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["request_id"] = getattr(record, "request_id", None)
        super().add_fields(log_data, record, message_dict)


class ZoneTextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return zone_time(record.created)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"  # outside a request: a dash, not "None"
        return super().format(record)


# LogRecord attributes that are not `extra` fields (python-json-logger's list, less the ones we rename)
_RESERVED = {
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
    "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process", "processName",
    "relativeCreated", "stack_info", "thread", "threadName", "taskName", "request_id",
    "color_message",  # uvicorn's copy of the message with terminal colours
}  # fmt: skip


def configure_logging(log_format: str = "json", level: str = "INFO") -> None:
    """Route every logger (uvicorn's too) to one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(ZoneJsonFormatter() if log_format == "json" else ZoneTextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print a second, differently formatted copy
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    for name, chatty_level in _CHATTY.items():
        logging.getLogger(name).setLevel(chatty_level)
