"""Prune: forget streams past retention, then delete the packs nothing refers to any more.

Retention keeps the last ``keep_last`` streams per dataset plus every stream their chains need
(an incremental is useless without its base). A pack survives if a kept manifest refers to it,
if a live lease lists it, if it is younger than the grace period, or if it is older than the
start of a live upload (which may deduplicate against it). The prune lock keeps new uploads from
starting meanwhile (see leases.py). The index is rewritten before any pack is deleted, so no
reader is ever directed to a deleted pack.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Final

import structlog

from protocol.errors import ConfigError, StoreError
from workers.cloud import manifest as mf
from workers.cloud.leases import read_leases, release_prune_lock, take_prune_lock
from workers.cloud.packs import BlobEntry, pack_id_of, pack_key, read_segment, write_segment
from workers.cloud.repo import Repository, now

log = structlog.get_logger(__name__)

GRACE: Final = 60 * 60.0


@dataclass(frozen=True)
class PruneReport:
    """What prune removed (or would remove, with ``dry_run``)."""

    forgotten: tuple[str, ...]  # snapshots whose manifests were removed
    kept: int
    packs_deleted: int
    bytes_freed: int
    packs_protected_by_leases: int
    dry_run: bool


def select_kept(manifests: list[mf.Manifest], keep_last: int) -> set[str]:
    """Ids of the manifests retention keeps: the newest per dataset and their chains."""
    if keep_last < 1:
        raise ConfigError("keep_last must be at least 1")
    per_dataset: dict[str, list[mf.Manifest]] = defaultdict(list)
    for m in manifests:  # oldest first
        per_dataset[m.dataset].append(m)
    by_toguid = {m.toguid: m for m in manifests if not m.resuming}
    kept: set[str] = set()
    for ms in per_dataset.values():
        for m in ms[-keep_last:]:
            cur: mf.Manifest | None = m
            while cur is not None and cur.id not in kept:
                kept.add(cur.id)
                cur = by_toguid.get(cur.fromguid) if cur.fromguid else None
    return kept


def prune(
    repo: Repository, *, keep_last: int, grace: float = GRACE, dry_run: bool = False
) -> PruneReport:
    """Apply retention and delete unreferenced packs; see the module docstring for the rules."""
    target = repo.target
    take_prune_lock(target)
    try:
        manifests, broken = mf.load_all(target, repo.crypto)
        if broken:
            # A manifest we cannot read may refer to any pack: deleting would risk its data.
            raise StoreError(
                f"{len(broken)} manifest(s) are unreadable; run `zfleet cloud verify` first"
            )
        kept_ids = select_kept(manifests, keep_last)
        forgotten = [m for m in manifests if m.id not in kept_ids]
        referenced = {p for m in manifests if m.id in kept_ids for p in m.packs}
        packs = {pack_id_of(i.key): i for i in target.list("data/")}
        # Leases are read after listing packs: a pack listed above was added to its lease first.
        at = now()
        live = [lease for lease in read_leases(target) if lease.live(at)]
        leased = {p for lease in live for p in lease.packs}
        oldest_live_start = min((lease.started for lease in live), default=None)
        doomed: dict[str, int] = {}
        for pid, info in packs.items():
            if pid in referenced or pid in leased:
                continue
            age_start = info.modified.timestamp()
            if at - age_start < grace:
                continue
            if oldest_live_start is not None and age_start <= oldest_live_start:
                continue  # a live upload may deduplicate against it
            doomed[pid] = info.size
        if not dry_run:
            for m in forgotten:
                target.delete(f"manifests/{m.id}")
            if doomed:
                _rewrite_index(repo, set(doomed))
                for pid in doomed:
                    target.delete(pack_key(pid))
                repo.reload_index()
        report = PruneReport(
            forgotten=tuple(m.snapshot for m in forgotten),
            kept=len(kept_ids),
            packs_deleted=len(doomed),
            bytes_freed=sum(doomed.values()),
            packs_protected_by_leases=len(leased & set(packs)),
            dry_run=dry_run,
        )
        log.info(
            "prune.done",
            forgotten=len(forgotten),
            packs_deleted=len(doomed),
            bytes_freed=report.bytes_freed,
            dry_run=dry_run,
        )
        return report
    finally:
        release_prune_lock(target)


def _rewrite_index(repo: Repository, doomed: set[str]) -> None:
    """Replace the segments that mention a doomed pack by one segment without them."""
    keep: dict[str, list[BlobEntry]] = {}
    stale: list[str] = []
    for info in repo.target.list("index/"):
        seg = info.key.rsplit("/", 1)[-1]
        pairs = read_segment(repo.crypto, seg, repo.target.get(info.key))
        if not any(pack in doomed for pack, _ in pairs):
            continue
        stale.append(info.key)
        for pack, entries in pairs:
            if pack not in doomed:
                keep[pack] = entries
    if keep:
        write_segment(repo.target, repo.crypto, keep)
    for key in stale:
        repo.target.delete(key)
