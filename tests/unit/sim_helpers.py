"""Set-up and small reads the simulated-backend tests share."""

from __future__ import annotations

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
