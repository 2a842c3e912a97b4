"""The institution SDK: what a bank installs to call the zone's products.

It talks to the gateway over HTTP only and imports nothing of the server side (no
database, no FastAPI), so it installs and runs on the bank's machines on its own.
"""

from datazone.client.config import ClientConfig
from datazone.client.errors import BadUSCC, ConfigError, InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.retry import RetryPolicy
from datazone.client.sdk import ZoneClient

__all__ = [
    "BadUSCC",
    "ClientConfig",
    "ConfigError",
    "InvalidUSCCs",
    "RetryPolicy",
    "ZoneClient",
    "ZoneError",
    "ZoneUnreachable",
]
