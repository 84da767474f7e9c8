"""No stray QEMU: failed boots, dead owners and recycled pids are all handled.

These use real QEMU processes (a paused VM needs no image) and, for the boot timeout, the real
lab image; they do not need the session's running lab.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from protocol.errors import LabError
from tests.lab.conftest import lab_image
from workers.lab.lab import STATE_FILE, Lab, reap_orphans
from workers.lab.qemu import QEMU, VmSpec
from workers.lab.recipe import Image
from workers.lab.vm import Vm

pytestmark = pytest.mark.lab


def qemus_under(directory: Path) -> list[int]:
    """Pids of live QEMU processes whose command line mentions ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            args
            and args[0].endswith(QEMU.encode())
            and any(str(directory).encode() in a for a in args)
        ):
            found.append(int(entry.name))
    return found


def _paused_qemu(directory: Path) -> tuple[subprocess.Popen[bytes], Vm]:
    """A real, paused QEMU (no disks, no CPU run) recorded as a lab VM in ``directory``."""
    directory.mkdir(parents=True)
    spec = VmSpec(
        name="zlab1",
        kernel=directory / "k",
        initrd=directory / "i",
        root_overlay=directory / "root.qcow2",
        pool_disk=directory / "pool.qcow2",
        ssh_port=1,
        serial_log=directory / "serial.log",
        pidfile=directory / "qemu.pid",
    )
    argv = [QEMU, "-S", "-nodefaults", "-display", "none", "-pidfile", str(spec.pidfile)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, Vm(spec=spec, key=directory / "id", directory=directory, pid=proc.pid)


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_labs_of_dead_owners_are_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    orphan_proc, orphan_vm = _paused_qemu(tmp_path / "orphan" / "zlab1")
    owned_proc, owned_vm = _paused_qemu(tmp_path / "owned" / "zlab1")
    try:
        Lab(tmp_path / "orphan", [orphan_vm], "tank", [""], _dead_pid()).save()
        Lab(tmp_path / "owned", [owned_vm], "tank", [""], os.getpid()).save()
        assert reap_orphans(tmp_path) == 1
        orphan_proc.wait(timeout=30)  # it was killed by pid, as another process would
        assert owned_proc.poll() is None
        assert not (tmp_path / "orphan").exists()
        # A lab loaded from its record (as `zfleet lab down` does) stops its VM.
        loaded = Lab.load(tmp_path / "owned")
        assert loaded is not None
        loaded.down()
        owned_proc.wait(timeout=30)
        assert not (tmp_path / "owned" / STATE_FILE).exists()
    finally:
        for proc in (orphan_proc, owned_proc):
            proc.kill()
            proc.wait()


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    (tmp_path / "zlab1").mkdir()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        spec = VmSpec(
            name="zlab1",
            kernel=tmp_path / "k",
            initrd=tmp_path / "i",
            root_overlay=tmp_path / "r",
            pool_disk=tmp_path / "p",
            ssh_port=1,
            serial_log=tmp_path / "s",
            pidfile=tmp_path / "zlab1" / "qemu.pid",
        )
        Vm(spec=spec, key=tmp_path / "id", directory=tmp_path / "zlab1", pid=bystander.pid).stop(
            grace=0.5
        )
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_vm_that_cannot_start_leaves_nothing_running(tmp_path: Path) -> None:
    images = tmp_path / "image"
    images.mkdir()
    (images / "vmlinuz").write_bytes(os.urandom(4096))
    (images / "initrd.img").write_bytes(os.urandom(4096))
    (images / "id_ed25519").write_text("")
    with (images / "root.raw").open("wb") as disk:
        disk.truncate(1 << 20)
    broken = Image(images, "broken", "none", "none", 0)
    with pytest.raises(LabError, match="qemu failed to start"):
        Lab.up(broken, 2, tmp_path / "lab")
    assert qemus_under(tmp_path) == []
    assert not (tmp_path / "lab" / STATE_FILE).exists()


@pytest.mark.timeout(300)
def test_a_boot_that_times_out_is_torn_down(tmp_path: Path) -> None:
    image = lab_image()
    with pytest.raises(LabError, match="no ssh/zfs answer"):
        Lab.up(image, 1, tmp_path / "lab", timeout=3)
    assert qemus_under(tmp_path) == []
    assert not (tmp_path / "lab" / STATE_FILE).exists()
