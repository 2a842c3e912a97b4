"""Settings from the DATAZONE_* environment (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATAZONE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path(user_data_dir("datazone")))
    # empty: start an embedded PostgreSQL (pgserver) under home/pgdata
    database_url: str | None = None
    # where departments drop files; relative source globs in dataset specs resolve here
    drop_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # a running ingest that reports no progress for this long is aborted and its work discarded
    # capacity of one gateway process (README, "Capacity"): connections in its database pool;
    # requests it works on at once (0: the pool size; never more than the pool); requests that may
    # wait for a place and for how long before 503 with Retry-After; threads for sync routes
    # (0: max_requests + 8). The defaults suit a 2-core machine.
    db_pool_size: int = Field(default=10, ge=1, le=1000)
    max_requests: int = Field(default=0, ge=0, le=1000)
    max_queued_requests: int = Field(default=1000, ge=0, le=100_000)
    queue_wait_seconds: float = Field(default=10.0, gt=0, le=300)
    threads: int = Field(default=0, ge=0, le=2000)
    ingest_stall_seconds: float = 600.0
    # rejects kept per run in the downloadable report; the counts stay exact beyond it
    ingest_max_reported_rejects: int = 100_000
    ingest_batch_rows: int = 100_000
    scheduler_poll_seconds: float = 5.0
    # the background sealer closes a block of audit entries this often, at most this many per block;
    # 0 leaves sealing to another process (e.g. `datazone scheduler`)
    audit_seal_seconds: float = 2.0
    audit_block_max_entries: int = 5000
    # OAuth2: the issuer URL in tokens and metadata (default: http://host:port), the audience
    # product tokens are minted for, their lifetime, and how often the signing key rotates
    oauth_issuer: str | None = None
    oauth_audience: str = "datazone-products"
    oauth_token_seconds: int = 300
    oauth_key_rotation_hours: float = 24.0
    # encrypts the token-signing private keys at rest; every replica that issues tokens needs
    # the same value. Empty: a key file is created under home (fine for one machine)
    signing_key_secret: str | None = None
    # how long an Idempotency-Key's answer is kept for replay
    idempotency_hours: float = 24.0
    # PSI: a new zone key (epoch) this often; sessions keep the epoch they started with
    psi_key_rotation_days: float = 30.0
    # how long a PSI session (HTTP-native OPRF) stays open for its chunks
    psi_session_minutes: float = 60.0
    # items per chunk of a PSI session (one HTTP request each)
    psi_chunk_items: int = 10_000
    # engine jobs: the address the worker's link listens on (the institution connects to it),
    # the port range it picks from, and how long it waits for the institution to connect
    psi_link_host: str = "127.0.0.1"
    psi_link_ports: str = "61000-61999"
    psi_link_timeout_seconds: float = 120.0
    # joint modeling: the port range a training job's link listens on (on psi_link_host), how
    # long the worker waits for the institution's side, how long its side waits for the
    # institution's next message before it calls the link dropped (longer than the slowest step
    # of the bank's side), and how long a statistics job waits for its encrypted columns
    joint_link_ports: str = "62000-62999"
    joint_link_timeout_seconds: float = 300.0
    joint_peer_silence_seconds: float = Field(default=120.0, ge=5.0)  # the engine link needs 5 s to come up
    joint_receiving_minutes: float = 30.0
    # processes a joint job's zone features are computed in (0: one per core)
    joint_processes: int = 0
    # secure scoring: re-randomization factors (r^n mod n^2) the worker keeps ready per
    # approved model's key, so online scores and job chunks do not compute them on the request path
    scoring_factor_pool: int = 2_000
    # enterprises per chunk of a batch scoring job (the unit of progress and of resumption)
    scoring_chunk: int = 1_000
    # processes the worker scores and precomputes with (0: one per core)
    scoring_processes: int = 0
    # a job whose worker has not reported for this long is taken over by another worker
    scoring_stale_minutes: float = 10.0
    # problem+json `type` URIs are this base + the type's name; empty: the gateway's own pages at
    # <issuer>/problems/ (GET /problems lists them). Set it to publish the pages elsewhere.
    problem_base_uri: str | None = None
    # the token-signing algorithms the zone keeps keys for and publishes, comma-separated; access
    # tokens are signed with the first. "ES256,RS256" adds RS256 beside ES256 (RFC 9068 section 4
    # expects RS256 to be available); "RS256,ES256" signs with RS256.
    oauth_signing_algs: str = "ES256"

    # observability: log lines as JSON objects or plain text (empty: JSON for serve, scheduler
    # and worker, text for the demo), their level, OpenTelemetry tracing (exported as the OTEL_*
    # environment says), how long /readyz waits for the database, and the port the worker and
    # the scheduler serve their /metrics on (empty: none)
    log_format: Literal["json", "text"] | None = None
    log_level: str = "INFO"
    tracing: bool = False
    readyz_timeout_seconds: float = 2.0
    metrics_port: int | None = None

    # the console (people in browsers): a session ends after this long without a page, and after this
    # long in all; this many wrong passwords or codes in a row lock an account for this long; cookies
    # carry Secure (turn off only to try the console over plain HTTP on a machine's own loopback)
    console_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    console_absolute_hours: float = Field(default=12.0, gt=0, le=7 * 24)
    console_lockout_failures: int = Field(default=5, ge=1, le=100)
    console_lockout_minutes: float = Field(default=15.0, gt=0, le=24 * 60)
    console_secure_cookies: bool = True

    @property
    def drop_path(self) -> Path:
        return self.drop_dir if self.drop_dir is not None else self.home / "drop"

    @property
    def issuer(self) -> str:
        return (self.oauth_issuer or f"http://{self.host}:{self.port}").rstrip("/")

    @field_validator("oauth_signing_algs")
    @classmethod
    def _known_algs(cls, value: str) -> str:
        algs = [a.strip() for a in value.split(",") if a.strip()]
        unknown = sorted(set(algs) - {"ES256", "RS256"})
        if not algs or unknown:
            raise ValueError(f"DATAZONE_OAUTH_SIGNING_ALGS takes ES256 and/or RS256, not {value!r}")
        return ",".join(dict.fromkeys(algs))

    @property
    def signing_algs(self) -> list[str]:
        """The token-signing algorithms, the one tokens are signed with first."""
        return self.oauth_signing_algs.split(",")

    @property
    def problem_base(self) -> str:
        return (self.problem_base_uri or f"{self.issuer}/problems").rstrip("/") + "/"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
