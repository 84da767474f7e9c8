"""Differential testing of the simulated backend against real OpenZFS.

A seeded generator proposes operations (create, write files, snapshot, clone, promote,
send/receive, rollback, destroy), choosing their arguments from the structure both backends show,
sometimes choosing ones that must fail. Each operation runs on both sides in lockstep; after each,
the two sides are observed and must agree: the same outcome (success or the same error type), the
same datasets and snapshots with the same origins, snapshot order and guid sharing, and the same
file contents. Names are compared relative to each side's scratch root.
"""

from __future__ import annotations

import hashlib
import os
import random
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from protocol.errors import ZfleetError
from tests.conformance.target import transfer
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec, ZfsBackend

FILE_NAMES = ("a.txt", "b.bin", "sub/c.txt")
FILE_SIZES = (0, 100, 5000, 70_000)
# operation kind -> relative weight
WEIGHTS = {
    "write": 24,
    "snapshot": 20,
    "create": 10,
    "clone": 10,
    "send": 14,
    "rollback": 8,
    "promote": 5,
    "destroy": 9,
}


@dataclass(frozen=True)
class Op:
    """One operation, with names relative to the scratch root ("" is the root itself)."""

    kind: str
    args: tuple[str, ...]
    data: bytes = b""
    flag: bool = False

    def __str__(self) -> str:
        extra = f" {len(self.data)}B" if self.kind == "write" else ""
        flag = " (flag)" if self.flag else ""
        return f"{self.kind} {' '.join(self.args)}{extra}{flag}"


class Files(Protocol):
    """The file side of a backend: write into a mountpoint, and digest every visible file."""

    def write(self, mountpoint: str, path: str, data: bytes) -> None:
        """Write ``path`` (relative) below ``mountpoint``."""
        ...

    def contents(self, backend: ZfsBackend, root: str) -> dict[str, tuple[str, dict[str, str]]]:
        """For each mounted filesystem at or below ``root``: its mountpoint and, for each of
        its files, the path relative to the mountpoint -> sha256."""
        ...


def _split_by_mount(
    mounts: dict[str, str], digests: dict[str, str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Give each file (absolute path -> digest) to the dataset with the deepest mountpoint."""
    result: dict[str, tuple[str, dict[str, str]]] = {n: (m, {}) for n, m in mounts.items()}
    by_depth = sorted(mounts.items(), key=lambda item: -len(item[1]))
    for path, digest in digests.items():
        for name, mnt in by_depth:
            if path.startswith(mnt.rstrip("/") + "/"):
                result[name][1][os.path.relpath(path, mnt)] = digest
                break
    return result


@dataclass(frozen=True)
class LocalTree:
    """Files of a backend whose mountpoints are on this machine (the simulation)."""

    def write(self, mountpoint: str, path: str, data: bytes) -> None:
        target = Path(mountpoint) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def contents(self, backend: ZfsBackend, root: str) -> dict[str, tuple[str, dict[str, str]]]:
        names = [o.name for o in backend.list(root) if o.type == ObjType.FILESYSTEM]
        mounts = {n: m for n in names if (m := backend.mountpoint(n)) is not None}
        digests = {}
        for mnt in mounts.values():
            for here, dirs, files in os.walk(mnt):
                dirs[:] = [d for d in dirs if d != ".zfs"]
                for file in files:
                    full = os.path.join(here, file)
                    digests[full] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
        return _split_by_mount(mounts, digests)


@dataclass(frozen=True)
class RemoteTree:
    """Files on a host behind an exec prefix; few guest processes per call (TCG is slow)."""

    exec_prefix: Sequence[str]
    root_mountpoint: str

    def _sh(self, script: str, data: bytes = b"") -> str:
        argv = [*self.exec_prefix, "sh", "-c", shlex.quote(script)]
        done = subprocess.run(argv, input=data, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{script!r}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def write(self, mountpoint: str, path: str, data: bytes) -> None:
        target = shlex.quote(f"{mountpoint}/{path}")
        self._sh(f'f={target}; mkdir -p "${{f%/*}}" && cat > "$f"', data)

    def contents(self, backend: ZfsBackend, root: str) -> dict[str, tuple[str, dict[str, str]]]:
        script = (
            f"zfs list -H -o name,mounted,mountpoint -t filesystem -r {shlex.quote(root)} && "
            f"echo == && find {shlex.quote(self.root_mountpoint)} -type f -exec sha256sum {{}} +"
        )
        listing, _, files = self._sh(script).partition("==\n")
        mounts = {}
        for line in listing.splitlines():
            name, mounted, mnt = line.split("\t")
            if mounted == "yes":
                mounts[name] = mnt
        digests = {}
        for line in files.splitlines():
            digest, path = line.split("  ", 1)
            digests[path] = digest
        return _split_by_mount(mounts, digests)


@dataclass
class Side:
    """One backend under test and its scratch root dataset."""

    backend: ZfsBackend
    root: str
    files: Files
    mounts: dict[str, str] = field(default_factory=dict)  # as last observed; writes go there

    def full(self, rel: str) -> str:
        if not rel:
            return self.root
        return self.root + rel if rel[0] in "@#" else f"{self.root}/{rel}"

    def rel(self, name: str) -> str:
        if name == self.root:
            return ""
        tail = name[len(self.root) :]
        return tail if tail[0] in "@#" else tail[1:]

    def apply(self, op: Op) -> str:
        """Run ``op``; "ok" or the name of the ZfleetError it raised."""
        b, a = self.backend, [self.full(x) for x in op.args]
        try:
            if op.kind == "create":
                b.create(a[0])
            elif op.kind == "write":
                if a[0] not in self.mounts:
                    return "unmounted"
                self.files.write(self.mounts[a[0]], op.args[1], op.data)
            elif op.kind == "snapshot":
                b.snapshot([a[0]])
            elif op.kind == "clone":
                b.clone(a[0], a[1])
            elif op.kind == "promote":
                b.promote(a[0])
            elif op.kind == "rollback":
                b.rollback(a[0], destroy_newer=op.flag)
            elif op.kind == "destroy":
                b.destroy(a[0])
            elif op.kind == "send":
                from_snap = a[2] if len(a) > 2 else None
                transfer(b, SendSpec(a[0], from_snap=from_snap), b, ReceiveSpec(a[1]))
            else:
                raise ValueError(op.kind)
        except ZfleetError as exc:
            return type(exc).__name__
        return "ok"

    def observe(self) -> Observation:
        """What a user sees below the root: names, origins, snapshot order, guids, files."""
        objects = [o for o in self.backend.list(self.root) if o.name != self.root]
        entries = sorted(
            (self.rel(o.name), str(o.type), self.rel(o.origin) if o.origin else "") for o in objects
        )
        snaps = sorted(
            (o for o in objects if o.type == ObjType.SNAPSHOT), key=lambda o: o.createtxg
        )
        order: dict[str, list[str]] = {}
        by_guid: dict[int, list[str]] = {}
        for o in snaps:
            order.setdefault(self.rel(o.dataset), []).append(o.short)
            by_guid.setdefault(o.guid, []).append(self.rel(o.name))
        shared = sorted(tuple(sorted(g)) for g in by_guid.values() if len(g) > 1)
        found = self.files.contents(self.backend, self.root)
        self.mounts = {name: mnt for name, (mnt, _) in found.items()}
        contents = {self.rel(name): tree for name, (_, tree) in found.items() if name != self.root}
        return Observation(entries, order, shared, contents)


@dataclass
class Observation:
    entries: list[tuple[str, str, str]]
    snapshot_order: dict[str, list[str]]
    shared_guids: list[tuple[str, ...]]
    contents: dict[str, dict[str, str]]

    def differences(self, other: Observation) -> list[str]:
        """Human-readable differences from ``other`` (empty when they agree)."""
        out = []
        for what in ("entries", "snapshot_order", "shared_guids", "contents"):
            mine, theirs = getattr(self, what), getattr(other, what)
            if mine != theirs:
                out.append(f"{what}:\n  sim:  {mine}\n  real: {theirs}")
        return out


@dataclass
class Generator:
    """Seeded operations over the structure last observed."""

    seed: int
    rng: random.Random = field(init=False)
    counter: int = 0
    sends: dict[str, list[str]] = field(default_factory=dict)  # source fs -> its targets

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _new(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def next(self, seen: Observation) -> Op:
        rng = self.rng
        filesystems = [n for n, t, _ in seen.entries if t == "filesystem"]
        snapshots = [n for n, t, _ in seen.entries if t == "snapshot"]
        clones = [n for n, t, origin in seen.entries if t == "filesystem" and origin]
        kinds = list(WEIGHTS)
        while True:
            kind = rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
            if kind not in ("create",) and not filesystems:
                continue
            if kind in ("clone", "rollback", "send") and not snapshots:
                continue
            break
        if kind == "create":
            roll = rng.random()
            if roll < 0.1 and filesystems:
                return Op("create", (rng.choice(filesystems),))  # exists already
            if roll < 0.15:
                return Op("create", (f"{self._new('nope')}/{self._new('d')}",))  # no parent
            parent = rng.choice(["", "", *filesystems])
            name = self._new("d")
            return Op("create", (f"{parent}/{name}" if parent else name,))
        if kind == "write":
            size = rng.choice(FILE_SIZES)
            return Op(
                "write", (rng.choice(filesystems), rng.choice(FILE_NAMES)), data=rng.randbytes(size)
            )
        if kind == "snapshot":
            fs = rng.choice(filesystems)
            mine = [s.split("@")[1] for s in snapshots if s.split("@")[0] == fs]
            short = rng.choice(mine) if mine and rng.random() < 0.1 else self._new("s")
            return Op("snapshot", (f"{fs}@{short}",))
        if kind == "clone":
            origin = rng.choice(snapshots) if rng.random() > 0.05 else f"{filesystems[0]}@gone"
            return Op("clone", (origin, self._new("c")))
        if kind == "promote":
            return Op(
                "promote", (rng.choice(clones if clones and rng.random() < 0.8 else filesystems),)
            )
        if kind == "rollback":
            return Op("rollback", (rng.choice(snapshots),), flag=rng.random() < 0.4)
        if kind == "destroy":
            return Op("destroy", (rng.choice(snapshots + filesystems),))
        # send: a full send to a new target, or an incremental to an earlier target
        snap = rng.choice(snapshots)
        fs = snap.split("@")[0]
        earlier = [s for s in snapshots if s.split("@")[0] == fs and s != snap]
        targets = self.sends.get(fs, [])
        if targets and earlier and rng.random() < 0.6:
            return Op("send", (snap, rng.choice(targets), rng.choice(earlier)))
        target = self._new("r")
        self.sends.setdefault(fs, []).append(target)
        return Op("send", (snap, target))
