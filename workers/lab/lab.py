"""A lab of N VMs: bring them up together, describe them, tear them down, also from elsewhere.

``Lab.up`` starts the VMs, waits for all of them, creates each host's pool on its own disk and
writes ``lab.json`` in the lab directory; ``Lab.load`` reads it back in another process
(``zfleet lab status``/``down``). ``reap_orphans`` stops labs whose owning process died without
tearing down (a killed test session), so no QEMU outlives its purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from protocol.errors import LabError
from workers.lab import ssh
from workers.lab.qemu import POOL_DEVICE, VmSpec
from workers.lab.recipe import Image
from workers.lab.vm import Vm, ready_timeout, start_vm

DEFAULT_POOL: Final = "tank"
STATE_FILE: Final = "lab.json"
MAX_HOSTS: Final = 8


def host_names(count: int) -> list[str]:
    """The hostnames of a lab of ``count`` VMs: zlab1, zlab2, ..."""
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"a lab has 1 to {MAX_HOSTS} hosts, not {count}")
    return [f"zlab{i}" for i in range(1, count + 1)]


def pool_command(pool: str) -> str:
    """Shell line that creates ``pool`` on the VM's pool disk unless it already exists."""
    return f"zpool list -H -o name {pool} >/dev/null 2>&1 || zpool create -f {pool} {POOL_DEVICE}"


@dataclass(frozen=True)
class LabHost:
    """One real-ZFS host of a lab, as tests and people use it."""

    name: str
    ssh_port: int
    exec_prefix: tuple[str, ...]
    pool: str
    zfs_version: str
    serial_log: Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lab:
    """N lab VMs sharing a directory; use :meth:`up` or :meth:`load`, end with :meth:`down`."""

    def __init__(
        self, directory: Path, vms: Sequence[Vm], pool: str, versions: Sequence[str], owner_pid: int
    ) -> None:
        self.directory = directory
        self.vms = list(vms)
        self.pool = pool
        self.versions = list(versions)
        self.owner_pid = owner_pid

    @property
    def hosts(self) -> list[LabHost]:
        """The hosts, in name order."""
        return [
            LabHost(
                name=vm.spec.name,
                ssh_port=vm.spec.ssh_port,
                exec_prefix=tuple(vm.exec_prefix),
                pool=self.pool,
                zfs_version=version,
                serial_log=vm.spec.serial_log,
            )
            for vm, version in zip(self.vms, self.versions, strict=True)
        ]

    @classmethod
    def up(
        cls,
        image: Image,
        count: int,
        directory: Path,
        *,
        pool: str = DEFAULT_POOL,
        memory_mb: int = 1024,
        cpus: int = 2,
        pool_gb: int = 4,
        timeout: float | None = None,
    ) -> Lab:
        """Start ``count`` VMs, wait until each answers with ZFS, create their pools.

        On any failure every VM already started is stopped before the error propagates.
        """
        names = host_names(count)
        wait = ready_timeout() if timeout is None else timeout  # a bad setting fails before a boot
        if (directory / STATE_FILE).exists():
            raise LabError(f"a lab is already recorded in {directory}; take it down first")
        directory.mkdir(parents=True, exist_ok=True)
        vms: list[Vm] = []
        try:
            for name in names:
                vms.append(
                    start_vm(
                        image, name, directory / name, memory_mb=memory_mb, cpus=cpus,
                        pool_gb=pool_gb,
                    )
                )  # fmt: skip
            lab = cls(directory, vms, pool, [""] * count, os.getpid())
            lab.save()  # recorded before the wait, so a killed caller's VMs can be found
            with ThreadPoolExecutor(max_workers=count) as pool_exec:
                versions = list(pool_exec.map(lambda vm: vm.wait_ready(wait), vms))
            for vm in vms:
                ssh.run(vm.exec_prefix, pool_command(pool), timeout=120)
        except BaseException:
            _stop_all(vms)
            (directory / STATE_FILE).unlink(missing_ok=True)
            raise
        lab.versions = versions
        lab.save()
        return lab

    def save(self) -> None:
        """Record the lab in ``lab.json`` (written whole, then renamed into place)."""
        state = {
            "owner_pid": self.owner_pid,
            "pool": self.pool,
            "hosts": [
                {
                    "name": vm.spec.name,
                    "ssh_port": vm.spec.ssh_port,
                    "pid": vm.pid,
                    "key": str(vm.key),
                    "directory": str(vm.directory),
                    "zfs_version": version,
                    "spec": {k: str(v) for k, v in vm.spec.__dict__.items()},
                }
                for vm, version in zip(self.vms, self.versions, strict=True)
            ],
        }
        tmp = self.directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> Lab | None:
        """The lab recorded in ``directory``, or None if there is none."""
        try:
            state: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"unreadable lab record {directory / STATE_FILE}: {exc}") from exc
        vms = [_vm_from_record(host) for host in state["hosts"]]
        versions = [str(h.get("zfs_version", "")) for h in state["hosts"]]
        return cls(directory, vms, str(state["pool"]), versions, int(state["owner_pid"]))

    def down(self, *, keep_logs: bool = True) -> None:
        """Stop every VM (poweroff, then kill), reap them, and delete their disks.

        Safe to call twice and from atexit; serial logs stay for post-mortems unless
        ``keep_logs`` is false.
        """
        _stop_all(self.vms)
        (self.directory / STATE_FILE).unlink(missing_ok=True)
        for vm in self.vms:
            for disk in ("root.qcow2", "pool.qcow2"):
                (vm.directory / disk).unlink(missing_ok=True)
            if not keep_logs:
                shutil.rmtree(vm.directory, ignore_errors=True)

    def running(self) -> list[bool]:
        """For each VM, whether its QEMU still runs."""
        return [vm.alive() for vm in self.vms]


def _vm_from_record(host: dict[str, Any]) -> Vm:
    raw = host["spec"]
    spec = VmSpec(
        name=raw["name"],
        kernel=Path(raw["kernel"]),
        initrd=Path(raw["initrd"]),
        root_overlay=Path(raw["root_overlay"]),
        pool_disk=Path(raw["pool_disk"]),
        ssh_port=int(raw["ssh_port"]),
        serial_log=Path(raw["serial_log"]),
        pidfile=Path(raw["pidfile"]),
        memory_mb=int(raw["memory_mb"]),
        cpus=int(raw["cpus"]),
    )
    pid = host.get("pid")
    return Vm(
        spec=spec,
        key=Path(host["key"]),
        directory=Path(host["directory"]),
        pid=int(pid) if pid is not None else None,
    )


def _stop_all(vms: Sequence[Vm]) -> None:
    if not vms:
        return
    with ThreadPoolExecutor(max_workers=len(vms)) as pool_exec:
        list(pool_exec.map(lambda vm: vm.stop(), vms))


def iter_labs(parent: Path) -> Iterator[Lab]:
    """The labs recorded in the subdirectories of ``parent``."""
    if not parent.is_dir():
        return
    for child in sorted(parent.iterdir()):
        with contextlib.suppress(LabError):
            if child.is_dir() and (lab := Lab.load(child)) is not None:
                yield lab


def reap_orphans(parent: Path) -> int:
    """Tear down labs under ``parent`` whose owning process has died; return how many."""
    reaped = 0
    for lab in iter_labs(parent):
        if not _pid_alive(lab.owner_pid):
            lab.down(keep_logs=False)
            shutil.rmtree(lab.directory, ignore_errors=True)
            reaped += 1
    return reaped
