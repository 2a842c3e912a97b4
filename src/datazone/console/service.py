"""People in the console: accounts, signing in with a password and a TOTP code, sessions, lock-out.

An account is a person acting for a principal (the operator, a department, an institution);
what it may do is what its principal may do, narrowed by its own roles. Every sign-in, failure
and change is audited with the person's login (`detail.account`), and pages tag their unit of
work the same way (`act_as`), so what a person does through a page is recorded with their login.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from datazone import keyring
from datazone.audit import service as audit
from datazone.config import Settings
from datazone.console.models import Account, ConsoleSession
from datazone.errors import Conflict, DomainError, Forbidden, InvalidSpec, NotFound
from datazone.principal import service as principal_service
from datazone.principal.models import Principal

ROLES_BY_KIND: dict[str, tuple[str, ...]] = {
    "operator": principal_service.OPERATOR_ROLES,
    "department": ("officer",),
    "institution": ("admin", "analyst"),
}
# 等保三级 asks two factors of administrators: the operator's and the departments' people
SECOND_FACTOR_REQUIRED = ("operator", "department")
LOGIN_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 256  # Argon2 takes any length; a bound keeps a huge form field from costing work

# Argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: 64 MiB, 3 passes)
_hasher = PasswordHasher()
# checked against when the login is unknown, so the answer takes as long as for a known one
_UNKNOWN_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInRefused(DomainError):
    """The console's sign-in was refused: the login, the password or the code is wrong (which one is not said)."""

    status = 401
    type = "sign-in-refused"
    title = "Sign-in refused"


class AccountLocked(DomainError):
    """Too many failed sign-ins in a row: the account is locked until the time given, or until an operator unlocks it."""

    status = 429
    type = "account-locked"
    title = "The account is locked after repeated failures"


class SignInRequired(DomainError):
    """The console page needs a signed-in person: no session, or it ended or timed out."""

    status = 401
    type = "sign-in-required"
    title = "Sign in to the console"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Person:
    """A signed-in person: the account, the principal it acts for, and its session's secret (for CSRF)."""

    account: Account
    principal: Principal
    session_secret: str

    @property
    def kind(self) -> str:
        return self.principal.kind

    def has_role(self, *roles: str) -> bool:
        return bool(set(roles) & set(self.account.roles))

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.session_secret)


@dataclass(frozen=True)
class SignInStep:
    """What a correct password (or code) leads to: the cookie's secret and the stage reached."""

    secret: str
    stage: str
    account: Account
    kind: str  # the principal's: which portal the person lands in


@dataclass(frozen=True)
class Enrollment:
    secret: str  # base32, shown once to the person setting up their authenticator
    uri: str  # otpauth:// for an authenticator app's QR code


def csrf_token(session_secret: str) -> str:
    """The session's form token: derived from its secret, so nothing more is stored (synchronizer token)."""
    return hmac.new(session_secret.encode(), b"console-csrf", hashlib.sha256).hexdigest()


def check_csrf(session_secret: str, presented: str | None) -> None:
    if not presented or not hmac.compare_digest(csrf_token(session_secret), presented):
        raise Forbidden(
            "the form's security token is missing or stale; reload the page and send it again", check="csrf"
        )


def _sealer(settings: Settings) -> Fernet:
    return keyring.sealer(settings, info=b"datazone console totp")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def act_as(session: Session, account: Account) -> None:
    """Record every audit entry of this unit of work with the person's login."""
    session.info[audit.ACTING_ACCOUNT] = account.login


def _audit(
    session: Session,
    *,
    account: Account | None,
    principal: Principal | None,
    action: str,
    outcome: str = "ok",
    reason: str | None = None,
    login: str | None = None,
    shell: str | None = None,
    **detail: object,
) -> None:
    """One audit entry about an account; `principal` acts (None: the console itself, or `shell`).

    `detail.account` names the person who acted: the signed-in person managing an account (audit.record
    adds them), else the person signing in themselves; from the shell, nobody.
    """
    subject = account.login if account is not None else (login or "?")
    if session.info.get(audit.ACTING_ACCOUNT) is None and shell is None:
        detail = {"account": subject, **detail}
    audit.record(
        session,
        actor=principal,
        actor_name=None if principal else (shell or "console"),
        action=action,
        object_type="account",
        object_id=subject,
        outcome=outcome,
        reason=reason,
        detail=detail,
    )


def password_problems(password: str, *, login: str) -> list[str]:
    problems = []
    if len(password) < MIN_PASSWORD:
        problems.append(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        problems.append(f"a password has at most {MAX_PASSWORD} characters")
    if login and login in password.lower():
        problems.append("a password must not contain the login")
    return problems


def create_account(
    session: Session,
    *,
    principal_name: str,
    login: str,
    display_name: str,
    roles: list[str],
    password: str,
    created_by: str,
    by: Principal | None = None,
) -> Account:
    """Create a person's account. `by` is the operator creating it (None: the operator's shell)."""
    if by is not None:
        principal_service.require_role(by, "reviewer", "create console accounts")
    principal = principal_service.find_principal(session, name=principal_name)
    errors: list[dict[str, str]] = []
    if principal is None:
        raise NotFound(f"no principal named {principal_name!r}; `datazone principal list` shows them")
    allowed = ROLES_BY_KIND[principal.kind]
    roles = sorted(set(roles))
    if not LOGIN_PATTERN.fullmatch(login):
        errors.append(
            {
                "location": "login",
                "problem": "3 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            }
        )
    elif session.scalar(sa.select(Account.id).where(Account.login == login)) is not None:
        errors.append({"location": "login", "problem": f"the login {login!r} is taken"})
    if not display_name.strip() or len(display_name) > 200:
        errors.append({"location": "display_name", "problem": "a name of 1 to 200 characters"})
    unknown = [r for r in roles if r not in allowed]
    if not roles or unknown:
        errors.append(
            {
                "location": "roles",
                "problem": f"{principal_service.a_kind(principal.kind)}'s people take one or more of "
                f"{', '.join(allowed)}" + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
            }
        )
    elif principal.kind == "operator" and set(roles) - set(principal.roles):
        errors.append(
            {
                "location": "roles",
                "problem": f"the operator {principal.name!r} holds only {', '.join(principal.roles)}",
            }
        )
    errors += [{"location": "password", "problem": p} for p in password_problems(password, login=login)]
    if errors:
        raise InvalidSpec("; ".join(f"{e['location']}: {e['problem']}" for e in errors), errors=errors)
    account = Account(
        principal_id=principal.id,
        login=login,
        display_name=display_name.strip(),
        roles=roles,
        password_hash=_hasher.hash(password),
        created_by=created_by,
    )
    session.add(account)
    session.flush()
    _audit(
        session,
        account=account,
        principal=by,
        shell=None if by is not None else created_by,
        action="console.account.create",
        roles=roles,
        acts_for=principal.name,
    )
    return account


def get_account(session: Session, *, login: str) -> Account:
    account = session.scalar(sa.select(Account).where(Account.login == login))
    if account is None:
        raise NotFound(f"no console account {login!r}")
    return account


def list_accounts(session: Session, *, viewer: Principal) -> list[tuple[Account, Principal]]:
    """The operator sees every account; anyone else the accounts of their own principal."""
    q = (
        sa.select(Account, Principal)
        .join(Principal, Principal.id == Account.principal_id)
        .order_by(Account.login)
    )
    if viewer.kind != "operator":
        q = q.where(Account.principal_id == viewer.id)
    return [(a, p) for a, p in session.execute(q).all()]


def second_factor_required(principal: Principal) -> bool:
    return principal.kind in SECOND_FACTOR_REQUIRED


def sign_in(
    session: Session, *, login: str, password: str, settings: Settings, client_address: str | None = None
) -> SignInStep:
    """Check a password. Past `console_lockout_failures` failures the account is locked for a while.

    The same refusal for an unknown login and a wrong password, and the same work (one Argon2
    verification), so neither the words nor the time tell which logins exist.
    """
    now = utcnow()
    account = session.scalar(sa.select(Account).where(Account.login == login[:64]).with_for_update())
    principal = session.get(Principal, account.principal_id) if account is not None else None
    try:
        _hasher.verify(
            account.password_hash if account is not None else _UNKNOWN_HASH, password[:MAX_PASSWORD]
        )
        password_ok = account is not None
    except (VerificationError, InvalidHashError):
        password_ok = False
    if account is None or principal is None:
        _audit(
            session,
            account=None,
            principal=None,
            action="console.sign-in",
            outcome="refused",
            reason="unknown login",
            login=login[:64],
        )
        raise SignInRefused("the login or the password is wrong")
    if account.locked_until is not None and account.locked_until > now:
        _audit(
            session,
            account=account,
            principal=principal,
            action="console.sign-in",
            outcome="refused",
            reason="locked",
        )
        raise AccountLocked(
            f"too many failed sign-ins: try again after {account.locked_until.isoformat(timespec='minutes')}, "
            "or ask the operator to unlock the account",
            headers={"Retry-After": str(max(1, int((account.locked_until - now).total_seconds())))},
        )
    if account.disabled_at is not None or principal.suspended_at is not None:
        _audit(
            session,
            account=account,
            principal=principal,
            action="console.sign-in",
            outcome="refused",
            reason="disabled" if account.disabled_at else "principal suspended",
        )
        raise SignInRefused("this account is disabled; ask the operator")
    if not password_ok:
        account.failed_logins += 1
        locked = account.failed_logins >= settings.console_lockout_failures
        if locked:
            account.locked_until = now + timedelta(minutes=settings.console_lockout_minutes)
            account.failed_logins = 0
        _audit(
            session,
            account=account,
            principal=principal,
            action="console.sign-in",
            outcome="refused",
            reason="wrong password" + ("; account locked" if locked else ""),
        )
        session.flush()
        raise SignInRefused("the login or the password is wrong")
    if account.totp_confirmed_at is not None:
        stage = "password"
    elif second_factor_required(principal):
        stage = "enroll"
    else:
        stage = "signed-in"
    if stage == "signed-in":
        account.failed_logins = 0
        _audit(session, account=account, principal=principal, action="console.sign-in")
    return SignInStep(
        secret=_open_session(session, account, stage=stage, client_address=client_address, now=now),
        stage=stage,
        account=account,
        kind=principal.kind,
    )


def _open_session(
    session: Session, account: Account, *, stage: str, client_address: str | None, now: datetime
) -> str:
    secret = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id_sha256=_digest(secret),
            account_id=account.id,
            stage=stage,
            created_at=now,
            last_seen_at=now,
            client_address=(client_address or "")[:64] or None,
        )
    )
    session.flush()
    return secret


def _live_session(
    session: Session, *, secret: str | None, settings: Settings, for_update: bool = False
) -> tuple[ConsoleSession, Account, Principal]:
    if not secret or len(secret) > 128:
        raise SignInRequired("sign in first")
    q = (
        sa.select(ConsoleSession, Account, Principal)
        .join(Account, Account.id == ConsoleSession.account_id)
        .join(Principal, Principal.id == Account.principal_id)
        .where(ConsoleSession.id_sha256 == _digest(secret), ConsoleSession.ended_at.is_(None))
    )
    if for_update:
        q = q.with_for_update(of=[ConsoleSession, Account])
    row = session.execute(q).first()
    if row is None:
        raise SignInRequired("your session has ended; sign in again")
    console_session, account, principal = row
    now = utcnow()
    idle = timedelta(minutes=settings.console_idle_minutes)
    absolute = timedelta(hours=settings.console_absolute_hours)
    if now - console_session.last_seen_at > idle or now - console_session.created_at > absolute:
        console_session.ended_at = now
        session.flush()
        raise SignInRequired("your session timed out; sign in again")
    if account.disabled_at is not None or principal.suspended_at is not None:
        console_session.ended_at = now
        session.flush()
        raise SignInRequired("this account is disabled; ask the operator")
    return console_session, account, principal


def _code_step(totp: pyotp.TOTP, code: str, now: datetime) -> int | None:
    """The time step a code belongs to (the current one or one either side, for clock drift), or None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    step = int(now.timestamp()) // totp.interval
    for candidate in (step, step - 1, step + 1):
        if hmac.compare_digest(totp.at(candidate * totp.interval), code):
            return candidate
    return None


def _second_factor(
    session: Session, account: Account, principal: Principal, code: str, settings: Settings
) -> None:
    """Check a TOTP code: each code is accepted once; wrong codes count toward the lock-out."""
    now = utcnow()
    assert account.totp_sealed is not None
    totp = pyotp.TOTP(_sealer(settings).decrypt(account.totp_sealed).decode())
    step = _code_step(totp, code, now)
    if step is None or (account.totp_last_step is not None and step <= account.totp_last_step):
        account.failed_logins += 1
        locked = account.failed_logins >= settings.console_lockout_failures
        if locked:
            account.locked_until = now + timedelta(minutes=settings.console_lockout_minutes)
            account.failed_logins = 0
        _audit(
            session,
            account=account,
            principal=principal,
            action="console.second-factor",
            outcome="refused",
            reason=("code used already" if step is not None else "wrong code")
            + ("; account locked" if locked else ""),
        )
        session.flush()
        raise SignInRefused("the code is wrong or was used already; wait for the next one")
    account.totp_last_step = step
    account.failed_logins = 0


def confirm_code(session: Session, *, secret: str | None, code: str, settings: Settings) -> Account:
    """The second step of signing in: a TOTP code after the password."""
    console_session, account, principal = _live_session(
        session, secret=secret, settings=settings, for_update=True
    )
    if console_session.stage != "password":
        raise SignInRequired("sign in with your password first")
    if account.locked_until is not None and account.locked_until > utcnow():
        raise AccountLocked("too many failed attempts: the account is locked for now; ask the operator")
    _second_factor(session, account, principal, code, settings)
    console_session.stage = "signed-in"
    console_session.last_seen_at = utcnow()
    _audit(session, account=account, principal=principal, action="console.sign-in", second_factor="totp")
    return account


def begin_enrollment(session: Session, *, secret: str | None, settings: Settings) -> Enrollment:
    """A new TOTP secret for a person who has none confirmed (kept sealed until a code confirms it)."""
    console_session, account, _ = _live_session(session, secret=secret, settings=settings, for_update=True)
    if console_session.stage != "enroll":
        raise Conflict("your second factor is set up already; an operator can reset it")
    totp_secret = pyotp.random_base32()
    account.totp_sealed = _sealer(settings).encrypt(totp_secret.encode())
    session.flush()
    uri = pyotp.TOTP(totp_secret).provisioning_uri(name=account.login, issuer_name="datazone")
    return Enrollment(secret=totp_secret, uri=uri)


def confirm_enrollment(session: Session, *, secret: str | None, code: str, settings: Settings) -> Account:
    console_session, account, principal = _live_session(
        session, secret=secret, settings=settings, for_update=True
    )
    if console_session.stage != "enroll" or account.totp_sealed is None:
        raise Conflict("start setting up the second factor first")
    _second_factor(session, account, principal, code, settings)
    account.totp_confirmed_at = utcnow()
    console_session.stage = "signed-in"
    _audit(session, account=account, principal=principal, action="console.second-factor.enroll")
    _audit(session, account=account, principal=principal, action="console.sign-in", second_factor="totp")
    return account


def stage_of(session: Session, *, secret: str | None, settings: Settings) -> str:
    console_session, _, _ = _live_session(session, secret=secret, settings=settings)
    return console_session.stage


def resume(session: Session, *, secret: str | None, settings: Settings) -> Person:
    """The person behind a session cookie, once both factors passed; their later audit entries name them."""
    console_session, account, principal = _live_session(session, secret=secret, settings=settings)
    if console_session.stage != "signed-in":
        raise SignInRequired("finish signing in first")
    now = utcnow()
    # a write per page would be a write per click: a minute's precision is enough for the idle time-out
    if now - console_session.last_seen_at > timedelta(seconds=60):
        console_session.last_seen_at = now
    act_as(session, account)
    assert secret is not None
    return Person(account=account, principal=principal, session_secret=secret)


def sign_out(session: Session, *, secret: str | None) -> None:
    if not secret:
        return
    row = session.execute(
        sa.select(ConsoleSession, Account, Principal)
        .join(Account, Account.id == ConsoleSession.account_id)
        .join(Principal, Principal.id == Account.principal_id)
        .where(ConsoleSession.id_sha256 == _digest(secret), ConsoleSession.ended_at.is_(None))
    ).first()
    if row is None:
        return
    console_session, account, principal = row
    console_session.ended_at = utcnow()
    _audit(session, account=account, principal=principal, action="console.sign-out")


def _manageable(session: Session, *, login: str, by: Person | None) -> Account:
    """An account an operator's reviewer (or the operator's shell, `by=None`) may manage."""
    if by is not None:
        if not (by.kind == "operator" and by.has_role("reviewer")):
            raise Forbidden("only an operator's reviewer may manage other people's accounts", check="role")
        principal_service.require_role(by.principal, "reviewer", "manage console accounts")
    account = session.scalar(sa.select(Account).where(Account.login == login).with_for_update())
    if account is None:
        raise NotFound(f"no console account {login!r}")
    return account


def _end_sessions(session: Session, account: Account) -> None:
    session.execute(
        sa.update(ConsoleSession)
        .where(ConsoleSession.account_id == account.id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )


def _audit_management(session: Session, account: Account, action: str, by: Person | None) -> None:
    """An account managed by a reviewer in the console, or from the operator's shell (`by=None`)."""
    if by is None:
        _audit(session, account=account, principal=None, shell=principal_service.shell_actor(), action=action)
    else:
        _audit(session, account=account, principal=by.principal, action=action, by=by.account.login)


def reset_second_factor(session: Session, *, login: str, by: Person | None) -> Account:
    """An operator clears a person's second factor: they set up a new one at their next sign-in,
    and every session of theirs ends. Nobody resets their own: a stolen password alone must not
    let anyone replace the factor."""
    account = _manageable(session, login=login, by=by)
    if by is not None and account.id == by.account.id:
        raise Forbidden("you cannot reset your own second factor; ask another operator")
    account.totp_sealed = None
    account.totp_confirmed_at = None
    account.totp_last_step = None
    _end_sessions(session, account)
    _audit_management(session, account, "console.second-factor.reset", by)
    return account


def unlock(session: Session, *, login: str, by: Person | None) -> Account:
    account = _manageable(session, login=login, by=by)
    account.locked_until = None
    account.failed_logins = 0
    _audit_management(session, account, "console.account.unlock", by)
    return account


def set_disabled(session: Session, *, login: str, disabled: bool, by: Person | None) -> Account:
    account = _manageable(session, login=login, by=by)
    if by is not None and account.id == by.account.id:
        raise Forbidden("you cannot disable your own account")
    account.disabled_at = utcnow() if disabled else None
    if disabled:
        _end_sessions(session, account)
    action = "console.account.disable" if disabled else "console.account.enable"
    _audit_management(session, account, action, by)
    return account


def reset_password(session: Session, *, login: str, password: str, by: Person | None) -> Account:
    """An operator sets a new initial password for a person who lost theirs; their sessions end."""
    account = _manageable(session, login=login, by=by)
    problems = password_problems(password, login=account.login)
    if problems:
        raise InvalidSpec(
            "; ".join(problems), errors=[{"location": "password", "problem": p} for p in problems]
        )
    account.password_hash = _hasher.hash(password)
    account.failed_logins = 0
    account.locked_until = None
    _end_sessions(session, account)
    _audit_management(session, account, "console.password.reset", by)
    return account


def change_password(session: Session, *, person: Person, current: str, new: str) -> None:
    account = session.get(Account, person.account.id, with_for_update=True)
    assert account is not None
    try:
        _hasher.verify(account.password_hash, current[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        _audit(
            session,
            account=account,
            principal=person.principal,
            action="console.password.change",
            outcome="refused",
            reason="wrong current password",
        )
        raise Forbidden("the current password is wrong") from None
    problems = password_problems(new, login=account.login)
    if problems:
        raise InvalidSpec(
            "; ".join(problems), errors=[{"location": "password", "problem": p} for p in problems]
        )
    account.password_hash = _hasher.hash(new)
    _audit(session, account=account, principal=person.principal, action="console.password.change")


def set_totp_secret(session: Session, *, login: str, totp_secret: str, settings: Settings) -> Account:
    """Give an account a confirmed TOTP secret from the operator's shell (the demo's people; a migration
    from another system). The secret must be base32, as authenticator apps take it."""
    account = get_account(session, login=login)
    try:
        pyotp.TOTP(totp_secret).now()
    except Exception as exc:  # binascii.Error, ValueError: what pyotp raises for a bad secret
        raise InvalidSpec(f"the TOTP secret is not base32: {type(exc).__name__}") from None
    account.totp_sealed = _sealer(settings).encrypt(totp_secret.encode())
    account.totp_confirmed_at = utcnow()
    account.totp_last_step = None
    session.flush()
    return account
