"""Keys on real OpenZFS (lab VM): ephemeral layers and sealed-log periods, on disk.

The proof is the pool's disk itself: after ``zpool sync`` the VM's pool image (a qcow2 file on
this machine, whose data clusters hold the guest's blocks as written) contains a plain control
file's marker, and never the marker written through the ephemeral merged view or into a sealed
period: those bytes are on disk as ciphertext only. With the key unloaded they cannot be read on
the host either, and another key is refused.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from protocol.errors import ZfleetError
from protocol.sealed import KeyPair
from workers import ephemeral, sealedlogs
from workers.lab.lab import LabHost
from workers.zfs.proc import is_remote_shell
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.lab


def sh(host: LabHost, script: str, data: bytes = b"") -> bytes:
    word = shlex.quote(script) if is_remote_shell(host.exec_prefix) else script
    done = subprocess.run([*host.exec_prefix, "sh", "-c", word], input=data,
                          capture_output=True, check=False, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def on_disk(host: LabHost, *markers: bytes) -> list[bool]:
    """Whether each marker is anywhere in the pool's disk image, after a pool sync."""
    sh(host, f"zpool sync {host.pool} && sync")
    image = (host.serial_log.parent / "pool.qcow2").read_bytes()
    return [m in image for m in markers]


def test_ephemeral_new_bytes_are_ciphertext_on_disk(lab_hosts: list[LabHost]) -> None:
    host = lab_hosts[0]
    be = RealBackend(host.exec_prefix)
    tag = secrets.token_hex(4)
    base, plain = f"{host.pool}/kb-{tag}", f"{host.pool}/kp-{tag}"
    control = b"CONTROL-" + os.urandom(12).hex().encode()
    new = b"NEW-" + os.urandom(12).hex().encode()
    name, view = f"e-{tag}", Path(f"/run/zfleet-e-{tag}")
    key = os.urandom(32).hex().encode()
    be.create(base, props={"compression": "off"})
    be.create(plain, props={"compression": "off"})
    try:
        sh(host, f"echo base > {be.mountpoint(base)}/README")
        sh(host, f"cat > {be.mountpoint(plain)}/control", control * 4096)
        be.snapshot([f"{base}@v1"])
        lay = ephemeral.create(be, f"{base}@v1", name, key=key, key_source="file:/lab",
                               mount_at=view, exec_prefix=host.exec_prefix)  # fmt: skip
        assert sh(host, f"cat {view}/README") == b"base\n"
        sh(host, f"cat > {view}/new.bin", new * 4096)
        assert on_disk(host, control, new) == [True, False]
        assert sh(host, f"cat {be.mountpoint(base)}/README") == b"base\n"
        ephemeral.unmount(view, host.exec_prefix)
        be.unmount(lay.upper)
        be.unload_key(lay.upper)
        assert be.get(lay.upper, ["keystatus"])["keystatus"].value == "unavailable"
        with pytest.raises(ZfleetError, match="Incorrect key"):
            be.load_key(lay.upper, key=os.urandom(32).hex().encode())
        be.load_key(lay.upper, key=key)
        be.mount(lay.upper)
        assert sh(host, f"cat {be.mountpoint(lay.upper)}/data/new.bin") == new * 4096
        ephemeral.discard(be, host.pool, name, key=None, mount_at=view, recreate=False,
                          exec_prefix=host.exec_prefix)  # fmt: skip
    finally:
        for ds in (f"{host.pool}/ephemeral/{name}", base, plain):
            if be.exists(ds):
                be.destroy(ds, recursive=True)


def test_sealed_log_period_reads_with_the_archive_key_only(lab_hosts: list[LabHost]) -> None:
    host = lab_hosts[0]
    be = RealBackend(host.exec_prefix)
    root = f"{host.pool}/logs-{secrets.token_hex(4)}/app"
    archive, stranger = KeyPair.generate(), KeyPair.generate()
    line = b"LOG-" + os.urandom(12).hex().encode()
    try:
        first = sealedlogs.init(be, root, archive.public, exec_prefix=host.exec_prefix)
        ds = sealedlogs.period_dataset(root, first)
        sh(host, f"cat > {be.mountpoint(ds)}/app.log", line * 4096)
        sealedlogs.roll(be, root, exec_prefix=host.exec_prefix)
        assert be.get(ds, ["keystatus"])["keystatus"].value == "unavailable"
        assert on_disk(host, line) == [False]
        with pytest.raises(ZfleetError, match="does not open"):
            sealedlogs.open_period(be, root, first, stranger, host.exec_prefix)
        where = sealedlogs.open_period(be, root, first, archive, host.exec_prefix)
        assert sh(host, f"cat {where}/app.log") == line * 4096
    finally:
        top = root.rsplit("/", 1)[0]
        if be.exists(top):
            be.destroy(top, recursive=True)
