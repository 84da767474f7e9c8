"""Space accounting as ZFS reports it: referenced, written, and the used of snapshots.

A record is identified by (object, index, block id): the simulation's stand-in for a block
pointer. ``written`` of a snapshot counts records not in the previous snapshot; ``used`` of a
snapshot counts records neither its predecessor nor its successor (nor the live data) hold, so
it is what destroying that snapshot alone would free, as in ZFS.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .blocks import HOLE
from .nodes import Manifest, Node, decode_manifest
from .objects import ObjectStore
from .tree import decode_cache, walk

if TYPE_CHECKING:
    from .pool import Dataset, Pool, Snapshot


def referenced(store: ObjectStore, manifest: Manifest) -> int:
    """Bytes of all non-hole records of a manifest."""
    sizes = store.sizes(d for d in manifest.values() if d)
    return sum(sizes.get(d, 0) for d in manifest.values())


def referenced_delta(store: ObjectStore, old: Manifest, new: Manifest) -> int:
    """referenced(new) - referenced(old), reading only the objects that differ."""
    gone = [d for o, d in old.items() if d and new.get(o) != d]
    came = [d for o, d in new.items() if d and old.get(o) != d]
    sizes = store.sizes([*gone, *came])
    return sum(sizes.get(d, 0) for d in came) - sum(sizes.get(d, 0) for d in gone)


def unique_bytes(store: ObjectStore, target: Manifest, others: Sequence[Manifest]) -> int:
    """Bytes of ``target``'s records that none of ``others`` holds at the same place."""
    candidates: dict[int, bytes] = {}
    for obj, digest in target.items():
        if not digest or any(o.get(obj) == digest for o in others):
            continue
        candidates[obj] = digest
    if not candidates:
        return 0
    wanted = set(candidates.values())
    for other in others:
        wanted.update(other[obj] for obj in candidates if other.get(obj))
    nodes = store.get_many(wanted)
    total = 0
    for obj, digest in candidates.items():
        node = nodes[digest]
        size = node.meta_size()
        theirs: list[Node] = [nodes[o[obj]] for o in others if o.get(obj)]
        for i, block in enumerate(node.blocks):
            if block == HOLE:
                continue
            if any(i < len(t.blocks) and t.blocks[i] == block for t in theirs):
                continue
            total += node.record_len(i, size)
    return total


class Space:
    """Space figures of one pool, each computed once however often an inventory asks."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._live: dict[int, tuple[Manifest, int]] = {}
        self._used: dict[int, int] = {}
        self._datasets: dict[int, dict[str, int]] = {}

    def live(self, ds: Dataset) -> tuple[Manifest, int]:
        """The live data as far as it is known unchanged, plus bytes of changed files."""
        if ds.id not in self._live:
            self._live[ds.id] = self._scan_live(ds)
        return self._live[ds.id]

    def _scan_live(self, ds: Dataset) -> tuple[Manifest, int]:
        pool = self.pool
        if ds.head is not None or not ds.mounted:
            return (decode_manifest(ds.head) if ds.head else {}), 0
        cache = decode_cache(ds.scan)
        if ds.kind == "volume":
            path = pool.volume_path(ds)
            entry = cache.get("")
            if not path.exists():
                return {}, 0
            st = os.stat(path)
            if entry and entry[:4] == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                return {entry[4]: entry[5]}, 0
            return {}, min(st.st_size, st.st_blocks * 512)
        mnt = pool.mountpoint(ds)
        if mnt is None:
            return {}, 0
        known: Manifest = {}
        extra = 0
        for rel, st in walk(mnt, pool.exclude(ds, mnt)):
            entry = cache.get(rel)
            if entry and entry[:4] == (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                known[entry[4]] = entry[5]
            elif not stat.S_ISDIR(st.st_mode):
                extra += min(st.st_size, st.st_blocks * 512)
        return known, extra

    def snapshot_used(self, snap: Snapshot, ds: Dataset | None = None) -> int:
        if snap.id not in self._used:
            self._all_used(ds or self.pool.dataset_by_id(snap.dataset))
        return self._used[snap.id]

    def _all_used(self, ds: Dataset) -> None:
        """``used`` of every snapshot of ``ds``: records neither neighbour (nor a clone) holds."""
        pool = self.pool
        snaps = pool.snapshots(ds.id)
        manifests = [s.manifest for s in snaps]
        before = pool.snapshot_by_id(ds.origin).manifest if ds.origin is not None else None
        for i, snap in enumerate(snaps):
            neighbours: list[Manifest] = []
            if i > 0:
                neighbours.append(manifests[i - 1])
            elif before is not None:
                neighbours.append(before)
            neighbours.append(manifests[i + 1] if i + 1 < len(snaps) else self.live(ds)[0])
            neighbours += [self._clone_head(c) for c in pool.clones_of(snap.id)]
            self._used[snap.id] = unique_bytes(pool.objects, manifests[i], neighbours)

    def _clone_head(self, clone: Dataset) -> Manifest:
        snaps = self.pool.snapshots(clone.id)
        return snaps[0].manifest if snaps else self.live(clone)[0]

    def dataset(self, ds: Dataset) -> dict[str, int]:
        """referenced, written, usedby* and used of a dataset (children included)."""
        if ds.id in self._datasets:
            return self._datasets[ds.id]
        pool = self.pool
        store = pool.objects
        known, extra = self.live(ds)
        snaps = pool.snapshots(ds.id)
        ref = referenced(store, known) + extra
        origin = pool.snapshot_by_id(ds.origin).manifest if ds.origin is not None else None
        base = snaps[-1].manifest if snaps else origin
        written = (unique_bytes(store, known, [base]) if base is not None else ref - extra) + extra
        by_dataset = unique_bytes(store, known, [origin]) + extra if origin is not None else ref
        by_snaps = sum(self.snapshot_used(s, ds) for s in snaps)
        depth = ds.name.count("/") + 1
        by_children = sum(
            self.dataset(child)["used"]
            for child in pool.descendants(ds.name)
            if child.name.count("/") == depth
        )
        figures = {
            "referenced": ref,
            "written": written,
            "usedbydataset": by_dataset,
            "usedbysnapshots": by_snaps,
            "usedbychildren": by_children,
            "usedbyrefreservation": 0,
            "used": by_dataset + by_snaps + by_children,
        }
        self._datasets[ds.id] = figures
        return figures
