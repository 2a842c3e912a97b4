"""The institution SDK: what a bank installs to call the zone's products.

It talks to the gateway over HTTP (and, for PSI jobs, SecretFlow's engine link) and imports
nothing of the server side but the pure `datazone.privacy` protocols (no database, no
FastAPI), so it installs and runs on the bank's machines on its own.
"""

from datazone.client.config import ClientConfig
from datazone.client.errors import BadUSCC, ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.psi import InvalidListedUSCCs, PsiJobFailed, PsiMatch, PsiResult, PsiStateError
from datazone.client.retry import RetryPolicy
from datazone.client.sdk import ZoneClient

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
