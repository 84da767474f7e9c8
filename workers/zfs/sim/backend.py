"""SimBackend: the ZfsBackend contract over simulated pools under one directory.

Constructing one is cheap (no pool is opened until used), so a Celery task can make its own.
Every name is checked against OpenZFS's rules before anything runs; every failure is a
:class:`protocol.errors.ZfsError` whose message is the one ``zfs`` prints for the same failure.
"""

from __future__ import annotations

import builtins
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import structlog

from protocol import names as zfsnames
from protocol.errors import (
    DatasetExists,
    DatasetNotFound,
    InvalidOperation,
)
from workers.zfs.base import (
    ALL_TYPES,
    DiffEntry,
    ObjType,
    PoolInfo,
    PropertyValue,
    ReceiveSink,
    ReceiveSpec,
    SendSpec,
    SendStream,
    ZfsBackend,
    ZfsObject,
)

from . import crypto, datasets, db, properties
from . import destroy as destroy_ops
from . import holds as user_holds
from .pool import Pool, new_guid, not_found
from .space import Space

log = structlog.get_logger(__name__)

DEFAULT_POOL_SIZE: Final = 10 << 30


def pool_of(name: str) -> str:
    return name.split("/", 1)[0].split("@", 1)[0].split("#", 1)[0]


class SimBackend(ZfsBackend):
    """All simulated pools under ``root`` (one directory per pool)."""

    name = "sim"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._pools: dict[str, Pool] = {}
        self._lock = threading.RLock()

    # -- pools ------------------------------------------------------------------------------
    def _pool(self, name: str) -> Pool:
        pname = pool_of(name)
        with self._lock:
            pool = self._pools.get(pname)
            if pool is None:
                if not (self.root / pname / db.DB_NAME).exists():
                    raise not_found(name)
                pool = Pool(self.root, pname)
                self._pools[pname] = pool
            return pool

    def create_pool(self, name: str, *, size: int = DEFAULT_POOL_SIZE) -> None:
        """``zpool create``: a pool directory with its root filesystem."""
        zfsnames.validate_pool(name)
        pool_dir = self.root / name
        if (pool_dir / db.DB_NAME).exists():
            raise DatasetExists(f"cannot create '{name}': pool already exists")
        pool_dir.mkdir(parents=True, exist_ok=True)
        pool = Pool(self.root, name)
        with db.txg(pool.conn) as txg:
            db.set_meta(pool.conn, "size", int(size))
            db.set_meta(pool.conn, "guid", new_guid())
            db.set_meta(pool.conn, "creation", int(time.time()))
            pool.conn.execute(
                "INSERT INTO datasets(name, kind, guid, createtxg, creation) VALUES(?,?,?,?,?)",
                (name, "filesystem", new_guid(), txg, int(time.time())),
            )
            pool.install(pool.dataset(name), datasets._empty_root(pool))
        with self._lock:
            self._pools[name] = pool
        log.info("sim.pool.created", pool=name, size=size)

    def destroy_pool(self, name: str) -> None:
        """``zpool destroy``: the pool, its datasets and their data."""
        zfsnames.validate_pool(name, existing=True)
        pool_dir = self.root / name
        if not (pool_dir / db.DB_NAME).exists():
            raise DatasetNotFound(f"cannot open '{name}': no such pool")
        with self._lock:
            pool = self._pools.pop(name, None)
        if pool is None:
            pool = Pool(self.root, name)
        for ds in pool.datasets():
            mnt = pool.mountpoint(ds)
            # only what the pool put there: an unmounted dataset's mountpoint is the user's
            if mnt is not None and not mnt.is_relative_to(pool_dir) and ds.scan is not None:
                pool.remove_live(ds)
        pool.close()
        shutil.rmtree(pool_dir, ignore_errors=True)
        log.info("sim.pool.destroyed", pool=name)

    def _pool_names(self) -> builtins.list[str]:
        if not self.root.exists():
            return []
        return sorted(e.name for e in self.root.iterdir() if (e / db.DB_NAME).exists())

    def pools(self) -> list[PoolInfo]:
        out: list[PoolInfo] = []
        for name in self._pool_names():
            pool = self._pool(name)
            size = int(str(db.get_meta(pool.conn, "size", DEFAULT_POOL_SIZE)))
            used = properties.dataset_space(pool, pool.dataset(name))["used"]
            out.append(PoolInfo(name, size, used, max(0, size - used), "ONLINE"))
        return out

    # -- inventory --------------------------------------------------------------------------
    def list(
        self,
        root: str | None = None,
        *,
        recursive: bool = True,
        types: Sequence[ObjType] = ALL_TYPES,
    ) -> list[ZfsObject]:
        if root is None:
            return [o for p in self._pool_names() for o in self.list(p, types=types)]
        kind = zfsnames.validate_any(root, existing=True)
        pool = self._pool(root)
        # One committed state for the whole listing, however busy other writers are.
        with self._lock, db.reading(pool.conn):
            return self._list(pool, root, kind, recursive, types)

    def _list(
        self,
        pool: Pool,
        root: str,
        kind: zfsnames.NameKind,
        recursive: bool,
        types: Sequence[ObjType],
    ) -> builtins.list[ZfsObject]:
        if kind != zfsnames.NameKind.DATASET:
            obj = self._object(pool, root, Space(pool))
            return [obj] if obj.type in types else []
        top = pool.dataset(root)
        family = [top, *pool.descendants(root)] if recursive else [top]
        # Like `zfs list -t snapshot DATASET`: without -r, only snapshot/bookmark types list the
        # dataset's snapshots; otherwise the dataset alone is listed.
        children_only = not recursive and not ({ObjType.FILESYSTEM, ObjType.VOLUME} & set(types))
        out: list[ZfsObject] = []
        space = Space(pool)
        for ds in family:
            if ObjType(ds.kind) in types and not children_only:
                out.append(self._object(pool, ds.name, space))
            if recursive or children_only:
                if ObjType.SNAPSHOT in types:
                    out += [self._object(pool, s.name, space) for s in pool.snapshots(ds.id)]
                if ObjType.BOOKMARK in types:
                    out += [self._object(pool, b.name, space) for b in pool.bookmarks(ds.id)]
        return out

    def _object(self, pool: Pool, name: str, space: Space) -> ZfsObject:
        if "#" in name:
            mark = pool.bookmark(name)
            return ZfsObject(name, ObjType.BOOKMARK, mark.guid, mark.createtxg, mark.creation)
        if "@" in name:
            snap = pool.snapshot(name)
            ds = pool.dataset_by_id(snap.dataset)
            return ZfsObject(
                name,
                ObjType.SNAPSHOT,
                snap.guid,
                snap.createtxg,
                snap.creation,
                used=space.snapshot_used(snap, ds),
                referenced=snap.referenced,
                written=snap.written,
                encryption=_cipher(ds.crypt),
                keystatus=_keystatus(ds.crypt),
                user_props=dict(snap.props),
            )
        ds = pool.dataset(name)
        figures = space.dataset(ds)
        token = properties.dataset_props(pool, ds, ["receive_resume_token"])
        tok = token["receive_resume_token"].value
        return ZfsObject(
            name,
            ObjType(ds.kind),
            ds.guid,
            ds.createtxg,
            ds.creation,
            origin=pool.snapshot_by_id(ds.origin).name if ds.origin is not None else None,
            used=figures["used"],
            referenced=figures["referenced"],
            written=figures["written"],
            receive_resume_token=None if tok == "-" else tok,
            encryption=_cipher(ds.crypt),
            keystatus=_keystatus(ds.crypt),
            user_props=properties.user_props(pool, ds),
        )

    # -- datasets ---------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        props: Mapping[str, str] | None = None,
        volsize: int | None = None,
        parents: bool = False,
        key: bytes | None = None,
    ) -> None:
        """``zfs create``; ``key`` is the sim's way to give an encryption key without a file."""
        zfsnames.validate_dataset(name)
        with self._lock:
            datasets.create(
                self._pool(name), name, props=props or {}, volsize=volsize, parents=parents, key=key
            )

    def destroy(self, name: str, *, recursive: bool = False, defer: bool = False) -> None:
        zfsnames.validate_any(name, existing=True)
        with self._lock:
            destroy_ops.destroy(self._pool(name), name, recursive=recursive, defer=defer)

    def snapshot(
        self,
        names: Sequence[str],
        *,
        recursive: bool = False,
        props: Mapping[str, str] | None = None,
    ) -> None:
        if not names:
            raise InvalidOperation("missing snapshot argument")
        for n in names:
            zfsnames.validate_snapshot(n)
        pools = {pool_of(n) for n in names}
        if len(pools) > 1:
            raise InvalidOperation("cannot create snapshots : snapshots must be in the same pool")
        with self._lock:
            datasets.take_snapshots(
                self._pool(names[0]), names, recursive=recursive, props=props or {}
            )

    def clone(self, snapshot: str, target: str, *, props: Mapping[str, str] | None = None) -> None:
        zfsnames.validate_snapshot(snapshot, existing=True)
        zfsnames.validate_dataset(target)
        if pool_of(snapshot) != pool_of(target):
            raise InvalidOperation(f"cannot create '{target}': source and target pools differ")
        with self._lock:
            datasets.clone(self._pool(snapshot), snapshot, target, props or {})

    def promote(self, name: str) -> None:
        zfsnames.validate_dataset(name, existing=True)
        with self._lock:
            datasets.promote(self._pool(name), name)

    def rename(self, old: str, new: str) -> None:
        zfsnames.validate_any(old, existing=True)
        zfsnames.validate_any(new)
        if pool_of(old) != pool_of(new):
            raise InvalidOperation(f"cannot rename to '{new}': datasets must be within same pool")
        with self._lock:
            datasets.rename(self._pool(old), old, new)

    def rollback(self, snapshot: str, *, destroy_newer: bool = False) -> None:
        zfsnames.validate_snapshot(snapshot, existing=True)
        with self._lock:
            datasets.rollback(self._pool(snapshot), snapshot, destroy_newer=destroy_newer)

    def bookmark(self, snapshot: str, bookmark: str) -> None:
        zfsnames.validate_any(snapshot, existing=True)
        if bookmark.startswith("#"):
            bookmark = snapshot.split("@", maxsplit=1)[0].split("#", maxsplit=1)[0] + bookmark
        zfsnames.validate_bookmark(bookmark)
        with self._lock:
            pool = self._pool(snapshot)
            with db.txg(pool.conn):
                source = pool.snapshot(snapshot) if "@" in snapshot else pool.bookmark(snapshot)
                ds_name, _, short = bookmark.partition("#")
                if ds_name != source.dataset_name:
                    raise InvalidOperation(
                        f"cannot create bookmark '{bookmark}': source is not an ancestor of the "
                        "new bookmark's dataset"
                    )
                if any(b.short == short for b in pool.bookmarks(source.dataset)):
                    raise DatasetExists(f"cannot create bookmark '{bookmark}': bookmark exists")
                pool.conn.execute(
                    "INSERT INTO bookmarks(dataset, name, guid, createtxg, creation, manifest)"
                    " VALUES(?,?,?,?,?,?)",
                    (
                        source.dataset,
                        short,
                        source.guid,
                        source.createtxg,
                        source.creation,
                        source.manifest_blob,
                    ),
                )

    # -- holds ------------------------------------------------------------------------------
    def hold(self, tag: str, snapshots: Sequence[str]) -> None:
        if not tag:
            raise InvalidOperation("cannot hold: tag is empty")
        for pool, names in self._by_pool(snapshots):
            with self._lock:
                user_holds.hold(pool, tag, names)

    def release(self, tag: str, snapshots: Sequence[str]) -> None:
        for pool, names in self._by_pool(snapshots):
            with self._lock:
                user_holds.release(pool, tag, names)

    def _by_pool(self, snapshots: Sequence[str]) -> builtins.list[tuple[Pool, builtins.list[str]]]:
        """Snapshot names checked and grouped by pool (each pool's share is one txg)."""
        groups: dict[str, builtins.list[str]] = {}
        for full in snapshots:
            zfsnames.validate_snapshot(full, existing=True)
            groups.setdefault(pool_of(full), []).append(full)
        return [(self._pool(name), names) for name, names in groups.items()]

    def holds(self, snapshot: str) -> builtins.list[str]:
        zfsnames.validate_snapshot(snapshot, existing=True)
        with self._lock:
            pool = self._pool(snapshot)
            return pool.holds(pool.snapshot(snapshot).id)

    def hold_times(self, snapshot: str) -> dict[str, int]:
        zfsnames.validate_snapshot(snapshot, existing=True)
        with self._lock:
            pool = self._pool(snapshot)
            return pool.hold_times(pool.snapshot(snapshot).id)

    # -- properties -------------------------------------------------------------------------
    def get(self, name: str, props: Sequence[str] | None = None) -> dict[str, PropertyValue]:
        zfsnames.validate_any(name, existing=True)
        with self._lock:
            pool = self._pool(name)
            kind = properties.lookup_kind(pool, name)
            if kind == "snapshot":
                return properties.snapshot_props(pool, pool.snapshot(name), props)
            if kind == "bookmark":
                return properties.bookmark_props(pool, name, props)
            return properties.dataset_props(pool, pool.dataset(name), props)

    def set(self, name: str, props: Mapping[str, str]) -> None:
        zfsnames.validate_any(name, existing=True)
        with self._lock:
            properties.set_props(self._pool(name), name, props)

    def inherit(self, name: str, prop: str) -> None:
        zfsnames.validate_any(name, existing=True)
        with self._lock:
            properties.inherit(self._pool(name), name, prop)

    # -- streams ----------------------------------------------------------------------------
    # The stream modules are imported on first use: protocol.stream brings numpy, which would
    # make every SimBackend (one per task) slow to create.
    def send(self, spec: SendSpec) -> SendStream:
        from .send import open_send

        with self._lock:
            return open_send(self, spec)

    def estimate(self, spec: SendSpec) -> int:
        from .send import estimate_send

        with self._lock:
            return estimate_send(self, spec)

    def receive(self, spec: ReceiveSpec) -> ReceiveSink:
        from .receive import open_receive

        zfsnames.validate_any(spec.target)
        return open_receive(self, spec)

    def abort_receive(self, target: str) -> None:
        from .receive import abort_partial

        zfsnames.validate_dataset(target, existing=True)
        with self._lock:
            abort_partial(self._pool(target), target)

    def diff(self, snapshot: str, other: str) -> builtins.list[DiffEntry]:
        from .diff import diff

        zfsnames.validate_snapshot(snapshot, existing=True)
        zfsnames.validate_any(other, existing=True)
        with self._lock:
            return diff(self._pool(snapshot), snapshot, other)

    # -- encryption -------------------------------------------------------------------------
    def load_key(self, name: str, *, key: bytes | None = None) -> None:
        from .keys import load_key

        zfsnames.validate_dataset(name, existing=True)
        with self._lock:
            load_key(self._pool(name), name, key)

    def unload_key(self, name: str) -> None:
        from .keys import unload_key

        zfsnames.validate_dataset(name, existing=True)
        with self._lock:
            unload_key(self._pool(name), name)

    def change_key(
        self,
        name: str,
        *,
        key: bytes | None = None,
        props: Mapping[str, str] | None = None,
        inherit: bool = False,
    ) -> None:
        from .keys import change_key

        zfsnames.validate_dataset(name, existing=True)
        given = dict(props or {})
        if key is not None and not inherit:
            given.setdefault("keylocation", "prompt")  # as the real backend: a key given is typed
        with self._lock:
            change_key(self._pool(name), name, key=key, props=given, inherit=inherit)

    # -- mounts -----------------------------------------------------------------------------
    def mount(self, name: str) -> None:
        from . import mounts

        zfsnames.validate_dataset(name, existing=True)
        with self._lock:
            mounts.mount(self._pool(name), name)

    def unmount(self, name: str) -> None:
        from . import mounts

        zfsnames.validate_dataset(name, existing=True)
        with self._lock:
            mounts.unmount(self._pool(name), name)

    def mounted(self) -> builtins.list[tuple[str, str]]:
        from . import mounts

        with self._lock:
            return [m for p in self._pool_names() for m in mounts.mounted(self._pool(p))]

    # -- sim extras -------------------------------------------------------------------------
    def pool(self, name: str) -> Pool:
        """The :class:`Pool` holding ``name`` (for the simulation's own tools and tests)."""
        return self._pool(name)


def _cipher(crypt: dict[str, object] | None) -> str | None:
    return str(crypt.get("cipher", crypto.CIPHER)) if crypt else "off"


def _keystatus(crypt: dict[str, object] | None) -> str | None:
    if not crypt:
        return None
    return "available" if crypt.get("loaded") else "unavailable"
