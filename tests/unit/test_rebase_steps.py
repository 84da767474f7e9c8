"""The rebase step handlers on a simulated host: idempotent, checked by guid, typed errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import RebaseError
from protocol.rebasesteps import RebaseArgs, RebaseReplicaArgs
from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount, names
from workers.steps import StepContext, run_step
from workers.zfs.sim import SimBackend


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    sim = SimBackend(tmp_path / "pools")
    sim.create_pool("tank")
    sim.create("tank/base")
    fill_base(mount(sim, "tank/base"))
    sim.snapshot(["tank/base@v1"])
    sim.create("tank/app")
    copy_tree(mount(sim, "tank/base"), mount(sim, "tank/app"))
    (mount(sim, "tank/app") / "own").write_bytes(b"mine" * 1000)
    sim.snapshot(["tank/app@s"])
    return sim


def guid(sim: SimBackend, name: str) -> int:
    return int(sim.get(name, ["guid"])["guid"].value)


def test_a_rebase_step_run_twice_rebases_once(sim: SimBackend) -> None:
    ctx = StepContext(host="alpha", backend=sim)
    before = listing(mount(sim, "tank/app"))
    args = RebaseArgs(image="tank/app", onto="tank/base@v1", onto_guid=guid(sim, "tank/base@v1"),
                      keep_content=True)  # fmt: skip
    first = run_step(ctx, args)
    assert first["method"] == "keep-content" and first["existed"] is False
    assert str(first["backup"]).startswith("tank/app.pre-rebase-")
    again = run_step(ctx, args)
    assert again["existed"] is True and again["backup"] == first["backup"]
    assert listing(mount(sim, "tank/app")) == before


def test_a_replaced_base_is_refused(sim: SimBackend) -> None:
    ctx = StepContext(host="alpha", backend=sim)
    state = names(sim, "tank")
    with pytest.raises(RebaseError, match="replaced since the plan"):
        run_step(ctx, RebaseArgs(image="tank/app", onto="tank/base@v1", onto_guid=12345,
                                 keep_content=True))  # fmt: skip
    with pytest.raises(RebaseError, match="does not exist"):
        run_step(ctx, RebaseArgs(image="tank/app", onto="tank/base@v9", onto_guid=1))
    assert names(sim, "tank") == state


def test_a_replica_is_set_aside_once_and_only_the_planned_one(sim: SimBackend) -> None:
    ctx = StepContext(host="beta", backend=sim)
    g = guid(sim, "tank/app")
    with pytest.raises(RebaseError, match="replaced since the plan"):
        run_step(ctx, RebaseReplicaArgs(dataset="tank/app", guid=g + 1, aside="tank/app.old"))
    assert sim.exists("tank/app") and not sim.exists("tank/app.old")
    args = RebaseReplicaArgs(dataset="tank/app", guid=g, aside="tank/app.old")
    assert run_step(ctx, args)["aside"] == "tank/app.old"
    assert not sim.exists("tank/app") and guid(sim, "tank/app.old") == g
    assert run_step(ctx, args)["existed"] is True
    dropped = run_step(ctx, RebaseReplicaArgs(dataset="tank/app.old", guid=g, aside="x/y",
                                              drop=True))  # fmt: skip
    assert dropped["dropped"] is True and not sim.exists("tank/app.old")
