"""The product engine: answers for a batch of enterprises from the zone tables.

Batch-first: one `read_current_records` per source dataset for the whole batch (up to
1,000 enterprises), never one query per enterprise. The engine does not mask: the
gateway applies the one masking engine to each declared output afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone.dataset import service as dataset_service
from datazone.errors import InvalidSpec
from datazone.product.engine.facts import REGISTRATION, FactSheet
from datazone.product.engine.logics import LOGICS, Logic
from datazone.product.engine.records import EnterpriseRecords, Row
from datazone.product.schemas import ProductSpec

__all__ = ["LOGICS", "Logic", "ProductAnswers", "compute", "logic_of"]


@dataclass(frozen=True)
class ProductAnswers:
    # uscc -> answer; None when the enterprise is not in the zone (no registration record)
    answers: dict[str, dict[str, Any] | None]
    # source dataset -> the current version the answers were computed from
    data_versions: dict[str, int | None]


def logic_of(spec: ProductSpec) -> Logic:
    try:
        return LOGICS[spec.logic]
    except KeyError:
        raise InvalidSpec(
            f"product {spec.id!r} names logic {spec.logic!r}, which the engine does not have; "
            f"logics: {', '.join(LOGICS)}"
        ) from None


def compute(session: Session, *, spec: ProductSpec, usccs: Sequence[str], as_of: date) -> ProductAnswers:
    """Compute the product for each enterprise as of a day (windows count back from as_of)."""
    logic = logic_of(spec)
    try:
        params = logic.params_model.model_validate(spec.params)
    except ValidationError as exc:  # an applied spec was checked; this guards a hand-edited row
        raise InvalidSpec(f"product {spec.id!r} has invalid params: {exc}") from None
    codes = list(dict.fromkeys(usccs))
    rows: dict[str, dict[str, list[Row]]] = {}
    versions: dict[str, int | None] = {}
    for dataset_id, fields in spec.sources.items():
        version, by_entity = dataset_service.read_current_records(
            session, dataset_id=dataset_id, usccs=codes, fields=list(fields)
        )
        rows[dataset_id], versions[dataset_id] = by_entity, version
    answers: dict[str, dict[str, Any] | None] = {}
    registered = rows.get(REGISTRATION, {})
    for code in codes:
        if not registered.get(code):
            answers[code] = None
            continue
        records = EnterpriseRecords(uscc=code, by_dataset={ds: r.get(code, []) for ds, r in rows.items()})
        answers[code] = logic.compute(FactSheet(records, as_of), params)
    return ProductAnswers(answers=answers, data_versions=versions)
