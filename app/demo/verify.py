"""Compare every replica against its source, as a sceptical operator would.

For each dataset under the source root and each target: the dataset exists; every source
snapshot is there with the same guid (same snapshot, not merely the same name); a clone is a clone
of the same origin snapshot (by guid); and the files of every snapshot are the same. Files are
compared by hashing a snapshot's tree (paths, types, modes, contents, symlink targets), read
through a temporary clone of the snapshot, so the check works on any backend and looks at what a
user would see, not at zfleet's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import blake3

from workers.zfs.base import ObjType, ZfsBackend, ZfsObject

SCRATCH: Final = "zfleet-verify"


@dataclass(frozen=True)
class Check:
    """One verified claim and whether it held."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Replica:
    """A target to verify: a host's backend and the dataset the source root landed in."""

    host: str
    backend: ZfsBackend
    root: str


def tree_digest(root: Path) -> tuple[str, int, int]:
    """A digest of the tree under ``root`` and its file and byte counts; symlinks not followed."""
    h = blake3.blake3()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(path).encode() + b"\0")
            elif stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
                with path.open("rb") as fh:
                    h.update(blake3.blake3(fh.read()).digest())
    return h.hexdigest(), files, size


@contextlib.contextmanager
def snapshot_files(backend: ZfsBackend, snapshot: str, scratch: str) -> Iterator[Path]:
    """The files of ``snapshot``, through a temporary clone ``scratch`` destroyed afterwards."""
    backend.clone(snapshot, scratch, props={"readonly": "on"})
    try:
        mp = backend.mountpoint(scratch)
        if mp is None:
            raise RuntimeError(f"the verification clone {scratch} is not mounted")
        yield Path(mp)
    finally:
        backend.destroy(scratch)


def snapshot_digest(backend: ZfsBackend, snapshot: str) -> str:
    pool = snapshot.split("/", 1)[0].split("@", 1)[0]
    with snapshot_files(backend, snapshot, f"{pool}/{SCRATCH}") as path:
        return tree_digest(path)[0]


def _index(objects: Sequence[ZfsObject]) -> dict[str, ZfsObject]:
    return {o.name: o for o in objects}


def _map(name: str, src_root: str, dst_root: str) -> str:
    return dst_root + name[len(src_root) :]


def verify_replicas(
    source: ZfsBackend,
    src_root: str,
    replicas: Sequence[Replica],
    *,
    contents: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[Check]:
    """Every claim about ``replicas`` of ``src_root``, one :class:`Check` per claim kind."""
    src = [o for o in source.list(src_root) if not o.name.startswith(f"{src_root}/{SCRATCH}")]
    datasets = [o for o in src if o.type in (ObjType.FILESYSTEM, ObjType.VOLUME)]
    snaps = [o for o in src if o.type is ObjType.SNAPSHOT]
    src_by_name = _index(src)
    src_digest: dict[str, str] = {}
    checks: list[Check] = []
    for rep in replicas:
        dst = _index(rep.backend.list(rep.root)) if rep.backend.exists(rep.root) else {}
        missing = [d.name for d in datasets if _map(d.name, src_root, rep.root) not in dst]
        checks.append(Check(f"{rep.host}: all {len(datasets)} datasets present", not missing,
                            ", ".join(missing)))  # fmt: skip
        wrong_guid = [
            s.name for s in snaps
            if dst.get(_map(s.name, src_root, rep.root)) is None
            or dst[_map(s.name, src_root, rep.root)].guid != s.guid
        ]  # fmt: skip
        checks.append(Check(f"{rep.host}: all {len(snaps)} snapshots present with equal guids",
                            not wrong_guid, ", ".join(wrong_guid[:5])))  # fmt: skip
        clones = [d for d in datasets if d.origin]
        bad_clones = []
        for d in clones:
            assert d.origin is not None
            mine = dst.get(_map(d.name, src_root, rep.root))
            want = _map(d.origin, src_root, rep.root)
            if mine is None or mine.origin != want or dst.get(want) is None or (
                dst[want].guid != src_by_name[d.origin].guid
            ):
                got = mine.origin if mine else "missing"
                bad_clones.append(f"{d.name}: origin {got}, expected {want}")
        checks.append(Check(f"{rep.host}: {len(clones)} clones are clones of the same origins",
                            bool(clones) and not bad_clones, "; ".join(bad_clones)))  # fmt: skip
        if not contents or wrong_guid:
            continue
        differ = []
        for s in snaps:
            progress(f"{rep.host}: hashing {s.name}")
            if s.name not in src_digest:
                src_digest[s.name] = snapshot_digest(source, s.name)
            theirs = snapshot_digest(rep.backend, _map(s.name, src_root, rep.root))
            if theirs != src_digest[s.name]:
                differ.append(s.name)
        checks.append(Check(f"{rep.host}: files of all {len(snaps)} snapshots identical",
                            not differ, ", ".join(differ[:5])))  # fmt: skip
    return checks


def verify_restore(
    source: ZfsBackend, snapshot: str, restored: ZfsBackend, restored_snapshot: str
) -> Check:
    """The snapshot restored from the object store has the source snapshot's guid and files."""
    want = source.get(snapshot, ["guid"])["guid"].value
    got = restored.get(restored_snapshot, ["guid"])["guid"].value
    if want != got:
        return Check(f"restore {restored_snapshot}: same snapshot as {snapshot}", False,
                     f"guid {got} != {want}")  # fmt: skip
    same = snapshot_digest(source, snapshot) == snapshot_digest(restored, restored_snapshot)
    return Check(f"restore from the store: {restored_snapshot} identical to {snapshot}", same,
                 "" if same else "files differ")  # fmt: skip
