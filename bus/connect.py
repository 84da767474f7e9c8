"""A Redis client for zfleet's ``redis_url``: a plain URL, or sentinels that name the master.

With ``sentinel://`` the client asks the sentinels for the current master on every new
connection, so after a failover the next command (a retry after the ``ConnectionError`` the
loss of the old master raises) goes to the promoted replica; a replica that answers
``READONLY`` is left the same way.
"""

from __future__ import annotations

from typing import Final

import redis
from redis.sentinel import Sentinel

from protocol.redisurl import is_sentinel_url, parse_sentinel_url

# How long to wait for one sentinel before asking the next.
SENTINEL_TIMEOUT: Final = 2.0


def connect(url: str) -> redis.Redis[bytes]:
    """A client for ``url`` (not yet connected: the first command connects)."""
    if not is_sentinel_url(url):
        client: redis.Redis[bytes] = redis.Redis.from_url(url)
        return client
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT,
                         "socket_connect_timeout": SENTINEL_TIMEOUT},
    )  # fmt: skip
    master: redis.Redis[bytes] = sentinel.master_for(
        target.master, db=target.db, username=target.username, password=target.password
    )
    return master
