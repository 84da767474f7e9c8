"""``zfs hold`` / ``release`` on one pool: user holds keep a snapshot from being destroyed."""

from __future__ import annotations

import time
from collections.abc import Sequence

from protocol.errors import DatasetExists, InvalidOperation

from . import db
from .destroy import release_deferred
from .pool import Pool


def hold(pool: Pool, tag: str, snapshots: Sequence[str]) -> None:
    """Add ``tag`` to every snapshot, all or none (one txg)."""
    with db.txg(pool.conn):
        for full in snapshots:
            snap = pool.snapshot(full)
            if tag in pool.holds(snap.id):
                raise DatasetExists(
                    f"cannot hold snapshot '{full}': tag already exists on this dataset"
                )
            pool.conn.execute(
                "INSERT INTO holds(snapshot, tag, created) VALUES(?,?,?)",
                (snap.id, tag, int(time.time())),
            )


def release(pool: Pool, tag: str, snapshots: Sequence[str]) -> None:
    """Remove ``tag``; a snapshot marked for deferred destroy goes with its last hold."""
    with db.txg(pool.conn):
        for full in snapshots:
            snap = pool.snapshot(full)
            if tag not in pool.holds(snap.id):
                raise InvalidOperation(
                    f"cannot release hold from snapshot '{full}': no such tag on this dataset"
                )
            pool.conn.execute("DELETE FROM holds WHERE snapshot=? AND tag=?", (snap.id, tag))
            release_deferred(pool, snap.id)
        pool.collect()
