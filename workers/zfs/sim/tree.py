"""Between live directories and manifests: scan a mountpoint, and make one match a manifest.

A scan keeps a stat cache (path -> inode, size, mtime, ctime, object id, node digest) from the
previous scan, and re-reads only files whose stat changed, so a snapshot costs about as much as
the change since the last one plus one ``lstat`` per file. Object ids follow inodes, so a rename
keeps its object (``zfs diff`` reports R) and hard links share one object.

:func:`materialize` is the inverse: it changes a directory tree until it matches a manifest,
touching only what differs (and only the differing records of a changed file), then refreshes the
stat cache so the next scan sees an unmodified dataset.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgpack
import structlog

from protocol.errors import ZfsError

from .blocks import HOLE
from .nodes import (
    RECORD,
    ROOT_OBJECT,
    VOLUME_OBJECT,
    Kind,
    Manifest,
    Meta,
    Node,
    decode_entries,
    encode_entries,
)
from .objects import ObjectStore

log = structlog.get_logger(__name__)

ZERO_RECORD: Final = bytes(RECORD)
MOUNTPOINT_META: Final = Meta(Kind.DIR, 0o755, 0, 0, 0, 0)
# A stat cache entry: inode, size, mtime_ns, ctime_ns, object id, node digest.
CacheEntry = tuple[int, int, int, int, int, bytes]
Cache = dict[str, CacheEntry]


def encode_cache(cache: Cache) -> bytes:
    return bytes(msgpack.packb(cache))  # tuples pack as arrays


def decode_cache(blob: bytes | None) -> Cache:
    if not blob:
        return {}
    try:
        raw = msgpack.unpackb(blob)
        return {
            str(k): (int(v[0]), int(v[1]), int(v[2]), int(v[3]), int(v[4]), bytes(v[5]))
            for k, v in raw.items()
        }
    except (ValueError, TypeError, IndexError, msgpack.UnpackException):
        return {}  # a lost cache only costs a full re-read on the next scan


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _kind(mode: int) -> Kind | None:
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISLNK(mode):
        return Kind.SYMLINK
    return None


def _meta(kind: Kind, st: os.stat_result, size: int) -> Meta:
    return Meta(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, size)


def store_content(store: ObjectStore, data: bytes) -> tuple[bytes, ...]:
    """Store ``data`` as records; all-zero records become holes (as ZFS does with compression)."""
    blocks = []
    for i in range(0, len(data), RECORD):
        part = data[i : i + RECORD]
        blocks.append(HOLE if part == ZERO_RECORD[: len(part)] else store.blocks.put(part))
    return tuple(blocks)


def store_file(store: ObjectStore, path: str, meta: Meta) -> Node:
    """Read a regular file record by record into the store."""
    blocks = []
    try:
        with open(path, "rb", buffering=0) as fp:
            while True:
                part = fp.read(RECORD)
                if not part:
                    break
                is_hole = part == ZERO_RECORD[: len(part)]
                blocks.append(HOLE if is_hole else store.blocks.put(part))
    except OSError as exc:
        raise ZfsError(f"cannot read {path}: {exc.strerror}") from exc
    return Node(meta.encode(), tuple(blocks))


@dataclass
class ScanResult:
    manifest: Manifest
    cache: Cache
    next_obj: int
    changed: int  # objects re-read


class _Scanner:
    def __init__(
        self, root: Path, old: Cache, next_obj: int, store: ObjectStore, exclude: frozenset[str]
    ) -> None:
        self.root = root
        self.old = old
        self.by_ino = {v[0]: (path, v) for path, v in old.items()}
        self.next_obj = next_obj
        self.store = store
        self.exclude = exclude
        self.manifest: Manifest = {}
        self.cache: Cache = {}
        self.seen_ino: dict[int, int] = {}
        self.changed = 0

    def _obj_for(self, rel: str, st: os.stat_result) -> int:
        cached = self.old.get(rel)
        candidate = cached[4] if cached and cached[0] == st.st_ino else self._renamed(st)
        if candidate is None or candidate in self.manifest or candidate == ROOT_OBJECT:
            candidate = self.next_obj
            self.next_obj += 1
        return candidate

    def _renamed(self, st: os.stat_result) -> int | None:
        """The object of a file or directory that moved here, or None for a new one.

        An inode number alone is not enough: the file system recycles them. A rename leaves
        the old path gone and mtime unchanged (and size, for files).
        """
        prior = self.by_ino.get(st.st_ino)
        if prior is None:
            return None
        path, entry = prior
        if os.path.lexists(self.root / path):
            return None
        if entry[2] != st.st_mtime_ns:
            return None
        if not stat.S_ISDIR(st.st_mode) and entry[1] != st.st_size:
            return None
        return entry[4]

    def mountpoint_dir(self, rel: str) -> int:
        """Another dataset's mountpoint: an empty directory here, as in the parent of a ZFS
        mount. Its metadata is fixed, so the child's own changes never show in the parent."""
        cached = self.old.get(rel)
        obj = cached[4] if cached and cached[4] not in self.manifest else None
        if obj is None:
            obj = self.next_obj
            self.next_obj += 1
        digest = self._put(Node(MOUNTPOINT_META.encode(), ()))
        self.manifest[obj] = digest
        self.cache[rel] = (0, 0, 0, 0, obj, digest)
        return obj

    def _put(self, node: Node) -> bytes:
        size = node.allocated()
        return self.store.put(node, size)

    def leaf(self, rel: str, full: str, st: os.stat_result, kind: Kind) -> int:
        if kind == Kind.FILE and st.st_nlink > 1 and st.st_ino in self.seen_ino:
            obj = self.seen_ino[st.st_ino]
            self.cache[rel] = (*_key(st), obj, self.manifest[obj])
            return obj
        obj = self._obj_for(rel, st)
        cached = self.old.get(rel)
        if cached and cached[:4] == _key(st) and cached[4] == obj:
            digest = cached[5]
        else:
            self.changed += 1
            if kind == Kind.FILE:
                node = store_file(self.store, full, _meta(kind, st, st.st_size))
            else:
                target = os.fsencode(os.readlink(full))
                node = Node(
                    _meta(kind, st, len(target)).encode(), store_content(self.store, target)
                )
            digest = self._put(node)
        self.manifest[obj] = digest
        self.cache[rel] = (*_key(st), obj, digest)
        self.seen_ino[st.st_ino] = obj
        return obj

    def directory(self, rel: str, full: str, st: os.stat_result, obj: int) -> None:
        entries: dict[str, int] = {}
        try:
            listing = sorted(os.scandir(full), key=lambda e: e.name)
        except OSError as exc:
            raise ZfsError(f"cannot read directory {full}: {exc.strerror}") from exc
        for entry in listing:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if child in self.exclude:
                entries[entry.name] = self.mountpoint_dir(child)
                continue
            cst = entry.stat(follow_symlinks=False)
            kind = _kind(cst.st_mode)
            if kind is None:
                log.warning("sim.scan.skipped", path=child, reason="not a file, dir or symlink")
                continue
            if kind == Kind.DIR:
                child_obj = self._obj_for(child, cst)
                self.manifest[child_obj] = b""  # reserve the id while the subtree is scanned
                self.directory(child, entry.path, cst, child_obj)
            else:
                child_obj = self.leaf(child, entry.path, cst, kind)
            entries[entry.name] = child_obj
        content = encode_entries(entries)
        node = Node(_meta(Kind.DIR, st, len(content)).encode(), store_content(self.store, content))
        digest = self._put(node)
        self.manifest[obj] = digest
        self.cache[rel] = (*_key(st), obj, digest)


def scan(
    root: Path, old: Cache, next_obj: int, store: ObjectStore, exclude: frozenset[str] = frozenset()
) -> ScanResult:
    """Record the tree under ``root`` into ``store``; ``exclude`` holds child mountpoints."""
    scanner = _Scanner(root, old, next_obj, store, exclude)
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise ZfsError(f"cannot read {root}: {exc.strerror}") from exc
    scanner.directory("", str(root), st, ROOT_OBJECT)
    return ScanResult(scanner.manifest, scanner.cache, scanner.next_obj, scanner.changed)


def scan_volume(path: Path, old: Cache, store: ObjectStore) -> ScanResult:
    """Record a volume's backing file as its one data object."""
    st = os.stat(path)
    cached = old.get("")
    if cached and cached[:4] == _key(st):
        digest = cached[5]
        changed = 0
    else:
        node = store_file(store, str(path), _meta(Kind.FILE, st, st.st_size))
        digest = store.put(node, node.allocated())
        changed = 1
    return ScanResult(
        {VOLUME_OBJECT: digest},
        {"": (*_key(st), VOLUME_OBJECT, digest)},
        VOLUME_OBJECT + 1,
        changed,
    )


def is_modified(root: Path, cache: Cache, exclude: frozenset[str] = frozenset()) -> bool:
    """True when anything under ``root`` differs (by stat) from the cache of the last sync."""
    seen = 0
    for rel, st in walk(root, exclude):
        cached = cache.get(rel)
        if cached is None or cached[:4] != _key(st):
            return True
        seen += 1
    return seen != len([rel for rel in cache if rel not in exclude])


def walk(root: Path, exclude: frozenset[str] = frozenset()) -> Iterator[tuple[str, os.stat_result]]:
    """Every path under ``root`` (``""`` for root itself) with its lstat, parents first."""
    try:
        yield "", os.lstat(root)
    except FileNotFoundError:
        return
    stack = [("", str(root))]
    while stack:
        rel, full = stack.pop()
        try:
            listing = list(os.scandir(full))
        except OSError:
            continue
        for entry in listing:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if child in exclude:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing (a receive rewriting the mountpoint)
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((child, entry.path))


def resolve_paths(manifest: Manifest, store: ObjectStore) -> tuple[dict[str, int], dict[int, Node]]:
    """The path of every object of a filesystem manifest, and the manifest's nodes."""
    nodes_by_digest = store.get_many(manifest.values())
    nodes = {obj: nodes_by_digest[d] for obj, d in manifest.items()}
    paths: dict[str, int] = {"": ROOT_OBJECT}
    if ROOT_OBJECT not in nodes:
        raise ZfsError("snapshot manifest has no root directory")
    stack = [("", ROOT_OBJECT)]
    while stack:
        rel, obj = stack.pop()
        for name, child in decode_entries(store.content(nodes[obj])).items():
            if child not in nodes:
                raise ZfsError(f"directory entry {name!r} points at a missing object {child}")
            path = f"{rel}/{name}" if rel else name
            paths[path] = child
            if nodes[child].meta.kind == Kind.DIR:
                stack.append((path, child))
    return paths, nodes


def _remove(full: str) -> None:
    """Remove a file, or a directory with everything in it."""
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        for entry in os.scandir(full):
            _remove(entry.path)
        os.rmdir(full)
    else:
        os.unlink(full)


def write_file(store: ObjectStore, full: str, node: Node, old: Node | None = None) -> None:
    """Make the file at ``full`` hold ``node``'s content; with ``old`` rewrite only changes."""
    size = node.meta.size
    patch = old is not None and all(
        b != HOLE or i >= len(old.blocks) or old.blocks[i] == HOLE
        for i, b in enumerate(node.blocks)
    )
    flags = os.O_WRONLY | os.O_CREAT | (0 if patch else os.O_TRUNC)
    fd = os.open(full, flags, 0o600)
    try:
        for i, block in enumerate(node.blocks):
            if block == HOLE:
                continue  # never written: stays a hole
            if patch and old is not None and i < len(old.blocks) and old.blocks[i] == block:
                continue
            _copy_block(store, block, fd, i * RECORD, node.record_len(i, size))
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _copy_block(store: ObjectStore, block: bytes, fd: int, offset: int, length: int) -> None:
    """Put ``length`` bytes of a stored block at ``offset`` of ``fd``: copied inside the
    kernel (copy_file_range) where the filesystem allows, else read and written."""
    try:
        src = os.open(store.blocks.path(block), os.O_RDONLY)
    except OSError as exc:
        raise ZfsError(f"pool I/O error: block {block.hex()} is missing") from exc
    try:
        done = 0
        with contextlib.suppress(OSError):  # EXDEV, ENOSYS, EINVAL: copy by hand below
            while done < length:
                got = os.copy_file_range(src, fd, length - done, done, offset + done)
                if got == 0:
                    break
                done += got
        if done < length:
            data = os.pread(src, length - done, done)
            if data:
                os.pwrite(fd, data, offset + done)
    finally:
        os.close(src)


def _set_meta(full: str, meta: Meta, *, follow: bool = False) -> None:
    # owner first: a chown clears the setuid and setgid bits, so the mode goes on after it
    with contextlib.suppress(PermissionError):
        if os.geteuid() == 0 or (meta.uid, meta.gid) != (os.getuid(), os.getgid()):
            os.lchown(full, meta.uid, meta.gid)
    if meta.kind != Kind.SYMLINK:
        os.chmod(full, meta.mode)
    os.utime(full, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=follow)


def materialize(
    root: Path,
    manifest: Manifest,
    cache: Cache,
    store: ObjectStore,
    exclude: frozenset[str] = frozenset(),
) -> Cache:
    """Change the tree under ``root`` until it matches ``manifest``; returns the new cache."""
    paths, nodes = resolve_paths(manifest, store)
    root.mkdir(parents=True, exist_ok=True)
    current = dict(walk(root, exclude))
    # What is on disk and known (stat unchanged since the last sync): path -> (obj, digest).
    known = {
        rel: (c[4], c[5])
        for rel, c in cache.items()
        if rel in current and _key(current[rel]) == c[:4]
    }
    old_nodes = store.get_many({d for _o, d in known.values()}) if known else {}
    links: dict[int, int] = {}
    for obj in paths.values():
        links[obj] = links.get(obj, 0) + 1

    # Directories holding other datasets' mountpoints stay, whatever the manifest says.
    protected = {"/".join(e.split("/")[:i]) for e in exclude for i in range(1, e.count("/") + 1)}
    # Remove what must go, deepest first.
    for rel in sorted(current, key=lambda p: p.count("/"), reverse=True):
        if rel == "" or rel in protected:
            continue
        wanted = paths.get(rel)
        st = current[rel]
        want = nodes[wanted].meta.kind if wanted is not None else None
        have = _kind(st.st_mode)
        keep = want is not None and want == have
        if keep and have != Kind.DIR:
            same = known.get(rel) == (wanted, manifest[wanted]) if wanted is not None else False
            patchable = (
                have == Kind.FILE
                and rel in known
                and known[rel][0] == wanted
                and st.st_nlink == 1
                and wanted is not None
                and links[wanted] == 1
            )
            keep = same or patchable
        if not keep:
            _remove(str(root / rel))
            current.pop(rel)

    written: dict[int, str] = {}
    dirs: list[tuple[str, Meta]] = []
    for rel in sorted(paths, key=lambda p: (p.count("/"), p)):
        obj = paths[rel]
        node = nodes[obj]
        meta = node.meta
        full = str(root / rel) if rel else str(root)
        if rel in exclude:
            os.makedirs(full, exist_ok=True)  # another dataset's root: its metadata is its own
            continue
        if meta.kind == Kind.DIR:
            if rel not in current:
                os.mkdir(full, 0o700)
            dirs.append((full, meta))
            continue
        if obj in written:
            if rel not in current:
                os.link(written[obj], full)
            continue
        if rel in current and known.get(rel) == (obj, manifest[obj]):
            written[obj] = full
            continue
        if meta.kind == Kind.SYMLINK:
            os.symlink(os.fsdecode(store.content(node)), full)
            _set_meta(full, meta)
        else:
            old = old_nodes.get(known[rel][1]) if rel in current and rel in known else None
            write_file(store, full, node, old)
            _set_meta(full, meta, follow=True)
        written[obj] = full
    for full, meta in reversed(dirs):
        _set_meta(full, meta, follow=True)

    fresh: Cache = {}
    for rel, st in walk(root, exclude):
        found = paths.get(rel)
        if found is not None:
            fresh[rel] = (*_key(st), found, manifest[found])
    for rel in exclude:
        if rel in paths:
            fresh[rel] = (0, 0, 0, 0, paths[rel], manifest[paths[rel]])
    return fresh


def materialize_volume(path: Path, manifest: Manifest, cache: Cache, store: ObjectStore) -> Cache:
    """Make a volume's backing file hold the manifest's data object."""
    digest = manifest[VOLUME_OBJECT]
    node = store.get(digest)
    old = None
    cached = cache.get("")
    with contextlib.suppress(FileNotFoundError):
        if cached and cached[:4] == _key(os.stat(path)):
            old = store.get(cached[5])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(store, str(path), node, old)
    os.chmod(path, 0o600)
    return {"": (*_key(os.stat(path)), VOLUME_OBJECT, digest)}
