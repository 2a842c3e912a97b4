"""People who use the console: accounts of an operator, a department or an institution, and their sessions."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from datazone.db import Base

# account.principal_id references principal.id: that table must be in the metadata wherever this one is
from datazone.principal import models as _principal_models  # noqa: F401


class Account(Base):
    """A person acting for a principal (the operator, a department, an institution), with roles of its own.

    The password is an Argon2id hash; the TOTP secret is sealed (Fernet under the deployment secret)
    because it must be read back to check a code. `totp_last_step` refuses a code used once already.
    """

    __tablename__ = "console_account"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=True)
    principal_id: Mapped[int] = mapped_column(sa.ForeignKey("principal.id", ondelete="CASCADE"), index=True)
    login: Mapped[str] = mapped_column(sa.String(64), unique=True)
    display_name: Mapped[str] = mapped_column(sa.Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(sa.Text), default=list)
    password_hash: Mapped[str] = mapped_column(sa.Text)
    totp_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    failed_logins: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class ConsoleSession(Base):
    """A signed-in browser. Only SHA-256 of the cookie's 256-bit secret is stored.

    `stage` is 'password' after the password alone, 'enroll' when the person must first set up a
    second factor, and 'signed-in' once both factors passed; only 'signed-in' opens a page.
    """

    __tablename__ = "console_session"
    __table_args__ = (
        sa.CheckConstraint("stage IN ('password', 'enroll', 'signed-in')", name="ck_console_session_stage"),
    )

    id_sha256: Mapped[bytes] = mapped_column(sa.LargeBinary(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        sa.ForeignKey("console_account.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    client_address: Mapped[str | None] = mapped_column(sa.Text)
