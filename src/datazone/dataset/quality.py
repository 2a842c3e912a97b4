"""Quality figures: pure arithmetic over counts, no database.

- completeness of a field: share of a version's rows where it is not null; a
  required field must be complete (1.0), an optional one reach `min_completeness`
  (default 0.95) or the minimum its spec declares for it under `quality.fields`; overall completeness is the share of non-null cells;
- validity of a version: rows that passed validation over rows received in the run
  that brought it (rejects included), at least `min_validity` (default 0.99);
- key uniqueness: no record key twice in a version;
- distributions: share of each value of an enum field (a null counts as "");
- timeliness: a version is on time when the next one (or, for the latest, `now`)
  came within its frequency plus a grace: daily 1 day + 6 h, weekly 7 days + 1 day,
  monthly 31 days + 3 days; lag is the time beyond that, in hours.

Supplier scorecard weights (overall score 0-100): completeness 30, validity 30,
timeliness (on-time share of versions) 25, institutions' mean rating 15 (1 star = 0,
5 stars = 1). A component with no data (no evaluated version, no rating) is left out
and the remaining weights are scaled up to 100, so a new supplier is not marked down
for what nobody could measure yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MIN_COMPLETENESS = 0.95
MIN_VALIDITY = 0.99

ALLOWED_AGE: dict[str, timedelta] = {
    "daily": timedelta(days=1, hours=6),
    "weekly": timedelta(days=7) + timedelta(days=1),
    "monthly": timedelta(days=31) + timedelta(days=3),
}

SCORE_WEIGHTS: dict[str, float] = {"completeness": 30, "validity": 30, "timeliness": 25, "rating": 15}


@dataclass(frozen=True)
class Thresholds:
    min_completeness: float = MIN_COMPLETENESS
    min_validity: float = MIN_VALIDITY
    # per optional field, for fields sparse by nature (a removal date, a gas meter reading)
    fields: dict[str, float] = field(default_factory=dict)

    @classmethod
    def declared(cls, spec: dict[str, Any]) -> Thresholds:
        """Thresholds a dataset's spec declares under `quality`
        ({min_completeness, min_validity, fields: {name: min}}), else the defaults."""
        declared = spec.get("quality") or {}
        return cls(
            min_completeness=float(declared.get("min_completeness", MIN_COMPLETENESS)),
            min_validity=float(declared.get("min_validity", MIN_VALIDITY)),
            fields={k: float(v) for k, v in (declared.get("fields") or {}).items()},
        )

    def completeness_for(self, name: str, *, required: bool) -> float:
        if required:
            return 1.0  # a required field is never allowed gaps, whatever is declared
        return self.fields.get(name, self.min_completeness)


def share(part: int, whole: int) -> float:
    """part/whole, with nothing out of nothing counting as complete."""
    return 1.0 if whole == 0 else part / whole


def completeness(non_null: dict[str, int], rows: int) -> dict[str, float]:
    return {name: round(share(n, rows), 6) for name, n in non_null.items()}


def overall_completeness(non_null: dict[str, int], rows: int) -> float:
    return round(share(sum(non_null.values()), rows * len(non_null)), 6)


def validity(rows_received: int, rows_rejected: int) -> float:
    return round(share(rows_received - rows_rejected, rows_received), 6)


def distributions(enum_counts: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, counts in enum_counts.items():
        total = sum(counts.values())
        out[name] = {value: round(share(n, total), 6) for value, n in counts.items()}
    return out


def sample_failures(
    figures: dict[str, Any], *, required: set[str], thresholds: Thresholds
) -> list[dict[str, Any]]:
    """Each figure of a sample check that misses its threshold, worded so the supplier can fix it."""
    failures: list[dict[str, Any]] = []
    for name, value in figures["completeness"].items():
        need = thresholds.completeness_for(name, required=name in required)
        if value < need:
            kind = "required" if name in required else "optional"
            failures.append(
                {
                    "location": f"completeness.{name}",
                    "problem": f"{kind} field {name!r} is filled in {value:.2%} of rows; it must be at least {need:.2%}",
                    "value": value,
                    "threshold": need,
                }
            )
    if figures["validity"] < thresholds.min_validity:
        failures.append(
            {
                "location": "validity",
                "problem": f"{figures['rows_rejected']} of {figures['rows_received']} rows received were rejected "
                f"(validity {figures['validity']:.2%}); it must be at least {thresholds.min_validity:.2%}",
                "value": figures["validity"],
                "threshold": thresholds.min_validity,
            }
        )
    if figures["duplicate_keys"]:
        failures.append(
            {
                "location": "key_uniqueness",
                "problem": f"{figures['duplicate_keys']} rows repeat a record key already present in the version",
                "value": figures["duplicate_keys"],
                "threshold": 0,
            }
        )
    return failures


@dataclass(frozen=True)
class Timeliness:
    on_time: bool
    age_hours: float
    lag_hours: float


def timeliness(*, frequency: str, version_at: datetime, until: datetime) -> Timeliness:
    """How late a version's successor (or, for the latest version, `until` = now) came."""
    allowed = ALLOWED_AGE[frequency]
    age = until - version_at
    lag = max(age - allowed, timedelta(0))
    return Timeliness(
        on_time=age <= allowed,
        age_hours=round(age.total_seconds() / 3600, 3),
        lag_hours=round(lag.total_seconds() / 3600, 3),
    )


def overall_score(components: dict[str, float | None]) -> float | None:
    """Weighted 0-100 score of components in [0, 1]; missing components are left out (see module doc)."""
    present = {k: v for k, v in components.items() if v is not None}
    weight = sum(SCORE_WEIGHTS[k] for k in present)
    if not weight:
        return None
    return round(100 * sum(SCORE_WEIGHTS[k] * v for k, v in present.items()) / weight, 2)


def rating_component(mean_rating: float | None) -> float | None:
    return None if mean_rating is None else (mean_rating - 1) / 4
