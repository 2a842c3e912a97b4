"""A supplier's scorecard: how its data did over a period (quality and timeliness of its
versions, rejected rows and failed runs, use of the products that read it, institutions'
ratings), weighed into one score (weights in `dataset.quality`).

A report over several domains: it reads their services, and nothing below it imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from datazone.audit import service as audit_service
from datazone.dataset import evaluation as dataset_evaluation
from datazone.dataset import quality
from datazone.dataset import service as dataset_service
from datazone.errors import InvalidSpec
from datazone.ingest import service as ingest_service
from datazone.lifecycle import service as lifecycle_service
from datazone.product import evaluation as product_evaluation
from datazone.product import service as product_service
from datazone.supplier import service


@dataclass(frozen=True)
class Scorecard:
    supplier_id: str
    admission_status: str
    since: datetime
    until: datetime
    datasets: int
    datasets_admitted: int  # admitted or deprecated: serving
    versions: int  # versions that arrived in the period and have been evaluated
    mean_completeness: float | None
    mean_validity: float | None
    on_time_share: float | None
    rows_rejected: int  # rows rejected by the supplier's ingest runs in the period
    failed_runs: int
    products: list[str]
    usage_calls: int
    usage_entities: int
    mean_rating: float | None
    score: float | None
    weights: dict[str, float]


def supplier_scorecard(session: Session, *, supplier_id: str, since: datetime, until: datetime) -> Scorecard:
    """How a supplier's data did over [since, until); see quality.py for the score's weights."""
    if until <= since:
        raise InvalidSpec(f"'until' ({until.isoformat()}) must be after 'since' ({since.isoformat()})")
    supplier = service.get_supplier(session, supplier_id=supplier_id)
    datasets = dataset_service.list_datasets(session, department=supplier_id)
    ids = [d.id for d in datasets]
    figures = dataset_evaluation.quality_between(session, dataset_ids=ids, since=since, until=until)
    rejected = failed = 0
    for d in ids:
        for run in ingest_service.list_runs(session, dataset_id=d, limit=100_000):
            if since <= run.created_at < until:
                rejected += run.rows_rejected
                failed += run.status == "failed"
    # every state: a product retired since may still have been called in the period
    products = sorted(
        p.id for p in product_service.search_catalog(session, department=supplier_id, states=None)
    )
    calls = entities = 0
    for pid in products:
        for u in audit_service.usage_volume(session, since=since, until=until, product_id=pid):
            calls += u.calls
            entities += u.entities
    rating = product_evaluation.mean_rating(session, product_ids=products, since=since, until=until)

    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 6) if values else None

    completeness = mean([f.completeness_overall for f in figures])
    validity = mean([f.validity for f in figures])
    on_time = mean([1.0 if f.on_time else 0.0 for f in figures])
    score = quality.overall_score(
        {
            "completeness": completeness,
            "validity": validity,
            "timeliness": on_time,
            "rating": quality.rating_component(rating),
        }
    )
    return Scorecard(
        supplier_id=supplier_id,
        admission_status=supplier.admission_status,
        since=since,
        until=until,
        datasets=len(datasets),
        datasets_admitted=sum(d.admission_state in lifecycle_service.SERVING_STATES for d in datasets),
        versions=len(figures),
        mean_completeness=completeness,
        mean_validity=validity,
        on_time_share=on_time,
        rows_rejected=rejected,
        failed_runs=failed,
        products=products,
        usage_calls=calls,
        usage_entities=entities,
        mean_rating=None if rating is None else round(rating, 3),
        score=score,
        weights=dict(quality.SCORE_WEIGHTS),
    )
