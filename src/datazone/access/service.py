"""The one path every product answer takes.

A request is checked in a fixed order, and a refusal names the check that failed
(the problem's `check` member): the access token and its scope, the caller's contract,
the product's lifecycle state, the data's lifecycle state (admitted data of a supplier
in good standing), the departments' grants, the enterprises' consent, then the rate
limit, quota and spend cap. The answer is computed from the zone tables, desensitized
by the one masking engine under the contract's clearance, metered (one usage event per
enterprise answered, a ledger debit, the answer kept under its Idempotency-Key) and
audited, all in the request's one transaction: the answer is given only if that commits.
No product logic does any of this on its own. Nothing is cached between requests: a
revoked token, grant or consent refuses the very next request on every replica.

The meter is taken last, after the answer is computed, so a call refused by an earlier gate
never counts against the quota: `admit` reserves the units in one statement of its own, and the
institution's other calls wait for that statement only.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from datazone import uscc as uscc_rules
from datazone.access.schemas import BatchAnswerOut, EnterpriseAnswer, MaskingOut, ProductAnswerOut, ServedBy
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.consent import service as consent_service
from datazone.contract import service as contract_service
from datazone.dataset.schemas import SHANGHAI
from datazone.errors import DomainError, Forbidden, InvalidSpec, InvalidUscc, NotFound
from datazone.grant import service as grant_service
from datazone.lifecycle import service as lifecycle_service
from datazone.masking import service as masking
from datazone.metering import service as metering
from datazone.oauth import resource
from datazone.oauth.resource import AccessGrant
from datazone.observability import metrics
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.principal.service import a_kind
from datazone.product import engine
from datazone.product import service as product_service
from datazone.product.schemas import ProductSpec
from datazone.purposes import Purpose

# a chain of seamless switches longer than this is a configuration loop
MAX_SWITCHES = 8


class ProductRetired(DomainError):
    status = 410
    type = "product-retired"
    title = "The product is retired"


class EnterpriseNotFound(NotFound):
    type = "enterprise-not-found"
    title = "The enterprise is not in the zone"


class ServedByPsiOnly(DomainError):
    status = 409
    type = "psi-only-product"
    title = "The product is served by private set intersection only"


class NotServedByPsi(DomainError):
    status = 409
    type = "not-a-psi-product"
    title = "The product is not served by private set intersection"


class ServedByAnonymousQueryOnly(DomainError):
    status = 409
    type = "anonymous-only-product"
    title = "The product is served by anonymous query only"


class NotServedByAnonymousQuery(DomainError):
    status = 409
    type = "not-an-anonymous-product"
    title = "The product is not served by anonymous query"


class ServedByScoringOnly(DomainError):
    status = 409
    type = "scoring-only-product"
    title = "The product is served by secure scoring only"


class NotServedByScoring(DomainError):
    status = 409
    type = "not-a-scoring-product"
    title = "The product is not served by secure scoring"


Channel = Literal["lookup", "psi", "anonymous", "scoring"]

# how to call a product of each channel, for the refusal's detail
_HOW = {
    "lookup": "GET /v1/products/{id}/enterprises/{{uscc}}",
    "psi": "POST /v1/psi/sessions (or `datazone-client psi`)",
    "anonymous": "POST /v1/anonymous/{id}/queries (or `datazone-client lookup --anonymous`)",
    "scoring": "POST /v1/scoring/models, then /v1/scoring/scores or /v1/scoring/jobs (or `datazone-client score`)",
}
_ONLY: dict[str, type[DomainError]] = {
    "psi": ServedByPsiOnly,
    "anonymous": ServedByAnonymousQueryOnly,
    "scoring": ServedByScoringOnly,
}
_NOT: dict[str, type[DomainError]] = {
    "psi": NotServedByPsi,
    "anonymous": NotServedByAnonymousQuery,
    "scoring": NotServedByScoring,
}


def _wrong_channel(product_id: str, *, asked: str, served_by: str) -> DomainError:
    """A product answers through one channel only: a plain lookup of a PSI or anonymous product
    would be exactly the probe of a named enterprise that channel exists to avoid."""
    how = _HOW[served_by].format(id=product_id)
    if served_by != "lookup":
        return _ONLY[served_by](f"product {product_id!r} is served by {served_by} only: use {how}", product=product_id)
    return _NOT[asked](f"product {product_id!r} answers per-enterprise lookups: use {how}", product=product_id)


class PurposeNotServed(Forbidden):
    type = "purpose-not-served"
    title = "The product does not serve this purpose"


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
    # what the call was authorized on; kept so the session's (weak) identity map keeps the product
    # and contract rows the later gates read again, instead of selecting them anew
    authorization: Authorization | None = None


@contextmanager
def check(name: str) -> Iterator[None]:
    """Tag a refusal with the check that raised it, so the caller sees which gate closed."""
    try:
        yield
    except DomainError as exc:
        exc.extra.setdefault("check", name)
        raise


def validate_usccs(usccs: Sequence[str]) -> list[str]:
    """Upper-case and validate every code; list every bad one with why."""
    codes = [u.strip().upper() for u in usccs]
    errors = []
    # a batch is checked in bulk first; only a code that fails is explained
    valid = uscc_rules.valid_mask(codes) if len(codes) > 1 else [False]
    for i, code in enumerate(codes):
        if valid[i]:
            continue
        why = uscc_rules.explain_invalid(code)
        if why is not None:
            errors.append({"location": f"usccs.{i}" if len(codes) > 1 else "uscc", "problem": why})
    if errors:
        raise InvalidUscc(
            "not a valid unified social credit code: "
            + "; ".join(f"{e['location']}: {e['problem']}" for e in errors),
            errors=errors,
            check="uscc",
        )
    dupes = sorted(code for code, n in Counter(codes).items() if n > 1)
    if dupes:
        raise InvalidSpec(f"a batch lists each enterprise once; repeated: {', '.join(dupes)}", check="uscc")
    return codes


def resolve_product(session: Session, *, product_id: str) -> tuple[Any, Any]:
    """(requested, served): a retired product is served by its successor only where the
    operator chose a seamless switch; otherwise it answers 410 naming the successor."""
    requested = product_service.get_product(session, product_id=product_id)
    if requested.state == "draft":
        # drafts are the operator's business: to a caller they do not exist yet
        raise NotFound(f"no published product {product_id!r}; see GET /v1/catalog/products")
    served = requested
    for _ in range(MAX_SWITCHES):
        if served.state != "retired":
            return requested, served
        if served.successor_id and served.seamless_switch:
            served = product_service.get_product(session, product_id=served.successor_id)
            continue
        succ = served.successor_id
        raise ProductRetired(
            f"product {served.id!r} is retired"
            + (f"; use its successor {succ!r}" if succ else " and has no successor"),
            successor=succ,
            successor_url=f"/v1/products/{succ}" if succ else None,
        )
    raise ProductRetired(f"product {product_id!r} has no live successor within {MAX_SWITCHES} switches")


def replay(
    session: Session, *, institution_id: int, idempotency_key: str | None, fingerprint: str | None
) -> metering.StoredAnswer | None:
    """The answer first given under `idempotency_key`, marked as replayed, for a retry to get
    again, free; None to go ahead (the key, if any, is now claimed for this request's answer)."""
    if idempotency_key is None:
        return None
    assert fingerprint is not None
    with check("idempotency"):
        stored = metering.begin_idempotent(
            session, institution_id=institution_id, key=idempotency_key, fingerprint=fingerprint
        )
    if stored is None:
        return None
    return metering.StoredAnswer(stored.status, stored.body, {**stored.headers, "Idempotent-Replayed": "true"})


@dataclass(frozen=True)
class Served:
    """What the product API sends back: status, JSON body and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    replayed: bool = False


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
    metrics.note_product_call(product_id=product_id, channel="lookup")
    at = at or datetime.now(UTC)
    as_of = as_of or at.astimezone(SHANGHAI).date()
    caller = grant.institution
    stored = replay(session, institution_id=caller.id, idempotency_key=idempotency_key, fingerprint=fingerprint)
    if stored is not None:
        # a retry: the same answer, free, and no second usage event
        return Served(stored.status, stored.body, stored.headers, True)
    # held for the call, so the product gate reads it from the session's (weak) identity map
    _listed = require_product_scope(session, grant=grant, product_id=product_id)
    with check("uscc"):
        codes = validate_usccs(usccs)
    d = deliver(session, caller=caller, product_id=product_id, codes=codes, purpose=purpose, at=at, as_of=as_of)
    found = [c for c in codes if d.answers[c] is not None]
    if single and not found:
        with check("zone"):
            raise EnterpriseNotFound(f"no enterprise {codes[0]} in the zone's registration data", usccs=codes)
    audit_service.record(
        session,
        actor=caller,
        action=audit_service.DATA_ACCESS,
        object_type="product",
        object_id=d.served_id,
        purpose=purpose.value,
        entities=codes,
        supplier_ids=d.departments,
        institution_id=caller.id,
        detail={
            "requested": d.requested_id,
            "found": len(found),
            "data_versions": d.data_versions,
            "contract_id": d.contract_id,
            "grant_ids": d.grant_ids,
            "masking_clearance": d.clearance,
            "client_id": grant.client_id,
        },
    )
    admission = admit(
        session,
        institution_id=caller.id,
        contract_id=d.contract_id,
        plan_id=d.authorization.contract.plan_id if d.authorization else None,
        product_id=d.served_id,
        price_fen=d.price_fen,
        units=len(found),
        at=at,
    )
    headers = dict(admission.headers)
    if d.served_state == "deprecated":
        headers["Deprecation"] = "true"
        if d.successor_id:
            headers["Link"] = f'</v1/catalog/products/{d.successor_id}>; rel="successor-version"'
    body = _answer_body(d, single=single, charged_fen=admission.charged_fen)
    bill(
        session,
        admission=admission,
        institution_id=caller.id,
        client_id=grant.client_id,
        product_id=d.served_id,
        purpose=purpose.value,
        usccs_billed=found,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        status=200,
        body=body,
        headers=headers,
        at=at,
    )
    return Served(200, body, headers)


def admit(
    session: Session,
    *,
    institution_id: int,
    contract_id: int,
    product_id: str,
    price_fen: int,
    units: int,
    at: datetime,
    plan_id: str | None = None,
) -> metering.Admission:
    """The meter's admission of `units`, a refusal tagged with the check that closed
    (`rate_limit`, or `quota` for the quota and the spend cap)."""
    try:
        return metering.admit(
            session,
            institution_id=institution_id,
            contract_id=contract_id,
            plan_id=plan_id or contract_service.plan_id_of(session, contract_id=contract_id),
            product_id=product_id,
            product_price_fen=price_fen,
            units=units,
            at=at,
        )
    except metering.RateLimited as exc:
        exc.extra.setdefault("check", "rate_limit")
        raise
    except DomainError as exc:
        exc.extra.setdefault("check", "quota")
        raise


def bill(
    session: Session,
    *,
    admission: metering.Admission,
    institution_id: int,
    client_id: str,
    product_id: str,
    purpose: str,
    usccs_billed: Sequence[str | None],
    idempotency_key: str | None,
    fingerprint: str | None,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    at: datetime,
    call_id: uuid.UUID | None = None,
) -> list[metering.BilledUnit]:
    """The last gate of every channel: the ledger debit for what the admitted call charges
    (billing), then its usage events, meter counts and kept answer (metering), in the call's
    transaction. Metering and billing do not call each other: this is the one place that orders them.

    A job names its own `call_id`, so its charge can be found again (`metering.call_charges`) to
    credit it."""
    call_id = call_id or uuid.uuid4()
    charge = metering.charge_of(admission, units=len(usccs_billed))
    debit_id: int | None = None
    if charge.fen > 0:
        debit_id = billing_service.post_debit(
            session,
            institution_id=institution_id,
            amount_fen=charge.fen,
            period=metering.month_of(at),
            product_id=product_id,
            usage_count=charge.units,
            memo=f"{charge.units} units of {product_id} for {purpose} ({charge.free_units} free)"
            f" by client {client_id}, call {call_id}",
            at=at,
        ).id
    return metering.record_usage(
        session,
        admission=admission,
        call_id=call_id,
        debit_id=debit_id,
        institution_id=institution_id,
        client_id=client_id,
        product_id=product_id,
        purpose=purpose,
        usccs_billed=usccs_billed,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        status=status,
        body=body,
        headers=headers,
        at=at,
    )


def _answer_body(d: Delivery, *, single: bool, charged_fen: int) -> dict[str, Any]:
    common: dict[str, Any] = {
        "product": ServedBy(id=d.served_id, requested=d.requested_id, state=d.served_state),
        "purpose": d.purpose,
        "as_of": d.as_of,
        "computed_at": d.computed_at,
        "data_versions": d.data_versions,
        "masking": MaskingOut(clearance=d.clearance, fields=d.masking),
        "contract_id": d.contract_id,
        "grant_ids": d.grant_ids,
        "charged_fen": charged_fen,
    }
    if single:
        code, answer = next(iter(d.answers.items()))
        assert answer is not None
        return ProductAnswerOut(**common, uscc=code, answer=answer).model_dump(mode="json")
    results = [EnterpriseAnswer(uscc=c, found=a is not None, answer=a) for c, a in d.answers.items()]
    return BatchAnswerOut(**common, results=results).model_dump(mode="json")


@dataclass(frozen=True)
class Authorization:
    """What the control plane allows one call: the product (as requested and as served),
    its spec, the institution's contract and the departments' live grants."""

    requested: Any
    served: Any
    spec: ProductSpec
    contract: Any
    grants: list[Any]
    datasets: list[str]
    # the departments whose data the call uses (the suppliers of `datasets`)
    departments: list[str]


def authorize(
    session: Session,
    *,
    caller: Principal,
    product_id: str,
    purpose: Purpose,
    at: datetime,
    channel: Channel,
    datasets: Sequence[str] | None = None,
) -> Authorization:
    """The control-plane checks every channel shares, in order: the institution, the product's
    lifecycle state, the contract, the purpose, the data's lifecycle state and the grants.

    `datasets` narrows the data and grant checks to some of the product's sources (a scoring
    model reads only its own features' datasets); by default all of them are checked."""
    metrics.note_product_call(product_id=product_id, channel=channel)
    with check("institution"):
        if caller.kind != "institution":
            raise Forbidden(f"products are called by institutions; you are {a_kind(caller.kind)}")
        principal_service.require_active(caller)
    with check("product"):
        requested, served = resolve_product(session, product_id=product_id)
    # the contract names what the institution asked for; a seamless switch is the operator's promise
    with check("contract"):
        contract = contract_service.require_contract(
            session, institution_id=caller.id, product_id=requested.id, purpose=purpose, at=at
        )
    spec = product_service.spec_of(served)
    with check("product"):
        if channel != spec.channel:
            raise _wrong_channel(served.id, asked=channel, served_by=spec.channel)
        if purpose not in spec.purposes:
            raise PurposeNotServed(
                f"product {served.id!r} serves {', '.join(p.value for p in spec.purposes)}; not {purpose.value}",
                product=served.id,
            )
    if datasets is None:
        datasets = sorted(spec.sources)
    else:
        unknown = sorted(set(datasets) - set(spec.sources))
        if unknown:
            raise ValueError(f"datasets {unknown} are not sources of product {served.id!r}")
        datasets = sorted(set(datasets))
    with check("data"):
        suppliers = lifecycle_service.require_in_use(session, dataset_ids=datasets)
    with check("grant"):
        grants = grant_service.require_grants(
            session,
            product_id=served.id,
            dataset_ids=datasets,
            institution_id=caller.id,
            purpose=purpose,
            at=at,
        )
    return Authorization(
        requested, served, spec, contract, list(grants), list(datasets), sorted(set(suppliers.values()))
    )


def deliver(
    session: Session,
    *,
    caller: Principal,
    product_id: str,
    codes: Sequence[str],
    purpose: Purpose,
    at: datetime,
    as_of: date,
) -> Delivery:
    """The control-plane checks, then the computed and masked answers (not yet metered or audited)."""
    auth = authorize(session, caller=caller, product_id=product_id, purpose=purpose, at=at, channel="lookup")
    requested, served, spec, contract, grants = auth.requested, auth.served, auth.spec, auth.contract, auth.grants
    needs_consent = spec.consent_required or product_service.spec_of(requested).consent_required
    if needs_consent:
        with check("consent"):
            consent_service.require_consents(
                session,
                institution_id=caller.id,
                usccs=codes,
                purpose=purpose,
                product_id=requested.id,
                at=at,
            )
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
        authorization=auth,
    )


def _policy(rule: masking.FieldRule, clearance: int) -> str:
    """What masking would apply to a field, for answers where nothing was found to mask."""
    probe = masking.mask_answer({rule.name: None}, [rule], clearance=clearance)
    return probe.applied.get(rule.name, "withheld")


def require_product_scope(session: Session, *, grant: AccessGrant, product_id: str) -> Any:
    """The token must carry the product's scope; an id the catalog does not hold is a 404 that
    names the catalog, not a scope the bank should go and request. Returns the product."""
    with check("product"):
        product = product_service.get_product(session, product_id=product_id)
    with check("scope"):
        resource.require_scope(grant, product_id)
    return product


def record_refusal(
    session: Session,
    *,
    caller: Principal | None,
    product_id: str,
    usccs: Sequence[str],
    purpose: str | None,
    error: DomainError,
) -> None:
    """A refused call is audited too, in its own transaction (the request's rolls back)."""
    departments: list[str] = []
    with suppress(DomainError):
        departments = product_service.product_departments(
            session, product=product_service.get_product(session, product_id=product_id)
        )
    codes = [u.strip().upper() for u in usccs][:1000]
    audit_service.record(
        session,
        actor=caller,
        action=audit_service.DATA_ACCESS,
        object_type="product",
        object_id=product_id,
        outcome="refused",
        reason=error.type,
        purpose=purpose,
        entities=codes,
        supplier_ids=departments,
        institution_id=caller.id if caller is not None and caller.kind == "institution" else None,
        detail={"check": error.extra.get("check"), "status": error.status, "detail": error.detail[:500]},
    )
