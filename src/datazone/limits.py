"""The gateway's input limits, declared once: body sizes per route class, string lengths,
list sizes, page sizes, integer ranges and time bounds, and the annotated types routes and
schemas use to enforce them. The README's "Limits" section lists the same figures.

A limit is enforced before any work is done: body sizes by `datazone.boundary` before the
body is read, the rest by validation before a handler runs, each refusal a 4xx problem+json
that names the bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from datazone.errors import InvalidSpec

# -- integers ----------------------------------------------------------------------------
# PostgreSQL's bigint: every id and count the zone stores fits in it, nothing past it does
MAX_DB_ID = 2**63 - 1
MAX_DB_INT = 2**63 - 1
MIN_DB_INT = -(2**63)
MAX_DB_INT4 = 2**31 - 1  # PostgreSQL's integer: audit block heights, versions, counts

# -- body sizes, per route class (bytes) -------------------------------------------------
MAX_BODY = 1024 * 1024  # every JSON or form body not named below
MAX_BULK_BODY = 32 * 1024 * 1024  # scoring jobs (up to 1,000,000 codes), model registration, root lists
# a PSI chunk: an OpenMined request of 10,000 points is about 340 KB; anything far beyond is refused unread
MAX_CHUNK_BODY = 64 * 1024 * 1024
# (method, path pattern, limit): the first match wins; anything else gets MAX_BODY
BODY_CLASSES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("PUT", re.compile(r"^/v1/psi/sessions/[^/]+/chunks/[^/]+$"), MAX_CHUNK_BODY),
    ("POST", re.compile(r"^/v1/scoring/jobs$"), MAX_BULK_BODY),
    ("POST", re.compile(r"^/v1/scoring/models$"), MAX_BULK_BODY),
    ("POST", re.compile(r"^/v1/audit/verify$"), MAX_BULK_BODY),
    ("POST", re.compile(r"^/v1/joint/jobs$"), MAX_BULK_BODY),
    ("PUT", re.compile(r"^/v1/joint/jobs/[^/]+/columns/[^/]+$"), MAX_CHUNK_BODY),
)


def body_limit(method: str, path: str) -> int:
    """The most bytes a request to `method path` may send."""
    for route_method, pattern, limit in BODY_CLASSES:
        if method == route_method and pattern.match(path):
            return limit
    return MAX_BODY


# -- strings -----------------------------------------------------------------------------
MAX_NAME = 200  # names: a client, a plan, a supplier
MAX_REASON = 2000  # reasons and comments an operator, department or bank writes
MAX_REF = 1000  # references to documents kept elsewhere (evidence, attachments)
MAX_TEXT = 10_000  # any other string in a request body
MAX_QUERY_TEXT = 200  # a string query parameter (a filter value)

# -- lists and pages ---------------------------------------------------------------------
MAX_LIST = 1000  # any list in a request body without a bound of its own
MAX_PAGE = 10_000  # the largest page any list endpoint returns

# -- error details -----------------------------------------------------------------------
MAX_LISTED_ERRORS = 50  # problems listed in one answer; `errors_total` counts them all
MAX_DETAIL = 2000  # characters of a problem's detail
MAX_EXCERPT = 80  # characters of a client's input quoted back in an error
MAX_INSTANCE = 300  # characters of the request path a problem's `instance` repeats

# -- times -------------------------------------------------------------------------------
SHANGHAI = ZoneInfo("Asia/Shanghai")
# the zone holds nothing older than this nor later than LATEST; a bound outside them is a
# typo (and year 1 or 9999 overflows the window arithmetic)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def excerpt(text: str, limit: int = MAX_EXCERPT) -> str:
    """At most `limit` characters of a client's input, marked when cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# -- figures (dashboards and histories) -------------------------------------------------
MAX_FIGURE_DAYS = 366  # the longest window a per-day figure spans: a year, leap day included
MAX_FIGURE_ROWS = 1000  # the most rows a figure's list returns (latest failures, a page of uses)


@dataclass(frozen=True)
class DayWindow:
    """Whole Asia/Shanghai days `first`..`last`, and the UTC instants [since, until) they cover."""

    first: date
    last: date
    since: datetime
    until: datetime

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def day_window(*, days: int, last_day: date | None = None) -> DayWindow:
    """The `days` Shanghai days ending with `last_day` (default: today in Shanghai), today's hours
    so far included. More than MAX_FIGURE_DAYS, or fewer than 1, is refused with InvalidSpec."""
    if not 1 <= days <= MAX_FIGURE_DAYS:
        raise InvalidSpec(
            f"days is 1 to {MAX_FIGURE_DAYS} (Asia/Shanghai days), not {days}",
            errors=[{"location": "days", "problem": f"must be between 1 and {MAX_FIGURE_DAYS}"}],
        )
    last = last_day if last_day is not None else datetime.now(UTC).astimezone(SHANGHAI).date()
    first = last - timedelta(days=days - 1)
    since = datetime.combine(first, time(), tzinfo=SHANGHAI).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), time(), tzinfo=SHANGHAI).astimezone(UTC)
    if not (since >= EARLIEST and until <= LATEST):
        raise InvalidSpec(
            f"the days {first}..{last} lie outside the zone's time ({EARLIEST.year} to {LATEST.year - 1})",
            errors=[{"location": "last_day", "problem": "outside the zone's time"}],
        )
    return DayWindow(first=first, last=last, since=since, until=until)


def check_figure_limit(limit: int, *, location: str = "limit") -> int:
    """`limit` if it is 1..MAX_FIGURE_ROWS, else InvalidSpec naming the bound."""
    if not 1 <= limit <= MAX_FIGURE_ROWS:
        raise InvalidSpec(
            f"{location} is 1 to {MAX_FIGURE_ROWS}, not {limit}",
            errors=[{"location": location, "problem": f"must be between 1 and {MAX_FIGURE_ROWS}"}],
        )
    return limit


def _date_only_is_shanghai_midnight(value: Any) -> Any:
    """A date-only bound (2026-12-01) is the start of that day in Asia/Shanghai."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return datetime.combine(date.fromisoformat(value.strip()), time(), SHANGHAI)
        except ValueError as exc:
            raise ValueError(f"not a date: {exc}") from None
    return value


def _within_the_zone_s_time(value: datetime) -> datetime:
    low, high = (EARLIEST, LATEST) if value.tzinfo else (EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None))
    if not low <= value < high:
        raise ValueError(f"must lie from {EARLIEST.isoformat()} to before {LATEST.isoformat()}")
    return value


TimeBound = Annotated[
    datetime, BeforeValidator(_date_only_is_shanghai_midnight), AfterValidator(_within_the_zone_s_time)
]
"""A datetime query parameter: ISO 8601 with an offset, or a date (its start in Shanghai)."""

# -- annotated parameter types -----------------------------------------------------------
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description=f"a row id, 1 to {MAX_DB_ID}")]
"""A path parameter naming a stored row."""
QueryDbId = Annotated[int | None, Query(ge=1, le=MAX_DB_ID, description=f"a row id, 1 to {MAX_DB_ID}")]
"""A query parameter naming a stored row (a filter or a cursor)."""
Height = Annotated[int, Query(ge=0, le=MAX_DB_INT4, description=f"an audit block height, 0 to {MAX_DB_INT4}")]
QueryText = Annotated[str | None, Query(max_length=MAX_QUERY_TEXT)]
SinceQuery = Annotated[TimeBound | None, Query(description="ISO 8601 with offset, or a date (00:00 Shanghai)")]
UntilQuery = Annotated[TimeBound | None, Query(description="ISO 8601 with offset, or a date (00:00 Shanghai)")]

# the period a report covers when the caller names neither end
DEFAULT_PERIOD = timedelta(days=30)


def period_or_default(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until) as asked, an open end filled in: until now, since `DEFAULT_PERIOD` before the end."""
    end = until or datetime.now(UTC)
    return since or end - DEFAULT_PERIOD, end


def page_limit(most: int = MAX_PAGE) -> Any:
    """A page size query parameter's bounds: 1 to `most` (the route sets the default)."""
    return Query(ge=1, le=most, description=f"page size, 1 to {most}")


# -- request bodies ----------------------------------------------------------------------
Int4 = Annotated[int, Field(le=MAX_DB_INT4, description=f"at most {MAX_DB_INT4}")]
"""An integer a PostgreSQL integer column holds (the service checks its lower bound and meaning)."""


def _out_of_range(value: Any, where: str) -> str | None:
    """The location of the first integer in `value` that a bigint cannot hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return where if not MIN_DB_INT <= value <= MAX_DB_INT else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _out_of_range(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


class RequestBody(BaseModel):
    """The base of every request body: strings at most MAX_TEXT characters (fields name
    tighter bounds), no integer past a bigint anywhere in it, every number finite."""

    # no NaN or infinity either: JSON cannot carry them back (1e400 parses as infinity)
    model_config = ConfigDict(str_max_length=MAX_TEXT, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _integers_fit_a_bigint(cls, data: Any) -> Any:
        where = _out_of_range(data, "")
        if where:
            raise ValueError(f"{where}: an integer must lie from {MIN_DB_INT} to {MAX_DB_INT}")
        return data

