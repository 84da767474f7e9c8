"""Worker step functions on the simulated backend: each does its work once, however often run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from protocol.errors import DatasetNotFound, MessageError
from protocol.messages import message
from protocol.steps import (
    HoldArgs,
    InventoryArgs,
    PruneArgs,
    ReleaseArgs,
    SnapshotArgs,
    StepArgs,
    TransferArgs,
    args_from_data,
    args_to_data,
)
from protocol.zfs import InventoryReport
from workers.steps import StepContext, run_step
from workers.zfs.sim import SimBackend


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    backend = SimBackend(tmp_path / "h")
    backend.create_pool("tank")
    backend.create("tank/a")
    backend.create("tank/a/b")
    backend.snapshot(["tank/a@s1"], recursive=True)
    backend.snapshot(["tank/a@s2"], recursive=True)
    return StepContext(host="h", backend=backend)


def guid(ctx: StepContext, name: str) -> int:
    return int(ctx.backend.get(name, ["guid"])["guid"].value)


def test_snapshot_step_is_atomic_and_idempotent(ctx: StepContext) -> None:
    args = SnapshotArgs(names=("tank/a@zf1",), recursive=True)
    assert run_step(ctx, args) == {"taken": 1, "existed": 0}
    first = guid(ctx, "tank/a/b@zf1")
    assert run_step(ctx, args) == {"taken": 0, "existed": 1}
    assert guid(ctx, "tank/a/b@zf1") == first  # not re-taken


def test_hold_and_release_once_and_check_guids(ctx: StepContext) -> None:
    snaps = (("tank/a@s1", guid(ctx, "tank/a@s1")),)
    assert run_step(ctx, HoldArgs(tag="zfleet-J", snapshots=snaps)) == {"held": 1}
    assert run_step(ctx, HoldArgs(tag="zfleet-J", snapshots=snaps)) == {"held": 0}
    assert ctx.backend.holds("tank/a@s1") == ["zfleet-J"]
    with pytest.raises(DatasetNotFound, match="replaced"):
        run_step(ctx, HoldArgs(tag="t", snapshots=(("tank/a@s1", 12345),)))
    assert run_step(ctx, ReleaseArgs(tag="zfleet-J", snapshots=snaps)) == {"released": 1}
    assert run_step(ctx, ReleaseArgs(tag="zfleet-J", snapshots=snaps)) == {"released": 0}
    gone = ReleaseArgs(tag="t", snapshots=(("tank/a@nope", 1),))
    assert run_step(ctx, gone) == {"released": 0}


def test_prune_skips_held_replaced_and_missing(ctx: StepContext) -> None:
    ctx.backend.hold("other-job", ["tank/a@s2"])
    destroy = (("tank/a@s1", guid(ctx, "tank/a@s1")), ("tank/a@s2", guid(ctx, "tank/a@s2")),
               ("tank/a/b@s1", 999), ("tank/a@gone", 1))  # fmt: skip
    result = run_step(ctx, PruneArgs(destroy=destroy))
    assert result == {"destroyed": 1, "kept": 2}
    assert not ctx.backend.exists("tank/a@s1")
    assert ctx.backend.exists("tank/a@s2") and ctx.backend.exists("tank/a/b@s1")


def test_inventory_reports_every_root_and_skips_absent_ones(ctx: StepContext) -> None:
    saved: list[InventoryReport] = []
    ctx.save_inventory = saved.append
    result = run_step(ctx, InventoryArgs(roots=("tank/a", "bk/none")))
    names = {o.name for o in saved[0].objects}
    assert {"tank/a", "tank/a/b", "tank/a@s2", "tank/a/b@s1"} <= names
    assert result == {"objects": len(names), "stores": 0}


HOLD = {"kind": "step.hold", "v": 1}


@pytest.mark.parametrize(
    "data",
    [{}, {"kind": "step.hold"}, {**HOLD, "tag": 3, "snapshots": []},
     {**HOLD, "tag": "t", "snapshots": [["x"]]}, {**HOLD, "tag": "t"},
     {**HOLD, "tag": "t", "snapshots": [], "recursive": True},  # an option holds do not have
     {"kind": "step.call", "v": 2, "job_id": "j", "step_id": "s", "attempt": 1, "host": "h",
      "args": ""}],  # a message, but not a step's arguments
)  # fmt: skip
def test_malformed_arguments_are_refused_before_acting(
    ctx: StepContext, data: dict[str, object]
) -> None:
    with pytest.raises(MessageError):
        run_step(ctx, args_from_data(data))
    assert ctx.backend.holds("tank/a@s1") == []


def _transfer(**send: object) -> dict[str, object]:
    return {"kind": "step.transfer", "v": 1, "source": "tank/a", "to_guid": 1, "from_guid": 0,
            "send": {"snapshot": "tank/a@s2", **send},
            "targets": [{"host": "beta", "dataset": "bk/a"}]}  # fmt: skip


def test_every_send_flag_arrives_and_an_unknown_one_is_refused() -> None:
    flags = {"raw": True, "props": True, "compressed": True, "large_blocks": True,
             "embedded": True, "intermediates": True, "from_snap": "tank/a@s1"}  # fmt: skip
    args = args_from_data(_transfer(**flags))
    assert isinstance(args, TransferArgs)
    assert args.send.raw and args.send.props and args.send.compressed and args.send.large_blocks
    assert args.send.embedded and args.send.intermediates and args.send.from_snap == "tank/a@s1"
    assert args_from_data(args_to_data(args)) == args  # nothing lost on the round trip
    # a flag this side does not know (a newer planner's) is an error, never a plain send
    with pytest.raises(MessageError, match="redact"):
        args_from_data(_transfer(redact=True))
    with pytest.raises(MessageError, match="no_mount"):
        args_from_data({**_transfer(), "targets": [{"host": "b", "dataset": "d",
                                                    "no_mount": "yes"}]})  # fmt: skip
    with pytest.raises(MessageError, match="at least one target"):
        args_from_data({**_transfer(), "targets": []})


@message("step.test-format-disk", version=1, strict=True)
@dataclass(frozen=True)
class FormatDisk(StepArgs):
    KIND: ClassVar[str] = "format-disk"
    disk: str


def test_a_step_kind_without_a_handler_here_is_refused(ctx: StepContext) -> None:
    with pytest.raises(MessageError, match="cannot run 'format-disk'"):
        run_step(ctx, FormatDisk(disk="sda"))
