"""``zfs destroy`` on one pool: datasets, snapshots (deferred too) and bookmarks.

Refusals come first, with OpenZFS's messages (held snapshots, dependent clones, children);
metadata changes in one txg; block files no snapshot needs any more are swept afterwards.
"""

from __future__ import annotations

import structlog

from protocol.errors import DatasetBusy, HasDependentClones, InvalidOperation

from . import db
from .datasets import drop_snapshot, held_message
from .pool import Dataset, Pool, not_found

log = structlog.get_logger(__name__)


def destroy(pool: Pool, name: str, *, recursive: bool, defer: bool) -> None:
    """``zfs destroy [-r] [-d]`` of a dataset, snapshot or bookmark."""
    with db.txg(pool.conn):
        if "#" in name:
            mark = pool.bookmark(name)
            pool.conn.execute("DELETE FROM bookmarks WHERE id=?", (mark.id,))
        elif "@" in name:
            _destroy_snapshots(pool, name, recursive=recursive, defer=defer)
        else:
            _destroy_dataset(pool, name, recursive=recursive)
        pool.collect()
    pool.sweep_blocks()
    log.info("sim.destroyed", name=name, recursive=recursive, defer=defer)


def _destroy_snapshots(pool: Pool, name: str, *, recursive: bool, defer: bool) -> None:
    ds_name, _, short = name.partition("@")
    root = pool.dataset(ds_name)
    group = [root, *pool.descendants(ds_name)] if recursive else [root]
    snaps = []
    for ds in group:
        row = pool.conn.execute(
            "SELECT 1 FROM snapshots WHERE dataset=? AND name=?", (ds.id, short)
        ).fetchone()
        if row:
            snaps.append(pool.snapshot(f"{ds.name}@{short}"))
    if not snaps:
        if recursive:
            return
        raise not_found(name)
    for snap in snaps:
        clones = pool.clones_of(snap.id)
        if defer and (clones or pool.holds(snap.id)):
            continue
        if clones:
            deps = []
            for c in clones:
                deps += [s.name for s in pool.snapshots(c.id)] + [c.name]
            raise HasDependentClones(
                f"cannot destroy '{snap.name}': snapshot has dependent clones\n"
                "use '-R' to destroy the following datasets:\n" + "\n".join(deps)
            )
        if pool.holds(snap.id):
            raise DatasetBusy(held_message(snap.name))
    for snap in snaps:
        if pool.clones_of(snap.id) or pool.holds(snap.id):
            pool.conn.execute("UPDATE snapshots SET defer=1 WHERE id=?", (snap.id,))
        else:
            drop_snapshot(pool, snap)


def _dependents(pool: Pool, family: list[Dataset]) -> list[str]:
    """What ``destroy -r`` would take, in zfs_iter_dependents' order: each child's own
    dependents, then the child, and last the dataset's snapshots."""
    top = family[0]
    out: list[str] = []
    for child in sorted(family[1:], key=lambda d: d.name):
        if child.name.rpartition("/")[0] == top.name:
            below = [d for d in family if d.name.startswith(child.name + "/")]
            out += [*_dependents(pool, [child, *below]), child.name]
    return out + [s.name for s in pool.snapshots(top.id)]


def _destroy_dataset(pool: Pool, name: str, *, recursive: bool) -> None:
    ds = pool.dataset(name)
    if "/" not in name:
        raise InvalidOperation(
            f"cannot destroy '{name}': operation does not apply to pools\n"
            "use 'zfs destroy -r {name}' to destroy all datasets in the pool\n"
            f"use 'zpool destroy {name}' to destroy the pool itself"
        )
    family = [ds, *pool.descendants(name)]
    ids = {d.id for d in family}
    if not recursive:
        children = _dependents(pool, family)
        if children:
            raise InvalidOperation(
                f"cannot destroy '{name}': filesystem has children\n"
                "use '-r' to destroy the following datasets:\n" + "\n".join(children)
            )
    outside = []
    for d in family:
        for s in pool.snapshots(d.id):
            outside += [c.name for c in pool.clones_of(s.id) if c.id not in ids]
            if pool.holds(s.id):
                raise DatasetBusy(held_message(s.name))
    if outside:
        raise HasDependentClones(
            f"cannot destroy '{name}': filesystem has dependent clones\n"
            "use '-R' to destroy the following datasets:\n" + "\n".join(outside)
        )
    origins = {d.origin for d in family if d.origin is not None}
    for d in reversed(family):
        for s in pool.snapshots(d.id):
            drop_snapshot(pool, s)
        pool.conn.execute("DELETE FROM bookmarks WHERE dataset=?", (d.id,))
        pool.conn.execute("DELETE FROM partial WHERE dataset=?", (d.id,))
        pool.conn.execute("DELETE FROM datasets WHERE id=?", (d.id,))
        pool.remove_live(d)
    for origin in origins:
        release_deferred(pool, origin)


def release_deferred(pool: Pool, snap_id: int) -> None:
    """Destroy a snapshot marked for deferred destroy once nothing keeps it (inside a txg)."""
    row = pool.conn.execute("SELECT defer FROM snapshots WHERE id=?", (snap_id,)).fetchone()
    if not row or not row[0]:
        return
    snap = pool.snapshot_by_id(snap_id)
    if not pool.clones_of(snap_id) and not pool.holds(snap_id):
        drop_snapshot(pool, snap)
