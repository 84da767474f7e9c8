"""The sync planner: least data, right order, refusals that name what diverged."""

from __future__ import annotations

import dataclasses

from coordinator.planner import (
    HOLD,
    PRUNE,
    RELEASE,
    ROLLBACK,
    TRANSFER,
    Plan,
    StepPlan,
    plan_sync,
)
from tests.unit.fleetfakes import dataset, graph_of, guid_of, job
from workers.zfs.base import ObjType


def by_id(plan: Plan) -> dict[str, StepPlan]:
    return {s.id: s for s in plan.steps}


def ancestors(plan: Plan, step_id: str) -> set[str]:
    steps = by_id(plan)
    seen: set[str] = set()
    todo = list(steps[step_id].deps)
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(steps[s].deps)
    return seen


def sends(plan: Plan) -> list[tuple[str, str | None, bool, tuple[str, ...]]]:
    return [
        (s.args.send.snapshot, s.args.send.from_snap, s.args.send.intermediates,
         tuple(sorted(f"{t.host}:{t.dataset}" for t in s.args.targets)))
        for s in plan.transfers()
    ]  # fmt: skip


def test_new_targets_get_full_then_incremental_as_one_fan_out() -> None:
    g = graph_of(alpha=[dataset("tank/t", ["s1", "s2", "s3"])], beta=[], gamma=[])
    plan = plan_sync(g, job(), job_id="J")
    both = ("beta:bk/t", "gamma:bk/t")
    assert sends(plan) == [("tank/t@s1", None, False, both), ("tank/t@s3", "tank/t@s1", True, both)]
    full, incr = plan.transfers()
    assert full.id in incr.deps
    assert full.estimate == 1000 and incr.estimate == 2000  # referenced of s1; written s2+s3
    assert plan.refusals == ()


def test_incremental_from_newest_common_snapshot_by_guid() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3", "s4"])],
        # the target's copies carry the source's guids, whatever they are called
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert sends(plan) == [("tank/t@s4", "tank/t@s2", True, ("beta:bk/t",))]
    assert plan.transfers()[0].args.from_guid == guid_of("tank/t@s2")
    chain = plan_sync(g, job('incremental = "i"', targets='["beta:bk/t"]'), job_id="J")
    assert sends(chain) == [
        ("tank/t@s3", "tank/t@s2", False, ("beta:bk/t",)),
        ("tank/t@s4", "tank/t@s3", False, ("beta:bk/t",)),
    ]
    first, second = chain.transfers()
    assert first.id in second.deps


def test_targets_in_different_states_get_different_sends() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
        gamma=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(), job_id="J")
    assert sends(plan) == [("tank/t@s3", "tank/t@s2", False, ("beta:bk/t", "gamma:bk/t"))]
    g2 = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
        gamma=[dataset("bk/t", ["s1"], guid_from="tank/t")],
    )
    assert len(plan_sync(g2, job(), job_id="J").transfers()) == 2


def test_clone_goes_from_its_origin_after_the_origin_and_parents_first() -> None:
    g = graph_of(
        alpha=[
            dataset("tank/t", ["s1"]),
            dataset("tank/t/base", ["b1", "b2", "b3"]),
            dataset("tank/t/base/child", ["c1"]),
            dataset("tank/t/app", ["a1", "a2"], origin="tank/t/base@b2"),
        ],
        beta=[],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    steps = plan.transfers()
    clone_leg = next(s for s in steps if s.args.send.snapshot == "tank/t/app@a1")
    assert clone_leg.args.send.from_snap == "tank/t/base@b2"
    assert clone_leg.args.targets[0].origin == "bk/t/base@b2"
    assert clone_leg.args.from_guid == guid_of("tank/t/base@b2")
    base_ids = {s.id for s in steps if s.args.source == "tank/t/base"}
    assert base_ids <= ancestors(plan, clone_leg.id)
    child = next(s for s in steps if s.args.source == "tank/t/base/child")
    root_full = next(s for s in steps if s.args.send.snapshot == "tank/t@s1")
    base_full = next(s for s in steps if s.args.send.snapshot == "tank/t/base@b1")
    assert {root_full.id, base_full.id} <= ancestors(plan, child.id)
    # the clone's stream is small: only what the clone wrote since its origin
    assert clone_leg.estimate == 1000
    # steps are listed so that every dependency comes before its dependant
    position = {s.id: i for i, s in enumerate(plan.steps)}
    assert all(position[d] < position[s.id] for s in plan.steps for d in s.deps)


def test_clone_of_an_origin_outside_the_job_is_sent_whole_with_a_note() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1"], origin="tank/golden@g1"), dataset("tank/golden", ["g1"])],
        beta=[],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert sends(plan)[0][:2] == ("tank/t@s1", None)
    assert any("tank/golden@g1" in n for n in plan.notes)


def test_diverged_target_is_refused_naming_dataset_and_snapshots() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3"]), dataset("tank/t/ok", ["o1", "o2"])],
        beta=[
            dataset("bk/t", ["s1", "s2", "x9"], guid_from="tank/t"),
            dataset("bk/t/ok", ["o1"], guid_from="tank/t/ok"),
        ],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    (refusal,) = plan.refusals
    assert refusal.source == "alpha:tank/t" and refusal.target == "beta:bk/t"
    assert "snapshots the source lacks" in refusal.reason
    assert refusal.snapshots == ("bk/t@s2", "bk/t@x9")
    # only the diverged dataset is held back; its sibling still syncs
    assert sends(plan) == [("tank/t/ok@o2", "tank/t/ok@o1", False, ("beta:bk/t/ok",))]
    forced = plan_sync(g, job("force_rollback = true", targets='["beta:bk/t"]'), job_id="J")
    assert forced.refusals == ()
    leg = next(s for s in forced.transfers() if s.args.source == "tank/t")
    assert leg.args.send.from_snap == "tank/t@s2" and leg.args.targets[0].force


def test_modified_target_is_refused_and_up_to_date_one_rolls_back_only_when_forced() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t", written=4096)],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert "modified since bk/t@s2 (4096 bytes written)" in plan.refusals[0].reason
    forced = plan_sync(g, job("force_rollback = true", targets='["beta:bk/t"]'), job_id="J")
    (rb,) = [s for s in forced.steps if s.kind == ROLLBACK]
    assert rb.host == "beta" and rb.args.snapshot == "bk/t@s2"


def test_bookmark_on_the_source_serves_as_the_base() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s3", "s4"], bookmarks=["s2"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert sends(plan) == [
        ("tank/t@s3", "tank/t#s2", False, ("beta:bk/t",)),
        ("tank/t@s4", "tank/t@s3", False, ("beta:bk/t",)),
    ]


def test_no_common_snapshot_is_refused() -> None:
    g = graph_of(alpha=[dataset("tank/t", ["s1"])], beta=[dataset("bk/t", ["other"])])
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert "no common snapshot" in plan.refusals[0].reason
    assert plan.transfers() == []


def test_up_to_date_target_needs_nothing() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert plan.steps == () and plan.up_to_date == ("beta:bk/t",)


def test_bases_held_on_both_sides_and_released_whatever_happens() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3"])],
        beta=[dataset("bk/t", ["s1", "s2"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    steps = by_id(plan)
    assert steps["hold-alpha"].kind == HOLD
    assert dict(steps["hold-alpha"].args.snapshots)["tank/t@s2"] == guid_of("tank/t@s2")
    assert dict(steps["hold-beta"].args.snapshots) == {"bk/t@s2": guid_of("tank/t@s2")}
    (xfer,) = plan.transfers()
    assert {"hold-alpha", "hold-beta"} <= set(xfer.deps)
    for host in ("alpha", "beta"):
        rel = steps[f"release-{host}"]
        assert rel.kind == RELEASE and rel.always and xfer.id in rel.deps
        assert rel.args.tag == steps[f"hold-{host}"].args.tag == "zfleet-J"


def test_retention_never_destroys_a_needed_base() -> None:
    names = [f"zfleet-{i}" for i in range(1, 7)]
    g = graph_of(
        alpha=[dataset("tank/t", [*names, "manual"])],
        beta=[dataset("bk/t", names[:2], guid_from="tank/t")],
    )
    cfg = job('[jobs.j.retention]\n"zfleet-*" = 2', targets='["beta:bk/t"]')
    plan = plan_sync(g, cfg, job_id="J")
    prunes = {s.host: s for s in plan.steps if s.kind == PRUNE}
    src_doomed = {name for name, _ in prunes["alpha"].args.destroy}
    # zfleet-2 is beta's base until the transfer lands; zfleet-5/6 are the newest two kept
    assert src_doomed == {"tank/t@zfleet-1", "tank/t@zfleet-3", "tank/t@zfleet-4"}
    assert "tank/t@manual" not in src_doomed  # matches no rule: not ours to destroy
    tgt_doomed = {name for name, _ in prunes["beta"].args.destroy}
    assert "bk/t@zfleet-2" not in tgt_doomed and "bk/t@zfleet-6" not in tgt_doomed
    assert "bk/t@zfleet-1" in tgt_doomed
    assert "release-alpha" in prunes["alpha"].deps


def test_include_exclude_and_non_recursive() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1"]), dataset("tank/t/keep", ["k1"]),
               dataset("tank/t/tmp", ["x1"]), dataset("tank/t/tmp/deep", ["d1"])],
        beta=[],
    )  # fmt: skip
    plan = plan_sync(g, job('exclude = ["tmp"]', targets='["beta:bk/t"]'), job_id="J")
    assert {s.args.source for s in plan.transfers()} == {"tank/t", "tank/t/keep"}
    flat = plan_sync(g, job("recursive = false", targets='["beta:bk/t"]'), job_id="J")
    assert {s.args.source for s in flat.transfers()} == {"tank/t"}


def test_missing_source_inventory_is_a_note_not_a_crash() -> None:
    plan = plan_sync(graph_of(beta=[]), job(targets='["beta:bk/t"]'), job_id="J")
    assert "no inventory from alpha" in plan.notes[0]
    assert plan.transfers() == [] and TRANSFER not in [s.kind for s in plan.steps]


def test_shared_leg_joined_later_still_comes_after_its_dependencies() -> None:
    # beta's parent is refused, gamma's is not: the child's stream is one step for both, and it
    # must wait for gamma's parent leg, which is planned after the child's step was created
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2"]), dataset("tank/t/c", ["c1", "c2"])],
        beta=[dataset("bk/t", ["s1"], guid_from="tank/t", written=5),
              dataset("bk/t/c", ["c1"], guid_from="tank/t/c")],
        gamma=[dataset("bk/t", ["s1"], guid_from="tank/t"),
               dataset("bk/t/c", ["c1"], guid_from="tank/t/c")],
    )  # fmt: skip
    plan = plan_sync(g, job(), job_id="J")
    assert [r.target for r in plan.refusals] == ["beta:bk/t"]
    position = {s.id: i for i, s in enumerate(plan.steps)}
    assert all(position[d] < position[s.id] for s in plan.steps for d in s.deps)
    child = next(s for s in plan.transfers() if s.args.source == "tank/t/c")
    parent = next(s for s in plan.transfers() if s.args.source == "tank/t")
    assert parent.id in child.deps and len(child.args.targets) == 2


def test_store_target_shares_the_send_and_gets_no_holds() -> None:
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2"]), dataset("tank/t/app", ["a1"],
                                                        origin="tank/t@s1")],
        beta=[],
        **{"store:vault": [dataset("tank/t", ["s1"])]},
    )  # fmt: skip
    cfg = job('[stores.vault]\nkind = "dir"\npath = "/srv/vault"',
              targets='["beta:bk/t", "store:vault"]')  # fmt: skip
    plan = plan_sync(g, cfg, job_id="J")
    assert plan.refusals == ()
    legs = {(s.args.send.snapshot, s.args.send.from_snap):
            sorted(t.host for t in s.args.targets) for s in plan.transfers()}  # fmt: skip
    assert legs[("tank/t@s2", "tank/t@s1")] == ["beta", "store:vault"]  # one send, both targets
    assert legs[("tank/t@s1", None)] == ["beta"]  # the store has s1 already
    app = next(s for s in plan.transfers() if s.args.source == "tank/t/app")
    assert app.args.send.from_snap == "tank/t@s1"  # a clone stays a clone in the store
    assert not any(s.host and s.host.startswith("store:") for s in plan.steps)


def test_replicas_are_received_unmounted_unless_the_job_mounts_them() -> None:
    fs = dataset("tank/t", ["s1"])
    vol = dataset("tank/t/vol", ["v1"])
    vol[0] = dataclasses.replace(vol[0], type=ObjType.VOLUME)
    g = graph_of(alpha=[fs, vol], beta=[])

    def no_mount(extra: str = "") -> dict[str, bool]:
        plan = plan_sync(g, job(extra, targets='["beta:bk/t"]'), job_id="J")
        return {s.args.source: s.args.targets[0].no_mount for s in plan.transfers()}

    # canmount and -u mean nothing to a volume
    assert no_mount() == {"tank/t": True, "tank/t/vol": False}
    assert no_mount("mount_targets = true") == {"tank/t": False, "tank/t/vol": False}
