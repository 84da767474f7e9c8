"""Key material in Redis: hosts' public keys and key groups' sealed wrapping keys.

Nothing here is secret: a host registers its X25519 *public* key; a group's record names its
members, its keeper (the host holding the group's encrypted datasets, where keys are made and
changed) and its datasets, and keeps the group key of each version as one sealed box per member
(protocol/sealed.py), openable with that member's private key only. The two newest versions are
kept: a replica that has not received the raw increment after a rotation still needs the older.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis

from bus import keys
from protocol.errors import ConfigError

KEEP_VERSIONS: Final = 2


@dataclass(frozen=True)
class HostKey:
    host: str
    public: bytes
    registered: float


@dataclass(frozen=True)
class KeyGroup:
    name: str
    keeper: str
    members: tuple[str, ...]
    datasets: tuple[str, ...]  # on the keeper
    version: int  # the key the keeper's datasets are wrapped with now (0: none yet)
    sealed: Mapping[tuple[int, str], str] = field(default_factory=dict)  # (version, host) -> box

    def boxes_for(self, host: str) -> list[tuple[int, str]]:
        """``host``'s sealed copies, newest version first."""
        return sorted(((v, box) for (v, h), box in self.sealed.items() if h == host),
                      reverse=True)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "keeper": self.keeper, "members": list(self.members),
                "datasets": list(self.datasets), "version": self.version,
                "sealed_for": sorted({h for _, h in self.sealed})}  # fmt: skip


def put_host_key(client: redis.Redis[bytes], host: str, public: bytes) -> None:
    client.hset(keys.host_key(host), mapping={"public": public.hex(), "at": str(time.time())})


def host_key(client: redis.Redis[bytes], host: str) -> HostKey | None:
    raw = client.hgetall(keys.host_key(host))
    if not raw or b"public" not in raw:
        return None
    return HostKey(host, bytes.fromhex(raw[b"public"].decode()), float(raw.get(b"at", b"0")))


def require_host_keys(client: redis.Redis[bytes], hosts: Sequence[str]) -> dict[str, bytes]:
    """Every host's public key; ConfigError naming the hosts that never registered one."""
    found = {h: host_key(client, h) for h in hosts}
    missing = sorted(h for h, k in found.items() if k is None)
    if missing:
        raise ConfigError(
            f"no key pair registered for {', '.join(missing)}: run `zfleet keys host init "
            "--host NAME` on each (the private key stays on the host)"
        )
    return {h: k.public for h, k in found.items() if k is not None}


def group(client: redis.Redis[bytes], name: str) -> KeyGroup | None:
    raw = client.hgetall(keys.key_group(name))
    if b"meta" not in raw:
        return None
    meta = json.loads(raw[b"meta"])
    sealed = {}
    for field_name, value in raw.items():
        parts = field_name.decode().split(":")
        if parts[0] == "sealed" and len(parts) == 3:
            sealed[(int(parts[1]), parts[2])] = value.decode()
    return KeyGroup(meta["name"], meta["keeper"], tuple(meta["members"]),
                    tuple(meta["datasets"]), int(meta["version"]), sealed)  # fmt: skip


def groups(client: redis.Redis[bytes]) -> list[str]:
    return sorted(m.decode() for m in client.smembers(keys.KEY_GROUPS))


def put_group(client: redis.Redis[bytes], g: KeyGroup) -> None:
    """Write ``g`` whole: its meta and boxes; boxes of older versions and of hosts that are no
    longer members are deleted (a removed member's copy is gone from Redis, see docs/keys.md)."""
    keep = {v for v in sorted({v for v, _ in g.sealed}, reverse=True)[:KEEP_VERSIONS]}
    fields: dict[str | bytes, str] = {f"sealed:{v}:{h}": box for (v, h), box in g.sealed.items()
                                      if v in keep and h in g.members}  # fmt: skip
    fields["meta"] = json.dumps({"name": g.name, "keeper": g.keeper, "members": list(g.members),
            "datasets": list(g.datasets), "version": g.version})  # fmt: skip
    key = keys.key_group(g.name)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.sadd(keys.KEY_GROUPS, g.name)
        pipe.execute()
