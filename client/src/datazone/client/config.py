"""Where the client's settings come from: arguments, else the environment, else a profile file.

Environment: `DATAZONE_URL`, `DATAZONE_CLIENT_ID`, `DATAZONE_CLIENT_SECRET` or
`DATAZONE_CLIENT_KEY_FILE` (a PEM private key, for `private_key_jwt`), and `DATAZONE_PROFILE`,
the path of the profile file (default `~/.config/datazone/client.toml`). The profile file
holds one TOML table per profile name, `[default]` unless another is named:

    [default]
    url = "https://zone.example.cn"
    client_id = "dzc_..."
    client_secret = "..."        # or: key_file = "bank-app.pem" (relative to this file)

A file that holds a secret, and a private key file, must be readable by their owner only,
as ssh demands of its keys: the client refuses to run otherwise rather than keep using a
credential other local users can read.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datazone.client.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

ENV_URL = "DATAZONE_URL"
ENV_CLIENT_ID = "DATAZONE_CLIENT_ID"
ENV_CLIENT_SECRET = "DATAZONE_CLIENT_SECRET"  # noqa: S105 - the variable's name, not a secret
ENV_KEY_FILE = "DATAZONE_CLIENT_KEY_FILE"
ENV_PROFILE = "DATAZONE_PROFILE"
DEFAULT_PROFILE = "default"
PROFILE_KEYS = frozenset(
    {"url", "client_id", "client_secret", "key_file", "private_key", "scope", "timeout", "max_attempts"}
)
SECRET_KEYS = frozenset({"client_secret", "private_key"})


@dataclass(frozen=True)
class ClientConfig:
    url: str
    client_id: str
    # exactly one of the two; neither shows in repr, so a logged config leaks nothing
    client_secret: str | None = field(default=None, repr=False)
    private_key_pem: str | None = field(default=None, repr=False)
    scope: str | None = None  # space-separated `product:<id>`; None asks for every allowed scope
    timeout: float = 30.0
    max_attempts: int = 5
    source: str = "arguments"  # where the credential came from, for messages

    @property
    def auth_method(self) -> str:
        return "private_key_jwt" if self.private_key_pem else "client_secret_basic"


def default_profile_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(ENV_PROFILE):
        return Path(env[ENV_PROFILE]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "datazone" / "client.toml"


def _require_private(path: Path, what: str) -> None:
    """Refuse a credential file that group or others can read (POSIX permissions only)."""
    if os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is readable by other users (mode {stat.S_IMODE(mode):04o}) and holds a credential;"
            f" make it private with: chmod 600 {path}"
        )


def read_key_file(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"private key file {path} does not exist")
    _require_private(path, "private key file")
    pem = path.read_text(encoding="ascii", errors="replace")
    if "PRIVATE KEY-----" not in pem:
        raise ConfigError(
            f"{path} is not a PEM private key (expected a '-----BEGIN ... PRIVATE KEY-----' block)"
        )
    return pem


def load_profile(path: Path, name: str) -> dict[str, Any]:
    """One profile's table from the file, after checking the file is private if it holds a secret."""
    if not path.is_file():
        raise ConfigError(f"profile file {path} does not exist (set {ENV_PROFILE} to use another file)")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile file {path} is not valid TOML: {exc}") from exc
    if any(isinstance(t, dict) and SECRET_KEYS & t.keys() for t in document.values()):
        _require_private(path, "profile file")
    table = document.get(name)
    if not isinstance(table, dict):
        known = ", ".join(sorted(k for k, v in document.items() if isinstance(v, dict))) or "none"
        raise ConfigError(f"profile file {path} has no [{name}] profile (profiles: {known})")
    unknown = sorted(set(table) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            f"profile [{name}] in {path} has unknown keys {unknown}; allowed: {sorted(PROFILE_KEYS)}"
        )
    profile = dict(table)
    if "key_file" in profile:
        key_path = Path(str(profile.pop("key_file"))).expanduser()
        profile["private_key"] = read_key_file(key_path if key_path.is_absolute() else path.parent / key_path)
    return profile


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    value = str(value).strip()
    return value or None


def resolve_config(
    *,
    url: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    private_key_pem: str | bytes | None = None,
    profile: str | None = None,
    scope: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Settings field by field from arguments, else the environment, else the profile file.

    The file is read only when a named profile is asked for or something is still missing,
    so a caller configured entirely by the environment never depends on it."""
    env = os.environ if environ is None else environ
    levels: list[tuple[str, dict[str, Any]]] = [
        (
            "arguments",
            {
                "url": url,
                "client_id": client_id,
                "client_secret": client_secret,
                "private_key": private_key_pem,
            },
        ),
    ]
    env_level: dict[str, Any] = {
        "url": env.get(ENV_URL),
        "client_id": env.get(ENV_CLIENT_ID),
        "client_secret": env.get(ENV_CLIENT_SECRET),
    }
    if env.get(ENV_KEY_FILE):
        env_level["private_key"] = read_key_file(Path(env[ENV_KEY_FILE]).expanduser())
    levels.append(("environment", env_level))

    def first(key: str) -> str | None:
        for _, values in levels:
            if (found := _text(values.get(key))) is not None:
                return found
        return None

    def has_credential(values: Mapping[str, Any]) -> bool:
        return _text(values.get("client_secret")) is not None or _text(values.get("private_key")) is not None

    incomplete = (
        first("url") is None or first("client_id") is None or not any(has_credential(v) for _, v in levels)
    )
    profile_path = default_profile_path(env)
    profile_values: dict[str, Any] = {}
    if profile is not None or (incomplete and profile_path.is_file()):
        name = profile or DEFAULT_PROFILE
        profile_values = load_profile(profile_path, name)
        levels.append((f"profile [{name}] in {profile_path}", profile_values))

    resolved_url = first("url")
    resolved_id = first("client_id")
    source, secret, key = "", None, None
    for level_name, values in levels:
        if has_credential(values):
            secret, key = _text(values.get("client_secret")), _text(values.get("private_key"))
            source = level_name
            break
    if secret and key:
        raise ConfigError(f"{source} give both a client secret and a private key; keep one of them")

    hint = f"an argument, the environment ({{env}}), or the profile file {profile_path}"
    missing = []
    if resolved_url is None:
        missing.append("the gateway URL: " + hint.format(env=ENV_URL))
    if resolved_id is None:
        missing.append("the client id: " + hint.format(env=ENV_CLIENT_ID))
    if secret is None and key is None:
        missing.append(
            "a client secret or private key: " + hint.format(env=f"{ENV_CLIENT_SECRET} or {ENV_KEY_FILE}")
        )
    if missing:
        raise ConfigError("missing " + "; missing ".join(missing))
    assert resolved_url is not None and resolved_id is not None
    if not resolved_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"the gateway URL must start with https:// (or http:// on a test bench), got {resolved_url!r}"
        )

    try:
        timeout_s = float(timeout if timeout is not None else profile_values.get("timeout", 30.0))
        attempts = int(max_attempts if max_attempts is not None else profile_values.get("max_attempts", 5))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"timeout and max_attempts must be numbers: {exc}") from exc
    if timeout_s <= 0 or attempts < 1:
        raise ConfigError("timeout must be positive and max_attempts at least 1")
    return ClientConfig(
        url=resolved_url.rstrip("/"),
        client_id=resolved_id,
        client_secret=secret,
        private_key_pem=key,
        scope=_text(scope) or _text(profile_values.get("scope")),
        timeout=timeout_s,
        max_attempts=attempts,
        source=source,
    )
