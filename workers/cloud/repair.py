"""Repair: rebuild the repository index from the packs themselves.

Every pack carries its own sealed header, so the index is a cache that can always be rebuilt:
packs that no readable index segment lists are read and indexed in one new segment, and the
damaged segments are removed (whatever they listed is now indexed again). The prune lock is held
so no pack disappears while it is being indexed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from protocol.errors import StoreError
from workers.cloud.leases import release_prune_lock, take_prune_lock
from workers.cloud.packs import BlobEntry, pack_id_of, pack_key, read_pack_header, write_segment
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RepairReport:
    """What repair did."""

    packs_indexed: int
    segments_removed: int
    unreadable_packs: dict[str, str] = field(default_factory=dict)  # pack -> why


def rebuild_index(repo: Repository) -> RepairReport:
    """Index every pack the index misses and drop damaged index segments."""
    target = repo.target
    take_prune_lock(target)
    try:
        index = repo.reload_index()
        known = index.packs()
        found: dict[str, list[BlobEntry]] = {}
        unreadable: dict[str, str] = {}
        for info in target.list("data/"):
            pack = pack_id_of(info.key)
            if pack in known:
                continue
            try:
                found[pack] = read_pack_header(repo.crypto, pack, target.get(pack_key(pack)))
            except StoreError as e:
                unreadable[pack] = str(e)
        if found:
            write_segment(target, repo.crypto, found)
        for seg in index.broken:
            target.delete(f"index/{seg}")
        repo.reload_index()
        log.info(
            "repair.done",
            packs_indexed=len(found),
            segments_removed=len(index.broken),
            unreadable=len(unreadable),
        )
        return RepairReport(len(found), len(index.broken), unreadable)
    finally:
        release_prune_lock(target)
