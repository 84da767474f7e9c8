"""``zfs mount`` / ``zfs unmount`` on one pool: a dataset's live data in or out of its mountpoint.

An unmounted filesystem keeps its live data as a head manifest (pool.py); mounting writes it out
into the mountpoint. Refusals and their messages are OpenZFS's on Linux, with one deliberate
difference: a mountpoint that already holds files is refused (as OpenZFS did before ``overlay``
became the default) because writing the dataset's files over a user's would lose theirs.
"""

from __future__ import annotations

from protocol.errors import DatasetBusy, InvalidOperation, KeyNotLoaded

from . import db
from .nodes import decode_manifest
from .pool import Pool


def mount(pool: Pool, name: str) -> None:
    """Make the filesystem's live data visible at its mountpoint."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if ds.kind != "filesystem":
            raise InvalidOperation(
                f"cannot mount '{name}': operation not applicable to datasets of this type"
            )
        if ds.inconsistent:
            raise InvalidOperation(f"cannot mount '{name}': dataset is being received")
        if ds.mounted and ds.head is None:
            raise InvalidOperation(f"cannot mount '{name}': filesystem already mounted")
        canmount = ds.props.get("canmount") or ds.received.get("canmount") or "on"
        if canmount == "off":
            raise InvalidOperation(f"cannot mount '{name}': 'canmount' property is set to 'off'")
        setting = ds.props.get("mountpoint") or ds.received.get("mountpoint")
        mnt = pool.mountpoint(ds)
        if mnt is None:
            if setting == "legacy":
                raise InvalidOperation(
                    f"cannot mount '{name}': legacy mountpoint\n"
                    "use mount(8) to mount this filesystem"
                )
            raise InvalidOperation(f"cannot mount '{name}': no mountpoint set")
        if ds.crypt and not ds.crypt.get("loaded"):
            raise KeyNotLoaded(f"cannot mount '{name}': encryption key not loaded")
        inner = pool.exclude(ds, mnt)
        if mnt.exists() and any(
            e.name not in inner and not _holds_inner(e.name, inner) for e in mnt.iterdir()
        ):
            raise InvalidOperation(f"cannot mount '{mnt}': directory is not empty")
        pool.conn.execute("UPDATE datasets SET mounted=1 WHERE id=?", (ds.id,))
        fresh = pool.dataset_by_id(ds.id)
        pool.install(fresh, decode_manifest(fresh.head or b""), mount=True)


def unmount(pool: Pool, name: str) -> None:
    """Keep the live data in the pool and empty the mountpoint."""
    with db.txg(pool.conn):
        ds = pool.dataset(name)
        if ds.kind != "filesystem":
            raise InvalidOperation(
                f"cannot unmount '{name}': operation not applicable to datasets of this type"
            )
        if not ds.mounted or ds.head is not None:
            raise InvalidOperation(f"cannot unmount '{name}': not currently mounted")
        mnt = pool.mountpoint(ds)
        for child in pool.descendants(name):
            theirs = pool.mountpoint(child)
            if (
                child.mounted
                and child.head is None
                and theirs is not None
                and mnt is not None
                and theirs.is_relative_to(mnt)
            ):
                # Linux refuses to unmount a filesystem with mounts below it (EBUSY).
                raise DatasetBusy(f"cannot unmount '{mnt}': pool or dataset is busy")
        pool.unmount(ds)


def _holds_inner(entry: str, inner: frozenset[str]) -> bool:
    """True when ``entry`` is a directory on the way to another filesystem's mountpoint."""
    return any(e.startswith(entry + "/") for e in inner)
