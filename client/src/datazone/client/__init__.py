"""The institution SDK: what a bank installs to call the zone's products.

It talks to the gateway over HTTP (and, for PSI jobs, SecretFlow's engine link) and imports
nothing of the server side but the pure `datazone.privacy` protocols (no database, no
FastAPI), so it installs and runs on the bank's machines on its own.

The names below load their module on first use (PEP 562), so `import datazone.client` and the
`datazone-client` command's start-up pay for httpx, cryptography and NumPy only once a
command or a caller needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datazone.client.config import ClientConfig
    from datazone.client.errors import BadUSCC, ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
    from datazone.client.psi import InvalidListedUSCCs, PsiJobFailed, PsiMatch, PsiResult, PsiStateError
    from datazone.client.retry import RetryPolicy
    from datazone.client.sdk import ZoneClient

_EXPORTED_FROM = {
    "ClientConfig": "datazone.client.config",
    "BadUSCC": "datazone.client.errors",
    "ConfigError": "datazone.client.errors",
    "InvalidUSCCs": "datazone.client.errors",
    "ZoneError": "datazone.client.errors",
    "ZoneUnreachable": "datazone.client.errors",
    "InvalidListedUSCCs": "datazone.client.psi",
    "PsiJobFailed": "datazone.client.psi",
    "PsiMatch": "datazone.client.psi",
    "PsiResult": "datazone.client.psi",
    "PsiStateError": "datazone.client.psi",
    "RetryPolicy": "datazone.client.retry",
    "ZoneClient": "datazone.client.sdk",
}

__all__ = [
    "BadUSCC",
    "ClientConfig",
    "ConfigError",
    "InvalidListedUSCCs",
    "InvalidUSCCs",
    "PsiJobFailed",
    "PsiMatch",
    "PsiResult",
    "PsiStateError",
    "RetryPolicy",
    "ZoneClient",
    "ZoneError",
    "ZoneUnreachable",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTED_FROM:
        # not ours: `from datazone.client import scoring` goes on to import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTED_FROM[name]), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
