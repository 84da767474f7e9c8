"""Fingerprints from a dataset's data: its mounted tree, or a snapshot through the backend.

A tree is read file by file in 128 KiB records (a hard-linked file once; a symlink's target as
one record, as the simulation stores it), skipping the mountpoints of child datasets and the
``.zfs`` control directory. A snapshot of the simulated backend is read from its manifest: the
blocks it points at are the records, so nothing is materialized. A snapshot of any other backend
is read from a full ``zfs send`` of it (streams.py), which every backend can produce.

:func:`collect` turns command-line names into record sets: ``pool/a@s1`` (a snapshot),
``pool/a`` (the live data under its mountpoint) or a pool name (every leaf dataset in it; a
volume or an unmounted replica by its newest snapshot).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import DatasetNotFound, InvalidOperation, KeyNotLoaded, ZfsError
from workers.zfs.base import ObjType, SendSpec, ZfsBackend, ZfsObject

from .records import RECORD, RecordSet
from .streams import read_stream


@dataclass(frozen=True)
class Source:
    """Where one dataset's records were read: its name, and the snapshot (None: live data)."""

    dataset: str
    snapshot: str | None


def read_tree(root: Path, exclude: frozenset[str] = frozenset()) -> RecordSet:
    """The records of every file under ``root``; ``exclude`` holds relative paths to skip."""
    out = RecordSet()
    seen: set[tuple[int, int]] = set()
    for rel, full, st in _walk(root, exclude):
        if stat.S_ISLNK(st.st_mode):
            out.add(os.fsencode(os.readlink(full)))
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue  # another name of a file already read: one object, stored once
            seen.add((st.st_dev, st.st_ino))
        try:
            with open(full, "rb", buffering=0) as fp:
                while part := fp.read(RECORD):
                    out.add(part)
        except OSError as exc:
            raise ZfsError(f"cannot read {root / rel}: {exc.strerror}") from exc
    return out


def _walk(root: Path, exclude: frozenset[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    stack = [("", str(root))]
    while stack:
        rel, full = stack.pop()
        try:
            entries = sorted(os.scandir(full), key=lambda e: e.name)
        except OSError as exc:
            raise ZfsError(f"cannot read directory {full}: {exc.strerror}") from exc
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if child in exclude or (not rel and entry.name == ".zfs"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we read: the live data is a moving target
            if stat.S_ISDIR(st.st_mode):
                stack.append((child, entry.path))
            else:
                yield child, entry.path, st


def read_sim_snapshot(backend: ZfsBackend, snapshot: str) -> RecordSet:
    """A simulated snapshot's records, straight from its manifest and block store."""
    from workers.zfs.sim import SimBackend
    from workers.zfs.sim.blocks import HOLE
    from workers.zfs.sim.nodes import Kind

    assert isinstance(backend, SimBackend)
    pool = backend.pool(snapshot.split("/", 1)[0].split("@", 1)[0])
    manifest = pool.snapshot(snapshot).manifest
    store = pool.objects
    out = RecordSet()
    for node in store.get_many(manifest.values()).values():
        try:
            meta = node.meta
        except ZfsError as exc:
            raise KeyNotLoaded(f"{snapshot}: its data is encrypted and locked: {exc}") from exc
        if meta.kind == Kind.DIR:
            continue
        for index, block in enumerate(node.blocks):
            if block != HOLE:
                out.add(store.blocks.get(block)[: node.record_len(index, meta.size)])
    return out


def read_snapshot(backend: ZfsBackend, snapshot: str) -> RecordSet:
    """A snapshot's records: from the simulation's manifest, else from a full send of it."""
    from workers.zfs.sim import SimBackend

    if isinstance(backend, SimBackend):
        return read_sim_snapshot(backend, snapshot)
    return read_sent(backend, snapshot)


def read_sent(backend: ZfsBackend, snapshot: str) -> RecordSet:
    """A snapshot's records from a full ``zfs send`` of it (any backend)."""
    stream = backend.send(SendSpec(snapshot))
    try:
        found = read_stream(stream, snapshot)
    except BaseException:
        stream.cancel()
        raise
    stream.close()
    if len(found) != 1:
        raise ZfsError(f"the send of {snapshot} held {len(found)} datasets, not one")
    return found[0].records


def read_live(backend: ZfsBackend, dataset: str) -> RecordSet:
    """A mounted filesystem's current files (child datasets' mountpoints left out)."""
    where = backend.mountpoint(dataset)
    if where is None or not os.path.isdir(where):
        raise InvalidOperation(
            f"{dataset} is not mounted (or is a volume): name one of its snapshots instead"
        )
    root = Path(where)
    exclude: set[str] = set()
    for child in backend.list(dataset, types=[ObjType.FILESYSTEM]):
        if child.name == dataset:
            continue
        mnt = backend.mountpoint(child.name)
        if mnt is not None and Path(mnt).is_relative_to(root) and Path(mnt) != root:
            exclude.add(str(Path(mnt).relative_to(root)))
    return read_tree(root, frozenset(exclude))


def expand(backend: ZfsBackend, names: Sequence[str]) -> list[Source]:
    """Command-line names as sources: a pool, or a dataset with children (a collection such
    as ``tank/img``), stands for each leaf dataset in it."""
    out: list[Source] = []
    for name in names:
        if "@" in name:
            dataset = name.split("@", 1)[0]
            if not backend.exists(name):
                raise DatasetNotFound(f"snapshot {name} does not exist")
            out.append(Source(dataset, name))
            continue
        found = _datasets(backend, name)
        if "/" in name:
            if not found:
                raise DatasetNotFound(f"dataset {name} does not exist")
            if not any(d.name.startswith(f"{name}/") for d in found):
                out.append(Source(name, None))
                continue
        parents = {d.name.rsplit("/", 1)[0] for d in found if "/" in d.name}
        leaves = [
            Source(d.name, None) if _mounted(backend, d) else _latest(backend, d)
            for d in found
            if d.name != name and d.name not in parents
        ]
        if not leaves:
            raise InvalidOperation(f"pool {name} holds no datasets to analyse")
        out.extend(leaves)
    names_seen = [s.dataset for s in out]
    dupes = sorted({n for n in names_seen if names_seen.count(n) > 1})
    if dupes:
        raise InvalidOperation(f"named twice: {', '.join(dupes)}")
    return out


def _mounted(backend: ZfsBackend, obj: ZfsObject) -> bool:
    if obj.type == ObjType.VOLUME:
        return False
    where = backend.mountpoint(obj.name)
    return where is not None and os.path.isdir(where)


def _latest(backend: ZfsBackend, obj: ZfsObject) -> Source:
    """A volume or an unmounted filesystem (a replica) has no tree to read: its newest
    snapshot stands for it."""
    snaps = backend.list(obj.name, recursive=False, types=[ObjType.SNAPSHOT])
    if not snaps:
        what = "volume" if obj.type == ObjType.VOLUME else "unmounted dataset"
        raise InvalidOperation(f"{what} {obj.name} has no snapshot to read: take one first")
    return Source(obj.name, max(snaps, key=lambda s: s.createtxg).name)


def _datasets(backend: ZfsBackend, root: str) -> list[ZfsObject]:
    try:
        return backend.list(root, types=[ObjType.FILESYSTEM, ObjType.VOLUME])
    except DatasetNotFound:
        return []


def read_source(backend: ZfsBackend, source: Source) -> RecordSet:
    """The records of one source."""
    if source.snapshot is not None:
        return read_snapshot(backend, source.snapshot)
    return read_live(backend, source.dataset)
