"""Set-up and small reads the simulated-backend tests share."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from workers.zfs.base import SendSpec
from workers.zfs.sim import SimBackend


def new_sim(tmp_path: Path, pools: Sequence[str], datasets: Sequence[str] = ()) -> SimBackend:
    """A simulation under ``tmp_path/pools`` with ``pools`` created, then ``datasets`` in order."""
    backend = SimBackend(tmp_path / "pools")
    for pool in pools:
        backend.create_pool(pool)
    for name in datasets:
        backend.create(name)
    return backend


def mnt(sim: SimBackend, name: str) -> Path:
    """The mountpoint of ``name``, which must have one."""
    path = sim.mountpoint(name)
    assert path is not None
    return Path(path)


def send_bytes(sim: SimBackend, spec: SendSpec) -> bytes:
    """The whole stream ``spec`` sends, read in 64 KiB chunks as a pipe would deliver it."""
    stream = sim.send(spec)
    out = bytearray()
    while chunk := stream.read(65536):
        out += chunk
    stream.close()
    return bytes(out)


def snapshot_tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything about a tree a user would notice, keyed by path."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                first = inodes.setdefault(st.st_ino, rel)
                out[rel] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_mtime_ns,
                    full.read_bytes(),
                    first if st.st_nlink > 1 else None,
                )
    return out
