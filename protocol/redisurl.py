"""Redis Sentinel URLs: which sentinels to ask, for which master, as which user.

zfleet reaches Redis through one ``redis_url`` setting. Besides ``redis://``, ``rediss://`` and
``unix://`` it takes a Sentinel form, so that the broker survives the loss of its master::

    sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/DB]?master=NAME

Hosts may also be separated by ``;`` (Celery's own way of listing sentinels, where each may carry
its own ``sentinel://`` prefix). ``USER``/``PASSWORD`` are those of the master and its replicas;
the sentinels themselves are asked without credentials. Pure: parsing only, no connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, unquote

from protocol.errors import ConfigError

SCHEME: Final = "sentinel"
DEFAULT_SENTINEL_PORT: Final = 26379
_MASTER_NAME: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``sentinel://`` URL; ``repr`` shows no password."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Redis through sentinels."""
    return url.lower().startswith(SCHEME + "://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``url`` parsed; :class:`ConfigError` naming what is wrong (never the password)."""
    if not is_sentinel_url(url):
        raise ConfigError("a Sentinel URL starts with sentinel://")
    # Celery's form repeats the scheme before every sentinel
    rest = re.sub(r"([;,])sentinel://", r"\1", url[len(SCHEME) + 3 :], flags=re.IGNORECASE)
    rest, _, query = rest.partition("?")
    userinfo, at, hosts_part = rest.rpartition("@")
    if not at:
        userinfo, hosts_part = "", rest
    username: str | None = None
    password: str | None = None
    if at:
        if "/" in userinfo or ";" in userinfo or "," in userinfo:
            raise ConfigError("credentials go once, before the first sentinel")
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    hosts_part, slash, db_text = hosts_part.partition("/")
    sentinels = tuple(_hostport(part) for part in re.split(r"[,;]", hosts_part))
    if slash and db_text.rstrip("/") == "":
        db_text = "0"
    db = 0
    if db_text:
        if not db_text.isdigit() or not db_text.isascii():
            raise ConfigError(f"the database must be a number, not {db_text!r}")
        db = int(db_text)
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"master"})
    if unknown:
        raise ConfigError(f"unknown Sentinel URL parameters {unknown} (known: master)")
    masters = params.get("master", [])
    if len(masters) != 1 or not _MASTER_NAME.match(masters[0]):
        raise ConfigError("a Sentinel URL names its master once: ...?master=NAME (letters, digits,"
                          " '.', '_', '-')")  # fmt: skip
    return SentinelUrl(sentinels, masters[0], db, username, password)


def _hostport(part: str) -> tuple[str, int]:
    if "@" in part:
        raise ConfigError("credentials go once, before the first sentinel")
    if not part:
        raise ConfigError("a Sentinel URL needs at least one sentinel HOST:PORT")
    if part.startswith("["):
        host, _, port_text = part[1:].partition("]")
        port_text = port_text.removeprefix(":")
        bad = not host
    else:
        host, _, port_text = part.partition(":")
        bad = not host or ":" in port_text
    if bad:
        raise ConfigError(f"{part!r} is not a sentinel HOST:PORT (IPv6 as [addr]:port)")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"{part!r}: the port must be 1..65535")
    return host, int(port_text)
