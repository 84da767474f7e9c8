"""File trees compared and copied entry by entry, with everything a user would notice kept.

An image's tree is read with ``lstat`` (never following symlinks): kind, mode, owner, mtime,
size, device numbers, symlink target, extended attributes (where the filesystem has them) and
hard-link groups (paths sharing an inode). :func:`fingerprint` adds a BLAKE3 of each file's
bytes, so two trees can be proven equal path by path (:func:`compare`).

:func:`sync_entry` makes one path of a destination tree equal the same path of a source tree and
writes as little as it can: a file that exists on both sides is patched in place, record by
record (128 KiB, ZFS's default recordsize), so the records it shares with the clone's origin stay
shared; a file whose bytes already match gets only its metadata set. Every byte written is
charged to a :class:`Budget` first, so a rebase that would overfill the pool or a quota stops
with :class:`RebaseNoSpace` (as the kernel's ENOSPC / EDQUOT would) and is rolled back.

ctime and atime are not kept: no user-space call can set ctime, and reading a file moves atime.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import blake3

from protocol.errors import RebaseError, RebaseNoSpace

RECORD: Final = 128 * 1024
_NO_XATTRS: Final = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENODATA)
_FULL: Final = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class Entry:
    """One path's metadata, as ``lstat`` and ``listxattr`` report it."""

    kind: str  # file | dir | symlink | fifo | char | block | socket
    mode: int  # permission and set-id/sticky bits
    uid: int
    gid: int
    mtime_ns: int
    size: int
    ino: int
    nlink: int
    rdev: int
    target: str | None  # symlinks only
    xattrs: tuple[tuple[str, bytes], ...]

    def same_meta(self, other: Entry) -> bool:
        """Equal in everything but content, inode and link count."""
        return (
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.mtime_ns,
            self.size,
            self.rdev,
            self.target,
            self.xattrs,
        ) == (
            other.kind,
            other.mode,
            other.uid,
            other.gid,
            other.mtime_ns,
            other.size,
            other.rdev,
            other.target,
            other.xattrs,
        )


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
    ):
        if test(mode):
            return name
    return "socket"


def read_xattrs(full: str) -> tuple[tuple[str, bytes], ...]:
    """The path's extended attributes, sorted; empty where the filesystem has none."""
    try:
        names = os.listxattr(full, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return ()
        raise
    out = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(full, name, follow_symlinks=False)))
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return tuple(out)


def entry_of(full: str, st: os.stat_result | None = None) -> Entry:
    st = st or os.lstat(full)
    kind = _kind(st.st_mode)
    return Entry(
        kind=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if kind in ("file", "symlink") else 0,
        ino=st.st_ino,
        nlink=st.st_nlink,
        rdev=st.st_rdev if kind in ("char", "block") else 0,
        target=os.readlink(full) if kind == "symlink" else None,
        xattrs=read_xattrs(full),
    )


def scan(root: Path) -> dict[str, Entry]:
    """Every path under ``root`` (``""`` is the root itself), parents before children.

    Another filesystem mounted inside (another dataset) is not part of the tree: entries on
    another device are left out, as ``zfs send`` leaves them out.
    """
    out: dict[str, Entry] = {}
    try:
        device = os.lstat(root).st_dev
        out[""] = entry_of(str(root))
    except OSError as exc:
        raise RebaseError(f"cannot read {root}: {exc.strerror}") from exc
    stack = [("", str(root))]
    while stack:
        rel, full = stack.pop()
        try:
            listing = sorted(os.scandir(full), key=lambda e: e.name)
        except OSError as exc:
            raise RebaseError(f"cannot read {full}: {exc.strerror}") from exc
        for item in listing:
            child = f"{rel}/{item.name}" if rel else item.name
            st = item.stat(follow_symlinks=False)
            if st.st_dev != device:
                continue
            entry = entry_of(item.path, st)
            out[child] = entry
            if entry.kind == "dir":
                stack.append((child, item.path))
    return out


def link_groups(entries: Mapping[str, Entry]) -> dict[str, tuple[str, ...]]:
    """For each non-directory path with hard links inside the tree: all its paths, sorted."""
    by_ino: dict[int, list[str]] = {}
    for rel, e in entries.items():
        if e.kind != "dir" and e.nlink > 1:
            by_ino.setdefault(e.ino, []).append(rel)
    return {p: tuple(sorted(g)) for g in by_ino.values() if len(g) > 1 for p in g}


def content_hash(full: str) -> bytes:
    h = blake3.blake3()
    with open(full, "rb", buffering=0) as fp:
        while chunk := fp.read(1 << 20):
            h.update(chunk)
    return h.digest()


Fingerprint = tuple[object, ...]


def fingerprint(root: Path, entries: Mapping[str, Entry] | None = None) -> dict[str, Fingerprint]:
    """Per path: metadata, content hash (files) and the first path of its hard-link group."""
    entries = scan(root) if entries is None else entries
    groups = link_groups(entries)
    hashes: dict[int, bytes] = {}
    out: dict[str, Fingerprint] = {}
    for rel, e in entries.items():
        digest = b""
        if e.kind == "file":
            if e.ino not in hashes:
                hashes[e.ino] = content_hash(str(root / rel) if rel else str(root))
            digest = hashes[e.ino]
        group = groups.get(rel, (rel,))[0] if e.kind != "dir" else rel
        out[rel] = (
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            e.mtime_ns,
            e.size,
            e.rdev,
            e.target,
            e.xattrs,
            digest,
            group,
        )
    return out


def tree_hash(prints: Mapping[str, Fingerprint]) -> str:
    """One BLAKE3 over every path's fingerprint, in path order: equal trees, equal hashes."""
    h = blake3.blake3()
    for rel in sorted(prints):
        h.update(repr((rel, prints[rel])).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def compare(want: Mapping[str, Fingerprint], have: Mapping[str, Fingerprint]) -> list[str]:
    """Paths whose fingerprints differ (or exist on one side only), sorted."""
    return sorted(p for p in set(want) | set(have) if want.get(p) != have.get(p))


class Budget:
    """Bytes a rebase may still write before the pool or a quota would be full."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int, where: str) -> None:
        if self.limit is not None and self.used + n > self.limit:
            raise RebaseNoSpace(
                f"out of space writing {where}: {self.used + n} bytes needed, "
                f"{self.limit} available in the pool (or under its quotas)"
            )
        self.used += n


def _full(where: str, exc: OSError) -> RebaseError:
    if exc.errno in _FULL:
        return RebaseNoSpace(f"out of space writing {where}: {exc.strerror}")
    return RebaseError(f"cannot write {where}: {exc.strerror}")


def remove(full: str) -> None:
    """Remove a path: a file, a symlink, or a directory with everything in it."""
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(full)
    else:
        os.unlink(full)


def _patch_file(src: str, dst: str, budget: Budget) -> tuple[int, bool]:
    """Make ``dst`` (a regular file with one link) hold ``src``'s bytes: write only the records
    that differ. Returns the bytes written, and whether the file changed at all."""
    written = 0
    cut = False
    with open(src, "rb", buffering=0) as fin, open(dst, "r+b", buffering=0) as fout:
        offset = 0
        while True:
            new = fin.read(RECORD)
            if not new:
                break
            old = fout.read(RECORD)
            if old != new:
                budget.charge(len(new), dst)
                os.pwrite(fout.fileno(), new, offset)
                written += len(new)
            offset += len(new)
            fout.seek(offset)
        if os.fstat(fout.fileno()).st_size != offset:
            fout.truncate(offset)  # only then: ftruncate moves mtime even to the same size
            cut = True
    return written, cut or written > 0


def _copy_file(src: str, dst: str, budget: Budget) -> int:
    """Write a new file; all-zero records are skipped (holes), as ZFS would not store them."""
    written = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb", buffering=0) as fin:
            offset = 0
            while chunk := fin.read(RECORD):
                if chunk.count(0) != len(chunk):
                    budget.charge(len(chunk), dst)
                    os.pwrite(fd, chunk, offset)
                    written += len(chunk)
                offset += len(chunk)
        os.ftruncate(fd, offset)
    finally:
        os.close(fd)
    return written


def set_meta(full: str, e: Entry) -> None:
    """Owner, mode, xattrs, then mtime (last: the others would not move it, writes would)."""
    os.lchown(full, e.uid, e.gid)
    if e.kind != "symlink":
        os.chmod(full, e.mode)  # after chown, which clears set-id bits
    have = dict(read_xattrs(full))
    want = dict(e.xattrs)
    for name in have.keys() - want.keys():
        os.removexattr(full, name, follow_symlinks=False)
    for name, value in want.items():
        if have.get(name) != value:
            os.setxattr(full, name, value, follow_symlinks=False)
    os.utime(full, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)


@dataclass
class SyncResult:
    bytes_written: int = 0
    files_written: int = 0


def sync_entry(
    src_root: Path,
    dst_root: Path,
    rel: str,
    want: Entry,
    *,
    budget: Budget,
    result: SyncResult,
    link_to: str | None = None,
    links_match: bool = False,
) -> bool:
    """Make ``dst_root/rel`` equal ``src_root/rel``; True if anything had to change.

    A directory's entries are left alone and its metadata is the caller's to set, after its
    children. ``link_to``: a path already made equal that ``rel`` must be a hard link of.
    ``links_match``: ``dst``'s file has the same hard links as ``src``'s, so patching it in
    place changes only paths that must change alike.
    """
    src = str(src_root / rel) if rel else str(src_root)
    dst = str(dst_root / rel) if rel else str(dst_root)
    try:
        have = entry_of(dst) if os.path.lexists(dst) else None
        if link_to is not None:
            target = str(dst_root / link_to)
            if have is not None and os.lstat(target).st_ino == have.ino:
                return False
            remove(dst)
            os.link(target, dst, follow_symlinks=False)
            return True
        if have is not None and have.kind != want.kind:
            remove(dst)
            have = None
        if want.kind == "dir":
            if have is None:
                os.mkdir(dst, 0o700)
            return have is None or not have.same_meta(want)
        wrote = False
        if want.kind == "file":
            if have is not None and have.nlink > 1 and not links_match:
                remove(dst)  # patching would change the other links too
                have = None
            if have is not None:
                n, wrote = _patch_file(src, dst, budget)
            else:
                n, wrote = _copy_file(src, dst, budget), True
            if wrote:
                result.files_written += 1
                result.bytes_written += n
        elif want.kind == "symlink":
            if have is None or have.target != want.target:
                remove(dst)
                assert want.target is not None
                os.symlink(want.target, dst)
                result.files_written += 1
                wrote, have = True, None
        elif have is None or have.rdev != want.rdev:
            if want.kind == "socket":
                raise RebaseError(f"cannot copy {src}: a socket cannot be recreated")
            remove(dst)
            kind_bits = {"fifo": stat.S_IFIFO, "char": stat.S_IFCHR, "block": stat.S_IFBLK}
            os.mknod(dst, kind_bits[want.kind] | 0o600, want.rdev)
            wrote, have = True, None
        if wrote or have is None or not have.same_meta(want):
            set_meta(dst, want)
            return True
        return False
    except RebaseError:
        raise
    except OSError as exc:
        raise _full(dst, exc) from exc


def same_path(a_root: Path, b_root: Path, rel: str) -> bool:
    """Equal kind, mode, owner, target, xattrs and bytes at ``rel`` (mtime aside), or both
    absent: the two sides made the same change."""
    fa, fb = (str(r / rel) if rel else str(r) for r in (a_root, b_root))
    ea = entry_of(fa) if os.path.lexists(fa) else None
    eb = entry_of(fb) if os.path.lexists(fb) else None
    if ea is None or eb is None:
        return ea is eb
    if (ea.kind, ea.mode, ea.uid, ea.gid, ea.size, ea.rdev, ea.target, ea.xattrs) != (
        eb.kind,
        eb.mode,
        eb.uid,
        eb.gid,
        eb.size,
        eb.rdev,
        eb.target,
        eb.xattrs,
    ):
        return False
    return ea.kind != "file" or content_hash(fa) == content_hash(fb)


def equal_entry(a_root: Path, b_root: Path, rel: str) -> bool:
    """Equal in everything :func:`fingerprint` records but the hard-link group."""
    fa, fb = (str(r / rel) if rel else str(r) for r in (a_root, b_root))
    if not (os.path.lexists(fa) and os.path.lexists(fb)):
        return False
    ea, eb = entry_of(fa), entry_of(fb)
    return ea.same_meta(eb) and (ea.kind != "file" or content_hash(fa) == content_hash(fb))


def order_for_removal(paths: Iterator[str] | list[str]) -> list[str]:
    """Deepest first, so a directory's children go before it."""
    return sorted(paths, key=lambda p: (-p.count("/"), p))
