"""Subject consent (主体授权): an enterprise's consent to be queried by one institution, for
one purpose, registered by that institution with a reference to and a hash of the evidence.

`require_consents` runs on every request of a product that needs consent: one indexed
query for the whole batch (up to 1,000 USCCs), no cache.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from datazone import uscc as uscc_rules
from datazone.audit import service as audit_service
from datazone.consent.models import Consent
from datazone.consent.schemas import ConsentIn
from datazone.contract import service as contract_service
from datazone.errors import Conflict, Forbidden, InvalidSpec, NotFound
from datazone.principal.models import Principal
from datazone.principal.service import a_kind

MAX_BATCH = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ConsentRequired(Forbidden):
    type = "consent-required"
    title = "The enterprise's consent is required"


class InvalidConsent(InvalidSpec):
    type = "invalid-consent"
    title = "The consent is not valid"


# a consent file's header: one consent a line, as the API's body names them (products: empty for
# any of the contract's, or separated by ';' or spaces)
CSV_COLUMNS = ("uscc", "purpose", "products", "valid_from", "valid_to", "evidence_ref", "evidence_sha256")
_SHANGHAI = ZoneInfo("Asia/Shanghai")
_DATE_ALONE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class CsvProblem:
    """What is wrong with one line of a consent file (line 1 is the header)."""

    line: int
    column: str
    problem: str
    code: str = "value"  # "header": the header lacks columns; "empty": no line after it; "value": a cell


def _csv_time(text: str) -> datetime | None:
    """A date alone is its midnight in Shanghai (people write dates), or ISO 8601 (an offset is
    required: the schema refuses a time without one in its own words)."""
    if not text:
        return None
    try:
        if _DATE_ALONE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), time(), _SHANGHAI)
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give a date (2027-01-01, midnight in Shanghai) or ISO 8601 "
            "with an offset (2027-01-01T09:00:00+08:00)"
        ) from None


def read_consents_csv(text: str) -> tuple[list[ConsentIn], list[CsvProblem]]:
    """A consent file's lines as the API's consent bodies, and every problem of every line.

    The CLI and the console's upload both read files with this, so a file means the same
    wherever it is handed in; register_consents then checks them against the zone.
    """
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        rows = list(reader)
    except csv.Error as exc:
        return [], [CsvProblem(reader.line_num, "-", f"not a CSV: {exc}")]
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in CSV_COLUMNS if c not in header and c != "products"]
    if missing:
        return [], [CsvProblem(1, ", ".join(missing), f"no column {', '.join(missing)}: the header must name {','.join(CSV_COLUMNS)}", "header")]
    if not rows:
        return [], [CsvProblem(2, "-", "no consents: the file has a header alone", "empty")]
    items: list[ConsentIn] = []
    problems: list[CsvProblem] = []
    for line, row in enumerate(rows, start=2):
        values = {k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        products = [p for p in re.split(r"[;\s]+", values.get("products", "")) if p]
        body: dict[str, Any] = {c: values.get(c, "") for c in CSV_COLUMNS if c != "products"}
        body["products"] = products or None
        bad_times = []
        for column in ("valid_from", "valid_to"):
            try:
                body[column] = _csv_time(body[column])
            except ValueError as exc:
                bad_times.append(CsvProblem(line, column, str(exc)))
        if bad_times:
            problems += bad_times
            continue
        try:
            items.append(ConsentIn.model_validate(body))
        except ValidationError as exc:
            problems += [CsvProblem(line, ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
    return items, problems


def _now() -> datetime:
    return datetime.now(UTC)


def normalize_uscc(code: str) -> str:
    return code.strip().upper()


def _item_problems(item: ConsentIn, unknown: set[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if (why := uscc_rules.explain_invalid(normalize_uscc(item.uscc))) is not None:
        problems.append(("uscc", f"{item.uscc!r} is not a valid USCC: {why}"))
    if (why := contract_service.purpose_problem(item.purpose)) is not None:
        problems.append(("purpose", why))
    if item.products is not None:
        if not item.products:
            problems.append(
                ("products", "omit products (null) for any product of your contract, or name one")
            )
        problems.extend(
            ("products", f"no product {p!r} in the catalog") for p in item.products if p in unknown
        )
    if not item.evidence_ref.strip():
        problems.append(("evidence_ref", "say where the signed authorization letter is kept"))
    if not _SHA256.match(item.evidence_sha256):
        hint = " (use lowercase)" if _SHA256.match(item.evidence_sha256.lower()) else ""
        problems.append(
            ("evidence_sha256", f"the evidence hash must be the SHA-256 as 64 lowercase hex characters{hint}")
        )
    problems.extend(
        (e["location"], e["problem"])
        for e in contract_service.period_problems(item.valid_from, item.valid_to)
    )
    return problems


def register_consents(
    session: Session, *, institution: Principal, items: Sequence[ConsentIn]
) -> list[Consent]:
    """Register up to 1,000 consents: every item is checked first, and any problem in any
    item refuses the whole batch (422 listing each bad item by index), writing nothing."""
    if institution.kind != "institution":
        raise Forbidden(
            f"only an institution registers the consents of the enterprises it queries; you are {a_kind(institution.kind)}"
        )
    if not items:
        raise InvalidConsent("send at least one consent")
    if len(items) > MAX_BATCH:
        raise InvalidConsent(f"send at most {MAX_BATCH} consents at a time, not {len(items)}")
    products = {p for item in items for p in item.products or ()}
    unknown = set(contract_service.unknown_products(session, product_ids=sorted(products)))
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        for location, text in _item_problems(item, unknown):
            errors.append({"location": f"[{i}].{location}", "index": i, "problem": text})
    if errors:
        bad = len({e["index"] for e in errors})
        shown = "; ".join(f"{e['location']}: {e['problem']}" for e in errors[:10])
        raise InvalidConsent(
            f"{bad} of {len(items)} consents are not valid, none was registered: {shown}"
            + (f"; and {len(errors) - 10} more problems in errors" if len(errors) > 10 else ""),
            errors=errors,
        )
    consents = [
        Consent(
            institution_id=institution.id,
            uscc=normalize_uscc(item.uscc),
            purpose=item.purpose,
            products=list(dict.fromkeys(item.products)) if item.products is not None else None,
            valid_from=item.valid_from,
            valid_to=item.valid_to,
            evidence_ref=item.evidence_ref.strip(),
            evidence_sha256=item.evidence_sha256,
        )
        for item in items
    ]
    session.add_all(consents)
    session.flush()
    purposes = sorted({c.purpose for c in consents})
    audit_service.record(
        session,
        actor=institution,
        action="consent.register",
        object_type="consent",
        object_id=str(consents[0].id) if len(consents) == 1 else f"{len(consents)} consents",
        purpose=purposes[0] if len(purposes) == 1 else None,
        entities=[c.uscc for c in consents],
        institution_id=institution.id,
        detail={"consent_ids": [c.id for c in consents], "purposes": purposes},
    )
    return consents


def readable_by(viewer: Principal) -> sa.ColumnElement[bool]:
    """The consents the viewer may read, as a WHERE clause (every list and get of consents uses it):
    an institution its own; an operator auditor all; nobody else any."""
    if viewer.kind == "institution":
        return Consent.institution_id == viewer.id
    if viewer.kind == "operator" and "auditor" in viewer.roles:
        return sa.true()
    raise Forbidden(
        "consents are seen by the institution that registered them and by the operator's auditors; "
        f"you are {viewer.kind} {viewer.name}"
    )


def get_consent(session: Session, *, consent_id: int, viewer: Principal, for_update: bool = False) -> Consent:
    q = sa.select(Consent).where(Consent.id == consent_id, readable_by(viewer))
    if for_update:
        q = q.with_for_update().execution_options(populate_existing=True)
    consent = session.scalar(q)
    if consent is None:
        raise NotFound(f"no consent {consent_id}")
    return consent


def list_consents(
    session: Session,
    *,
    viewer: Principal,
    uscc: str | None = None,
    live: bool | None = None,
    at: datetime | None = None,
    institution_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
) -> list[Consent]:
    """Consents the viewer may see, oldest first, `limit` at a time after `after_id` (or the
    newest `limit`, newest first: what a person looking at a page wants to see)."""
    q = sa.select(Consent).where(readable_by(viewer))
    if institution_id is not None:
        q = q.where(Consent.institution_id == institution_id)
    if uscc is not None:
        q = q.where(Consent.uscc == normalize_uscc(uscc))
    if live is not None:
        when = at or _now()
        in_force = sa.and_(Consent.revoked_at.is_(None), Consent.valid_from <= when, Consent.valid_to > when)
        q = q.where(in_force if live else sa.not_(in_force))
    if after_id is not None:
        q = q.where(Consent.id > after_id)
    order = Consent.id.desc() if newest_first else Consent.id
    return list(session.scalars(q.order_by(order).limit(max(1, min(limit, MAX_BATCH)))))


def revoke_consent(session: Session, *, consent_id: int, by: Principal, reason: str) -> Consent:
    """Revoke one of the institution's own consents (404 for another's)."""
    if by.kind != "institution":
        raise Forbidden(f"only the institution that registered a consent revokes it; you are {a_kind(by.kind)}")
    if not reason or not reason.strip():
        raise InvalidConsent(f"say why consent {consent_id} is revoked: 'reason' is empty")
    consent = get_consent(session, consent_id=consent_id, viewer=by, for_update=True)
    if consent.revoked_at is not None:
        raise Conflict(
            f"consent {consent_id} was already revoked at {consent.revoked_at.isoformat()}",
            consent_id=consent_id,
        )
    consent.revoked_at = session.scalar(sa.select(sa.func.statement_timestamp()))
    consent.revoke_reason = reason.strip()
    session.flush()
    audit_service.record(
        session,
        actor=by,
        action="consent.revoke",
        object_type="consent",
        object_id=str(consent.id),
        reason=reason.strip(),
        purpose=consent.purpose,
        entities=[consent.uscc],
        institution_id=by.id,
    )
    return consent


def require_consents(
    session: Session,
    *,
    institution_id: int,
    usccs: Sequence[str],
    purpose: str,
    product_id: str,
    at: datetime,
) -> None:
    """Every USCC needs a live consent to this institution for this purpose and product at `at`,
    or `ConsentRequired` names the ones without (member `missing`). One query for the batch."""
    wanted = list(dict.fromkeys(usccs))
    if not wanted:
        return
    found = set(
        session.scalars(
            sa.select(Consent.uscc)
            .distinct()
            .where(
                Consent.institution_id == institution_id,
                Consent.uscc == sa.any_(sa.literal(wanted, sa.ARRAY(sa.String))),
                Consent.purpose == purpose,
                Consent.revoked_at.is_(None),
                Consent.valid_from <= at,
                Consent.valid_to > at,
                sa.or_(Consent.products.is_(None), sa.literal(product_id) == sa.any_(Consent.products)),
            )
        )
    )
    missing = [u for u in wanted if u not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConsentRequired(
            f"product {product_id} needs the enterprise's consent for {purpose}; none is live for {shown}. "
            "Register the signed authorization with POST /v1/consents "
            "(uscc, purpose, products, valid_from, valid_to, evidence_ref, evidence_sha256)",
            missing=missing,
            purpose=purpose,
            product=product_id,
        )
