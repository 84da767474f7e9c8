"""One simulated pool on disk: its directories, its metadata rows, and its live data.

Layout of ``<root>/<pool>/``: ``pool.db`` (metadata, see db.py), ``blocks/`` (records, see
blocks.py), ``mnt/`` (default mountpoints: ``mnt/a/b`` for ``pool/a/b``), ``zvol/`` (one sparse
file per volume), ``spool/`` (streams being received).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import DatasetNotFound, ZfsError

from . import db
from .blocks import BlockStore
from .nodes import FIRST_OBJECT, Manifest, decode_manifest, encode_manifest
from .objects import ObjectStore
from .partial import PartialState
from .tree import (
    Cache,
    decode_cache,
    encode_cache,
    is_modified,
    materialize,
    materialize_volume,
    scan,
    scan_volume,
    walk,
)

DS_COLS = (
    "id, name, kind, guid, createtxg, creation, origin, props, received, next_obj, mounted, "
    "head, scan, crypt, inconsistent"
)
SNAP_COLS = (
    "s.id, s.dataset, d.name, s.name, s.guid, s.createtxg, s.creation, s.manifest, "
    "s.referenced, s.written, s.defer, s.props"
)


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str
    kind: str  # filesystem | volume
    guid: int
    createtxg: int
    creation: int
    origin: int | None
    props: dict[str, str]
    received: dict[str, str]
    next_obj: int
    mounted: bool
    head: bytes | None
    scan: bytes | None
    crypt: dict[str, Any] | None
    inconsistent: bool

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Dataset:
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            json.loads(row[7]),
            json.loads(row[8]),
            row[9],
            bool(row[10]),
            row[11],
            row[12],
            json.loads(row[13]) if row[13] else None,
            bool(row[14]),
        )


@dataclass(frozen=True)
class Snapshot:
    id: int
    dataset: int
    dataset_name: str
    short: str
    guid: int
    createtxg: int
    creation: int
    manifest_blob: bytes
    referenced: int
    written: int
    defer: bool
    props: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.dataset_name}@{self.short}"

    @property
    def manifest(self) -> Manifest:
        return decode_manifest(self.manifest_blob)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Snapshot:
        return cls(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            bool(row[10]),
            json.loads(row[11]),
        )


@dataclass(frozen=True)
class Bookmark:
    id: int
    dataset: int
    dataset_name: str
    short: str
    guid: int
    createtxg: int
    creation: int
    manifest_blob: bytes

    @property
    def name(self) -> str:
        return f"{self.dataset_name}#{self.short}"

    @property
    def manifest(self) -> Manifest:
        return decode_manifest(self.manifest_blob)


def new_guid() -> int:
    """A random, non-zero 64-bit guid that fits SQLite's signed integers."""
    return secrets.randbits(63) or 1


def not_found(name: str) -> DatasetNotFound:
    return DatasetNotFound(f"cannot open '{name}': dataset does not exist")


# how many decoded manifests a pool remembers (Pool._digests) before it starts again
_DIGEST_MEMO = 20_000


class Pool:
    """Metadata and data of one pool; every method works on open, committed state."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self._conn: sqlite3.Connection | None = None
        self.blocks = BlockStore(self.dir / "blocks")
        # the node digests of manifests already decoded, by the manifest's bytes: every
        # receive and release collects garbage, and decoding every snapshot's manifest each
        # time made that cost grow with the pool's history
        self._digests: dict[bytes, frozenset[bytes]] = {}

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = db.connect(self.dir)
        return self._conn

    @property
    def objects(self) -> ObjectStore:
        return ObjectStore(self.conn, self.blocks)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- lookups -------------------------------------------------------------------------------
    def find(self, name: str) -> Dataset | None:
        row = self.conn.execute(f"SELECT {DS_COLS} FROM datasets WHERE name=?", (name,)).fetchone()  # noqa: S608
        return Dataset.from_row(row) if row else None

    def dataset(self, name: str) -> Dataset:
        found = self.find(name)
        if found is None:
            raise not_found(name)
        return found

    def dataset_by_id(self, ident: int) -> Dataset:
        row = self.conn.execute(f"SELECT {DS_COLS} FROM datasets WHERE id=?", (ident,)).fetchone()  # noqa: S608
        if row is None:
            raise ZfsError(f"pool {self.name} metadata lost dataset {ident}")
        return Dataset.from_row(row)

    def datasets(self) -> list[Dataset]:
        rows = self.conn.execute(f"SELECT {DS_COLS} FROM datasets").fetchall()  # noqa: S608
        return [Dataset.from_row(r) for r in rows]

    def descendants(self, name: str) -> list[Dataset]:
        """Datasets below ``name`` (not itself), parents before children."""
        rows = self.conn.execute(
            f"SELECT {DS_COLS} FROM datasets WHERE substr(name, 1, ?) = ?",  # noqa: S608
            (len(name) + 1, name + "/"),
        ).fetchall()
        return sorted((Dataset.from_row(r) for r in rows), key=lambda d: d.name.split("/"))

    def snapshots(self, dataset: int | None = None) -> list[Snapshot]:
        """Snapshots of one dataset (or all), oldest first."""
        query = f"SELECT {SNAP_COLS} FROM snapshots s JOIN datasets d ON d.id = s.dataset"  # noqa: S608
        if dataset is None:
            rows = self.conn.execute(query + " ORDER BY s.createtxg, s.id").fetchall()
        else:
            rows = self.conn.execute(
                query + " WHERE s.dataset=? ORDER BY s.createtxg, s.id", (dataset,)
            ).fetchall()
        return [Snapshot.from_row(r) for r in rows]

    def snapshot(self, full: str) -> Snapshot:
        ds_name, _, short = full.partition("@")
        ds = self.find(ds_name)
        if ds is not None:
            row = self.conn.execute(
                f"SELECT {SNAP_COLS} FROM snapshots s JOIN datasets d ON d.id = s.dataset "  # noqa: S608
                "WHERE s.dataset=? AND s.name=?",
                (ds.id, short),
            ).fetchone()
            if row:
                return Snapshot.from_row(row)
        raise not_found(full)

    def snapshot_by_id(self, ident: int) -> Snapshot:
        row = self.conn.execute(
            f"SELECT {SNAP_COLS} FROM snapshots s JOIN datasets d ON d.id = s.dataset "  # noqa: S608
            "WHERE s.id=?",
            (ident,),
        ).fetchone()
        if row is None:
            raise ZfsError(f"pool {self.name} metadata lost snapshot {ident}")
        return Snapshot.from_row(row)

    def bookmarks(self, dataset: int | None = None) -> list[Bookmark]:
        query = (
            "SELECT b.id, b.dataset, d.name, b.name, b.guid, b.createtxg, b.creation, b.manifest "
            "FROM bookmarks b JOIN datasets d ON d.id = b.dataset"
        )
        args: tuple[int, ...] = ()
        if dataset is not None:
            query += " WHERE b.dataset=?"
            args = (dataset,)
        rows = self.conn.execute(query + " ORDER BY b.createtxg, b.id", args).fetchall()
        return [Bookmark(*r) for r in rows]

    def bookmark(self, full: str) -> Bookmark:
        ds_name, _, short = full.partition("#")
        for mark in self.bookmarks(self.dataset(ds_name).id if self.find(ds_name) else -1):
            if mark.short == short:
                return mark
        raise not_found(full)

    def clones_of(self, snap_id: int) -> list[Dataset]:
        rows = self.conn.execute(
            f"SELECT {DS_COLS} FROM datasets WHERE origin=? ORDER BY name",  # noqa: S608
            (snap_id,),
        ).fetchall()
        return [Dataset.from_row(r) for r in rows]

    def hold_times(self, snap_id: int) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT tag, created FROM holds WHERE snapshot=? ORDER BY tag", (snap_id,)
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def holds(self, snap_id: int) -> list[str]:
        rows = self.conn.execute(
            "SELECT tag FROM holds WHERE snapshot=? ORDER BY tag", (snap_id,)
        ).fetchall()
        return [r[0] for r in rows]

    # -- live data ------------------------------------------------------------------------------
    def mountpoint(self, ds: Dataset) -> Path | None:
        """Where a filesystem's data lives (None for volumes and mountpoint=none/legacy)."""
        if ds.kind != "filesystem":
            return None
        name = ds.name
        suffix: list[str] = []
        while True:
            current = self.find(name) if name != ds.name else ds
            if current is not None:
                value = current.props.get("mountpoint") or current.received.get("mountpoint")
                if value:
                    if value in ("none", "legacy"):
                        return None
                    return Path(value, *reversed(suffix))
            if "/" not in name:
                return self.dir / "mnt" / Path(*reversed(suffix)) if suffix else self.dir / "mnt"
            name, _, last = name.rpartition("/")
            suffix.append(last)

    def volume_path(self, ds: Dataset) -> Path:
        return self.dir / "zvol" / (ds.name.replace("/", "%") + ".img")

    def exclude(self, ds: Dataset, mnt: Path) -> frozenset[str]:
        """Mountpoints of other filesystems inside ``mnt``, relative to it.

        Every filesystem's mountpoint, resolved in memory from one read of the table: asking
        :meth:`mountpoint` per dataset (a query per ancestor, its props decoded each time) made
        every snapshot, receive and listing quadratic in the pool's datasets."""
        rows = self.conn.execute("SELECT id, name, kind, props, received FROM datasets").fetchall()
        own: dict[str, str | None] = {}  # the mountpoint a dataset sets itself, else None
        for _, name, _, props, received in rows:
            value = json.loads(props).get("mountpoint") if '"mountpoint"' in props else None
            if not value and '"mountpoint"' in received:
                value = json.loads(received).get("mountpoint")
            own[name] = value or None
        resolved: dict[str, str | None] = {}
        base = str(mnt)
        prefix = base if base.endswith("/") else base + "/"
        out = set()
        for ident, name, kind, _, _ in rows:
            if ident == ds.id or kind != "filesystem":
                continue
            theirs = self._mount_text(name, own, resolved)
            if theirs is not None and theirs != base and theirs.startswith(prefix):
                out.add(theirs[len(prefix):])
        return frozenset(out)

    def _mount_text(self, name: str, own: dict[str, str | None],
                    resolved: dict[str, str | None]) -> str | None:  # fmt: skip
        """``str(self.mountpoint(...))`` of filesystem ``name`` from each dataset's own value
        (``own``), remembering every ancestor's in ``resolved``."""
        if name in resolved:
            return resolved[name]
        value = own.get(name)
        text: str | None
        if value:
            text = None if value in ("none", "legacy") else str(Path(value))
        elif "/" not in name:
            text = str(self.dir / "mnt")
        else:
            parent, _, last = name.rpartition("/")
            above = self._mount_text(parent, own, resolved)
            text = None if above is None else f"{above.rstrip('/')}/{last}"
        resolved[name] = text
        return text

    def capture(self, ds: Dataset) -> tuple[Manifest, Cache, int]:
        """The dataset's current data as a manifest (scans the live data; call inside a txg)."""
        if ds.head is not None or not ds.mounted:
            return decode_manifest(ds.head) if ds.head else {}, decode_cache(ds.scan), ds.next_obj
        if ds.kind == "volume":
            path = self.volume_path(ds)
            if not path.exists():
                return {}, {}, ds.next_obj
            result = scan_volume(path, decode_cache(ds.scan), self.objects)
            return result.manifest, result.cache, ds.next_obj
        mnt = self.mountpoint(ds)
        if mnt is None:
            return decode_manifest(ds.head) if ds.head else {}, {}, ds.next_obj
        mnt.mkdir(parents=True, exist_ok=True)
        result = scan(mnt, decode_cache(ds.scan), ds.next_obj, self.objects, self.exclude(ds, mnt))
        return result.manifest, result.cache, result.next_obj

    def modified(self, ds: Dataset) -> bool:
        """True when the live data changed since it was last synced to a snapshot or receive."""
        if ds.head is not None or not ds.mounted:
            return False
        if ds.kind == "volume":
            path = self.volume_path(ds)
            cache = decode_cache(ds.scan)
            if not path.exists():
                return bool(cache)
            st = os.stat(path)
            entry = cache.get("")
            return entry is None or entry[:4] != (
                st.st_ino,
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
            )
        mnt = self.mountpoint(ds)
        if mnt is None:
            return False
        return is_modified(mnt, decode_cache(ds.scan), self.exclude(ds, mnt))

    def install(self, ds: Dataset, manifest: Manifest, *, mount: bool = True) -> None:
        """Make the dataset's live data equal ``manifest`` (mounted) or keep it as head."""
        next_obj = max([ds.next_obj, FIRST_OBJECT, *(o + 1 for o in manifest)])
        if not mount or not ds.mounted or (ds.kind == "filesystem" and not self.mountpoint(ds)):
            self.conn.execute(
                "UPDATE datasets SET head=?, scan=NULL, next_obj=?, mounted=0 WHERE id=?",
                (encode_manifest(manifest), next_obj, ds.id),
            )
            return
        cache = decode_cache(ds.scan)
        try:
            if ds.kind == "volume":
                cache = materialize_volume(self.volume_path(ds), manifest, cache, self.objects)
            else:
                mnt = self.mountpoint(ds)
                assert mnt is not None
                inner = self.exclude(ds, mnt)
                if ds.scan is None and self._foreign_files(mnt, inner):
                    # OpenZFS would hide them under the mount; the simulation would have to
                    # replace them, so it refuses, as OpenZFS does with overlay=off
                    raise ZfsError(f"cannot mount '{mnt}': directory is not empty")
                cache = materialize(mnt, manifest, cache, self.objects, inner)
        except OSError as exc:
            raise ZfsError(f"cannot mount '{ds.name}': {exc.strerror}") from exc
        self.conn.execute(
            "UPDATE datasets SET head=NULL, scan=?, next_obj=?, mounted=1 WHERE id=?",
            (encode_cache(cache), next_obj, ds.id),
        )

    def _foreign_files(self, mnt: Path, inner: frozenset[str]) -> bool:
        """Whether ``mnt``, outside this pool's directory, holds anything that is not a
        mountpoint (or a parent of one) of the pool's other filesystems: files that are not
        the simulation's to replace."""
        if mnt.is_relative_to(self.dir):
            return False
        parents = {"/".join(e.split("/")[:i]) for e in inner for i in range(1, e.count("/") + 1)}
        return any(rel and rel not in parents for rel, _st in walk(mnt, inner))

    def unmount(self, ds: Dataset) -> None:
        """Keep the live data as a head manifest and empty the mountpoint (call inside a txg)."""
        if ds.head is not None:
            return
        manifest, _cache, next_obj = self.capture(ds)
        self.conn.execute(
            "UPDATE datasets SET head=?, scan=NULL, next_obj=?, mounted=0 WHERE id=?",
            (encode_manifest(manifest), next_obj, ds.id),
        )
        self.remove_live(ds)

    def remove_live(self, ds: Dataset) -> None:
        """Delete a dataset's live directory or volume file."""
        if ds.kind == "volume":
            self.volume_path(ds).unlink(missing_ok=True)
            return
        mnt = self.mountpoint(ds)
        if mnt is None or not mnt.exists():
            return
        inner = self.exclude(ds, mnt)
        if not inner:
            shutil.rmtree(mnt, ignore_errors=True)
            return
        keep = {"/".join(e.split("/")[:i]) for e in inner for i in range(1, e.count("/") + 2)}
        for rel, _st in sorted(walk(mnt, inner), key=lambda x: -x[0].count("/")):
            if rel and rel not in keep:
                full = mnt / rel
                if full.is_dir() and not full.is_symlink():
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    full.unlink(missing_ok=True)

    # -- garbage --------------------------------------------------------------------------------
    def collect(self) -> None:
        """Forget nodes no manifest reaches (call inside a txg); see :meth:`sweep_blocks`."""
        reach = self._reachable(include_bookmarks=True)
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep(hash BLOB PRIMARY KEY)")
        self.conn.execute("DELETE FROM keep")
        self.conn.executemany("INSERT OR IGNORE INTO keep VALUES(?)", ((d,) for d in reach))
        self.conn.execute("DELETE FROM nodes WHERE hash NOT IN (SELECT hash FROM keep)")
        self.conn.execute("DELETE FROM keep")

    def sweep_blocks(self, *, grace: float = 600.0) -> int:
        """Delete block files that no snapshot, live head or partial receive needs.

        Skipped while a receive in a live process holds a lease: its blocks are not in any
        committed row yet, however long the stream takes.
        """
        # Under the write lock: no snapshot can be storing blocks it has not committed yet.
        with db.txg(self.conn):
            if self._receiving():
                return 0
            digests = self._reachable(include_bookmarks=False)
            live: set[bytes] = set()
            for node in self.objects.get_many(digests).values():
                live.update(node.blocks)
            for (state,) in self.conn.execute("SELECT state FROM partial"):
                live.update(PartialState.decode(state).blocks())
            return self.blocks.sweep(live, grace=grace)

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """A lease that keeps :meth:`sweep_blocks` away while a receive writes blocks."""
        key = f"receive:{os.getpid()}:{secrets.token_hex(4)}"
        with db.txg(self.conn):
            db.set_meta(self.conn, key, int(time.time()))
        try:
            yield
        finally:
            with db.txg(self.conn):
                self.conn.execute("DELETE FROM meta WHERE key=?", (key,))

    def _receiving(self) -> bool:
        rows = self.conn.execute("SELECT key FROM meta WHERE key LIKE 'receive:%'").fetchall()
        for (key,) in rows:
            pid = int(key.split(":")[1])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue  # a receive that died: its lease no longer protects anything
            except PermissionError:
                return True
            return True
        return False

    def _manifest_digests(self, blob: bytes) -> frozenset[bytes]:
        found = self._digests.get(blob)
        if found is None:
            if len(self._digests) >= _DIGEST_MEMO:
                self._digests.clear()
            found = self._digests[blob] = frozenset(decode_manifest(blob).values())
        return found

    def _reachable(self, *, include_bookmarks: bool) -> set[bytes]:
        reach: set[bytes] = set()
        for (blob,) in self.conn.execute("SELECT manifest FROM snapshots"):
            reach.update(self._manifest_digests(blob))
        if include_bookmarks:
            for (blob,) in self.conn.execute("SELECT manifest FROM bookmarks"):
                reach.update(self._manifest_digests(blob))
        for head, cache in self.conn.execute("SELECT head, scan FROM datasets"):
            if head:
                reach.update(decode_manifest(head).values())
            reach.update(entry[5] for entry in decode_cache(cache).values())
        reach.discard(b"")
        return reach
