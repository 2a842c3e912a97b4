"""The call pipeline: the one place that owns the order of a product call's gates.

Every channel a bank uses (single and batch lookups, PSI sessions and jobs, anonymous queries,
secure scores and scoring jobs) runs through `run`, top to bottom:

    idempotent replay          a retry under the same Idempotency-Key gets the first answer, free
    subject                    what the call is about: the product, purpose (a scoring model names them)
    token scope                the token carries the product's scope
    authorization              institution, product state, contract, purpose, data state, grants
    enterprises                the enterprises the call names, checked (batch bounds, USCC rules)
    consent                    theirs, when the product requires it
    the channel's own checks   set sizes, scoring caps, bucket tables, model state ...
    compute                    the answer, masked (a lookup's enterprise not in the zone refuses here)
    audit                      one data-access entry
    admission                  rate limit, quota and spend cap (`gates.admit`, a statement of its own)
    usage and ledger           the debit, usage events and the kept answer (`gates.bill`)

A channel (a `Channel` subclass, one object per call) declares only its subject, the enterprises
it names, its own checks, its compute and its answer; it never calls a gate itself. A refusal
names its gate (`gates.check`), and `run_audited` audits a refused call once, in a transaction
of its own, under what the call was about. Everything else commits in the request's one
transaction: the answer, its usage events, ledger debit and audit entry together, or none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from datazone.access import gates
from datazone.access.gates import Authorization, ChannelKind
from datazone.audit import service as audit_service
from datazone.consent import service as consent_service
from datazone.db import Database
from datazone.errors import DomainError
from datazone.metering import service as metering
from datazone.oauth.resource import AccessGrant
from datazone.observability import metrics
from datazone.principal.models import Principal
from datazone.purposes import Purpose

# what a channel hands its route: a served answer, an opened session, a created job ...
Result = TypeVar("Result")

# the enterprises of a refused call kept in its audit entry
REFUSAL_ENTITIES = 1000


@dataclass(frozen=True)
class Call:
    """Who calls, when, and under which Idempotency-Key (with the fingerprint a retry must match)."""

    grant: AccessGrant
    at: datetime
    idempotency_key: str | None = None
    fingerprint: str | None = None

    @property
    def caller(self) -> Principal:
        return self.grant.institution


@dataclass(frozen=True)
class Subject:
    """What a call is about. `datasets` narrows the data and grant checks to some of the
    product's sources (a scoring model reads only its features' datasets); None checks them all."""

    product_id: str
    purpose: Purpose
    datasets: Sequence[str] | None = None


@dataclass(frozen=True)
class Audited:
    """A computed call's audit entry, as its channel words it (the pipeline adds who, what
    product, the contract, grants and client). `supplier_ids` None: the departments whose data
    the call's checks covered."""

    action: str
    detail: dict[str, Any]
    entities: Sequence[str] = ()
    entity_count: int | None = None
    supplier_ids: Sequence[str] | None = None


@dataclass(frozen=True)
class Computed:
    """What a channel's compute leaves for the gates after it: its audit entry, and how many
    units the meter is to admit."""

    audit: Audited
    units: int


@dataclass(frozen=True)
class Answer(Generic[Result]):
    """The admitted call's answer: what the route gets (`result`), and what is billed and kept.

    `billed` names the enterprises billed, or is None for `units` billed naming none (a PSI set,
    anonymous queries). `kept` is the body a retry under the Idempotency-Key gets back."""

    result: Result
    status: int
    kept: dict[str, Any]
    headers: dict[str, str]
    billed: Sequence[str] | None = None
    units: int = 0
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def billed_units(self) -> Sequence[str | None]:
        return list(self.billed) if self.billed is not None else [None] * self.units


class Channel(Generic[Result]):
    """One call through one channel. An object per call: its compute keeps on it what its answer
    needs. The gates are the pipeline's; a channel declares only what is its own."""

    kind: ChannelKind
    # the product the request names, if it names one (a score names its model): what a call
    # refused before its subject is known is counted under
    product_named: str | None = None
    # the enterprises the request names, as sent: what a refusal's audit entry keeps
    named: Sequence[str] = ()

    def subject(self, session: Session, call: Call) -> Subject:
        raise NotImplementedError

    def replayed(self, session: Session, call: Call, stored: metering.StoredAnswer) -> Result:
        """What a retry under a used Idempotency-Key gets: the first answer, free."""
        raise NotImplementedError

    def enterprises(self, session: Session, call: Call, auth: Authorization) -> Sequence[str]:
        """The enterprises the call names, checked (refusals tagged `uscc`, or the channel's own
        bound): those whose consent the product may require. None by default."""
        return ()

    def check(self, session: Session, call: Call, auth: Authorization) -> None:
        """The channel's own checks, after the shared ones and consent; none by default."""

    def compute(self, session: Session, call: Call, auth: Authorization) -> Computed:
        raise NotImplementedError

    def answer(
        self, session: Session, call: Call, auth: Authorization, admission: metering.Admission
    ) -> Answer[Result]:
        raise NotImplementedError


def run(session: Session, call: Call, channel: Channel[Result]) -> Result:
    """Run one call through every gate in the fixed order (see the module's docstring)."""
    caller = call.caller
    stored = gates.replay(
        session, institution_id=caller.id, idempotency_key=call.idempotency_key, fingerprint=call.fingerprint
    )
    if stored is not None:
        # a retry: the same answer, free, and no second usage event
        return channel.replayed(session, call, stored)
    subject = channel.subject(session, call)
    metrics.note_product_call(product_id=subject.product_id, channel=channel.kind)
    gates.require_product_scope(session, grant=call.grant, product_id=subject.product_id)
    auth = gates.authorize(
        session,
        caller=caller,
        product_id=subject.product_id,
        purpose=subject.purpose,
        at=call.at,
        channel=channel.kind,
        datasets=subject.datasets,
    )
    named = channel.enterprises(session, call, auth)
    if named and auth.consent_required:
        with gates.check("consent"):
            consent_service.require_consents(
                session,
                institution_id=caller.id,
                usccs=named,
                purpose=subject.purpose,
                product_id=auth.requested.id,
                at=call.at,
            )
    channel.check(session, call, auth)
    computed = channel.compute(session, call, auth)
    audit = computed.audit
    audit_service.record(
        session,
        actor=caller,
        action=audit.action,
        object_type="product",
        object_id=auth.served.id,
        purpose=subject.purpose.value,
        entities=audit.entities,
        entity_count=audit.entity_count,
        supplier_ids=auth.departments if audit.supplier_ids is None else audit.supplier_ids,
        institution_id=caller.id,
        detail={
            **audit.detail,
            "contract_id": auth.contract.id,
            "grant_ids": sorted({g.id for g in auth.grants}),
            "client_id": call.grant.client_id,
        },
    )
    admission = gates.admit(
        session,
        institution_id=caller.id,
        contract_id=auth.contract.id,
        plan_id=auth.contract.plan_id,
        product_id=auth.served.id,
        price_fen=auth.spec.price_fen,
        units=computed.units,
        at=call.at,
    )
    answer = channel.answer(session, call, auth, admission)
    gates.bill(
        session,
        metering.BilledCall(
            admission=admission,
            institution_id=caller.id,
            client_id=call.grant.client_id,
            product_id=auth.served.id,
            purpose=subject.purpose.value,
            usccs_billed=answer.billed_units(),
            idempotency_key=call.idempotency_key,
            fingerprint=call.fingerprint,
            status=answer.status,
            body=answer.kept,
            headers=answer.headers,
            at=call.at,
            call_id=answer.call_id,
        ),
    )
    return answer.result


def run_audited(db: Database, session: Session, call: Call, channel: Channel[Result]) -> Result:
    """`run`, counted served or refused; a refusal is audited once, in a transaction of its own
    (the request's rolls back), under what the call was about, then goes on to become the problem
    response."""
    try:
        with metrics.product_call(channel.product_named):
            return run(session, call, channel)
    except DomainError as exc:
        with db.unit_of_work() as audit_session:
            # a person acting through the console is named on the refusal as on every other entry
            acting = session.info.get(audit_service.ACTING_ACCOUNT)
            if acting is not None:
                audit_session.info[audit_service.ACTING_ACCOUNT] = acting
            record_refusal(audit_session, call=call, channel=channel, error=exc)
        raise


def record_refusal(session: Session, *, call: Call, channel: Channel[Any], error: DomainError) -> None:
    """Audit a refused call under its subject, or under "-" when the caller named nothing of its
    own (a scoring model that is not the caller's)."""
    product_id: str | None = None
    purpose: str | None = None
    try:
        subject = channel.subject(session, call)
    except DomainError:
        pass
    else:
        product_id, purpose = subject.product_id, subject.purpose.value
    gates.record_refusal(
        session,
        caller=call.caller,
        product_id=product_id or "-",
        # a refused batch may hold anything: the audit keeps the first codes, cut to size
        usccs=[u[:32] for u in channel.named[:REFUSAL_ENTITIES]],
        purpose=purpose,
        error=error,
    )
