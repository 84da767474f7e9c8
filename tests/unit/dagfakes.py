"""Small typed DAG nodes for engine tests: a real step message of the named kind each."""

from __future__ import annotations

from coordinator.engine import StepPlan
from protocol.steps import (
    HoldArgs,
    PruneArgs,
    ReleaseArgs,
    StepArgs,
    TransferArgs,
    TransferTarget,
)
from protocol.zfs import SendSpec


def args_of(kind: str, tag: str = "t") -> StepArgs:
    """A minimal, valid message of step kind ``kind``."""
    if kind == "hold":
        return HoldArgs(tag=tag, snapshots=())
    if kind == "release":
        return ReleaseArgs(tag=tag, snapshots=())
    if kind == "prune":
        return PruneArgs(destroy=())
    if kind == "transfer":
        return TransferArgs(source="tank/a", send=SendSpec("tank/a@s1"), to_guid=1, from_guid=0,
                            targets=(TransferTarget(host="beta", dataset="bk/a"),))  # fmt: skip
    raise ValueError(f"no fake for step kind {kind!r}")


def plan_step(
    step_id: str, kind: str, host: str | None, *, deps: tuple[str, ...] = (),
    always: bool = False, writes: tuple[str, ...] = (),
) -> StepPlan:  # fmt: skip
    return StepPlan(step_id, host, args_of(kind), deps=deps, always=always, writes=writes)
