"""The product API for institutions: thin routes running the lookup channel through the call pipeline.

Callers present an OAuth2 access token (client credentials, POST /oauth/token). The
answer, its usage events and its audit entry commit before the response is sent: an
answer is given only when it is billed and recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from datazone.access import gates, pipeline, service
from datazone.access.schemas import BatchAnswerOut, BatchIn, ProductAnswerOut
from datazone.db import Database
from datazone.deps import DbDep, SessionDep, SettingsDep
from datazone.errors import DomainError
from datazone.metering import service as metering
from datazone.oauth import resource
from datazone.oauth import service as oauth_service
from datazone.oauth.resource import AccessGrant, InvalidToken
from datazone.observability import metrics
from datazone.product import service as product_service
from datazone.product.schemas import ProductOut
from datazone.purposes import Purpose

router = APIRouter(prefix="/v1/products", tags=["product answers"])

ProductId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{1,62}$")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="makes a retry free and returns the first answer"),
]
_bearer = HTTPBearer(auto_error=False)


def access_grant(
    session: SessionDep,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccessGrant:
    if creds is None:
        raise InvalidToken(
            "send 'Authorization: Bearer <access token>'; get one from POST /oauth/token (client credentials)",
            check="token",
        )
    try:
        return resource.authenticate_access_token(session, token=creds.credentials, settings=settings)
    except DomainError as exc:
        exc.extra.setdefault("check", "token")
        raise


GrantDep = Annotated[AccessGrant, Depends(access_grant)]


async def raw_body(request: Request) -> bytes:
    # Starlette caches the body, so the JSON model still parses it; the fingerprint needs the bytes
    return await request.body()


@dataclass(frozen=True)
class Idempotency:
    """A request's Idempotency-Key and the fingerprint a retry under it must match (method, path,
    query and body); both None without a key."""

    key: str | None
    fingerprint: str | None

    def call(self, grant: AccessGrant) -> pipeline.Call:
        """The pipeline's call of `grant`'s holder, now, under this key."""
        return pipeline.Call(grant, datetime.now(UTC), self.key, self.fingerprint)

    @classmethod
    def of(cls, request: Request, body: bytes, key: str | None) -> Idempotency:
        if key is None:
            return cls(None, None)
        return cls(key, metering.fingerprint(request.method, request.url.path, request.url.query, body))


def idempotency(
    request: Request, raw: Annotated[bytes, Depends(raw_body)], idempotency_key: IdempotencyKey = None
) -> Idempotency:
    """The Idempotency-Key of a request with a JSON body, and its fingerprint."""
    return Idempotency.of(request, raw, idempotency_key)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]


# the product and purpose a refusal is audited under, looked up in the audit's own transaction
# (None, None when the caller named nothing of its own)
SubjectLookup = Callable[[Session], tuple[str | None, str | None]]


@contextmanager
def refusals_audited(
    db: Database,
    grant: AccessGrant,
    *,
    product_id: str | None = None,
    purpose: str | None = None,
    usccs: Sequence[str] = (),
    subject_of: SubjectLookup | None = None,
) -> Iterator[None]:
    """Audit a refusal raised in the block, in a transaction of its own (the request's rolls
    back), then let it go on to become the problem response. The call is counted, served or refused.

    For the routes around a call that are no pipeline channel (a model's registration, a PSI
    session's setup and chunks); the pipeline's channels are audited by `pipeline.run_audited`."""
    try:
        with metrics.product_call(product_id):
            yield
    except DomainError as exc:
        with db.unit_of_work() as audit_session:
            if subject_of is not None:
                product_id, purpose = subject_of(audit_session)
            gates.record_refusal(
                audit_session,
                caller=grant.institution,
                product_id=product_id or "-",
                # a refused batch may hold anything: the audit keeps the first codes, cut to size
                usccs=[u[:32] for u in usccs[:1000]],
                purpose=purpose,
                error=exc,
            )
        raise


def _serve(
    session: Session,
    db: Database,
    grant: AccessGrant,
    *,
    product_id: str,
    usccs: Sequence[str],
    purpose: Purpose,
    single: bool,
    idempotency: Idempotency,
) -> JSONResponse:
    served = pipeline.run_audited(
        db,
        session,
        idempotency.call(grant),
        service.Lookup(product_id=product_id, usccs=usccs, purpose=purpose, single=single),
    )
    # commit the answer with its usage events and audit entry before a byte of it is sent
    session.commit()
    return JSONResponse(served.body, status_code=served.status, headers=served.headers)


@router.get("", response_model=list[ProductOut])
def my_products(session: SessionDep, grant: GrantDep) -> list[ProductOut]:
    """The catalog this caller may use: published products its token's scopes cover."""
    products = [
        p
        for p in product_service.search_catalog(session)
        if oauth_service.product_scope(p.id) in grant.scopes
    ]
    return product_service.catalog_entries(session, products=products)


@router.get("/{product_id}/enterprises/{uscc}", response_model=ProductAnswerOut)
def answer_one(
    product_id: ProductId,
    uscc: str,
    purpose: Annotated[Purpose, Query(description="why the institution asks")],
    request: Request,
    session: SessionDep,
    db: DbDep,
    grant: GrantDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Answer one enterprise (by USCC) from a product, for a stated purpose: billed, audited, masked per the
    caller's contract."""
    return _serve(
        session, db, grant,
        product_id=product_id, usccs=[uscc], purpose=purpose, single=True,
        idempotency=Idempotency.of(request, b"", idempotency_key),
    )


@router.post("/{product_id}/enterprises", response_model=BatchAnswerOut)
def answer_batch(
    product_id: ProductId,
    body: BatchIn,
    session: SessionDep,
    db: DbDep,
    grant: GrantDep,
    idempotency: IdempotencyDep,
) -> JSONResponse:
    """Answer a batch of enterprises from a product, for one purpose: all answered and billed, or none."""
    return _serve(
        session, db, grant,
        product_id=product_id, usccs=body.usccs, purpose=body.purpose, single=False, idempotency=idempotency,
    )
