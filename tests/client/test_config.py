"""Where the client's settings come from, and refusing credential files others can read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from datazone.client import ConfigError, ZoneClient
from datazone.client.config import default_profile_path, resolve_config


def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


PROFILE = """
[default]
url = "https://zone.example.cn/"
client_id = "dzc_default"
client_secret = "s3cret-default"

[staging]
url = "https://staging.zone.example.cn"
client_id = "dzc_staging"
client_secret = "s3cret-staging"
scope = "product:credit-basic"
timeout = 5
max_attempts = 2
"""


def test_arguments_win_over_environment_and_profile(tmp_path: Path) -> None:
    profile = write_private(tmp_path / "client.toml", PROFILE)
    env = {
        "DATAZONE_PROFILE": str(profile),
        "DATAZONE_URL": "https://env.example.cn",
        "DATAZONE_CLIENT_ID": "dzc_env",
        "DATAZONE_CLIENT_SECRET": "env-secret",
    }
    cfg = resolve_config(url="https://arg.example.cn", client_id="dzc_arg", client_secret="arg", environ=env)
    assert (cfg.url, cfg.client_id, cfg.client_secret, cfg.source) == (
        "https://arg.example.cn",
        "dzc_arg",
        "arg",
        "arguments",
    )
    cfg = resolve_config(environ=env)
    assert (cfg.url, cfg.client_id, cfg.client_secret, cfg.source) == (
        "https://env.example.cn",
        "dzc_env",
        "env-secret",
        "environment",
    )


def test_profile_fills_what_environment_lacks_and_named_profiles(tmp_path: Path) -> None:
    profile = write_private(tmp_path / "client.toml", PROFILE)
    cfg = resolve_config(environ={"DATAZONE_PROFILE": str(profile)})
    assert cfg.url == "https://zone.example.cn"  # trailing slash dropped
    assert (cfg.client_id, cfg.client_secret) == ("dzc_default", "s3cret-default")
    assert cfg.source.startswith("profile [default]")
    # the environment's URL overrides the profile's; the rest still comes from the profile
    cfg = resolve_config(environ={"DATAZONE_PROFILE": str(profile), "DATAZONE_URL": "http://127.0.0.1:9"})
    assert (cfg.url, cfg.client_id) == ("http://127.0.0.1:9", "dzc_default")
    cfg = resolve_config(profile="staging", environ={"DATAZONE_PROFILE": str(profile)})
    assert (cfg.client_id, cfg.scope, cfg.timeout, cfg.max_attempts) == (
        "dzc_staging",
        "product:credit-basic",
        5.0,
        2,
    )
    with pytest.raises(ConfigError, match=r"no \[prod\] profile \(profiles: default, staging\)"):
        resolve_config(profile="prod", environ={"DATAZONE_PROFILE": str(profile)})


def test_default_profile_path_follows_xdg(tmp_path: Path) -> None:
    assert default_profile_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "datazone" / "client.toml"
    assert default_profile_path({}) == Path.home() / ".config" / "datazone" / "client.toml"
    assert default_profile_path({"DATAZONE_PROFILE": str(tmp_path / "x.toml")}) == tmp_path / "x.toml"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_profile_with_a_secret_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    profile = write_private(tmp_path / "client.toml", PROFILE, mode)
    with pytest.raises(ConfigError) as info:
        resolve_config(environ={"DATAZONE_PROFILE": str(profile)})
    message = str(info.value)
    assert f"mode {mode:04o}" in message and f"chmod 600 {profile}" in message
    assert "s3cret" not in message


def test_profile_without_secret_may_be_shared(tmp_path: Path) -> None:
    # URL and client id are not secret; the secret then comes from the environment
    profile = write_private(
        tmp_path / "client.toml", '[default]\nurl = "https://z.example.cn"\nclient_id = "dzc_1"\n', 0o644
    )
    cfg = resolve_config(environ={"DATAZONE_PROFILE": str(profile), "DATAZONE_CLIENT_SECRET": "from-env"})
    assert (cfg.url, cfg.client_id, cfg.client_secret, cfg.source) == (
        "https://z.example.cn",
        "dzc_1",
        "from-env",
        "environment",
    )


def test_environment_alone_never_reads_a_loose_profile(tmp_path: Path) -> None:
    profile = write_private(tmp_path / "client.toml", PROFILE, 0o644)
    env = {
        "DATAZONE_PROFILE": str(profile),
        "DATAZONE_URL": "https://env.example.cn",
        "DATAZONE_CLIENT_ID": "dzc_env",
        "DATAZONE_CLIENT_SECRET": "env-secret",
    }
    assert resolve_config(environ=env).client_id == "dzc_env"
    with pytest.raises(ConfigError, match="chmod 600"):  # but naming the profile reads it
        resolve_config(profile="default", environ=env)


def test_missing_settings_are_all_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(environ={"DATAZONE_PROFILE": str(tmp_path / "absent.toml")})
    message = str(info.value)
    for expected in (
        "DATAZONE_URL",
        "DATAZONE_CLIENT_ID",
        "DATAZONE_CLIENT_SECRET or DATAZONE_CLIENT_KEY_FILE",
    ):
        assert expected in message
    assert str(tmp_path / "absent.toml") in message
    with pytest.raises(ConfigError, match=r"absent\.toml does not exist"):
        resolve_config(profile="default", environ={"DATAZONE_PROFILE": str(tmp_path / "absent.toml")})


def test_bad_profile_content(tmp_path: Path) -> None:
    typo = write_private(
        tmp_path / "typo.toml", '[default]\nurl = "https://z.example.cn"\nclient_secrett = "x"\n'
    )
    with pytest.raises(ConfigError, match=r"unknown keys \['client_secrett'\]"):
        resolve_config(environ={"DATAZONE_PROFILE": str(typo)})
    broken = write_private(tmp_path / "broken.toml", "[default\nurl=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(environ={"DATAZONE_PROFILE": str(broken)})
    with pytest.raises(ConfigError, match="must start with https://"):
        resolve_config(url="zone.example.cn", client_id="c", client_secret="s", environ={})


def test_private_key_from_key_file(tmp_path: Path) -> None:
    pem = ec_pem()
    key_file = write_private(tmp_path / "app.pem", pem)
    env = {
        "DATAZONE_URL": "https://z.example.cn",
        "DATAZONE_CLIENT_ID": "dzc_k",
        "DATAZONE_CLIENT_KEY_FILE": str(key_file),
    }
    cfg = resolve_config(environ=env)
    assert cfg.private_key_pem == pem.strip() and cfg.client_secret is None
    assert cfg.auth_method == "private_key_jwt"
    # relative key_file in a profile resolves against the profile's folder
    profile = write_private(
        tmp_path / "client.toml",
        '[default]\nurl = "https://z.example.cn"\nclient_id = "dzc_k"\nkey_file = "app.pem"\n',
        0o644,
    )
    assert resolve_config(environ={"DATAZONE_PROFILE": str(profile)}).private_key_pem == pem.strip()
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match=r"private key file .*app.pem is readable by other users"):
        resolve_config(environ=env)
    not_a_key = write_private(tmp_path / "cert.pem", "-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        resolve_config(environ={**env, "DATAZONE_CLIENT_KEY_FILE": str(not_a_key)})


def test_secret_and_key_at_the_same_level_is_ambiguous() -> None:
    with pytest.raises(ConfigError, match="both a client secret and a private key"):
        resolve_config(
            url="https://z.example.cn", client_id="c", client_secret="s", private_key_pem=ec_pem(), environ={}
        )


def test_secret_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DATAZONE_"):
            monkeypatch.delenv(name)
    client = ZoneClient(url="https://z.example.cn", client_id="dzc_r", client_secret="very-secret-value")
    try:
        assert "very-secret-value" not in repr(client)
        assert "very-secret-value" not in repr(client.config)
        assert client.config.client_secret == "very-secret-value"
    finally:
        client.close()
