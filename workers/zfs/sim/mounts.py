"""``zfs mount`` and ``zfs unmount`` for simulated pools.

A mounted simulated filesystem is a real directory holding its files; an unmounted one keeps its
live data as a manifest (the pool's ``head``) and its directory is emptied, as the kernel's would
look once unmounted. The refusals are libzfs 2.3.2's (cmd/zfs/zfs_main.c share_mount_one and
unshare_unmount, lib/libzfs/libzfs_mount.c), word for word.
"""

from __future__ import annotations

from protocol.errors import InvalidOperation, KeyNotLoaded

from . import db
from .nodes import decode_manifest
from .pool import Dataset, Pool
from .properties import resolve


def is_mounted(ds: Dataset) -> bool:
    """The data is in its directory (not kept aside as a head manifest)."""
    return ds.kind == "filesystem" and ds.mounted and ds.head is None and not ds.inconsistent


def effective(pool: Pool, ds: Dataset, prop: str) -> str:
    """A property's value as it applies to ``ds`` (set, received, inherited or default)."""
    found = resolve(pool, ds, prop)
    return found.value if found is not None else ""


def _filesystem(pool: Pool, name: str, verb: str) -> Dataset:
    ds = pool.dataset(name)
    if ds.kind != "filesystem":
        raise InvalidOperation(
            f"cannot open '{name}': operation not applicable to datasets of this type"
        )
    if ds.inconsistent:
        raise InvalidOperation(f"cannot {verb} '{name}': dataset is busy")
    return ds


def mount(pool: Pool, name: str) -> None:
    """Mount one filesystem, refusing as ``zfs mount NAME`` does."""
    with db.txg(pool.conn):
        ds = _filesystem(pool, name, "mount")
        mountpoint = effective(pool, ds, "mountpoint")
        if mountpoint == "legacy":
            raise InvalidOperation(
                f"cannot mount '{name}': legacy mountpoint\nuse mount(8) to mount this filesystem"
            )
        if mountpoint == "none":
            raise InvalidOperation(f"cannot mount '{name}': no mountpoint set")
        if effective(pool, ds, "canmount") == "off":
            raise InvalidOperation(f"cannot mount '{name}': 'canmount' property is set to 'off'")
        if is_mounted(ds):
            raise InvalidOperation(f"cannot mount '{name}': filesystem already mounted")
        if ds.crypt and not ds.crypt.get("loaded"):
            raise KeyNotLoaded(f"cannot mount '{name}': encryption key not loaded")
        pool.conn.execute("UPDATE datasets SET mounted=1 WHERE id=?", (ds.id,))
        fresh = pool.dataset_by_id(ds.id)
        pool.install(fresh, decode_manifest(fresh.head or b""), mount=True)


def unmount(pool: Pool, name: str) -> None:
    """Unmount a filesystem and every mounted filesystem below it (zfs_unmountall)."""
    with db.txg(pool.conn):
        ds = _filesystem(pool, name, "unmount")
        if effective(pool, ds, "mountpoint") == "legacy":
            raise InvalidOperation(
                f"cannot unmount '{name}': legacy mountpoint\n"
                "use umount(8) to unmount this filesystem"
            )
        if not is_mounted(ds):
            raise InvalidOperation(f"cannot unmount '{name}': not currently mounted")
        below = [d for d in pool.datasets() if d.name.startswith(name + "/") and is_mounted(d)]
        # deepest first, so that a parent's directory is emptied around nothing still mounted
        for member in sorted(below, key=lambda d: -d.name.count("/")):
            pool.unmount(member)
        pool.unmount(pool.dataset_by_id(ds.id))


def mounted(pool: Pool) -> list[tuple[str, str]]:
    """(filesystem, mountpoint) of every mounted filesystem, as ``zfs mount`` lists them."""
    found = []
    for ds in pool.datasets():
        where = pool.mountpoint(ds)
        if is_mounted(ds) and where is not None:
            found.append((ds.name, str(where)))
    return found


def mount_all(pool: Pool) -> None:
    """``zfs mount -a``: every filesystem that may mount automatically and is not mounted."""
    for ds in sorted(pool.datasets(), key=lambda d: d.name.count("/")):
        if ds.kind != "filesystem" or is_mounted(ds) or ds.inconsistent:
            continue
        if effective(pool, ds, "mountpoint") in ("none", "legacy"):
            continue
        if effective(pool, ds, "canmount") != "on":
            continue
        if ds.crypt and not ds.crypt.get("loaded"):
            continue
        mount(pool, ds.name)
