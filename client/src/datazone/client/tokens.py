"""Access tokens for the product API: fetched with the client credentials grant, cached, refreshed.

One token serves every thread of a client. It is fetched on first use, reused until
shortly before `expires_in` runs out (30 s, or half the lifetime for very short-lived
tokens), and fetched anew when the gateway says it is no longer valid (revoked, or the
signing key rotated away). Expiry is kept on the monotonic clock, so a wrong wall clock
on the bank's machine cannot keep a dead token in use.

The JOSE and signing libraries are imported only for a private-key client, for start-up
time (a client with a secret, the common case, never loads them), not to dodge a cycle.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from datazone.client.config import ClientConfig
from datazone.client.errors import ConfigError, ZoneError, ZoneUnreachable
from datazone.client.retry import RetryPolicy, wait_before_retry

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, OKPKey, RSAKey

UTC = timezone.utc  # datetime.UTC is Python 3.11+
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
METADATA_PATH = "/.well-known/oauth-authorization-server"
REFRESH_MARGIN_SECONDS = 30.0
ASSERTION_SECONDS = 120  # a client assertion is used once; a short life limits what a leaked one is worth
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True)
class AccessToken:
    value: str = field(repr=False)
    scope: str
    expires_in: float
    obtained_at: float  # time.monotonic() when the answer arrived
    obtained_wall: datetime

    @property
    def scopes(self) -> list[str]:
        return sorted(self.scope.split())

    @property
    def expires_at(self) -> datetime:
        return self.obtained_wall + timedelta(seconds=self.expires_in)

    def usable(self, now: float) -> bool:
        margin = min(REFRESH_MARGIN_SECONDS, self.expires_in / 2)
        return now < self.obtained_at + self.expires_in - margin

    def claims(self) -> dict[str, Any]:
        """The JWT's claims, decoded WITHOUT verification: for display only, never for a decision."""
        try:
            payload = self.value.split(".")[1]
            decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            return {}
        return decoded if isinstance(decoded, dict) else {}


def signing_key(pem: str) -> tuple[ECKey | RSAKey | OKPKey, str]:
    """The JOSE key and algorithm for a PEM private key (EC P-256/384/521, RSA, Ed25519)."""
    # here, not at the top, for start-up time: a client with a secret never needs them
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    try:
        key = load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the private key cannot be read (an unencrypted PEM private key is needed): {exc}"
        ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is None:
            raise ConfigError(f"EC curve {key.curve.name} is not usable for JWT; use P-256")
        return ECKey.import_key(pem), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return RSAKey.import_key(pem), "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(pem), "EdDSA"
    raise ConfigError(f"unsupported private key type {type(key).__name__}; use an EC P-256 key")


def basic_authorization(client_id: str, secret: str) -> str:
    # RFC 6749 2.3.1: id and secret are form-urlencoded before they are joined and encoded
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class TokenSource:
    """The client's current access token; safe to share between threads."""

    def __init__(
        self,
        config: ClientConfig,
        http: httpx.Client,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._http = http
        self._policy = policy
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self._key = signing_key(config.private_key_pem) if config.private_key_pem else None
        self._assertion_audience: str | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never appear in an error: the secret and the current token."""
        held = [self._config.client_secret or ""]
        if self._token is not None:
            held.append(self._token.value)
        return tuple(s for s in held if s)

    def get(self) -> AccessToken:
        with self._lock:
            if self._token is None or not self._token.usable(time.monotonic()):
                self._token = self._fetch()
            return self._token

    def invalidate(self, stale: AccessToken) -> None:
        """Forget `stale` (refused by the gateway); a token another thread already replaced is kept."""
        with self._lock:
            if self._token is stale:
                self._token = None

    def _audience(self) -> str:
        """The `aud` of a client assertion: the token endpoint as the server names it (RFC 7523 3).

        Behind a proxy the server's name for itself may differ from the URL we reach it by,
        so it comes from the server's metadata (RFC 8414), falling back to our own URL."""
        if self._assertion_audience is None:
            audience = self._config.url + TOKEN_PATH
            try:
                resp = self._http.get(self._config.url + METADATA_PATH)
                if resp.status_code == 200 and isinstance(resp.json().get("token_endpoint"), str):
                    audience = resp.json()["token_endpoint"]
            except (httpx.HTTPError, ValueError):
                pass  # the POST below reports an unreachable server properly
            self._assertion_audience = audience
        return self._assertion_audience

    def _request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self._config.scope:
            form["scope"] = self._config.scope
        headers = {"Accept": "application/json"}
        if self._key is not None:
            from authlib.oauth2.rfc7523 import private_key_jwt_sign  # here for start-up time

            key, alg = self._key
            # a fresh assertion (new jti) for every attempt: the server refuses a replayed one
            assertion = private_key_jwt_sign(
                key,
                client_id=self._config.client_id,
                token_endpoint=self._audience(),
                alg=alg,
                expires_in=ASSERTION_SECONDS,
            )
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = assertion.decode() if isinstance(assertion, bytes) else str(assertion)
            form["client_id"] = self._config.client_id
        else:
            assert self._config.client_secret is not None
            headers["Authorization"] = basic_authorization(self._config.client_id, self._config.client_secret)
        return self._http.build_request("POST", self._config.url + TOKEN_PATH, data=form, headers=headers)

    def _fetch(self) -> AccessToken:
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._http.send(self._request())
            except httpx.TransportError as exc:
                delay = wait_before_retry(None, attempt, self._policy)
                if delay is None:
                    raise ZoneUnreachable(
                        f"token endpoint {self._config.url}{TOKEN_PATH}: {type(exc).__name__}: {exc}",
                        attempts=attempt,
                    ) from None  # the request in the chain holds the client's credentials
                self._sleep(delay)
                continue
            if resp.status_code != 200:
                delay = wait_before_retry(resp, attempt, self._policy)
                if delay is None:
                    raise ZoneError.from_response(resp, redact=self.secrets)
                self._sleep(delay)
                continue
            return self._parse(resp)

    def _parse(self, resp: httpx.Response) -> AccessToken:
        try:
            body = resp.json()
            value = str(body["access_token"])
            token_type = str(body.get("token_type", "Bearer"))
            expires_in = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise ZoneError(
                resp.status_code,
                {
                    "type": "invalid-token-response",
                    "detail": f"the token endpoint's answer is not a token: {exc}",
                },
                redact=self.secrets,
            ) from exc
        if token_type.lower() != "bearer":
            raise ZoneError(
                resp.status_code,
                {"type": "invalid-token-response", "detail": f"unsupported token_type {token_type!r}"},
            )
        return AccessToken(
            value=value,
            scope=str(body.get("scope") or self._config.scope or ""),
            expires_in=expires_in,
            obtained_at=time.monotonic(),
            obtained_wall=datetime.now(UTC),
        )
