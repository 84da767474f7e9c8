"""Builds inventories (ZfsObject rows) for planner and graph tests from a compact description."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

from coordinator.config import JobConfig, parse_config
from coordinator.graph import FleetGraph
from workers.zfs.base import ObjType, ZfsObject


def guid_of(name: str) -> int:
    """A stable guid for a snapshot name (the same snapshot has the same guid on every host)."""
    return zlib.crc32(name.encode()) * 7919 + 1


def dataset(
    name: str,
    snaps: Sequence[str] = (),
    *,
    origin: str | None = None,
    written: int = 0,
    guid_from: str | None = None,
    bookmarks: Sequence[str] = (),
    snap_written: int = 1000,
) -> list[ZfsObject]:
    """A filesystem with snapshots in order; guids come from ``guid_from`` (the source's name)."""
    base = guid_from or name
    rows = [ZfsObject(name, ObjType.FILESYSTEM, guid_of(name + "/fs"), 1, 0, origin=origin,
                      written=written)]  # fmt: skip
    for i, s in enumerate(snaps):
        rows.append(
            ZfsObject(f"{name}@{s}", ObjType.SNAPSHOT, guid_of(f"{base}@{s}"), 10 + i * 10, i,
                      written=snap_written, referenced=snap_written * (i + 1))
        )  # fmt: skip
    for b in bookmarks:
        # a bookmark keeps the guid and txg of the snapshot it was made from
        rows.append(ZfsObject(f"{name}#{b}", ObjType.BOOKMARK, guid_of(f"{base}@{b}"), 5, 0))
    return rows


def graph_of(**hosts: Iterable[list[ZfsObject]]) -> FleetGraph:
    g = FleetGraph()
    for host, parts in hosts.items():
        g.add_inventory(host, [row for part in parts for row in part])
    return g


def job_config(extra: str = "", targets: str = '["beta:bk/t", "gamma:bk/t"]') -> str:
    return f"""
[hosts.alpha]
[hosts.beta]
[hosts.gamma]
[jobs.j]
source = "alpha:tank/t"
targets = {targets}
{extra}
"""


def job(extra: str = "", targets: str = '["beta:bk/t", "gamma:bk/t"]') -> JobConfig:
    return parse_config(job_config(extra, targets)).job("j")
