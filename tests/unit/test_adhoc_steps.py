"""The verbs' worker steps on the simulated backend: diff inline or in a record, clone and destroy
once however often run, nothing destroyed whose guid changed since the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import DatasetExists, InvalidOperation, MessageError
from protocol.steps import (
    CloneArgs,
    DestroyArgs,
    DiffArgs,
    InventoryArgs,
    args_from_data,
    args_to_data,
)
from protocol.zfs import InventoryReport
from workers.adhoc import INLINE_DIFF
from workers.steps import StepContext, run_step
from workers.zfs.sim import SimBackend


@pytest.fixture
def ctx(tmp_path: Path) -> StepContext:
    backend = SimBackend(tmp_path / "h")
    backend.create_pool("tank")
    backend.create("tank/a")
    backend.snapshot(["tank/a@s1"])
    return StepContext(host="h", backend=backend)


def guid(ctx: StepContext, name: str) -> int:
    return int(ctx.backend.get(name, ["guid"])["guid"].value)


def write(ctx: StepContext, name: str, n: int = 1) -> None:
    mp = ctx.backend.mountpoint("tank/a")
    assert mp is not None
    for i in range(n):
        Path(mp, f"{name}{i}").write_bytes(b"x")


def test_a_small_diff_comes_inline_and_a_large_one_in_the_record(ctx: StepContext) -> None:
    stored: list[Any] = []
    ctx.save_record = stored.append
    write(ctx, "f")
    ctx.backend.snapshot(["tank/a@s2"])
    small = run_step(ctx, DiffArgs(snapshot="tank/a@s1", other="tank/a@s2"))
    rows = json.loads(str(small["changes"]))
    assert small["stored"] is False and ("+", "f0") in {(r["change"], Path(r["path"]).name)
                                                         for r in rows}  # fmt: skip
    write(ctx, "g", INLINE_DIFF + 5)
    large = run_step(ctx, DiffArgs(snapshot="tank/a@s2"))  # against the live dataset
    assert large["stored"] is True and "changes" not in large
    assert len(stored[0]) == large["entries"] and int(str(large["entries"])) > INLINE_DIFF


def test_clone_is_done_once_and_refuses_a_foreign_dataset(ctx: StepContext) -> None:
    args = CloneArgs(snapshot="tank/a@s1", target="tank/c", guid=guid(ctx, "tank/a@s1"))
    assert run_step(ctx, args)["cloned"] is True
    assert run_step(ctx, args) == {"cloned": False, "existed": True}  # a rerun
    ctx.backend.create("tank/other")
    with pytest.raises(DatasetExists, match="not that clone"):
        run_step(ctx, CloneArgs(snapshot="tank/a@s1", target="tank/other"))


def test_destroy_skips_what_is_gone_and_keeps_a_replaced_snapshot(ctx: StepContext) -> None:
    old = guid(ctx, "tank/a@s1")
    args = DestroyArgs(snapshots=(("tank/a@s1", old),))
    assert run_step(ctx, args) == {"destroyed": 1, "gone": 0}
    assert run_step(ctx, args) == {"destroyed": 0, "gone": 1}
    ctx.backend.snapshot(["tank/a@s1"])  # a new snapshot under the old name
    with pytest.raises(InvalidOperation, match="replaced since the plan"):
        run_step(ctx, args)
    assert ctx.backend.exists("tank/a@s1")


def test_the_messages_are_strict_and_an_empty_inventory_lists_every_pool(
    ctx: StepContext,
) -> None:
    for msg in (DiffArgs("tank/a@s1"), CloneArgs("tank/a@s1", "tank/c"),
                DestroyArgs((("tank/a@s1", 1),), recursive=True)):  # fmt: skip
        assert args_from_data(args_to_data(msg)) == msg
        with pytest.raises(MessageError, match=r"unknown|not know|field"):
            args_from_data({**args_to_data(msg), "defer": True})  # never dropped on the way
    assert isinstance(ctx.backend, SimBackend)
    ctx.backend.create_pool("other")
    reports: list[InventoryReport] = []
    ctx.save_inventory = reports.append
    run_step(ctx, InventoryArgs(roots=()))
    assert {o.name for o in reports[0].objects} >= {"tank", "tank/a", "tank/a@s1", "other"}
