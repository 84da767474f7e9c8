"""One lab VM: start QEMU, wait until ssh and ZFS answer, stop it, and reap it.

A VM is a child process of whoever started it; its pid is also written to a pidfile by QEMU, so
another process (``zfleet lab down``, or the next test session) can stop it. Before signalling a
pid read from disk, the process's command line is checked to be this VM's QEMU, so a recycled pid
is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.errors import LabError
from workers.lab import ssh
from workers.lab.qemu import (
    QEMU,
    VmSpec,
    overlay_argv,
    pool_disk_argv,
    qemu_argv,
    run_qemu_img,
)
from workers.lab.recipe import Image

# seconds; boots take ~30 s alone, longer when VMs share 2 cores (ZFLEET_LAB_READY_TIMEOUT for
# a machine loaded with other work)
READY_TIMEOUT: Final = 300.0
STOP_GRACE: Final = 15.0  # seconds a VM gets to power off before it is killed
_PORT_ATTEMPTS: Final = 3


def ready_timeout() -> float:
    """How long a VM may take to answer: ``$ZFLEET_LAB_READY_TIMEOUT`` seconds, else 300."""
    raw = os.environ.get("ZFLEET_LAB_READY_TIMEOUT", "").strip()
    if not raw:
        return READY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < 86_400:
        raise LabError(
            f"ZFLEET_LAB_READY_TIMEOUT must be a number of seconds (0 < s < 86400), not {raw!r}"
        )
    return value


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_our_qemu(pid: int, pidfile: Path) -> bool:
    """Whether ``pid`` is a live QEMU started with ``pidfile`` (so it is this VM's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(cmdline) and cmdline[0].endswith(QEMU.encode()) and (str(pidfile).encode() in cmdline)
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@dataclass
class Vm:
    """A running (or stopped) lab VM and where its files are."""

    spec: VmSpec
    key: Path
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    @property
    def control_path(self) -> Path:
        return self.directory / "ssh.sock"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def exec_prefix(self) -> list[str]:
        """The argv prefix that runs a command as root on this VM."""
        return ssh.exec_prefix(self.key, self.spec.ssh_port, self.control_path)

    def alive(self) -> bool:
        """Whether this VM's QEMU is still running."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and is_our_qemu(self.pid, self.spec.pidfile)

    def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until ssh answers and ``zfs version`` works; return its first line.

        Raises :class:`LabError` (with the end of the serial log) if QEMU dies or time runs out.
        """
        deadline = time.monotonic() + (ready_timeout() if timeout is None else timeout)
        probe = [*self.exec_prefix[:-1], "-o", "ConnectTimeout=5", self.exec_prefix[-1]]
        while time.monotonic() < deadline:
            if not self.alive():
                raise LabError(
                    f"{self.spec.name}: qemu exited during boot\n{_tail(self.qemu_log)}\n"
                    f"serial console:\n{_tail(self.spec.serial_log)}"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                done = subprocess.run(
                    [*probe, "zfs version"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                if done.returncode == 0 and done.stdout.startswith("zfs-"):
                    ssh.start_master(self.exec_prefix)
                    return done.stdout.splitlines()[0]
            time.sleep(2)
        raise LabError(
            f"{self.spec.name}: no ssh/zfs answer on 127.0.0.1:{self.spec.ssh_port} within "
            f"{timeout:.0f} s\nserial console:\n{_tail(self.spec.serial_log)}"
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Power the VM off over ssh, kill it if it lingers, and reap it. Never raises."""
        asked = False
        if self.alive():
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                done = subprocess.run(
                    [*self.exec_prefix, "systemctl poweroff --no-block"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                asked = done.returncode == 0
        ssh.close_master(self.exec_prefix)
        # A guest that never heard the poweroff gets no grace: it is killed at once.
        deadline = time.monotonic() + (grace if asked else 0)
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            self._signal(sig)
            end = time.monotonic() + 5
            while self.alive() and time.monotonic() < end:
                time.sleep(0.2)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
        self.spec.pidfile.unlink(missing_ok=True)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.process is not None:
                self.process.send_signal(sig)
            elif self.pid is not None and is_our_qemu(self.pid, self.spec.pidfile):
                os.kill(self.pid, sig)


def start_vm(
    image: Image,
    name: str,
    directory: Path,
    *,
    memory_mb: int = 1024,
    cpus: int = 2,
    pool_gb: int = 4,
) -> Vm:
    """Create the VM's disks in ``directory`` and start its QEMU; does not wait for the boot.

    The root disk is a fresh overlay over the image and the pool disk is fresh and empty, so
    every start is a clean host.
    """
    directory.mkdir(parents=True, exist_ok=True)
    overlay, pool_disk = directory / "root.qcow2", directory / "pool.qcow2"
    for disk in (overlay, pool_disk):
        disk.unlink(missing_ok=True)
    run_qemu_img(overlay_argv(image.root_disk, overlay))
    run_qemu_img(pool_disk_argv(pool_disk, pool_gb))
    for _ in range(_PORT_ATTEMPTS):
        spec = VmSpec(
            name=name,
            kernel=image.kernel_file,
            initrd=image.initrd,
            root_overlay=overlay,
            pool_disk=pool_disk,
            ssh_port=free_port(),
            serial_log=directory / "serial.log",
            pidfile=directory / "qemu.pid",
            memory_mb=memory_mb,
            cpus=cpus,
        )
        vm = Vm(spec=spec, key=image.private_key, directory=directory)
        with vm.qemu_log.open("wb") as log:
            try:
                vm.process = subprocess.Popen(
                    qemu_argv(spec),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise LabError(f"{QEMU} is not installed (scripts/system-deps lab)") from exc
        vm.pid = vm.process.pid
        # Another process may take the port between free_port() and QEMU's bind; QEMU then
        # exits at once, and a new port is tried.
        with contextlib.suppress(subprocess.TimeoutExpired):
            vm.process.wait(timeout=1.5)
        if vm.alive():
            return vm
        if "forward" not in _tail(vm.qemu_log):
            raise LabError(f"{name}: qemu failed to start\n{_tail(vm.qemu_log)}")
    raise LabError(f"{name}: no free loopback port for ssh after {_PORT_ATTEMPTS} tries")
