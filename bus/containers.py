"""Which container uses which datasets: one record per container in Redis.

The container job kind writes it (coordinator/containerjob.py) when a container is created,
checkpointed, restored or sent; anything that changes datasets under a running container reads
it: sync, failover and rebase hooks stop the container around a swap through
:func:`using_dataset`, and ``zfleet container ls`` shows it.

Layout: the hash ``zfleet:containers``, field = container name, value = JSON::

    {"name", "host", "spec": {ContainerSpec as plain data}, "state": "running|stopped",
     "copies": [hosts holding a copy sent without --stop-source],
     "checkpoints": [{"name", "mode", "reason", "at"}], "updated": unix time}
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

from bus import keys
from protocol.containersteps import ContainerMount, ContainerSpec
from protocol.errors import MessageError


@dataclass(frozen=True)
class CheckpointRecord:
    name: str
    mode: str  # criu or cold
    reason: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    host: str
    spec: ContainerSpec
    state: str = "running"
    copies: tuple[str, ...] = ()
    checkpoints: tuple[CheckpointRecord, ...] = ()
    updated: float = field(default_factory=time.time)

    def uses(self, dataset: str) -> bool:
        """True when ``dataset`` is one of the container's datasets (its image included), or
        an ancestor of one (a recursive operation there reaches it)."""
        mine = (self.spec.image_dataset, *self.spec.datasets)
        return any(d == dataset or d.startswith(dataset + "/") for d in mine)

    def with_checkpoint(self, cp: CheckpointRecord) -> ContainerRecord:
        kept = tuple(c for c in self.checkpoints if c.name != cp.name)
        return replace(self, checkpoints=(*kept, cp), updated=time.time())


def spec_to_data(spec: ContainerSpec) -> dict[str, Any]:
    return asdict(spec)


def spec_from_data(data: Mapping[str, Any]) -> ContainerSpec:
    """The spec in plain data (from a record or a job's options); MessageError when malformed."""
    try:
        mounts = tuple(ContainerMount(**m) for m in data.get("mounts", ()))
        rest = {k: v for k, v in data.items() if k != "mounts"}
        rest["command"] = tuple(rest.get("command", ()))
        return ContainerSpec(**rest, mounts=mounts)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"container spec cannot be read: {exc}") from exc


def _encode(rec: ContainerRecord) -> bytes:
    data = asdict(rec)
    data["spec"] = spec_to_data(rec.spec)
    return json.dumps(data, sort_keys=True).encode()


def _decode(raw: bytes) -> ContainerRecord:
    try:
        data = json.loads(raw)
        return ContainerRecord(
            name=data["name"], host=data["host"], spec=spec_from_data(data["spec"]),
            state=data.get("state", "running"), copies=tuple(data.get("copies", ())),
            checkpoints=tuple(CheckpointRecord(**c) for c in data.get("checkpoints", ())),
            updated=float(data.get("updated", 0.0)),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"container record cannot be read: {exc}") from exc


def put(client: redis.Redis[bytes], rec: ContainerRecord) -> None:
    client.hset(keys.CONTAINERS, rec.name, _encode(rec))


def get(client: redis.Redis[bytes], name: str) -> ContainerRecord | None:
    raw = client.hget(keys.CONTAINERS, name)
    return None if raw is None else _decode(raw)


def delete(client: redis.Redis[bytes], name: str) -> None:
    client.hdel(keys.CONTAINERS, name)


def all_records(client: redis.Redis[bytes]) -> list[ContainerRecord]:
    return sorted((_decode(v) for v in client.hgetall(keys.CONTAINERS).values()),
                  key=lambda r: r.name)  # fmt: skip


def using_dataset(client: redis.Redis[bytes], host: str, dataset: str) -> list[ContainerRecord]:
    """The containers on ``host`` (where they run, or hold a copy) that use ``dataset``."""
    return [r for r in all_records(client)
            if (r.host == host or host in r.copies) and r.uses(dataset)]  # fmt: skip
