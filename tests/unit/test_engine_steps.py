"""Worker step functions on the simulated backend: each does its work once, however often run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.errors import DatasetNotFound, MessageError
from protocol.messages import InventoryReport
from workers.steps import StepContext, TransferArgs, run_step
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
    args = json.dumps({"names": ["tank/a@zf1"], "recursive": True})
    assert run_step(ctx, "snapshot", args) == {"taken": 1, "existed": 0}
    first = guid(ctx, "tank/a/b@zf1")
    assert run_step(ctx, "snapshot", args) == {"taken": 0, "existed": 1}
    assert guid(ctx, "tank/a/b@zf1") == first  # not re-taken


def test_hold_and_release_once_and_check_guids(ctx: StepContext) -> None:
    snaps = [["tank/a@s1", guid(ctx, "tank/a@s1")]]
    args = json.dumps({"tag": "zfleet-J", "snapshots": snaps})
    assert run_step(ctx, "hold", args) == {"held": 1}
    assert run_step(ctx, "hold", args) == {"held": 0}
    assert ctx.backend.holds("tank/a@s1") == ["zfleet-J"]
    replaced = json.dumps({"tag": "t", "snapshots": [["tank/a@s1", 12345]]})
    with pytest.raises(DatasetNotFound, match="replaced"):
        run_step(ctx, "hold", replaced)
    assert run_step(ctx, "release", args) == {"released": 1}
    assert run_step(ctx, "release", args) == {"released": 0}
    gone = json.dumps({"tag": "t", "snapshots": [["tank/a@nope", 1]]})
    assert run_step(ctx, "release", gone) == {"released": 0}


def test_prune_skips_held_replaced_and_missing(ctx: StepContext) -> None:
    ctx.backend.hold("other-job", ["tank/a@s2"])
    destroy = [["tank/a@s1", guid(ctx, "tank/a@s1")], ["tank/a@s2", guid(ctx, "tank/a@s2")],
               ["tank/a/b@s1", 999], ["tank/a@gone", 1]]  # fmt: skip
    result = run_step(ctx, "prune", json.dumps({"destroy": destroy}))
    assert result == {"destroyed": 1, "kept": 2}
    assert not ctx.backend.exists("tank/a@s1")
    assert ctx.backend.exists("tank/a@s2") and ctx.backend.exists("tank/a/b@s1")


def test_inventory_reports_every_root_and_skips_absent_ones(ctx: StepContext) -> None:
    saved: list[InventoryReport] = []
    ctx.save_inventory = saved.append
    result = run_step(ctx, "inventory", json.dumps({"roots": ["tank/a", "bk/none"]}))
    names = {o.name for o in saved[0].objects}
    assert {"tank/a", "tank/a/b", "tank/a@s2", "tank/a/b@s1"} <= names
    assert result == {"objects": len(names), "stores": 0}


@pytest.mark.parametrize(
    "args",
    ["not json", "[]", '{"tag": 3, "snapshots": []}', '{"tag": "t", "snapshots": [["x"]]}'],
)
def test_malformed_arguments_are_refused_before_acting(ctx: StepContext, args: str) -> None:
    with pytest.raises(MessageError):
        run_step(ctx, "hold", args)
    assert ctx.backend.holds("tank/a@s1") == []


def test_transfer_arguments_are_checked_and_unknown_kinds_refused(ctx: StepContext) -> None:
    with pytest.raises(MessageError, match="at least one target"):
        TransferArgs.parse(json.dumps({"source": "tank/a", "send": {"snapshot": "tank/a@s2"},
                                       "to_guid": 1, "from_guid": 0, "targets": []}))  # fmt: skip
    one = {"source": "tank/a", "send": {"snapshot": "tank/a@s2"}, "to_guid": 1, "from_guid": 0}
    old = {"host": "beta", "dataset": "bk/a", "force": False, "origin": None}
    # a target from a coordinator that predates mount_targets mounts, as it did then
    (t,) = TransferArgs.parse(json.dumps({**one, "targets": [old]})).targets
    assert t.no_mount is False
    (t,) = TransferArgs.parse(json.dumps({**one, "targets": [{**old, "no_mount": True}]})).targets
    assert t.no_mount is True
    with pytest.raises(MessageError, match="no_mount"):
        TransferArgs.parse(json.dumps({**one, "targets": [{**old, "no_mount": "yes"}]}))
    with pytest.raises(MessageError, match="unknown step kind"):
        run_step(ctx, "format-disk", "{}")
