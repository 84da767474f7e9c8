"""The failover job kinds' pure parts: the config's failover table, a job's direction after a
failover, where each host keeps each dataset, the first steps of failover, switchover and rejoin,
the common snapshot a rejoin starts from, the role-change step messages and their handlers on the
simulated backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from coordinator.config import FleetConfig, JobTarget, parse_config
from coordinator.failover import FailoverRefused, new_failover_job
from coordinator.graph import FleetGraph
from coordinator.planner import plan_sync
from coordinator.rejoin import new_rejoin_job, newest_common
from coordinator.rolestate import JobRoles, oriented, placements, primary_names
from coordinator.switchover import new_switchover_job
from protocol.errors import ConfigError, MessageError
from protocol.steps import (
    DemoteArgs,
    PreserveArgs,
    PromoteArgs,
    args_from_data,
    args_to_data,
)
from workers.steps import StepContext, run_step
from workers.zfs.base import ObjType, ZfsObject
from workers.zfs.sim import SimBackend

HOSTS = "".join(f'[hosts.{h}]\nbackend = "sim"\nsim_root = "/tmp/{h}"\n' for h in
                ("alpha", "beta", "gamma", "delta"))  # fmt: skip
JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]

[jobs.img.failover]
candidates = ["auto"]
policy = "auto"
"""
T0 = 1_700_000_000


def config(text: str = JOB) -> FleetConfig:
    return parse_config(HOSTS + text, source="fleet.toml")


def rows(dataset: str, snaps: Sequence[tuple[str, int]]) -> list[ZfsObject]:
    out = [ZfsObject(dataset, ObjType.FILESYSTEM, guid=hash(dataset) & 0xFFFF, createtxg=1,
                     creation=T0)]  # fmt: skip
    for i, (short, guid) in enumerate(snaps):
        out.append(ZfsObject(f"{dataset}@{short}", ObjType.SNAPSHOT, guid=guid, createtxg=10 + i,
                             creation=T0 + 60 * guid))  # fmt: skip
    return out


def test_config_reads_the_failover_table_and_refuses_what_cannot_fail_over() -> None:
    jc = config().job("img")
    assert jc.failover is not None and jc.failover.primary == "alpha"
    assert jc.failover.policy == "auto"
    assert config(JOB.split("[jobs.img.failover]", maxsplit=1)[0]).job("img").failover is None
    with pytest.raises(ConfigError, match=r"fleet.toml:\d+: jobs.img.failover: .*one source"):
        config(JOB.replace('source = "alpha:tank/img"',
                           'sources = ["alpha:tank/img", "alpha:tank/other"]'))  # fmt: skip
    with pytest.raises(ConfigError, match=r"failover.primary: 'delta' holds none"):
        config(JOB + 'primary = "delta"\n')
    with pytest.raises(ConfigError, match=r"failover.candidates: 'delta' is not a target"):
        config(JOB.replace('candidates = ["auto"]', 'candidates = ["delta"]'))


def test_a_failed_over_job_runs_from_the_new_primary_to_everyone_else() -> None:
    jc = config().job("img")
    assert oriented(jc, "alpha") is jc
    rev = oriented(jc, "beta")
    assert (rev.sources[0].host, rev.sources[0].dataset) == ("beta", "bk/img")
    assert rev.targets == (JobTarget(host="alpha", dataset="tank/img"),
                           JobTarget(host="gamma", dataset="bk/img"))  # fmt: skip
    # a former primary out of the fleet is no target until it rejoins
    gamma = JobTarget(host="gamma", dataset="bk/img")
    assert oriented(jc, "beta", skip=["alpha"]).targets == (gamma,)
    with pytest.raises(ConfigError, match="delta holds none"):
        oriented(jc, "delta")
    assert placements(jc, "beta", ["bk/img/base"]) == {
        "bk/img/base": {"alpha": "tank/img/base", "gamma": "bk/img/base"}}


def test_a_store_keeps_the_original_primary_names_after_a_failover() -> None:
    jc = config().job("img")
    with_store = dataclasses.replace(jc, targets=(*jc.targets, JobTarget(store="bucket")))
    rev = oriented(with_store, "beta")
    (store,) = [t for t in rev.targets if t.store]
    # filed under alpha's names, the store's chains go on with increments, not new full copies
    assert store == JobTarget(store="bucket", dataset="tank/img")
    assert rev.target_dataset(rev.sources[0], store, "bk/img/base") == "tank/img/base"


def test_the_reversed_sync_plans_incrementals_from_the_new_primary() -> None:
    jc = config().job("img")
    g = FleetGraph()
    s = [("s1", 1), ("s2", 2)]
    g.add_inventory("beta", rows("bk/img", [*s, ("s3", 3)]))
    g.add_inventory("alpha", rows("tank/img", s))
    g.add_inventory("gamma", rows("bk/img", s))
    plan = plan_sync(g, oriented(jc, "beta"), job_id="j1")
    sends = [st.args for st in plan.steps if st.kind == "transfer"]
    assert len(sends) == 1 and sends[0].send.from_snap == "bk/img@s2"  # type: ignore[attr-defined]
    assert {t.host for t in sends[0].targets} == {"alpha", "gamma"}  # type: ignore[attr-defined]


def test_primary_names_count_datasets_only_replicas_reported_and_skip_asides() -> None:
    jc = config().job("img")
    g = FleetGraph()
    g.add_inventory("beta", rows("bk/img", []) + rows("bk/img/a", []))
    g.add_inventory("gamma", rows("bk/img", []) + rows("bk/img/b", [])
                    + rows("bk/img/a.diverged-x", []))  # fmt: skip
    assert primary_names(g, jc, "alpha", ["beta", "gamma"]) == [
        "tank/img", "tank/img/a", "tank/img/b"]


def test_failover_job_inventories_the_live_replicas_then_chooses() -> None:
    cfg = config()
    roles = JobRoles("img", "alpha", epoch=3)
    job = new_failover_job("text", cfg, "img", "alpha", roles, failed_at=T0, received_at=T0,
                           down=["gamma"])  # fmt: skip
    assert list(job.steps) == ["inventory-beta", "choose"]
    assert job.steps["choose"].always  # a failed inventory makes a host ineligible, no more
    assert job.options["epoch"] == 3 and job.options["fence"] == "img"
    with pytest.raises(FailoverRefused, match="beta is not the primary"):
        new_failover_job("text", cfg, "img", "beta", roles, failed_at=T0, received_at=T0)


def test_switchover_and_rejoin_start_with_what_must_come_first() -> None:
    cfg = config()
    sw = new_switchover_job("text", cfg, "img", "beta", JobRoles("img", "alpha", 0))
    assert list(sw.steps) == ["inventory-old", "demote-plan"]
    with pytest.raises(FailoverRefused, match="already the primary"):
        new_switchover_job("text", cfg, "img", "alpha", JobRoles("img", "alpha", 0))
    with pytest.raises(FailoverRefused, match="has not rejoined"):
        new_switchover_job("text", cfg, "img", "gamma", JobRoles("img", "beta", 1, out=("gamma",)))
    rj = new_rejoin_job("text", cfg, "img", "alpha", JobRoles("img", "beta", 1, out=("alpha",)),
                        known=["tank/img/base", "tank/other"])  # fmt: skip
    first = rj.steps["fence-alpha"]
    assert first.deps == [] and first.args.datasets == ("tank/img", "tank/img/base")  # type: ignore[attr-defined]
    assert all("fence-alpha" in s.deps for s in rj.steps.values() if s.id.startswith("inv"))
    assert rj.options["skip"] == []  # the rejoining host itself is a target again


def test_newest_common_snapshot_is_found_by_guid() -> None:
    g = FleetGraph()
    g.add_inventory("alpha", rows("tank/img", [("s1", 1), ("s2", 2), ("local", 7)]))
    g.add_inventory("beta", rows("bk/img", [("s1", 1), ("s2", 2), ("s3", 3)]))
    g.add_inventory("gamma", rows("bk/img", [("other", 9)]))
    mine = g.dataset("alpha", "tank/img")
    assert mine is not None
    assert newest_common(mine, g.dataset("beta", "bk/img")) == "s2"  # type: ignore[arg-type]
    assert newest_common(mine, g.dataset("gamma", "bk/img")) is None  # type: ignore[arg-type]


def test_role_step_messages_are_strict_and_round_trip() -> None:
    args = PreserveArgs(datasets=(("tank/a", "s1"),), tag="t", epoch=2)
    assert args_from_data(args_to_data(args)) == args
    data = args_to_data(PromoteArgs(datasets=("bk/a",), epoch=1))
    with pytest.raises(MessageError):
        args_from_data({**data, "force": True})


def test_promote_and_demote_handlers_change_roles_on_the_sim(tmp_path: Path) -> None:
    sim = SimBackend(tmp_path / "beta")
    sim.create_pool("bk")
    sim.create("bk/a")
    sim.snapshot(["bk/a@s1"])
    sim.set("bk/a", {"readonly": "on"})
    sim.unmount("bk/a")
    ctx = StepContext(host="beta", backend=sim)
    out = run_step(ctx, PromoteArgs(datasets=("bk/a",), epoch=4))
    assert out["epoch"] == 4 and out["mounted"] == 1
    props = sim.get("bk/a", ["readonly", "mounted"])
    assert (props["readonly"].value, props["mounted"].value) == ("off", "yes")
    assert run_step(ctx, PromoteArgs(datasets=("bk/a",), epoch=4))["mounted"] == 0  # idempotent
    run_step(ctx, DemoteArgs(datasets=("bk/a",), epoch=5))
    assert sim.get("bk/a", ["readonly"])["readonly"].value == "on"
