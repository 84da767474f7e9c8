"""Fleet config files a user can get wrong at the byte level: each is a ConfigError that names
the file, never a traceback (UnicodeDecodeError, shlex's ValueError, RecursionError) and never a
schedule that passes validation only to overflow in the running coordinator."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import load_config, read_toml
from coordinator.schedule import parse_schedule
from protocol.errors import ConfigError

HOST = (
    '[hosts.alpha]\nbackend = "sim"\nsim_root = "/tmp/alpha"\nstream_address = "127.0.0.1:7001"\n'
)
JOB = '[jobs.j]\nsource = "alpha:tank/a"\ntargets = ["alpha:tank/b"]\n'


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00\x01binary\x80", "not UTF-8 text (byte 0 is 0xff)"),
        (HOST.replace("/tmp/alpha", "/tmp/caf\xe9").encode("latin-1"), "not UTF-8 text"),
        (
            b'[hosts.alpha]\nbackend = "real"\nexec_prefix = "ssh \'root@beta"\n',
            ":3: hosts.alpha.exec_prefix: cannot split",
        ),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n", "nested too deeply"),
        ((HOST + JOB + 'schedule = "99999999999999999999w"\n').encode(), "longer than ten years"),
        ((HOST + JOB + 'schedule = "' + "9" * 5000 + 's"\n').encode(), "longer than ten years"),
        ((HOST + JOB + 'schedule = "' + "1" * 5000 + ' * * * *"\n').encode(), "cannot read"),
    ],
    ids=[
        "binary",
        "latin-1",
        "unbalanced-quote",
        "deep-arrays",
        "deep-tables",
        "overflow",
        "huge-number",
        "huge-cron",
    ],
)
def test_bad_bytes_are_config_errors_naming_the_file(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert says in str(info.value)
    assert len(str(info.value)) < 400  # a megabyte on one line is not echoed back


def test_read_toml_is_for_any_reader_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_bytes(b"[settings]\nredis_url = 'redis://x'\n")
    assert read_toml(path) == {"settings": {"redis_url": "redis://x"}}
    for bad in (b"\x80", b"a = " + b"[" * 5000):
        path.write_bytes(bad)
        with pytest.raises(ConfigError):
            read_toml(path)
    with pytest.raises(ConfigError):
        read_toml(tmp_path / "missing.toml")


def test_the_longest_interval_still_schedules() -> None:
    from datetime import UTC, datetime

    schedule = parse_schedule("3650d")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.next_after(now, now).year == 2035
    with pytest.raises(ConfigError):
        parse_schedule("3651d")


@pytest.mark.parametrize("content", [b"\xff\xfe binary", b"a = " + b"[" * 5000 + b"]" * 5000])
def test_settings_from_a_bad_file_are_config_errors(tmp_path: Path, content: bytes) -> None:
    from protocol.settings import load_settings

    path = tmp_path / "zfleet.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=str(path)):
        load_settings(path, env={})


@pytest.mark.parametrize("command", [["sync", "j"], ["graph"], ["coordinator"]])
def test_the_cli_refuses_a_bad_file_before_it_needs_redis(
    tmp_path: Path, command: list[str]
) -> None:
    from click.testing import CliRunner

    from app.cli import cli

    path = tmp_path / "fleet.toml"
    path.write_bytes(b"\xff\xfe not text")
    env = {"ZFLEET_REDIS_URL": "redis://127.0.0.1:9/0", "ZFLEET_CONFIG": ""}
    result = CliRunner().invoke(cli, [*command[:1], "--config", str(path), *command[1:]], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"zfleet: {path}: not UTF-8 text")
