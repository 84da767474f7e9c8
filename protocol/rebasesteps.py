"""Step messages for rebasing images on the fleet (the ``rebase`` job kind, workers/rebase/).

    rebase          RebaseArgs         one image made a clone of a base snapshot on its host,
                                       keeping its changes (or, ``keep_content``, its exact tree)
    rebase-replica  RebaseReplicaArgs  a replica of a rebased image set aside under the name the
                                       source's backup got, so the next sync sends the rebased
                                       image as a clone of the base the replica host holds

The base is named by its full snapshot name on the image's host and, when known at planning
time, its guid (0: the snapshot is taken earlier in the same job, as a proposal's base is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from protocol.messages import message
from protocol.steps import StepArgs, register_step

PREFER: Final = ("image", "base")


@message("step.rebase", version=1, strict=True)
@dataclass(frozen=True)
class RebaseArgs(StepArgs):
    KIND: ClassVar[str] = "rebase"
    image: str
    onto: str  # BASE@SNAP on this host
    onto_guid: int = 0
    old_base: str | None = None
    prefer: str | None = None  # who wins a path both sides changed; None: stop
    keep_content: bool = False
    drop_old: bool = False
    before: tuple[str, ...] = ()  # hook commands: stop what uses the image, start it again
    after: tuple[str, ...] = ()
    hook_timeout: float = 300.0

    def __post_init__(self) -> None:
        if "@" not in self.onto:
            raise ValueError(f"the base {self.onto!r} is not a snapshot (BASE@SNAP)")
        if self.prefer is not None and self.prefer not in PREFER:
            raise ValueError(f"prefer is {' or '.join(PREFER)}, not {self.prefer!r}")


@message("step.rebase-replica", version=1, strict=True)
@dataclass(frozen=True)
class RebaseReplicaArgs(StepArgs):
    """``dataset`` (the replica, checked by ``guid``) renamed to ``aside``; with ``drop`` it is
    destroyed instead (the source's backup was dropped too), kept aside if it cannot be."""

    KIND: ClassVar[str] = "rebase-replica"
    dataset: str
    guid: int
    aside: str
    drop: bool = False


for _cls in (RebaseArgs, RebaseReplicaArgs):
    register_step(_cls)
