"""Principals of the control plane and their bearer keys.

A key reads `dzk_<id>_<secret>`; only SHA-256(secret) is stored, and the check is
a constant-time comparison, so neither the table nor timing gives the secret away.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datazone.errors import Conflict, Forbidden, NotFound, Unauthorized
from datazone.principal.models import ApiKey, Principal

KINDS = ("operator", "department", "institution")
# Operator staff split their powers (separation of duties): curators shape the catalog,
# reviewers admit suppliers, data and models, auditors read the trail and usage.
OPERATOR_ROLES = ("curator", "reviewer", "auditor")


def shell_actor() -> str:
    """Who a change made from the operator's shell is recorded as: no principal stands behind
    the CLI (it holds the database credentials), so the transition names the OS account."""
    import getpass

    return f"cli:{getpass.getuser()}"


def require_role(by: Principal, role: str, what: str) -> None:
    """Refuse (403) unless `by` is an operator holding `role`; `what` says what was attempted."""
    if by.kind != "operator" or role not in by.roles:
        raise Forbidden(f"only an operator with the {role} role may {what}; you are {by.kind} {by.name}")


def a_kind(kind: str) -> str:
    """'an institution', 'a department': for messages that tell a principal what it is."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


@dataclass(frozen=True)
class IssuedKey:
    principal: Principal
    key_id: str
    token: str  # shown once, never stored


def create_principal(
    session: Session, *, kind: str, name: str, roles: list[str] | None = None, supplier_id: str | None = None
) -> Principal:
    if kind not in KINDS:
        raise Conflict(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    roles = sorted(set(roles or []))
    if kind == "operator":
        unknown = [r for r in roles if r not in OPERATOR_ROLES]
        if unknown or not roles:
            raise Conflict(
                f"an operator needs one or more roles of {', '.join(OPERATOR_ROLES)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
    elif roles:
        raise Conflict(f"a {kind} has no roles; its powers follow from its kind")
    if kind == "department" and not supplier_id:
        raise Conflict("a department principal must name its department (supplier id)")
    if kind != "department" and supplier_id:
        raise Conflict(f"only a department principal names a department, not a {kind}")
    if session.scalar(sa.select(Principal).where(Principal.name == name)) is not None:
        raise Conflict(f"a principal named {name!r} exists already")
    p = Principal(kind=kind, name=name, roles=roles, supplier_id=supplier_id)
    session.add(p)
    session.flush()
    return p


def find_principal(session: Session, *, name: str) -> Principal | None:
    return session.scalar(sa.select(Principal).where(Principal.name == name))


def named_principal(session: Session, *, name: str) -> Principal:
    """The principal of that name, or NotFound saying how to list them (for names typed at the shell)."""
    principal = find_principal(session, name=name)
    if principal is None:
        raise NotFound(f"no principal named {name!r}; `datazone principal list` shows them")
    return principal


def acting_principal(session: Session, *, name: str) -> Principal:
    """The principal a shell command acts as (`--as NAME`): it must not be suspended, as its key
    would then be refused by the API; the service it acts through checks its kind and roles."""
    return require_active(named_principal(session, name=name))


def get_principal(session: Session, *, principal_id: int) -> Principal:
    principal = session.get(Principal, principal_id)
    if principal is None:
        raise NotFound(f"no principal {principal_id}")
    return principal


def list_principals(session: Session, *, kind: str | None = None) -> list[Principal]:
    q = sa.select(Principal).order_by(Principal.id)
    if kind:
        q = q.where(Principal.kind == kind)
    return list(session.scalars(q))


def issue_key(session: Session, *, principal: Principal) -> IssuedKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(id=key_id, principal_id=principal.id, secret_sha256=hashlib.sha256(secret.encode()).digest())
    )
    session.flush()
    return IssuedKey(principal=principal, key_id=key_id, token=f"dzk_{key_id}_{secret}")


class Suspended(Forbidden):
    type = "principal-suspended"
    title = "The principal is suspended"


def require_active(principal: Principal) -> Principal:
    if principal.suspended_at is not None:
        raise Suspended(
            f"{principal.kind} {principal.name!r} is suspended since {principal.suspended_at.isoformat()}"
            + (f": {principal.suspend_reason}" if principal.suspend_reason else ""),
            principal=principal.name,
        )
    return principal


def suspend_principal(session: Session, *, name: str, reason: str) -> Principal:
    """Suspend a principal: every key, client and token of it is refused from the next request."""
    if not reason.strip():
        raise Conflict("say why the principal is suspended: the reason is empty")
    principal = session.scalar(sa.select(Principal).where(Principal.name == name).with_for_update())
    if principal is None:
        raise NotFound(f"no principal named {name!r}")
    if principal.suspended_at is not None:
        raise Conflict(f"{principal.name!r} is already suspended since {principal.suspended_at.isoformat()}")
    principal.suspended_at = sa.func.now()
    principal.suspend_reason = reason.strip()
    session.flush()
    session.refresh(principal)
    return principal


def reinstate_principal(session: Session, *, name: str) -> Principal:
    principal = session.scalar(sa.select(Principal).where(Principal.name == name).with_for_update())
    if principal is None:
        raise NotFound(f"no principal named {name!r}")
    if principal.suspended_at is None:
        raise Conflict(f"{principal.name!r} is not suspended")
    principal.suspended_at = None
    principal.suspend_reason = None
    session.flush()
    return principal


def list_keys(session: Session, *, principal: Principal) -> list[ApiKey]:
    return list(session.scalars(sa.select(ApiKey).where(ApiKey.principal_id == principal.id).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, key_id: str) -> ApiKey:
    """Revoke one key: the next request with it is refused (keys are looked up on every request)."""
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"no key {key_id!r}; `datazone principal list` shows each principal's key ids")
    if key.revoked_at is not None:
        raise Conflict(f"key {key_id!r} was revoked at {key.revoked_at.isoformat()}")
    key.revoked_at = sa.func.now()
    session.flush()
    return key


def authenticate(session: Session, *, token: str) -> Principal:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "dzk":
        raise Unauthorized("the bearer token is not a datazone key")
    key = session.get(ApiKey, parts[1])
    digest = hashlib.sha256(parts[2].encode()).digest()
    # compare even when the key is unknown, so timing does not tell which ids exist
    expected = key.secret_sha256 if key is not None else b"\0" * 32
    if not hmac.compare_digest(digest, expected) or key is None or key.revoked_at is not None:
        raise Unauthorized("the bearer token is unknown or revoked")
    principal = session.get(Principal, key.principal_id)
    assert principal is not None
    return require_active(principal)
