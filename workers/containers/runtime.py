"""The container runtime contract: one adapter per runtime (podman today; LXC or Incus can follow).

The step handlers (workers/containersteps.py) speak only this interface. A runtime runs a
container whose root file system is a directory zfleet owns (a dataset clone's mountpoint) with
other directories bind-mounted in, and can checkpoint a running container to one file and bring it
back from that file, on this host or another, into a container made from the same spec. Every
failure is a :class:`ContainerError` from the one error tree (protocol/errors.py); a host without
the runtime raises :class:`RuntimeMissing`, and a host where CRIU cannot work raises
:class:`CheckpointUnsupported` with CRIU's own words.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import CheckpointUnsupported, ContainerError, RuntimeMissing

__all__ = [
    "CheckpointImage", "CheckpointUnsupported", "ContainerError", "ContainerInfo",
    "ContainerRuntime", "Mount", "RunSpec", "RuntimeMissing", "State",
]  # fmt: skip


class State(enum.Enum):
    MISSING = "missing"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # exited, or stopped by a checkpoint


@dataclass(frozen=True)
class Mount:
    """A host directory bind-mounted at ``target`` inside the container."""

    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class RunSpec:
    """What a runtime needs to create a container: the root directory, mounts and command."""

    name: str
    rootfs: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    network: str = "none"
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.command:
            raise ContainerError(f"container {self.name!r} needs a command to run")


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: State
    pid: int = 0
    rootfs: str = ""

    @property
    def exists(self) -> bool:
        return self.state is not State.MISSING


@dataclass(frozen=True)
class CheckpointImage:
    """A checkpoint written to ``path`` (``size`` bytes) in ``seconds``."""

    path: Path
    size: int
    seconds: float


class ContainerRuntime(abc.ABC):
    """One container runtime on one host. Methods raise ContainerError (or a branch of it)."""

    name: str = "abstract"

    @abc.abstractmethod
    def check(self) -> None:
        """RuntimeMissing unless the runtime is installed and answers."""

    @abc.abstractmethod
    def checkpoint_support(self) -> str | None:
        """None when checkpoints work here, else why not (CRIU's own message)."""

    @abc.abstractmethod
    def create(self, spec: RunSpec) -> None: ...

    @abc.abstractmethod
    def start(self, name: str) -> None: ...

    @abc.abstractmethod
    def stop(self, name: str, *, timeout: float = 10.0) -> None: ...

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Remove the container (stopping it first); a missing one is fine."""

    @abc.abstractmethod
    def inspect(self, name: str) -> ContainerInfo:
        """The container's state; ``State.MISSING`` when there is none by that name."""

    @abc.abstractmethod
    def checkpoint(self, name: str, path: Path, *, leave_running: bool) -> CheckpointImage:
        """Dump the running container (memory, processes, open files) into ``path``."""

    @abc.abstractmethod
    def restore(self, name: str) -> None:
        """Bring the container back from its own last checkpoint on this host (it was stopped
        by that checkpoint and still exists)."""

    @abc.abstractmethod
    def restore_image(self, spec: RunSpec, path: Path) -> None:
        """Replace any container named ``spec.name`` by one made from ``spec`` and bring it back
        from the image at ``path`` (made here or on another host); the root and the mounts hold
        the files as they were when the image was made."""

    @abc.abstractmethod
    def execute(self, name: str, argv: tuple[str, ...], *, timeout: float = 30.0) -> str:
        """Run ``argv`` inside the running container; its standard output."""

    # -- files on the runtime's host (the checkpoint dataset's manifests) ----------------------
    def read_text(self, path: Path) -> str | None:
        """The file's text, None when it does not exist (on the host the containers run on)."""
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    def write_text(self, path: Path, text: str) -> None:
        path.write_text(text)

    def file_size(self, path: Path) -> int | None:
        """The file's size in bytes, None when it does not exist."""
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    def require_checkpoints(self) -> None:
        """CheckpointUnsupported (with CRIU's reason) unless checkpoints work here."""
        reason = self.checkpoint_support()
        if reason is not None:
            raise CheckpointUnsupported(
                f"{self.name} cannot checkpoint on this host: {reason}", reason=reason
            )
