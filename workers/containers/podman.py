"""Podman as zfleet's container runtime: ``--rootfs`` on a dataset clone, CRIU for checkpoints.

Each host's containers live in zfleet's own podman store (``--root`` under the host's state
directory; run and tmp directories under /run, short because conmon's socket paths must stay
under 108 bytes), so the simulated hosts of one machine never see each other's containers and a
user's own podman containers are never touched. runc is the OCI runtime (CRIU works through it),
``cgroupfs`` the cgroup manager (no systemd needed), ``vfs`` the storage driver (``--rootfs``
containers use no image layers, and vfs works on any file system).

Podman's default limits (1,048,576 open files, NPROC likewise) exceed what many sandboxes and
CI runners allow, and runc then fails with "error setting rlimit type 7". The runtime writes a
``containers.conf`` that sets the container limits to this process's own, which are always
allowed.

Checkpoints are ``podman container checkpoint --export`` (one tar with the CRIU image, podman's
config and the container's spec). Whether CRIU works is asked once, with ``criu check``: when it
fails, its message is the reason every checkpoint refusal gives.

An image is not brought back with ``podman container restore --import``: podman 4.3 (Debian
bookworm's) pulls the image the container was made from before it recreates the container
(pkg/checkpoint/checkpoint_restore.go, ``Pull(ctx, ctrConfig.RootfsImageName, ...)``), and a
``--rootfs`` container has none: the pull of an empty name fails with "repository name must have
at least one component". So the container is made again from its spec (the same root and mounts,
which ZFS brought over), ``podman init`` writes its OCI bundle (runc creates it, the command never
runs), ``podman stop`` leaves it exited, the image's files are unpacked into the bundle, and a
plain ``podman container restore NAME`` finds the checkpoint there as if it had been taken on
this host.

On a host reached through an exec prefix (``ssh root@host``, as the real ZFS backend is) every
command goes through the prefix, shell-quoted; podman's own default limits are kept there (a
normal host allows them) and files are read and written with ``cat``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from protocol.errors import ContainerError, ContainerNotFound, RuntimeMissing
from workers.containers.runtime import (
    CheckpointImage,
    ContainerInfo,
    ContainerRuntime,
    RunSpec,
    State,
)
from workers.zfs.proc import is_remote_shell

log = structlog.get_logger(__name__)

INSTALL_HINT: Final = "install podman (Debian: apt-get install podman runc criu)"
_STATES: Final = {
    "created": State.CREATED, "configured": State.CREATED, "initialized": State.CREATED,
    "running": State.RUNNING, "paused": State.PAUSED, "exited": State.STOPPED,
    "stopped": State.STOPPED, "stopping": State.STOPPED,
}  # fmt: skip
NPROC_CAP: Final = 32768
NOT_FOUND: Final = ("no such container", "no container with name or id")


def criu_reason(binary: str = "criu", exec_prefix: Sequence[str] = ()) -> str | None:
    """None when ``criu check`` passes, else its error lines (or why it could not run)."""
    if exec_prefix:
        argv = [*exec_prefix, "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", binary, "check"]
    else:
        path = shutil.which(binary) or (f"/usr/sbin/{binary}"
                                        if Path(f"/usr/sbin/{binary}").exists() else None)
        if path is None:
            return f"{binary} is not installed"
        argv = [path, "check"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"criu check did not run: {exc}"
    if done.returncode == 0:
        return None
    if done.returncode == 127:
        return f"{binary} is not installed"
    text = (done.stderr + done.stdout).strip()
    errors = [line.strip() for line in text.splitlines() if "Error" in line] or [text]
    return "; ".join(errors) or f"criu check exited with {done.returncode}"


class PodmanRuntime(ContainerRuntime):
    """Podman on this host, with its store under ``state_dir``."""

    name = "podman"

    def __init__(
        self, state_dir: Path, *, binary: str = "podman", oci_runtime: str = "runc",
        criu: str = "criu", timeout: float = 120.0, exec_prefix: Sequence[str] = (),
    ) -> None:  # fmt: skip
        self.exec_prefix = tuple(exec_prefix)
        self.state_dir = Path(state_dir)
        self.binary = binary
        self.oci_runtime = oci_runtime
        self.criu = criu
        self.timeout = timeout
        tag = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        self.run_dir = Path("/run/zfleet-podman") / tag
        self._criu_reason: tuple[str | None] | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def _global(self) -> list[str]:
        return [
            "--root", str(self.state_dir / "storage"), "--runroot", str(self.run_dir / "run"),
            "--tmpdir", str(self.run_dir / "tmp"), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", self.oci_runtime,
        ]  # fmt: skip

    def _conf(self) -> Path:
        """A containers.conf whose container limits are this process's own (see the module)."""
        path = self.state_dir / "containers.conf"
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)

        def limit(pair: tuple[int, int], cap: int) -> str:
            soft, hard = (min(v, cap) if v >= 0 else cap for v in pair)
            return f"{min(soft, hard)}:{hard}"

        # podman lowers its own NPROC to 32,768 before it starts conmon: no more than that
        text = ("[containers]\n"
                f'default_ulimits = ["nofile={limit(nofile, 1 << 20)}", '
                f'"nproc={limit(nproc, NPROC_CAP)}"]\n')  # fmt: skip
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return path

    def _missing(self) -> RuntimeMissing:
        return RuntimeMissing(f"{self.binary} is not installed on this host: {INSTALL_HINT}")

    def _path(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise self._missing()
        return found

    def _remote(self, argv: Sequence[str], *, stdin: str | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``argv`` run through the exec prefix (each argument shell-quoted for ssh)."""
        quote = is_remote_shell(self.exec_prefix)
        line = [*self.exec_prefix, *(shlex.quote(a) if quote else a for a in argv)]
        return subprocess.run(line, capture_output=True, text=True, input=stdin,
                              timeout=timeout or self.timeout, check=False)  # fmt: skip

    def _run(
        self, args: Sequence[str], *, timeout: float | None = None, check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        try:
            if self.exec_prefix:
                done = self._remote(["env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", self.binary,
                                     *self._global(), *args], timeout=timeout)  # fmt: skip
                if done.returncode == 127:
                    raise self._missing()
            else:
                argv = [self._path(), *self._global(), *args]
                env = {**os.environ, "CONTAINERS_CONF": str(self._conf())}
                done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                      timeout=timeout or self.timeout, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"podman {args[0]} did not finish in {exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise RuntimeMissing(f"{self.binary} cannot run: {exc}") from exc
        if check and done.returncode != 0:
            raise self._error(args, done)
        return done

    # -- files on the containers' host ------------------------------------------------------
    def _host(self, argv: Sequence[str]) -> None:
        """``argv`` run on the containers' host (through the prefix, or here)."""
        try:
            done = (self._remote(argv) if self.exec_prefix else
                    subprocess.run(list(argv), capture_output=True, text=True,
                                   timeout=self.timeout, check=False))  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{argv[0]} did not finish in {exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise ContainerError(f"{argv[0]} cannot run: {exc}") from exc
        if done.returncode != 0:
            raise ContainerError(f"{' '.join(argv)}: {(done.stderr or done.stdout).strip()}")

    def read_text(self, path: Path) -> str | None:
        if not self.exec_prefix:
            return super().read_text(path)
        done = self._remote(["sh", "-c", 'test -e "$1" || exit 3; cat "$1"', "-", str(path)])
        if done.returncode == 3:
            return None
        if done.returncode != 0:
            raise ContainerError(f"cannot read {path}: {done.stderr.strip()}")
        return done.stdout

    def write_text(self, path: Path, text: str) -> None:
        if not self.exec_prefix:
            return super().write_text(path, text)
        done = self._remote(["sh", "-c", 'cat > "$1"', "-", str(path)], stdin=text)
        if done.returncode != 0:
            raise ContainerError(f"cannot write {path}: {done.stderr.strip()}")
        return None

    def file_size(self, path: Path) -> int | None:
        if not self.exec_prefix:
            return super().file_size(path)
        done = self._remote(["sh", "-c", 'test -e "$1" || exit 3; stat -c %s "$1"', "-",
                             str(path)])  # fmt: skip
        if done.returncode == 3:
            return None
        try:
            return int(done.stdout.strip())
        except ValueError as exc:
            raise ContainerError(f"cannot stat {path}: {done.stderr.strip()}") from exc

    def _error(self, args: Sequence[str], done: subprocess.CompletedProcess[str]) -> ContainerError:
        text = (done.stderr or done.stdout).strip()
        last = [ln for ln in text.splitlines() if ln.strip()]
        line = last[-1] if last else f"exit code {done.returncode}"
        line = line.removeprefix("Error: ")
        cls = ContainerNotFound if any(n in text.lower() for n in NOT_FOUND) else ContainerError
        return cls(f"podman {' '.join(args[:2])}: {line}", stderr=text)

    # -- the contract -----------------------------------------------------------------------
    def check(self) -> None:
        self._run(["version", "--format", "{{.Client.Version}}"], timeout=60)

    def checkpoint_support(self) -> str | None:
        if self._criu_reason is None:
            self._criu_reason = (criu_reason(self.criu, self.exec_prefix),)
        return self._criu_reason[0]

    def create(self, spec: RunSpec) -> None:
        args = ["create", "--name", spec.name, "--hostname", spec.name,
                "--network", spec.network]  # fmt: skip
        for key, value in spec.labels:
            args += ["--label", f"{key}={value}"]
        for m in spec.mounts:
            args += ["--volume", f"{m.source}:{m.target}:{'ro' if m.readonly else 'rw'}"]
        # --rootfs is a flag: the first argument after the options is the root directory
        args += ["--rootfs", spec.rootfs, *spec.command]
        self._run(args)
        log.info("container.created", container=spec.name, rootfs=spec.rootfs)

    def start(self, name: str) -> None:
        self._run(["start", name])

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        self._run(["stop", "--time", str(max(0, round(timeout))), name],
                  timeout=timeout + self.timeout)  # fmt: skip

    def remove(self, name: str) -> None:
        self._run(["rm", "--force", "--ignore", name])

    def inspect(self, name: str) -> ContainerInfo:
        done = self._run(["inspect", "--type", "container", name], check=False)
        if done.returncode != 0:
            err = self._error(["inspect", name], done)
            if isinstance(err, ContainerNotFound):
                return ContainerInfo(name=name, state=State.MISSING)
            raise err
        try:
            data: Any = json.loads(done.stdout)[0]
        except (ValueError, IndexError, KeyError) as exc:
            raise ContainerError(f"podman inspect {name}: unreadable output") from exc
        status = str(data.get("State", {}).get("Status", "")).lower()
        return ContainerInfo(name=name, state=_STATES.get(status, State.STOPPED),
                             pid=int(data.get("State", {}).get("Pid") or 0),
                             rootfs=str(data.get("Rootfs") or ""))  # fmt: skip

    def checkpoint(self, name: str, path: Path, *, leave_running: bool) -> CheckpointImage:
        self.require_checkpoints()
        started = time.monotonic()
        args = ["container", "checkpoint", "--export", str(path), "--tcp-established"]
        if leave_running:
            args.append("--leave-running")
        self._run([*args, name])
        return CheckpointImage(path=path, size=self.file_size(path) or 0,
                               seconds=time.monotonic() - started)  # fmt: skip

    def restore(self, name: str) -> None:
        self.require_checkpoints()
        self._run(["container", "restore", "--tcp-established", name])

    def restore_image(self, spec: RunSpec, path: Path) -> None:
        """See the module: a container made from ``spec``, the image unpacked into its bundle."""
        self.require_checkpoints()
        self.remove(spec.name)
        self.create(spec)
        self._run(["init", spec.name])
        self._run(["stop", "--time", "0", spec.name])
        bundle = self._run(["inspect", "--type", "container", "--format", "{{.StaticDir}}",
                            spec.name]).stdout.strip()  # fmt: skip
        if not bundle.startswith("/"):
            raise ContainerError(f"podman inspect {spec.name}: no bundle directory ({bundle!r})")
        self._host(["tar", "-xf", str(path), "-C", bundle])  # tar finds the compression itself
        self._run(["container", "restore", "--tcp-established", spec.name])
        log.info("container.restored_image", container=spec.name, image=str(path))

    def execute(self, name: str, argv: tuple[str, ...], *, timeout: float = 30.0) -> str:
        return self._run(["exec", name, *argv], timeout=timeout).stdout
