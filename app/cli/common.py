"""What the coordinator's subcommands share: options, settings, Redis, exit codes, JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import click
import redis

from bus.connect import connect
from coordinator.config import read_toml
from protocol.errors import ConfigError, JobError, ZfleetError
from protocol.settings import Settings, load_settings, redact_url

# Exit codes scripts can rely on.
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the job (or a step of it) failed
EXIT_CONFIG: Final = 2  # bad config, settings or arguments (click uses 2 for usage errors too)
EXIT_REFUSED: Final = 3  # the plan refused some datasets (diverged targets...)
EXIT_UNAVAILABLE: Final = 4  # Redis (or the coordinator) cannot be reached
EXIT_TIMEOUT: Final = 5  # --wait gave up before the job finished
EXIT_CANCELLED: Final = 6  # the job was cancelled
EXIT_NO_RUNTIME: Final = 7  # a host has no container runtime (podman) for `zfleet container`
FLEET_CONFIG_ENV: Final = "ZFLEET_FLEET_CONFIG"
# The Redis a command connected to, for the message when Redis fails it later on.
_used_redis_url: list[str] = []

F = TypeVar("F", bound=Callable[..., Any])


def config_option(required: bool = True) -> Callable[[F], F]:
    """``--config PATH``: the fleet config (TOML); also from $ZFLEET_FLEET_CONFIG."""
    return click.option(
        "--config", "-c", "config_path", envvar=FLEET_CONFIG_ENV, required=required,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Fleet config file (TOML). Default: ${FLEET_CONFIG_ENV}.",
    )  # fmt: skip


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def settings_for(config_path: Path | None) -> Settings:
    """Process settings: the fleet file's [settings] table when it has one, and ZFLEET_* vars."""
    if config_path is not None:
        try:
            has_table = "settings" in read_toml(config_path)
        except ConfigError:
            has_table = False  # load_config reports the file's problem with line numbers
        if has_table:
            return load_settings(config_path)
    # $ZFLEET_CONFIG may name a fleet file without [settings]: the fleet config is ours to read
    return load_settings(None, env={k: v for k, v in os.environ.items() if k != "ZFLEET_CONFIG"})


def redis_client(settings: Settings) -> redis.Redis[bytes]:
    """A client for the settings' Redis that has answered a PING."""
    client = connect(settings.redis_url)
    _used_redis_url.append(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unavailable(redis_problem(exc, settings.redis_url)) from exc
    return client


def redis_problem(exc: redis.RedisError, url: str) -> str:
    """One line saying what went wrong with Redis at ``url`` (password masked) and what to do."""
    where = redact_url(url)
    userinfo, at, _ = url.partition("://")[2].rpartition("@")
    name, colon, _ = userinfo.partition(":")
    user, has_password = unquote(name) or "default", bool(at and colon)
    # AuthenticationError is a ConnectionError: it must be looked at first
    if isinstance(exc, redis.AuthenticationError):
        if not has_password:
            return (f"Redis at {where} wants a password: give it in ZFLEET_REDIS_URL "
                    "(redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@... "
                    "for an ACL user)")  # fmt: skip
        return (f"Redis at {where} refused the credentials of user {user!r} "
                f"({exc}): check the user and password in ZFLEET_REDIS_URL")  # fmt: skip
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return (f"Redis at {where}: user {user!r} is not allowed this ({exc}); "
                "docs/operations.md lists the ACL zfleet's user needs")  # fmt: skip
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"cannot reach Redis at {where}: {exc} (is redis-server running there?)"
    return f"Redis at {where} failed: {exc}"


class Unavailable(ZfleetError):
    """A service zfleet needs is not there (exit code 4)."""


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn zfleet's errors into a one-line message and a meaningful exit code."""
    try:
        yield
    except Unavailable as exc:
        _die(str(exc), EXIT_UNAVAILABLE)
    except redis.RedisError as exc:
        _die(redis_problem(exc, _used_redis_url[-1] if _used_redis_url else ""), EXIT_UNAVAILABLE)
    except ConfigError as exc:
        _die(str(exc), EXIT_CONFIG)
    except JobError as exc:
        _die(str(exc), EXIT_FAILED)
    except ZfleetError as exc:
        _die(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def _die(message: str, code: int) -> None:
    click.echo(f"zfleet: {message}", err=True)
    sys.exit(code)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
