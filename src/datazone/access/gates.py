"""The gates every product call passes, each on its own: the pieces the call pipeline
(`access.pipeline.run`) puts in their one order.

A refusal names the gate that closed (the problem's `check` member, set by `check()`): the
idempotency key, the token's scope, the institution, the product's lifecycle state, the
contract, the data's lifecycle state (admitted data of a supplier in good standing), the
departments' grants, the enterprises named, their consent, then the rate limit, quota and
spend cap. Nothing here is cached between requests: a revoked token, grant or consent refuses
the very next request on every replica.

`admit` reserves the units in one statement of its own (the institution's other calls wait for
that statement only), and `bill` posts the ledger debit and the usage of what was admitted, in
the call's transaction: metering and billing do not call each other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from datazone import uscc as uscc_rules
from datazone.audit import service as audit_service
from datazone.billing import service as billing_service
from datazone.contract import service as contract_service
from datazone.dataset import admission as dataset_admission
from datazone.db import hold
from datazone.errors import DomainError, Forbidden, InvalidSpec, InvalidUscc, NotFound
from datazone.grant import service as grant_service
from datazone.metering import service as metering
from datazone.oauth import resource
from datazone.oauth.resource import AccessGrant
from datazone.observability import metrics
from datazone.principal import service as principal_service
from datazone.principal.models import Principal
from datazone.principal.service import a_kind
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


class ServedByJointJobsOnly(DomainError):
    status = 409
    type = "joint-only-product"
    title = "The product is served by joint statistics and modeling jobs only"


class NotServedByJointJobs(DomainError):
    status = 409
    type = "not-a-joint-product"
    title = "The product is not served by joint statistics and modeling jobs"


# the channels a product answers through (a product declares one)
ChannelKind = Literal["lookup", "psi", "anonymous", "scoring", "joint"]

# how to call a product of each channel, for the refusal's detail
_HOW = {
    "lookup": "GET /v1/products/{id}/enterprises/{{uscc}}",
    "psi": "POST /v1/psi/sessions (or `datazone-client psi`)",
    "anonymous": "POST /v1/anonymous/{id}/queries (or `datazone-client lookup --anonymous`)",
    "scoring": "POST /v1/scoring/models, then /v1/scoring/scores or /v1/scoring/jobs (or `datazone-client score`)",
    "joint": "POST /v1/joint/jobs (or `datazone-client stats` and `datazone-client train`)",
}
_ONLY: dict[str, type[DomainError]] = {
    "psi": ServedByPsiOnly,
    "anonymous": ServedByAnonymousQueryOnly,
    "scoring": ServedByScoringOnly,
    "joint": ServedByJointJobsOnly,
}
_NOT: dict[str, type[DomainError]] = {
    "psi": NotServedByPsi,
    "anonymous": NotServedByAnonymousQuery,
    "scoring": NotServedByScoring,
    "joint": NotServedByJointJobs,
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

    @property
    def consent_required(self) -> bool:
        """The enterprises' consent is needed when the product asked for, or the one serving it, says so."""
        return self.spec.consent_required or product_service.spec_of(self.requested).consent_required


def authorize(
    session: Session,
    *,
    caller: Principal,
    product_id: str,
    purpose: Purpose,
    at: datetime,
    channel: ChannelKind,
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
        suppliers = dataset_admission.require_in_use(session, dataset_ids=datasets)
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


def require_product_scope(session: Session, *, grant: AccessGrant, product_id: str) -> None:
    """The token must carry the product's scope; an id the catalog does not hold is a 404 that
    names the catalog, not a scope the bank should go and request. The product is held by the
    session, so the product gate reads it from there."""
    with check("product"):
        hold(session, [product_service.get_product(session, product_id=product_id)])
    with check("scope"):
        resource.require_scope(grant, product_id)


def admit(
    session: Session,
    *,
    institution_id: int,
    contract_id: int,
    product_id: str,
    price_fen: int,
    units: int,
    at: datetime,
    plan_id: str,
) -> metering.Admission:
    """The meter's admission of `units`, a refusal tagged with the check that closed
    (`rate_limit`, or `quota` for the quota and the spend cap)."""
    try:
        return metering.admit(
            session,
            institution_id=institution_id,
            contract_id=contract_id,
            plan_id=plan_id,
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


def bill(session: Session, call: metering.BilledCall) -> list[metering.BilledUnit]:
    """The last gate of every channel: the ledger debit for what the admitted call charges
    (billing), then its usage events, the meter's unbilled units given back and the kept answer
    (metering), in the call's
    transaction. Metering and billing do not call each other: this is the one place that orders them."""
    charge = call.charge
    debit_id: int | None = None
    if charge.fen > 0:
        debit_id = billing_service.post_debit(
            session,
            institution_id=call.institution_id,
            amount_fen=charge.fen,
            period=metering.month_of(call.at),
            product_id=call.product_id,
            usage_count=charge.units,
            memo=f"{charge.units} units of {call.product_id} for {call.purpose} ({charge.free_units} free)"
            f" by client {call.client_id}, call {call.call_id}",
            at=call.at,
        ).id
    return metering.record_usage(session, call=call, debit_id=debit_id)


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
