"""`ZoneClient`: the bank's side of the zone's product API.

    from datazone.client import ZoneClient
    zone = ZoneClient()  # DATAZONE_URL, DATAZONE_CLIENT_ID, DATAZONE_CLIENT_SECRET, or a profile
    zone.lookup("credit-basic", "91110105000000001X", purpose="pre_loan")
    for row in zone.batch("risk-insight", usccs, purpose="post_loan"):
        ...

Every product call carries an `Idempotency-Key` made once per logical call and reused
by each of its retries, so a call retried after a dropped connection is answered
again, free, and never billed twice.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from datazone.client.config import ClientConfig, resolve_config
from datazone.client.enterprises import checked_distinct, chunked
from datazone.client.errors import InvalidUSCCs, ZoneError, ZoneUnreachable
from datazone.client.retry import RetryPolicy, retry_after_seconds, wait_before_retry
from datazone.client.tokens import AccessToken, TokenSource
from datazone.purposes import Purpose

if TYPE_CHECKING:
    from datazone.client.anonymous import AnonymousLookup
    from datazone.client.psi import InstitutionList, PsiResult
    from datazone.client.scoring import BatchScores, ScoringCatalog, ScoringKey, ScoringProgress, SingleScore
    from datazone.privacy.scoring import ScoringModel

USER_AGENT = "datazone-client/0.1"
Progress = Callable[[int, int], None]  # (enterprises answered so far, enterprises in all)


def check_purpose(purpose: str | Purpose) -> Purpose:
    try:
        return Purpose(purpose)
    except ValueError:
        raise ValueError(
            f"unknown purpose {purpose!r}; one of: {', '.join(p.value for p in Purpose)}"
        ) from None


def is_invalid_token(resp: httpx.Response) -> bool:
    """A 401 that a fresh token can cure (expired, revoked), as opposed to a bad client."""
    if resp.status_code != 401:
        return False
    if 'error="invalid_token"' in resp.headers.get("WWW-Authenticate", ""):
        return True
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("type", "")).rstrip("/").endswith("invalid-token")


class ZoneClient:
    """A client of the zone's product API for one OAuth client (an institution's app). Thread-safe."""

    def __init__(
        self,
        url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        private_key_pem: str | bytes | None = None,
        profile: str | None = None,
        timeout: float | None = None,
        *,
        scope: str | Sequence[str] | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if scope is not None and not isinstance(scope, str):
            scope = " ".join(scope)
        self.config: ClientConfig = resolve_config(
            url=url,
            client_id=client_id,
            client_secret=client_secret,
            private_key_pem=private_key_pem,
            profile=profile,
            scope=scope,
            timeout=timeout,
            max_attempts=max_attempts,
        )
        self.retry = retry or RetryPolicy(max_attempts=self.config.max_attempts)
        self._sleep: Callable[[float], None] = time.sleep
        self._rng = random.Random()  # noqa: S311 - jitter only
        self._http = httpx.Client(
            timeout=self.config.timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,  # a redirect would carry the bearer token to wherever it points
        )
        self._tokens = TokenSource(self.config, self._http, self.retry, sleep=lambda s: self._sleep(s))

    def __repr__(self) -> str:
        return f"ZoneClient(url={self.config.url!r}, client_id={self.config.client_id!r})"

    def __enter__(self) -> ZoneClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- tokens ------------------------------------------------------------------------------

    def token(self) -> AccessToken:
        """The current access token (fetched if there is none or it is about to expire)."""
        return self._tokens.get()

    def job_key(self, kind: str, *parts: str) -> str:
        """An Idempotency-Key for creating a job, derived from what the job is (its kind and
        `parts`: the model or product, the list's digest, the output path...), so running the
        same command again finds the job it created instead of paying for a new one.

        Keyed with this client's secret (HMAC-SHA256): the zone, which keeps only a hash of the
        secret, cannot test a guessed list against the key."""
        secret = self.config.client_secret or self.config.private_key_pem or ""
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        for part in ("datazone/job-key/v1", self.config.client_id or "", kind, *parts):
            mac.update(len(part.encode()).to_bytes(8, "big") + part.encode())
        return f"{kind}-{mac.hexdigest()[:48]}"

    # -- product calls -----------------------------------------------------------------------

    def products(self) -> list[dict[str, Any]]:
        """The catalog entries this client may use."""
        body = self._call("GET", "/v1/products")
        if isinstance(body, dict) and isinstance(body.get("products"), list):
            return list(body["products"])
        if isinstance(body, list):
            return body
        raise ZoneError(
            None, {"type": "unexpected-answer", "detail": "GET /v1/products did not answer a list"}
        )

    def lookup(
        self, product_id: str, uscc: str, *, purpose: str | Purpose, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """One enterprise's answer (with data versions and masking), as the gateway sends it."""
        (code,) = checked_distinct([uscc])
        body = self._call(
            "GET",
            f"/v1/products/{quote(product_id, safe='')}/enterprises/{code}",
            params={"purpose": check_purpose(purpose).value},
            idempotency_key=idempotency_key,
        )
        assert isinstance(body, dict)
        return body

    def batch_answers(
        self,
        product_id: str,
        usccs: Sequence[str],
        *,
        purpose: str | Purpose,
        chunk_size: int = 1000,
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The gateway's whole answer for each chunk (results, data versions, masking), in order.

        Every USCC is checked before the first chunk is sent; duplicates are asked once.
        With `idempotency_key`, chunk i is sent under `<key>:<i>`, so running the same
        batch again after a crash replays the chunks already answered instead of billing them."""
        checked_purpose = check_purpose(purpose)
        codes = checked_distinct(usccs)
        chunks = list(chunked(codes, chunk_size))
        path = f"/v1/products/{quote(product_id, safe='')}/enterprises"
        done = 0
        for index, chunk in enumerate(chunks):
            key = f"{idempotency_key}:{index}" if idempotency_key else None
            body = self._call(
                "POST",
                path,
                json={"purpose": checked_purpose.value, "usccs": list(chunk)},
                idempotency_key=key,
            )
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ZoneError(
                    None, {"type": "unexpected-answer", "detail": f"POST {path} answered no results"}
                )
            body["results"] = _in_order(chunk, body["results"])
            done += len(chunk)
            if progress is not None:
                progress(done, len(codes))
            yield body

    def batch(
        self,
        product_id: str,
        usccs: Sequence[str],
        *,
        purpose: str | Purpose,
        chunk_size: int = 1000,
        progress: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """One result `{"uscc", "found", "answer"}` per distinct USCC, in order of first appearance.

        Raises `InvalidUSCCs` (listing each bad code by position) before anything is sent."""
        for body in self.batch_answers(
            product_id,
            usccs,
            purpose=purpose,
            chunk_size=chunk_size,
            progress=progress,
            idempotency_key=idempotency_key,
        ):
            yield from body["results"]

    # -- private set intersection -----------------------------------------------------------

    def psi(
        self,
        product_id: str,
        codes_or_path: str | Path | Sequence[str] | InstitutionList,
        *,
        purpose: str | Purpose,
        mode: str = "auto",
        labeled: bool = False,
        output: str | Path | None = None,
        column: str | None = None,
        progress: Progress | None = None,
        state_path: str | Path | None = None,
        peer_address: str | None = None,
        protocol: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> PsiResult:
        """Join the institution's list with a product's zone slice without showing the zone the list.

        `codes_or_path` is a CSV or XLSX file (the USCC column found as in `batch`) or the codes
        themselves. Every code is checked first: `InvalidUSCCs` lists each bad one by line and
        nothing is sent. `mode` "oprf" runs the HTTP-native OPRF PSI in chunks, resumable:
        after a dropped connection or a killed process the same call continues where it
        stopped, from the state file (`state_path`; by default `<output>.psi-state.json`, or
        `<input>.<product>.psi-state.json` without an output; codes given directly without
        either have none). "engine" runs SecretFlow's engine, listening on `peer_address`; "auto"
        picks the engine above 100,000 codes when a peer address is given (`protocol`: auto,
        rr22, ecdh or unbalanced; unbalanced keeps the zone's cache under `cache_dir`, default
        ~/.cache/datazone/psi). With `output`, the result is written there as CSV (line, uscc,
        then the label fields; or the size); the state file is deleted once it is."""
        from datazone.client.psi import run_psi  # the privacy libraries load only when PSI is used

        return run_psi(
            self,
            product_id,
            codes_or_path,
            purpose=check_purpose(purpose),
            mode=mode,
            labeled=labeled,
            output=Path(output) if output is not None else None,
            column=column,
            progress=progress,
            state_path=Path(state_path) if state_path is not None else None,
            peer_address=peer_address,
            protocol=protocol,
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
        )

    # -- anonymous query -----------------------------------------------------------------------

    def anonymous_lookup(
        self, product_id: str, usccs: str | Sequence[str], *, purpose: str | Purpose
    ) -> AnonymousLookup:
        """Each enterprise's answer from an anonymous-query product; the zone learns only buckets of
        at least k candidates. Raises `InvalidUSCCs` before anything is sent, `AnonymityNotMet`
        when the zone answers from a bucket below its k (that answer is not opened)."""
        from datazone.client.anonymous import anonymous_lookup

        return anonymous_lookup(self, product_id, usccs, purpose=check_purpose(purpose))

    # -- secure scoring ----------------------------------------------------------------------
    # `model` is a `ScoringModel` or its hand-written file; `key` a `ScoringKey` or its key file
    # (by default the one recorded when the model file was registered)

    def scoring_catalog(self, product_id: str) -> ScoringCatalog:
        """The features (with bounds), kinds and limits a product's scoring models work with."""
        from datazone.client.scoring import scoring_catalog

        return scoring_catalog(self, product_id)

    def register_model(
        self, model: ScoringModel | str | Path, key: ScoringKey | str | Path
    ) -> dict[str, Any]:
        """Register the model with its weights or points encrypted under the key; the zone's view
        (state "pending_review" until an operator's reviewer decides). A model file gets its
        registration recorded next to it."""
        from datazone.client import scoring

        parsed, resolved_key, path = scoring.resolve_model_and_key(model, key)
        return scoring.register_model(self, parsed, resolved_key, model_path=path)

    def models(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """This institution's registered models (an operator's client: all)."""
        from datazone.client.scoring import list_models

        return list_models(self, state=state)

    def model(self, model_id: str) -> dict[str, Any]:
        from datazone.client.scoring import get_model

        return get_model(self, model_id)

    def retire_model(self, model_id: str, *, reason: str) -> dict[str, Any]:
        from datazone.client.scoring import retire_model

        return retire_model(self, model_id, reason=reason)

    def score(
        self,
        model: ScoringModel | str | Path,
        uscc: str,
        *,
        key: ScoringKey | str | Path | None = None,
        model_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> SingleScore:
        """One enterprise's score, computed by the zone under encryption and decrypted here."""
        from datazone.client import scoring

        parsed, resolved_key, path = scoring.resolve_model_and_key(model, key)
        return scoring.score_one(
            self, parsed, resolved_key, uscc, model_path=path, model_id=model_id, idempotency_key=idempotency_key
        )

    def score_batch(
        self,
        model: ScoringModel | str | Path,
        codes_or_path: str | Path | Sequence[str] | InstitutionList,
        *,
        key: ScoringKey | str | Path | None = None,
        model_id: str | None = None,
        output: str | Path | None = None,
        column: str | None = None,
        state_path: str | Path | None = None,
        progress: ScoringProgress | None = None,
        poll_interval: float = 1.0,
    ) -> BatchScores:
        """Scores for a CSV/XLSX list or codes, in one batch job the zone's worker computes.

        Resumable: after a crash or a dropped connection the same call finds the same job (billed
        once) from the state file (`state_path`, by default `<output>.scoring-state.json`)."""
        from datazone.client import scoring

        parsed, resolved_key, path = scoring.resolve_model_and_key(model, key)
        return scoring.score_batch(
            self,
            parsed,
            resolved_key,
            codes_or_path,
            model_path=path,
            model_id=model_id,
            column=column,
            output=Path(output) if output is not None else None,
            state_path=Path(state_path) if state_path is not None else None,
            progress=progress,
            poll_interval=poll_interval,
        )

    # -- the one path every call takes -------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        # one key for the logical call, reused by every retry: the gateway bills it at most once
        resp = self._exchange(
            method, path, params=params, json=json, idempotency_key=idempotency_key or str(uuid.uuid4())
        )
        try:
            return resp.json()
        except ValueError:
            raise ZoneError(
                resp.status_code,
                {"type": "unexpected-answer", "detail": f"{method} {path} did not answer JSON"},
            ) from None

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json, application/problem+json",
        idempotency_key: str | None = None,
        patience: float = 0.0,
    ) -> httpx.Response:
        """The answer to one logical call (status below 400), after retries and one token renewal.

        Every retry sends the same body and the same `Idempotency-Key`. With `patience`, a 503
        that names a `Retry-After` (work the gateway is still preparing, such as a PSI setup)
        is waited out for up to that many seconds in all, without using up attempts."""
        url = self.config.url + path
        attempt = 0
        renewed_token = False
        waited = 0.0
        while True:
            attempt += 1
            token = self._tokens.get()
            headers = {"Authorization": f"Bearer {token.value}", "Accept": accept}
            if idempotency_key is not None:
                headers["Idempotency-Key"] = idempotency_key
            if content_type is not None:
                headers["Content-Type"] = content_type
            try:
                resp = self._http.request(
                    method, url, params=params, json=json, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                delay = wait_before_retry(None, attempt, self.retry, self._rng)
                if delay is None:
                    raise ZoneUnreachable(
                        f"{method} {url}: {type(exc).__name__}: {exc}", attempts=attempt
                    ) from None  # the request in the chain holds the bearer token
                self._sleep(delay)
                continue
            if resp.status_code < 400:
                return resp
            if is_invalid_token(resp) and not renewed_token:
                # expired early, revoked, or signed by a retired key: one fresh token, not counted as a retry
                renewed_token = True
                self._tokens.invalidate(token)
                attempt -= 1
                continue
            after = retry_after_seconds(resp) if resp.status_code == 503 else None
            if after is not None:
                after = max(after, 0.5)  # so that a "Retry-After: 0" loop still ends within the patience
                if waited + after <= patience:
                    waited += after
                    attempt -= 1
                    self._sleep(after)
                    continue
            delay = wait_before_retry(resp, attempt, self.retry, self._rng)
            if delay is None:
                raise ZoneError.from_response(resp, redact=self._tokens.secrets)
            self._sleep(delay)


def _in_order(asked: Sequence[str], results: list[Any]) -> list[dict[str, Any]]:
    """The chunk's results in the order asked, checking the gateway answered each code once."""
    by_code = {r.get("uscc"): r for r in results if isinstance(r, dict)}
    missing = [c for c in asked if c not in by_code]
    if missing:
        raise ZoneError(
            None,
            {
                "type": "unexpected-answer",
                "detail": f"the gateway's answer lacks {len(missing)} asked USCCs, e.g. {missing[:3]}",
            },
        )
    return [by_code[c] for c in asked]


__all__ = ["InvalidUSCCs", "ZoneClient", "ZoneError", "check_purpose"]
