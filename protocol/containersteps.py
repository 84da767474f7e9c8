"""Step messages for containers whose root and data are datasets (podman today, one adapter).

A container is described by a :class:`ContainerSpec`: its root is a clone of an image snapshot,
its home, shared and log datasets are mounted in by kind, and a checkpoint dataset keeps CRIU
images (and a small manifest per checkpoint). The spec travels whole in every step message, so a
host can (re)create the container from it alone, for instance on the co-worker a send lands on.

    container-prepare     ContainerPrepareArgs     parent datasets created where received ones go
    container-create      ContainerCreateArgs      root cloned from the image, container created
    container-start       ContainerStartArgs       started (a running one is left alone)
    container-stop        ContainerStopArgs        stopped, optionally removed
    container-checkpoint  ContainerCheckpointArgs  CRIU image into the checkpoint dataset, then
                                                   every dataset snapshotted atomically
    container-restore     ContainerRestoreArgs     datasets at the checkpoint, then CRIU restore
                                                   (or a cold start when there is no CRIU image)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from protocol.messages import message, strict
from protocol.steps import StepArgs, register_step

MOUNT_KINDS: Final = ("home", "shared", "log")
# where each kind appears inside the container unless the spec says otherwise
DEFAULT_PATHS: Final = {"home": "/home", "shared": "/shared", "log": "/var/log/zfleet"}


@strict
@dataclass(frozen=True)
class ContainerMount:
    """A dataset mounted into the container at ``path`` (its kind: home, shared or log)."""

    kind: str
    dataset: str
    path: str
    readonly: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MOUNT_KINDS:
            raise ValueError(f"mount kind {self.kind!r} is not one of {', '.join(MOUNT_KINDS)}")
        if not self.path.startswith("/"):
            raise ValueError(f"mount path {self.path!r} is not absolute")


@strict
@dataclass(frozen=True)
class ContainerSpec:
    """Everything a host needs to (re)create the container from its datasets."""

    name: str
    image: str  # the image snapshot the root is a clone of (DATASET@SNAP)
    root: str  # the root clone
    checkpoints: str  # the dataset CRIU images go into
    mounts: tuple[ContainerMount, ...] = ()
    command: tuple[str, ...] = ()
    network: str = "none"  # podman's names: none, host, or a network of the host's


    @property
    def image_dataset(self) -> str:
        return self.image.split("@", 1)[0]

    @property
    def datasets(self) -> tuple[str, ...]:
        """The container's own datasets (the image is shared, not its own): snapshotted,
        rolled back and sent together."""
        return (self.root, self.checkpoints, *(m.dataset for m in self.mounts))


@message("step.container-prepare", version=1, strict=True)
@dataclass(frozen=True)
class ContainerPrepareArgs(StepArgs):
    KIND: ClassVar[str] = "container-prepare"
    datasets: tuple[str, ...]


@message("step.container-create", version=1, strict=True)
@dataclass(frozen=True)
class ContainerCreateArgs(StepArgs):
    KIND: ClassVar[str] = "container-create"
    spec: ContainerSpec
    start: bool = True


@message("step.container-start", version=1, strict=True)
@dataclass(frozen=True)
class ContainerStartArgs(StepArgs):
    KIND: ClassVar[str] = "container-start"
    spec: ContainerSpec


@message("step.container-stop", version=1, strict=True)
@dataclass(frozen=True)
class ContainerStopArgs(StepArgs):
    KIND: ClassVar[str] = "container-stop"
    name: str
    timeout: float = 10.0
    remove: bool = False


@message("step.container-checkpoint", version=1, strict=True)
@dataclass(frozen=True)
class ContainerCheckpointArgs(StepArgs):
    """``snapshot`` is the short name every dataset gets. ``leave_running`` False leaves the
    container stopped (a migration's freeze). ``cold`` skips CRIU; ``cold_fallback`` stops and
    snapshots instead of failing when CRIU cannot work on this host."""

    KIND: ClassVar[str] = "container-checkpoint"
    spec: ContainerSpec
    snapshot: str
    leave_running: bool = True
    cold: bool = False
    cold_fallback: bool = False


@message("step.container-restore", version=1, strict=True)
@dataclass(frozen=True)
class ContainerRestoreArgs(StepArgs):
    """Bring the container back at checkpoint ``snapshot``; ``rollback`` False when the datasets
    are known to be there already (just received)."""

    KIND: ClassVar[str] = "container-restore"
    spec: ContainerSpec
    snapshot: str
    rollback: bool = True


for _cls in (ContainerPrepareArgs, ContainerCreateArgs, ContainerStartArgs, ContainerStopArgs,
             ContainerCheckpointArgs, ContainerRestoreArgs):  # fmt: skip
    register_step(_cls)
