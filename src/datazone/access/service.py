"""Product lookups, single and batch: the lookup channel of the call pipeline.

A lookup names its enterprises by USCC; the answer is computed from the zone tables and
desensitized by the one masking engine under the contract's clearance. The gates (replay,
scope, contract, product and data state, grants, consent, audit, admission, usage and ledger)
are the pipeline's (`access.pipeline.run`); this module declares only the lookup's own part:
the enterprises it names, its compute and its answer (one usage event per enterprise found).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from datazone.access import pipeline
from datazone.access.gates import Authorization, EnterpriseNotFound, Served, check, validate_usccs
from datazone.access.pipeline import Answer, Audited, Call, Channel, Computed, Subject
from datazone.access.schemas import BatchAnswerOut, EnterpriseAnswer, MaskingOut, ProductAnswerOut, ServedBy
from datazone.audit import service as audit_service
from datazone.dataset.schemas import SHANGHAI
from datazone.masking import service as masking
from datazone.metering import service as metering
from datazone.oauth import service as oauth_service
from datazone.oauth.resource import AccessGrant
from datazone.principal.models import Principal
from datazone.product import engine
from datazone.purposes import Purpose

# a console lookup's grant lives as long as a short access token would
CONSOLE_GRANT_SECONDS = 300
CONSOLE_CLIENT_PREFIX = "console:"


@dataclass
class Delivery:
    """A computed, masked answer for one or more enterprises, and what it rests on."""

    requested_id: str
    served_id: str
    served_state: str
    purpose: Purpose
    as_of: date
    computed_at: datetime
    data_versions: dict[str, int | None]
    clearance: int
    masking: dict[str, str]
    contract_id: int
    grant_ids: list[str]
    answers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    price_fen: int = 0
    successor_id: str | None = None
    departments: list[str] = field(default_factory=list)


class Lookup(Channel[Served]):
    """A lookup of one enterprise (`single`: 404 when it is not in the zone) or a batch."""

    kind = "lookup"

    def __init__(
        self, *, product_id: str, usccs: Sequence[str], purpose: Purpose, single: bool, as_of: date | None = None
    ) -> None:
        self.product_named = product_id
        self.named = usccs
        self.purpose = purpose
        self.single = single
        self.as_of = as_of
        self.codes: list[str] = []
        self.found: list[str] = []
        self.delivery: Delivery | None = None

    def subject(self, session: Session, call: Call) -> Subject:
        assert self.product_named is not None
        return Subject(self.product_named, self.purpose)

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> Served:
        return Served(stored.status, stored.body, stored.headers, True)

    def enterprises(self, session: Session, call: Call, auth: Authorization) -> Sequence[str]:
        with check("uscc"):
            self.codes = validate_usccs(self.named)
        return self.codes

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        as_of = self.as_of or call.at.astimezone(SHANGHAI).date()
        delivery = self.delivery = deliver(
            session, auth=auth, codes=self.codes, purpose=self.purpose, at=call.at, as_of=as_of
        )
        found = self.found = [c for c in self.codes if delivery.answers[c] is not None]
        if self.single and not found:
            with check("zone"):
                raise EnterpriseNotFound(f"no enterprise {self.codes[0]} in the zone's registration data", usccs=self.codes)
        audit = Audited(
            action=audit_service.DATA_ACCESS,
            entities=self.codes,
            detail={
                "requested": delivery.requested_id,
                "found": len(found),
                "data_versions": delivery.data_versions,
                "masking_clearance": delivery.clearance,
            },
        )
        return Computed(audit, units=len(found))

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[Served]:
        delivery = self.delivery
        assert delivery is not None
        headers = dict(admission.headers)
        if delivery.served_state == "deprecated":
            headers["Deprecation"] = "true"
            if delivery.successor_id:
                headers["Link"] = f'</v1/catalog/products/{delivery.successor_id}>; rel="successor-version"'
        body = _answer_body(delivery, single=self.single, charged_fen=admission.charged_fen)
        # one usage event per enterprise found: the ones not in the zone are not billed
        return Answer(Served(200, body, headers), 200, body, headers, billed=self.found)


def serve(
    session: Session,
    *,
    grant: AccessGrant,
    product_id: str,
    usccs: Sequence[str],
    purpose: Purpose,
    single: bool,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
    as_of: date | None = None,
) -> Served:
    """Check, compute, mask, meter and record one product call for `usccs` (one, or a batch)."""
    call = Call(grant, at or datetime.now(UTC), idempotency_key, fingerprint)
    lookup = Lookup(product_id=product_id, usccs=usccs, purpose=purpose, single=single, as_of=as_of)
    return pipeline.run(session, call, lookup)


def console_grant(
    *, person_login: str, institution: Principal, product_id: str, now: datetime | None = None
) -> AccessGrant:
    """The grant a person signed in to the console calls one product under, in place of an access
    token: their institution, the product's scope only, a client id naming the person (so usage and
    audit say who asked), a fresh jti and five minutes of life. Every other gate is the pipeline's."""
    now = now or datetime.now(UTC)
    return AccessGrant(
        client_id=CONSOLE_CLIENT_PREFIX + person_login,
        institution=institution,
        scopes=frozenset({oauth_service.product_scope(product_id)}),
        jti=secrets.token_hex(16),
        expires_at=now + timedelta(seconds=CONSOLE_GRANT_SECONDS),
    )


def deliver(
    session: Session, *, auth: Authorization, codes: Sequence[str], purpose: Purpose, at: datetime, as_of: date
) -> Delivery:
    """The computed and masked answers of an authorized call (not yet metered or audited)."""
    requested, served, spec, contract, grants = auth.requested, auth.served, auth.spec, auth.contract, auth.grants
    computed = engine.compute(session, spec=spec, usccs=codes, as_of=as_of)
    rules = [masking.FieldRule(o.name, *o.policy()) for o in spec.outputs]
    applied: dict[str, str] = {}
    answers: dict[str, dict[str, Any] | None] = {}
    for code in codes:
        raw = computed.answers.get(code)
        if raw is None:
            answers[code] = None
            continue
        masked = masking.mask_answer(raw, rules, clearance=contract.clearance)
        answers[code] = masked.values
        applied.update(masked.applied)
    if not applied:
        applied = {r.name: _policy(r, contract.clearance) for r in rules}
    return Delivery(
        requested_id=requested.id,
        served_id=served.id,
        served_state=served.state,
        purpose=purpose,
        as_of=as_of,
        computed_at=at,
        data_versions=computed.data_versions,
        clearance=contract.clearance,
        masking=applied,
        contract_id=contract.id,
        grant_ids=sorted({g.id for g in grants}),
        answers=answers,
        price_fen=spec.price_fen,
        successor_id=served.successor_id,
        departments=auth.departments,
    )


def _answer_body(delivery: Delivery, *, single: bool, charged_fen: int) -> dict[str, Any]:
    common: dict[str, Any] = {
        "product": ServedBy(id=delivery.served_id, requested=delivery.requested_id, state=delivery.served_state),
        "purpose": delivery.purpose,
        "as_of": delivery.as_of,
        "computed_at": delivery.computed_at,
        "data_versions": delivery.data_versions,
        "masking": MaskingOut(clearance=delivery.clearance, fields=delivery.masking),
        "contract_id": delivery.contract_id,
        "grant_ids": delivery.grant_ids,
        "charged_fen": charged_fen,
    }
    if single:
        code, answer = next(iter(delivery.answers.items()))
        assert answer is not None
        return ProductAnswerOut(**common, uscc=code, answer=answer).model_dump(mode="json")
    results = [EnterpriseAnswer(uscc=c, found=a is not None, answer=a) for c, a in delivery.answers.items()]
    return BatchAnswerOut(**common, results=results).model_dump(mode="json")


def _policy(rule: masking.FieldRule, clearance: int) -> str:
    """What masking would apply to a field, for answers where nothing was found to mask."""
    probe = masking.mask_answer({rule.name: None}, [rule], clearance=clearance)
    return probe.applied.get(rule.name, "withheld")
