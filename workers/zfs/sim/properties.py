"""``zfs get`` / ``set`` / ``inherit`` over a pool: stored values plus computed statistics."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from protocol.errors import InvalidOperation
from workers.zfs.base import PropertyValue

from . import db
from .nodes import VOLUME_OBJECT, decode_manifest
from .pool import Dataset, Pool, Snapshot, not_found
from .proprules import READONLY, SETTABLE, is_user_prop, normalize
from .space import Space

NONE = "-"


def snapshot_used(pool: Pool, snap: Snapshot, ds: Dataset | None = None) -> int:
    """A snapshot's ``used`` (what destroying it alone would free)."""
    return Space(pool).snapshot_used(snap, ds)


def dataset_space(pool: Pool, ds: Dataset) -> dict[str, int]:
    """referenced, written, usedby* and used of a dataset."""
    return Space(pool).dataset(ds)


# -- resolution --------------------------------------------------------------------------------
def resolve(pool: Pool, ds: Dataset, name: str) -> PropertyValue | None:
    """A stored property's value and source, following inheritance."""
    for holder in _lineage(pool, ds):
        if name in holder.props:
            value, source = holder.props[name], "local"
        elif name in holder.received:
            value, source = holder.received[name], "received"
        else:
            continue
        if holder.id == ds.id:
            return PropertyValue(_mount_suffix(pool, ds, holder, value, name), source)
        inherits = is_user_prop(name) or (name in SETTABLE and SETTABLE[name].inherit)
        if not inherits:
            break
        return PropertyValue(
            _mount_suffix(pool, ds, holder, value, name), f"inherited from {holder.name}"
        )
    if name == "mountpoint":
        mnt = pool.mountpoint(ds)
        return PropertyValue(str(mnt) if mnt else "none", "default")
    if name in SETTABLE:
        return PropertyValue(SETTABLE[name].default, "default")
    return None


def _crypt_props(ds: Dataset) -> dict[str, str]:
    """encryption and keyformat are fixed at creation: OpenZFS shows them with source '-'."""
    if not ds.crypt:
        return {}
    return {
        "encryption": str(ds.crypt.get("cipher", "aes-256-gcm")),
        "keyformat": str(ds.crypt.get("keyformat", "none")),
    }


def _volsize(pool: Pool, ds: Dataset) -> int:
    """A volume's size: its backing file's, or its data object's while not mounted."""
    path = pool.volume_path(ds)
    if ds.head is None and ds.mounted and path.exists():
        return path.stat().st_size
    digest = decode_manifest(ds.head).get(VOLUME_OBJECT) if ds.head else None
    return pool.objects.get(digest).meta_size() if digest else 0


def _mount_suffix(pool: Pool, ds: Dataset, holder: Dataset, value: str, name: str) -> str:
    if name != "mountpoint" or holder.id == ds.id or value in ("none", "legacy"):
        return value
    return os.path.join(value, ds.name[len(holder.name) + 1 :])


def _lineage(pool: Pool, ds: Dataset) -> list[Dataset]:
    chain = [ds]
    name = ds.name
    while "/" in name:
        name = name.rpartition("/")[0]
        parent = pool.find(name)
        if parent is not None:
            chain.append(parent)
    return chain


def user_props(pool: Pool, ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for holder in reversed(_lineage(pool, ds)):
        out.update({k: v for k, v in holder.received.items() if is_user_prop(k)})
        out.update({k: v for k, v in holder.props.items() if is_user_prop(k)})
    return out


def dataset_props(
    pool: Pool, ds: Dataset, wanted: Sequence[str] | None
) -> dict[str, PropertyValue]:
    stats = (
        dataset_space(pool, ds)
        if wanted is None
        or any(
            w
            in (
                "used",
                "referenced",
                "written",
                "usedbydataset",
                "usedbysnapshots",
                "usedbychildren",
                "usedbyrefreservation",
                "available",
                "logicalused",
                "logicalreferenced",
            )
            for w in wanted
        )
        else {}
    )
    size = int(str(db.get_meta(pool.conn, "size", 0)))
    origin = pool.snapshot_by_id(ds.origin).name if ds.origin is not None else NONE
    token = NONE
    row = pool.conn.execute("SELECT state FROM partial WHERE dataset=?", (ds.id,)).fetchone()
    if row:
        from .receive import token_for  # here: protocol.stream is slow to import

        token = token_for(row[0])
    computed: dict[str, str] = {
        "type": ds.kind,
        "creation": str(ds.creation),
        "used": str(stats.get("used", 0)),
        "available": str(max(0, size - stats.get("used", 0))),
        "referenced": str(stats.get("referenced", 0)),
        "compressratio": "1.00x",
        # a filesystem only a resumable receive made holds no data yet: never mounted
        "mounted": "yes" if ds.mounted and ds.head is None and not ds.inconsistent else "no",
        "origin": origin,
        "createtxg": str(ds.createtxg),
        "guid": str(ds.guid),
        "usedbysnapshots": str(stats.get("usedbysnapshots", 0)),
        "usedbydataset": str(stats.get("usedbydataset", 0)),
        "usedbychildren": str(stats.get("usedbychildren", 0)),
        "usedbyrefreservation": "0",
        "written": str(stats.get("written", 0)),
        "logicalused": str(stats.get("used", 0)),
        "logicalreferenced": str(stats.get("referenced", 0)),
        "receive_resume_token": token,
        "keystatus": (
            ("available" if ds.crypt.get("loaded") else "unavailable") if ds.crypt else NONE
        ),
        "encryptionroot": str(ds.crypt.get("root")) if ds.crypt else NONE,
        "version": "5",
        **_crypt_props(ds),
        "objsetid": str(ds.id + 64),
        "refcompressratio": "1.00x",
    }
    if ds.kind == "volume":
        computed.pop("mounted")
        computed["volsize"] = str(_volsize(pool, ds))
    return _assemble(pool, ds, computed, wanted, ds.kind)


def _assemble(
    pool: Pool, ds: Dataset, computed: Mapping[str, str], wanted: Sequence[str] | None, kind: str
) -> dict[str, PropertyValue]:
    out: dict[str, PropertyValue] = {}
    names = (
        list(wanted)
        if wanted is not None
        else [*computed, *(n for n in SETTABLE if _applies(n, kind)), *user_props(pool, ds)]
    )
    for name in names:
        if name in computed:
            out[name] = PropertyValue(computed[name], NONE)
            continue
        if name in SETTABLE and not _applies(name, kind):
            continue
        value = resolve(pool, ds, name)
        if value is not None:
            out[name] = value
    return out


# the settable properties zfs_prop.c registers for snapshots too (ZFS_TYPE_SNAPSHOT); the
# others (compression, recordsize, atime...) a snapshot shows as "-"
SNAPSHOT_NATIVE: Final = frozenset(
    {"devices", "exec", "setuid", "xattr", "primarycache", "secondarycache"}
)


def _applies(name: str, kind: str) -> bool:
    prop = SETTABLE[name]
    if kind == "snapshot":
        return name in SNAPSHOT_NATIVE
    if prop.volume_only:
        return kind == "volume"
    return not (prop.filesystem_only and kind == "volume")


def snapshot_props(
    pool: Pool, snap: Snapshot, wanted: Sequence[str] | None
) -> dict[str, PropertyValue]:
    ds = pool.dataset_by_id(snap.dataset)
    stats = wanted is None or any(w == "used" for w in wanted)
    clones = ",".join(c.name for c in pool.clones_of(snap.id))
    computed = {
        "type": "snapshot",
        "creation": str(snap.creation),
        "used": str(snapshot_used(pool, snap, ds) if stats else 0),
        "referenced": str(snap.referenced),
        "compressratio": "1.00x",
        "createtxg": str(snap.createtxg),
        "guid": str(snap.guid),
        "defer_destroy": "on" if snap.defer else "off",
        "userrefs": str(len(pool.holds(snap.id))),
        "written": str(snap.written),
        "logicalreferenced": str(snap.referenced),
        "clones": clones or "",
        "keystatus": (
            ("available" if ds.crypt.get("loaded") else "unavailable") if ds.crypt else NONE
        ),
        "version": "5",
        "refcompressratio": "1.00x",
        **_crypt_props(ds),
    }
    out = _assemble(pool, ds, computed, wanted, "snapshot")
    for key, value in snap.props.items():
        if wanted is None or key in wanted:
            out[key] = PropertyValue(value, "local")
    return out


def bookmark_props(pool: Pool, full: str, wanted: Sequence[str] | None) -> dict[str, PropertyValue]:
    mark = pool.bookmark(full)
    computed = {
        "type": "bookmark",
        "creation": str(mark.creation),
        "createtxg": str(mark.createtxg),
        "guid": str(mark.guid),
        "referenced": "0",
    }
    return {k: PropertyValue(v, NONE) for k, v in computed.items() if wanted is None or k in wanted}


# -- changes -----------------------------------------------------------------------------------
def set_props(pool: Pool, name: str, props: Mapping[str, str]) -> None:
    """``zfs set``; moving the live data when the mountpoint changes."""
    with db.txg(pool.conn):
        if "@" in name:
            snap = pool.snapshot(name)
            for key in props:
                if not is_user_prop(key):
                    raise InvalidOperation(
                        f"cannot set property for '{name}': "
                        "this property can not be modified for snapshots"
                    )
            merged = {**snap.props, **props}
            pool.conn.execute(
                "UPDATE snapshots SET props=? WHERE id=?", (json.dumps(merged), snap.id)
            )
            return
        ds = pool.dataset(name)
        clean = {k: normalize(name, k, v, kind=ds.kind) for k, v in props.items()}
        if "volsize" in clean:
            _resize_volume(pool, ds, int(clean.pop("volsize")))
        _apply(pool, ds, lambda p: p.update(clean))


def _resize_volume(pool: Pool, ds: Dataset, size: int) -> None:
    if size <= 0:
        raise InvalidOperation(f"cannot set property for '{ds.name}': 'volsize' must be > 0")
    path = pool.volume_path(ds)
    if ds.head is not None or not ds.mounted or not path.exists():
        raise InvalidOperation(f"cannot set property for '{ds.name}': dataset is not mounted")
    if size > int(str(db.get_meta(pool.conn, "size", 1 << 62))):
        # the volume's reservation grows with it (as at create): more than the pool is ENOSPC
        raise InvalidOperation(f"cannot set property for '{ds.name}': out of space")
    with open(path, "r+b") as fp:
        fp.truncate(size)


def inherit(pool: Pool, name: str, prop: str) -> None:
    """``zfs inherit``: drop the local value."""
    with db.txg(pool.conn):
        if "@" in name:
            snap = pool.snapshot(name)
            merged = {k: v for k, v in snap.props.items() if k != prop}
            pool.conn.execute(
                "UPDATE snapshots SET props=? WHERE id=?", (json.dumps(merged), snap.id)
            )
            return
        ds = pool.dataset(name)
        if not is_user_prop(prop):
            if prop in READONLY:
                raise InvalidOperation(f"'{prop}' property is read-only")
            if prop not in SETTABLE:
                raise InvalidOperation(f"invalid property '{prop}'")
            if not SETTABLE[prop].inherit and prop != "mountpoint":
                raise InvalidOperation(f"'{prop}' property cannot be inherited")
        _apply(pool, ds, lambda p: p.pop(prop, None))


def _apply(pool: Pool, ds: Dataset, change: Callable[[dict[str, str]], object]) -> None:
    """Change the local properties, then move live data whose mountpoint changed with them."""
    family = [ds, *pool.descendants(ds.name)]
    before = {d.id: pool.mountpoint(d) for d in family}
    props = dict(ds.props)
    change(props)
    pool.conn.execute("UPDATE datasets SET props=? WHERE id=?", (json.dumps(props), ds.id))
    for d in family:
        fresh = pool.dataset_by_id(d.id)
        old, new = before[d.id], pool.mountpoint(fresh)
        if old == new or not fresh.mounted or fresh.head is not None:
            continue
        if old is not None and new is not None and old.exists():
            if new.exists() and any(new.iterdir()):
                raise InvalidOperation(
                    f"cannot set property for '{ds.name}': mountpoint {new} is not empty"
                )
            new.parent.mkdir(parents=True, exist_ok=True)
            if new.exists():
                new.rmdir()
            shutil.move(old, new)
        elif new is None:
            pool.unmount(d)
    for d in family:
        # changelist_postfix: a filesystem whose mountpoint changed mounts if canmount=on,
        # also one that was not mounted before (mountpoint=none, then inherited back)
        fresh = pool.dataset_by_id(d.id)
        new = pool.mountpoint(fresh)
        if before[d.id] == new or new is None or fresh.kind != "filesystem":
            continue
        if fresh.head is None or fresh.inconsistent or resolve_value(pool, fresh) != "on":
            continue
        if fresh.crypt and not fresh.crypt.get("loaded"):
            continue
        pool.conn.execute("UPDATE datasets SET mounted=1 WHERE id=?", (fresh.id,))
        fresh = pool.dataset_by_id(d.id)
        pool.install(fresh, decode_manifest(fresh.head or b""), mount=True)


def resolve_value(pool: Pool, ds: Dataset, name: str = "canmount") -> str:
    got = resolve(pool, ds, name)
    return got.value if got is not None else "on"


def lookup_kind(pool: Pool, name: str) -> str:
    if "@" in name:
        pool.snapshot(name)
        return "snapshot"
    if "#" in name:
        pool.bookmark(name)
        return "bookmark"
    if pool.find(name) is None:
        raise not_found(name)
    return "dataset"
