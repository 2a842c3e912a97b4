"""Secrets the zone keeps encrypted at rest (token-signing keys, PSI keys), all sealed under
the deployment's one secret.

`settings.signing_key_secret` is that secret, shared by every replica; with none configured
one is generated into `home/signing.secret` (mode 0600), which is enough on one machine.
Each use derives its own Fernet key (HKDF-SHA256, a distinct `info`), so a leak of one
derived key opens nothing else.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datazone.config import Settings

_SECRET_FILE = "signing.secret"  # noqa: S105 - a file name, not a secret


def deployment_secret(settings: Settings) -> bytes:
    if settings.signing_key_secret:
        return settings.signing_key_secret.encode()
    path = Path(settings.home) / _SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together do not write two different secrets
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    value = secrets.token_urlsafe(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def sealer(settings: Settings, *, info: bytes) -> Fernet:
    """The Fernet key for one kind of secret (`info` names it)."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        deployment_secret(settings)
    )
    return Fernet(base64.urlsafe_b64encode(derived))
