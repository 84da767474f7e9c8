"""Settings: sources and precedence, clear errors naming the source, and secrets never shown."""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ConfigError
from protocol.settings import (
    MASK,
    Secret,
    Settings,
    load_settings,
    parse_hostport,
    with_overrides,
)

FLEET_SECRET = "s3cr3t-fleet-key-0123456789"
STORE_SECRET = "AKIA-very-secret-store-key"
REDIS_PASSWORD = "hunter2-redis-pass"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg"), **extra}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zfleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    s = load_settings(env=_env(tmp_path))
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    expected = Path("/var/lib/zfleet") if os.geteuid() == 0 else tmp_path / "xdg" / "zfleet"
    assert s.data_dir == expected
    assert s.sim_root == expected / "sim"
    assert s.stream_advertise == s.stream_bind
    assert s.fleet_secret is None
    assert s.log_format == "auto"


def test_environment_sets_and_moves_derived_paths(tmp_path: Path) -> None:
    s = load_settings(
        env=_env(
            tmp_path,
            ZFLEET_DATA_DIR=str(tmp_path / "data"),
            ZFLEET_COMPRESSION_LEVEL="7",
            ZFLEET_BWLIMIT="1.5M",
            ZFLEET_LOG_LEVEL="debug",
            ZFLEET_STREAM_BIND="[::1]:0",
        )
    )
    assert s.sim_root == tmp_path / "data" / "sim"
    assert s.compression_level == 7
    assert s.bwlimit == 1_572_864
    assert s.log_level == "DEBUG"
    assert s.stream_bind_addr == ("::1", 0)
    explicit = load_settings(env=_env(tmp_path, ZFLEET_SIM_ROOT=str(tmp_path / "sim")))
    assert explicit.sim_root == tmp_path / "sim"


def test_settings_table_in_file_and_environment_wins(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
[settings]
redis_url = "redis://10.0.0.5:6380/2"
compression_level = 9
bwlimit = "100M"
metrics_port = 0

[hosts.alpha]
backend = "real"
""",
    )
    s = load_settings(path, env=_env(tmp_path, ZFLEET_COMPRESSION_LEVEL="2"))
    assert s.redis_url == "redis://10.0.0.5:6380/2"
    assert s.compression_level == 2
    assert s.bwlimit == 100 * 1024**2
    assert s.metrics_port == 0


def test_top_level_keys_and_config_path_from_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'log_format = "json"\nstream_advertise = "alpha.lan:7471"\n')
    s = load_settings(env=_env(tmp_path, ZFLEET_CONFIG=str(path)))
    assert s.log_format == "json"
    assert s.stream_advertise_addr == ("alpha.lan", 7471)


def test_unknown_key_in_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[settings]\ncompresion_level = 3\n")
    with pytest.raises(ConfigError, match=r"zfleet.toml: compresion_level: unknown setting") as e:
        load_settings(path, env=_env(tmp_path))
    assert "did you mean" in str(e.value)
    path = _toml(tmp_path, "colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour: unknown setting"):
        load_settings(path, env=_env(tmp_path))


def test_environment_typos_are_refused_and_unrelated_variables_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ZFLEET_REDIS_ULR: unknown setting.*ZFLEET_REDIS_URL"):
        load_settings(env=_env(tmp_path, ZFLEET_REDIS_ULR="redis://x"))
    s = load_settings(env=_env(tmp_path, ZFLEET_WORKER_QUEUE="q", ZFLEET_LAB="1"))
    assert s.redis_url.startswith("redis://")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compression_level = 'high'", "compression_level: expected an integer, got 'high'"),
        ("compression_level = 25", r"compression_level: must be an integer in 1\.\.19"),
        ("compression_level = true", "compression_level: expected an integer, got a bool"),
        ("metrics_port = 70000", r"metrics_port: must be an integer in 0\.\.65535"),
        ("log_format = 'xml'", "log_format: must be one of auto, json, console"),
        ("log_level = 'LOUD'", "log_level: must be one of DEBUG"),
        ("redis_url = 'http://x:6379'", "redis_url: bad URL 'http://x:6379': scheme"),
        ("redis_url = 'redis://x:99999/0'", "redis_url: bad URL"),
        ("redis_url = 'redis://x:6379/zero'", "database must be a number"),
        ("redis_url = 42", "redis_url: expected a string, got int"),
        ("stream_bind = 'nohost'", "stream_bind: 'nohost' is not 'host:port'"),
        ("stream_bind = '::1:80'", r"write IPv6 addresses as '\[addr\]:port'"),
        ("bwlimit = 'fast'", "bwlimit: expected a size such as '100M'"),
        ("bwlimit = -5", "bwlimit: must be a positive number"),
        ("store_endpoint = 'ftp://s3'", r"store_endpoint: bad URL 'ftp://s3': need http\(s\)"),
        ("tls_ca = '/nonexistent/ca.pem'", "tls_ca: file '/nonexistent/ca.pem' does not exist"),
        ("data_dir = ''", "data_dir: expected a path"),
        ("settings = 3", r"\[settings\] must be a table"),
    ],
)
def test_bad_values_are_named_with_their_source(tmp_path: Path, text: str, message: str) -> None:
    path = _toml(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path, env=_env(tmp_path))
    assert "zfleet.toml" in str(caught.value)


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ZFLEET_METRICS_PORT: expected an integer, got 'x'"):
        load_settings(env=_env(tmp_path, ZFLEET_METRICS_PORT="x"))


def test_broken_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_toml(tmp_path, "a = = 1"), env=_env(tmp_path))
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml", env=_env(tmp_path))


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load_settings(env=_env(tmp_path, ZFLEET_TLS_CERT=str(cert)))
    s = load_settings(env=_env(tmp_path, ZFLEET_TLS_CERT=str(cert), ZFLEET_TLS_KEY=str(cert)))
    assert s.tls_key == cert


def test_secrets_never_show_in_repr_str_logs_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = load_settings(
        env=_env(
            tmp_path,
            ZFLEET_FLEET_SECRET=FLEET_SECRET,
            ZFLEET_STORE_SECRET_KEY=STORE_SECRET,
            ZFLEET_STORE_ACCESS_KEY="AKIAEXAMPLE",
            ZFLEET_REDIS_URL=f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0",
        )
    )
    assert s.fleet_secret is not None
    assert s.fleet_secret.get() == FLEET_SECRET
    assert s.redis_url == f"redis://:{REDIS_PASSWORD}@10.0.0.5:6379/0"  # usable as is
    with caplog.at_level(logging.INFO):
        logging.getLogger("zfleet.test").info("settings %s %r", s, s)
        logging.getLogger("zfleet.test").info("secret %s", s.fleet_secret)
    shown = [
        repr(s),
        str(s),
        f"{s}",
        f"{s.fleet_secret}",
        f"{s.fleet_secret:>20}",
        str(s.redacted()),
        caplog.text,
        repr(ValueError(s)),
    ]
    for text in shown:
        for secret in (FLEET_SECRET, STORE_SECRET, REDIS_PASSWORD, "AKIAEXAMPLE"):
            assert secret not in text
    assert MASK in repr(s)
    assert f"redis://:{MASK}@10.0.0.5:6379/0" in repr(s)


def test_secret_errors_do_not_echo_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ZFLEET_FLEET_SECRET: is too short") as caught:
        load_settings(env=_env(tmp_path, ZFLEET_FLEET_SECRET="short-pass"))
    assert "short-pass" not in str(caught.value)
    bad_url = f"redis://:{REDIS_PASSWORD}@host:notaport/0"
    with pytest.raises(ConfigError, match="bad URL") as caught:
        load_settings(env=_env(tmp_path, ZFLEET_REDIS_URL=bad_url))
    assert REDIS_PASSWORD not in str(caught.value)


def test_secret_cannot_be_pickled_into_a_message() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(FLEET_SECRET))


def test_secret_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "fleet.secret"
    secret_file.write_text(FLEET_SECRET + "\n")
    path = _toml(tmp_path, f"fleet_secret_file = '{secret_file}'\n")
    s = load_settings(path, env=_env(tmp_path))
    assert s.fleet_secret == Secret(FLEET_SECRET)
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_settings(env=_env(tmp_path, ZFLEET_FLEET_SECRET_FILE=str(tmp_path / "nope")))


def test_overrides_are_checked_and_move_derived_paths(tmp_path: Path) -> None:
    s = load_settings(env=_env(tmp_path, ZFLEET_DATA_DIR=str(tmp_path / "a")))
    moved = with_overrides(s, data_dir=tmp_path / "b")
    assert moved.sim_root == tmp_path / "b" / "sim"
    with pytest.raises(ConfigError, match="compression_level"):
        with_overrides(s, compression_level=0)
    with pytest.raises(ConfigError, match="redis_url"):
        Settings(redis_url="nonsense")


def test_hostport_parsing() -> None:
    assert parse_hostport("10.0.0.1:7471") == ("10.0.0.1", 7471)
    assert parse_hostport("[fe80::1]:80") == ("fe80::1", 80)
    with pytest.raises(ConfigError, match=r"port must be 1\.\.65535"):
        parse_hostport("h:0")
    with pytest.raises(ConfigError, match="is not 'host:port'"):
        parse_hostport("h:\u0661")  # a non-ASCII digit


setting_names = st.sampled_from(
    [
        "redis_url",
        "fleet_secret",
        "fleet_secret_file",
        "data_dir",
        "sim_root",
        "log_format",
        "log_level",
        "stream_bind",
        "stream_advertise",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "compression_level",
        "bwlimit",
        "metrics_port",
        "store_endpoint",
        "store_region",
        "store_access_key",
        "store_secret_key",
        "redis_ulr",
        "unrelated_thing",
    ]
)
env_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40
) | st.sampled_from(
    ["~nosuchuser/x", "x" * 5000, "redis://:p@h:1/0", "[::1]:7", "0", "-1", "1.5G", "~"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(setting_names, env_text, max_size=5))
def test_any_environment_loads_or_raises_config_error(values: dict[str, str]) -> None:
    env = {"HOME": "/nonexistent-home"}
    env.update({f"ZFLEET_{k.upper()}": v.replace("\0", "") for k, v in values.items()})
    try:
        load_settings(env=env)
    except ConfigError as exc:
        assert str(exc)


toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value).replace("inf", "inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(setting_names, toml_values, max_size=4), st.booleans())
def test_any_toml_values_load_or_raise_config_error(
    values: dict[str, object], in_table: bool
) -> None:
    lines = [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    text = ("[settings]\n" if in_table else "") + "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "zfleet.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_settings(path, env={"HOME": tmp})
        except ConfigError as exc:
            assert str(exc)
