"""``zfs diff``: what changed between a snapshot and a later snapshot or the live dataset.

Objects are matched by object id, as OpenZFS does: an object whose path changed is a rename (R),
one whose content or metadata changed is modified (M); directories whose entries changed are
reported M like files. Paths are absolute, under the dataset's mountpoint.

As in OpenZFS (libzfs_diff.c), the later side may also be a clone, or a clone's snapshot, whose
chain of origins leads back to the snapshot's dataset: a clone keeps its origin's object ids, so
the same matching tells what the clone changed since it was made.
"""

from __future__ import annotations

from protocol.errors import InvalidOperation
from workers.zfs.base import DiffChange, DiffEntry

from . import db
from .nodes import Manifest
from .pool import Dataset, Pool, Snapshot
from .tree import resolve_paths


def diff(pool: Pool, snapshot: str, other: str) -> list[DiffEntry]:
    """Changes from ``snapshot`` to ``other`` (a later snapshot of the same dataset, or it)."""
    old = pool.snapshot(snapshot)
    if "@" in other:
        new_snap = pool.snapshot(other)
        if not _descends(pool, pool.dataset_by_id(new_snap.dataset), old):
            raise InvalidOperation(
                f"Unable to obtain diffs: {other} is not a snapshot of {old.dataset_name}"
            )
        new_manifest: Manifest = new_snap.manifest
        ds = pool.dataset_by_id(new_snap.dataset)
    else:
        ds = pool.dataset(other)
        if not _descends(pool, ds, old):
            raise InvalidOperation(
                f"Unable to obtain diffs: {snapshot} is not a snapshot of {other}"
            )
        with db.txg(pool.conn):
            new_manifest, _cache, _next = pool.capture(ds)
    base = str(pool.mountpoint(ds) or f"/{ds.name}")
    old_paths, old_nodes = resolve_paths(old.manifest, pool.objects)
    new_paths, new_nodes = resolve_paths(new_manifest, pool.objects)
    old_by_obj = _by_obj(old_paths)
    new_by_obj = _by_obj(new_paths)
    entries: list[DiffEntry] = []
    old_manifest = old.manifest
    for obj, paths in old_by_obj.items():
        if obj not in new_by_obj:
            entries += [DiffEntry(DiffChange.REMOVED, _abs(base, p)) for p in paths]
    for obj, paths in new_by_obj.items():
        if obj not in old_by_obj:
            entries += [DiffEntry(DiffChange.ADDED, _abs(base, p)) for p in paths]
            continue
        before = old_by_obj[obj]
        if set(before) != set(paths):
            kept = set(before) & set(paths)
            gone = sorted(set(before) - kept)
            came = sorted(set(paths) - kept)
            for a, b in zip(gone, came, strict=False):
                entries.append(DiffEntry(DiffChange.RENAMED, _abs(base, a), _abs(base, b)))
            entries += [DiffEntry(DiffChange.REMOVED, _abs(base, p)) for p in gone[len(came) :]]
            entries += [DiffEntry(DiffChange.ADDED, _abs(base, p)) for p in came[len(gone) :]]
        elif old_manifest[obj] != new_manifest[obj]:
            same_kind = old_nodes[obj].meta.kind == new_nodes[obj].meta.kind
            if not same_kind:
                entries += [DiffEntry(DiffChange.REMOVED, _abs(base, p)) for p in before]
                entries += [DiffEntry(DiffChange.ADDED, _abs(base, p)) for p in paths]
            else:
                entries += [DiffEntry(DiffChange.MODIFIED, _abs(base, p)) for p in paths]
    return sorted(entries, key=lambda e: (e.path, e.change))


def _descends(pool: Pool, ds: Dataset, old: Snapshot) -> bool:
    """True when ``ds`` is ``old``'s dataset, or a clone made (through origins) after ``old``."""
    current = ds
    while current.id != old.dataset:
        if current.origin is None:
            return False
        origin = pool.snapshot_by_id(current.origin)
        if origin.dataset == old.dataset and origin.createtxg < old.createtxg:
            return False  # branched off before the snapshot: not a later state of it
        current = pool.dataset_by_id(origin.dataset)
    return True


def _by_obj(paths: dict[str, int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for path, obj in sorted(paths.items()):
        out.setdefault(obj, []).append(path)
    return out


def _abs(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel if rel else base
