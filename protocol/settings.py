"""One typed settings object, read from the environment and an optional TOML file at start.

Sources, later ones winning: the defaults below, then the TOML file (``path=`` or
``ZFLEET_CONFIG``), then ``ZFLEET_<NAME>`` environment variables (``ZFLEET_REDIS_URL``...).
In the file the settings are the ``[settings]`` table when there is one (the rest of the file is
then left to the fleet config), otherwise the top-level keys. A secret may also be read from a
file: ``fleet_secret_file = "/run/secrets/zfleet"`` or ``ZFLEET_FLEET_SECRET_FILE``.

Everything is checked before anything starts: an unknown key in the file, a wrong type, a bad URL
or address is a :class:`protocol.errors.ConfigError` that names the source (file and key, or
variable). Unknown ``ZFLEET_*`` variables are ignored (other parts of zfleet define their own)
unless the name is a near miss of a setting (``ZFLEET_REDIS_ULR``), which is refused as a typo.

Secrets (:class:`Secret`) print as ``**********`` in ``repr``, ``str``, f-strings, logs and error
messages; ``.get()`` reveals the value where it is used. A password inside ``redis_url`` is
redacted the same way in ``repr(settings)``.
"""

from __future__ import annotations

import difflib
import hmac
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from protocol.errors import ConfigError
from protocol.redisurl import is_sentinel_url, parse_sentinel_url

ENV_PREFIX: Final = "ZFLEET_"
CONFIG_ENV: Final = "ZFLEET_CONFIG"
MASK: Final = "**********"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM_BIND: Final = "127.0.0.1:7471"
DEFAULT_METRICS_PORT: Final = 9478
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_FLEET_SECRET: Final = 16
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
_SIZE_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class Secret:
    """A string that never prints itself; ``get()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"a secret must be a string, not {type(value).__name__}")
        self._value = value

    def get(self) -> str:
        """The secret value itself: use it, never log it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would carry the value to wherever the pickle goes (a Celery message, a log).
        raise TypeError("a Secret cannot be pickled; pass .get() explicitly where it must travel")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by the mask.

    Everything between ``://`` and the last ``@`` but a leading user name is masked, so that a
    password holding ``/``, ``?`` or ``@`` unquoted (the URL then does not parse) is masked too,
    and so is every password of a Sentinel URL's list; so are query parameters such as
    ``?password=`` (redis-py reads that one).
    """
    url = _SECRET_PARAM.sub(lambda m: m.group(1) + MASK, url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return MASK if "@" in url else url
    userinfo, at, tail = rest.rpartition("@")
    if not at:
        return url
    user = re.match(r"[^:/?#;,]*", userinfo)
    name = user.group(0) if user else ""
    if name == userinfo:
        return url  # a user name and no password
    return f"{scheme}://{name}:{MASK}@{tail}"


_SECRET_PARAM: Final = re.compile(r"([?&][^=&#]*(?:pass|secret|token|auth|key)[^=&#]*=)[^&#]*",
                                  re.IGNORECASE)  # fmt: skip


def parse_hostport(text: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6addr]:port"`` as ``(host, port)``; ConfigError if malformed."""
    if not isinstance(text, str):
        raise ConfigError(f"expected 'host:port', got {type(text).__name__}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{text!r}: write IPv6 addresses as '[addr]:port'")
    if not sep or not host or not port_text.isdigit() or not port_text.isascii():
        raise ConfigError(f"{text!r} is not 'host:port'")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(f"{text!r}: port must be {low}..65535")
    return host, port


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``/var/lib/zfleet`` for root (a system service), else the user's XDG data directory."""
    env = os.environ if env is None else env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/zfleet")
    xdg = env.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "zfleet"
    home = env.get("HOME")
    try:
        base = Path(home) if home else Path.home()
    except RuntimeError:
        raise ConfigError("no home directory to put data in: set ZFLEET_DATA_DIR") from None
    return base / ".local" / "share" / "zfleet"


# Fields whose default depends on another field carry this sentinel until __post_init__.
_DERIVED: Final = Path("\0derived")


@dataclass(frozen=True, repr=False)
class Settings:
    """zfleet's process settings; build with :func:`load_settings`."""

    redis_url: str = DEFAULT_REDIS_URL
    fleet_secret: Secret | None = None  # HMAC key for transfer grants
    data_dir: Path = field(default_factory=default_data_dir)
    sim_root: Path = _DERIVED  # default: <data_dir>/sim
    log_format: str = "auto"
    log_level: str = "INFO"
    stream_bind: str = DEFAULT_STREAM_BIND
    stream_advertise: str = ""  # default: stream_bind
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    compression_level: int = 3
    bwlimit: int | None = None  # bytes per second; None is unlimited
    metrics_port: int = DEFAULT_METRICS_PORT  # 0 turns the endpoint off
    job_retention: int = 7 * 86400  # seconds a finished job stays listed
    step_time_limit: int = 12 * 3600  # seconds a step may run before the watchdog stops it
    store_endpoint: str | None = None  # S3-compatible endpoint URL; None for AWS
    store_region: str | None = None
    store_access_key: Secret | None = None
    store_secret_key: Secret | None = None

    def __post_init__(self) -> None:
        if self.sim_root is _DERIVED:
            object.__setattr__(self, "sim_root", self.data_dir / "sim")
        if not self.stream_advertise:
            object.__setattr__(self, "stream_advertise", self.stream_bind)
        object.__setattr__(self, "log_level", str(self.log_level).upper())
        for f in fields(self):
            _CHECKS.get(f.name, _no_check)(getattr(self, f.name), f.name)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({shown})"

    __str__ = __repr__

    def redacted(self) -> dict[str, Any]:
        """Every setting, with secrets and URL passwords masked: safe to print or log."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = MASK
            elif f.name == "redis_url" or (f.name == "store_endpoint" and value):
                value = redact_url(value)
            out[f.name] = value
        return out

    @property
    def stream_bind_addr(self) -> tuple[str, int]:
        """``stream_bind`` as ``(host, port)``."""
        return parse_hostport(self.stream_bind, allow_port_zero=True)

    @property
    def stream_advertise_addr(self) -> tuple[str, int]:
        """``stream_advertise`` as ``(host, port)``."""
        return parse_hostport(self.stream_advertise, allow_port_zero=True)


# -- checks (run on every Settings, however it was built) -----------------------------------


def _no_check(value: object, where: str) -> None:
    return None


def _check_redis_url(value: object, where: str) -> None:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a URL string, got {type(value).__name__}")
    shown = redact_url(value)
    if is_sentinel_url(value):
        try:
            parse_sentinel_url(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: bad URL {shown!r}: {exc}") from None
        return
    try:
        parts: SplitResult = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: bad URL {shown!r}: {exc}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            f"{where}: bad URL {shown!r}: scheme must be one of {', '.join(_REDIS_SCHEMES)}"
            " or sentinel"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{where}: bad URL {shown!r}: a unix URL needs a socket path")
        return
    if not parts.hostname:
        raise ConfigError(f"{where}: bad URL {shown!r}: no host")
    if port == 0:
        raise ConfigError(f"{where}: bad URL {shown!r}: port 0")
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and db.isascii()):
        raise ConfigError(f"{where}: bad URL {shown!r}: database must be a number, not {db!r}")


def _check_http_url(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a URL string, got {type(value).__name__}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (urlsplit checks the port only when asked)
    except ValueError as exc:
        raise ConfigError(f"{where}: bad URL {redact_url(value)!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: bad URL {redact_url(value)!r}: need http(s)://host[:port]")


def _check_choice(choices: tuple[str, ...]) -> Callable[[object, str], None]:
    def check(value: object, where: str) -> None:
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(choices)}, not {value!r}")

    return check


def _check_range(low: int, high: int) -> Callable[[object, str], None]:
    def check(value: object, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{where}: must be an integer in {low}..{high}, not {value!r}")

    return check


def _check_hostport(value: object, where: str) -> None:
    try:
        parse_hostport(str(value), allow_port_zero=True)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_fleet_secret(value: object, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Secret):
        raise ConfigError(f"{where}: must be a Secret")
    if len(value.get()) < MIN_FLEET_SECRET:
        # Never echo the value, not even its length.
        raise ConfigError(f"{where}: is too short (at least {MIN_FLEET_SECRET} characters)")


def _check_secret(value: object, where: str) -> None:
    if value is not None and not isinstance(value, Secret):
        raise ConfigError(f"{where}: must be a Secret")


def _check_path(value: object, where: str) -> None:
    if value is not None and not isinstance(value, Path):
        raise ConfigError(f"{where}: must be a path")


def _check_existing_file(value: object, where: str) -> None:
    _check_path(value, where)
    if value is None:
        return
    try:
        exists = Path(str(value)).is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise ConfigError(f"{where}: cannot use {str(value)!r}: {exc}") from None
    if not exists:
        raise ConfigError(f"{where}: file {str(value)!r} does not exist")


def _check_bwlimit(value: object, where: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConfigError(f"{where}: must be a positive number of bytes per second or unset")


_CHECKS: Final[dict[str, Callable[[object, str], None]]] = {
    "redis_url": _check_redis_url,
    "fleet_secret": _check_fleet_secret,
    "data_dir": _check_path,
    "sim_root": _check_path,
    "log_format": _check_choice(LOG_FORMATS),
    "log_level": _check_choice(LOG_LEVELS),
    "stream_bind": _check_hostport,
    "stream_advertise": _check_hostport,
    "tls_ca": _check_existing_file,
    "tls_cert": _check_existing_file,
    "tls_key": _check_existing_file,
    "compression_level": _check_range(1, 19),
    "bwlimit": _check_bwlimit,
    "metrics_port": _check_range(0, 65535),
    "job_retention": _check_range(60, 10 * 365 * 86400),
    "step_time_limit": _check_range(1, 30 * 86400),
    "store_endpoint": _check_http_url,
    "store_region": _no_check,
    "store_access_key": _check_secret,
    "store_secret_key": _check_secret,
}


# -- parsing raw values (env strings or TOML values) ------------------------------------------


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _opt_text(value: object, where: str) -> str | None:
    return _text(value, where) or None


def _int(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _path(value: object, where: str) -> Path:
    text = _text(value, where)
    if not text or "\0" in text:
        raise ConfigError(f"{where}: expected a path, got {text!r}")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~user" for a user this machine does not know
        raise ConfigError(f"{where}: cannot expand the home directory in {text!r}") from None


def _opt_path(value: object, where: str) -> Path | None:
    return _path(value, where) if value != "" else None


def _secret(value: object, where: str) -> Secret | None:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return Secret(value) if value else None


def _size(value: object, where: str) -> int | None:
    """Bytes per second: ``1048576``, ``"512K"``, ``"100M"``, ``"1.5GiB/s"``; 0 or "" is none."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value or None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a size such as '100M', got {type(value).__name__}")
    text = value.strip().upper().removesuffix("/S").removesuffix("B").removesuffix("I")
    if not text:
        return None
    unit = text[-1] if text[-1] in _SIZE_UNITS and not text[-1].isdigit() else ""
    number = text[: len(text) - len(unit)].strip()
    try:
        amount = float(number)
    except ValueError:
        raise ConfigError(f"{where}: expected a size such as '100M', got {value!r}") from None
    if not math.isfinite(amount) or amount < 0:
        raise ConfigError(f"{where}: expected a size such as '100M', got {value!r}")
    return int(amount * _SIZE_UNITS[unit]) or None


_PARSERS: Final[dict[str, Callable[[object, str], Any]]] = {
    "redis_url": _text,
    "fleet_secret": _secret,
    "data_dir": _path,
    "sim_root": _path,
    "log_format": _text,
    "log_level": _text,
    "stream_bind": _text,
    "stream_advertise": _text,
    "tls_ca": _opt_path,
    "tls_cert": _opt_path,
    "tls_key": _opt_path,
    "compression_level": _int,
    "bwlimit": _size,
    "metrics_port": _int,
    "job_retention": _int,
    "step_time_limit": _int,
    "store_endpoint": _opt_text,
    "store_region": _opt_text,
    "store_access_key": _secret,
    "store_secret_key": _secret,
}
_SECRETS: Final = ("fleet_secret", "store_access_key", "store_secret_key")


def _read_secret_file(value: object, where: str) -> str:
    path = _path(value, where)
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read secret file {str(path)!r}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8)") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(f"{str(path)!r}: not a usable path: {exc}") from None
    section = data.get("settings", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [settings] must be a table")
    return section


def _collect(
    raw: Mapping[str, object], where: Callable[[str], str], strict: bool
) -> dict[str, Any]:
    """Parse ``raw`` keys into setting values; refuse unknown keys (or only typos if not strict)."""
    known = set(_PARSERS)
    out: dict[str, Any] = {}
    for key, given in raw.items():
        name, value = key, given
        if key.endswith("_file") and key.removesuffix("_file") in _SECRETS:
            name = key.removesuffix("_file")
            value = _read_secret_file(given, where(key))
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
            if strict or close:
                hint = f" (did you mean {where(close[0])!r}?)" if close else ""
                raise ConfigError(f"{where(key)}: unknown setting{hint}")
            continue
        parsed = _PARSERS[name](value, where(key))
        if name == "log_level" and isinstance(parsed, str):
            parsed = parsed.upper()
        _CHECKS[name](parsed, where(key))
        out[name] = parsed
    return out


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from defaults, the TOML file at ``path`` (or ``$ZFLEET_CONFIG``) and ``env``.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    file = path if path is not None else env.get(CONFIG_ENV) or None
    if file is not None:
        file_path = Path(file).expanduser()
        section = _read_toml(file_path)
        values.update(_collect(section, lambda k: f"{file_path}: {k}", strict=True))
    from_env = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV
    }
    values.update(_collect(from_env, lambda k: f"{ENV_PREFIX}{k.upper()}", strict=False))
    if "data_dir" not in values:
        values["data_dir"] = default_data_dir(env)
    return Settings(**values)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` applied and checked (for CLI flags).

    A ``sim_root`` that was derived from ``data_dir`` follows a new ``data_dir``.
    """
    if (
        "data_dir" in changes
        and "sim_root" not in changes
        and settings.sim_root == settings.data_dir / "sim"
    ):
        changes["sim_root"] = _DERIVED
    return replace(settings, **changes)
