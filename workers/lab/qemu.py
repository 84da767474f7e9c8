"""QEMU command lines and disks for one lab VM (pure argv building plus ``qemu-img``).

Each VM boots the cached image's kernel and initrd directly (no bootloader) with a qcow2 overlay
over the read-only base root disk, so the base stays clean, and a second virtio disk of its own
for the ZFS pool. TCG, not KVM: a KVM guest hangs at boot on the machines this was built on.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.errors import LabError

QEMU: Final = "qemu-system-x86_64"
QEMU_IMG: Final = "qemu-img"
# Inside the guest: the overlay is the first virtio disk, the pool disk the second.
ROOT_DEVICE: Final = "/dev/vda"
POOL_DEVICE: Final = "/dev/vdb"


@dataclass(frozen=True)
class VmSpec:
    """Everything ``qemu_argv`` needs to start one VM."""

    name: str
    kernel: Path
    initrd: Path
    root_overlay: Path
    pool_disk: Path
    ssh_port: int
    serial_log: Path
    pidfile: Path
    memory_mb: int = 1024
    cpus: int = 2


def kernel_cmdline(name: str) -> str:
    """The guest kernel's command line: root on the overlay, console on serial, its hostname."""
    return f"root={ROOT_DEVICE} rw console=ttyS0 systemd.hostname={name} mitigations=off"


def qemu_argv(spec: VmSpec) -> list[str]:
    """The ``qemu-system-x86_64`` argv for ``spec``; ssh is forwarded on 127.0.0.1 only."""
    return [
        QEMU,
        "-name", spec.name,
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb),
        # No default devices, display or monitor: the serial console goes to a file.
        "-nodefaults",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{spec.serial_log}",
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", kernel_cmdline(spec.name),
        "-drive", f"file={spec.root_overlay},if=virtio,format=qcow2",
        "-drive", f"file={spec.pool_disk},if=virtio,format=qcow2",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        # sshd and ZFS want entropy early; an emulated guest has little of its own.
        "-device", "virtio-rng-pci",
        "-pidfile", str(spec.pidfile),
    ]  # fmt: skip


def overlay_argv(base: Path, overlay: Path) -> list[str]:
    """``qemu-img`` argv for a qcow2 overlay whose (raw) backing file is the base root disk."""
    return [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(overlay)]


def pool_disk_argv(disk: Path, size_gb: int) -> list[str]:
    """``qemu-img`` argv for an empty, sparse qcow2 disk that will hold the VM's pool."""
    return [QEMU_IMG, "create", "-q", "-f", "qcow2", str(disk), f"{size_gb}G"]


def run_qemu_img(argv: list[str]) -> None:
    """Run a ``qemu-img`` command; a failure becomes a :class:`LabError` with its message."""
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise LabError(f"{QEMU_IMG} is not installed (scripts/system-deps lab)") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(f"{' '.join(argv)} failed: {exc.stderr.strip()}") from exc
