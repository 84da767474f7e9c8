"""Planning the short verbs: send through the sync planner up to a snapshot, clones across hosts
with their origin first, destroy refusing a replica's incremental base, and the jobs' shapes."""

from __future__ import annotations

import pytest

from coordinator.adhoc import new_adhoc_job
from coordinator.adhocplan import (
    needed_by,
    objects_until,
    plan_clone,
    plan_destroy,
    plan_send,
    send_job_config,
)
from coordinator.config import parse_config
from coordinator.graph import FleetGraph
from coordinator.planner import Plan
from protocol.addresses import Address, parse_address
from protocol.errors import AddressError, JobError
from protocol.steps import CloneArgs, DestroyArgs, InventoryArgs, SnapshotArgs, TransferArgs
from protocol.zfs import ZfsObject
from tests.unit.fleetfakes import dataset, graph_of, guid_of

CONFIG = """
[hosts.alpha]
backend = "sim"
sim_root = "/x/alpha"

[hosts.beta]
backend = "sim"
sim_root = "/x/beta"

[stores.cellar]
kind = "dir"
path = "/x/cellar"
"""


def a(text: str) -> Address:
    return parse_address(text, allow_store=True)


def cut_graph(src: str, snap: str, *, recursive: bool = True,
              **hosts: list[list[ZfsObject]]) -> FleetGraph:  # fmt: skip
    g = FleetGraph()
    host, root = src.split(":")
    for h, parts in hosts.items():
        rows = [r for p in parts for r in p]
        if h == host:
            at = next(r for r in rows if r.name == f"{root}@{snap}")
            rows = objects_until(rows, root, at.createtxg, recursive=recursive)
        g.add_inventory(h, rows)
    return g


def sends(plan: Plan) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(s.args.send.snapshot, s.args.send.from_snap,
             tuple(f"{t.host}:{t.dataset}" + (f"<{t.origin}" if t.origin else "")
                   for t in s.args.targets))
            for s in plan.steps if isinstance(s.args, TransferArgs)]  # fmt: skip


def test_send_stops_at_the_snapshot_asked_for_and_keeps_clones_as_clones() -> None:
    g = cut_graph("alpha:tank/a", "s2", alpha=[
        dataset("tank/a", ["s1", "s2", "s3"]),
        dataset("tank/a/c", ["c1"], origin="tank/a@s1"),  # txg 10: before s2 (txg 20)
    ], beta=[])  # fmt: skip
    jc = send_job_config(a("alpha:tank/a@s2"), a("beta:bk/a"), recursive=True)
    plan = plan_send(g, jc, job_id="J")
    assert sends(plan) == [
        ("tank/a@s1", None, ("beta:bk/a",)),
        ("tank/a@s2", "tank/a@s1", ("beta:bk/a",)),  # s3 is after the snapshot asked for
        ("tank/a/c@c1", "tank/a@s1", ("beta:bk/a/c<bk/a@s1",)),  # a clone of its origin's copy
    ]
    assert plan.refusals == ()


def test_a_second_send_is_incremental_from_the_newest_common_snapshot() -> None:
    g = graph_of(alpha=[dataset("tank/a", ["s1", "s2", "s3"])],
                 beta=[dataset("bk/a", ["s1", "s2"], guid_from="tank/a")])  # fmt: skip
    plan = plan_send(g, send_job_config(a("alpha:tank/a"), a("beta:bk/a"), recursive=False),
                     job_id="J")  # fmt: skip
    assert sends(plan) == [("tank/a@s3", "tank/a@s2", ("beta:bk/a",))]


def test_clone_across_hosts_sends_the_origin_next_to_the_clone_first() -> None:
    g = cut_graph("alpha:tank/img/base", "b1", recursive=False,
                  alpha=[dataset("tank/img/base", ["b1", "b2"])], beta=[dataset("bk", [])])
    cp = plan_clone(g, a("alpha:tank/img/base@b1"), a("beta:bk/work"), job_id="J")
    assert sends(cp.plan) == [("tank/img/base@b1", None, ("beta:bk/base",))]  # not b2
    clone = cp.plan.steps[-1]
    assert isinstance(clone.args, CloneArgs) and clone.host == "beta"
    assert (clone.args.snapshot, clone.args.target) == ("bk/base@b1", "bk/work")
    assert clone.args.guid == guid_of("tank/img/base@b1")
    xfer = next(s for s in cp.plan.steps if isinstance(s.args, TransferArgs))
    assert xfer.id in clone.deps


def test_clone_from_a_copy_the_host_has_already_and_on_the_same_host() -> None:
    g = graph_of(alpha=[dataset("tank/base", ["b1"])],
                 beta=[dataset("bk/mirror", ["b1"], guid_from="tank/base")])  # fmt: skip
    there = plan_clone(g, a("alpha:tank/base@b1"), a("beta:bk/work"), job_id="J").plan
    assert [s.kind for s in there.steps] == ["clone"]
    assert there.steps[0].args == CloneArgs("bk/mirror@b1", "bk/work", guid_of("tank/base@b1"))
    here = plan_clone(g, a("alpha:tank/base@b1"), a("alpha:tank/work"), job_id="J").plan
    assert [(s.host, s.kind) for s in here.steps] == [("alpha", "clone")]
    with pytest.raises(JobError, match="beta:bk/mirror exists already"):
        plan_clone(g, a("alpha:tank/base@b1"), a("beta:bk/mirror"), job_id="J")
    with pytest.raises(JobError, match=r"alpha:tank/base@b9 does not exist \(newest snapshots: b1"):
        plan_clone(g, a("alpha:tank/base@b9"), a("beta:bk/x"), job_id="J")


def test_destroy_refuses_a_replicas_base_unless_forced() -> None:
    g = graph_of(
        alpha=[dataset("tank/a", ["s1", "s2", "s3"])],
        beta=[dataset("bk/a", ["s1", "s2"], guid_from="tank/a")],  # s2 is beta's next base
        gamma=[dataset("bk/a", ["s1", "s2", "s3"], guid_from="tank/a")],
    )
    assert needed_by(g, "alpha", "tank/a@s2") == ["beta:bk/a"]
    assert needed_by(g, "alpha", "tank/a@s3") == ["gamma:bk/a"]
    assert needed_by(g, "alpha", "tank/a@s1") == []
    # the replica's side too: beta's s2 is the base of its next incremental from alpha
    assert needed_by(g, "beta", "bk/a@s2") == ["alpha:tank/a", "gamma:bk/a"]
    refused = plan_destroy(g, a("alpha:tank/a@s2"), recursive=False, force=False)
    assert refused.steps == () and [r.target for r in refused.refusals] == ["beta:bk/a"]
    forced = plan_destroy(g, a("alpha:tank/a@s2"), recursive=False, force=True)
    assert forced.refusals == () and "--force" in forced.notes[0]
    (step,) = forced.steps
    assert step.args == DestroyArgs(snapshots=(("tank/a@s2", guid_of("tank/a@s2")),))
    free = plan_destroy(g, a("alpha:tank/a@s1"), recursive=False, force=False)
    assert [s.kind for s in free.steps] == ["destroy"]


def test_a_bookmark_of_the_base_makes_the_snapshot_free_to_destroy() -> None:
    g = graph_of(alpha=[dataset("tank/a", ["s1", "s2"], bookmarks=["s2"])],
                 beta=[dataset("bk/a", ["s1", "s2"], guid_from="tank/a")])  # fmt: skip
    assert needed_by(g, "alpha", "tank/a@s2") == []


def test_recursive_destroy_checks_every_descendant() -> None:
    g = graph_of(
        alpha=[dataset("tank/a", ["s1", "s2"]), dataset("tank/a/b", ["s1", "s2"])],
        beta=[dataset("bk/b", ["s1", "s2"], guid_from="tank/a/b")],
    )
    plan = plan_destroy(g, a("alpha:tank/a@s2"), recursive=True, force=False)
    assert [(r.source, r.target) for r in plan.refusals] == [("alpha:tank/a/b@s2", "beta:bk/b")]


def test_the_jobs_first_steps_and_early_refusals() -> None:
    config = parse_config(CONFIG)
    send = new_adhoc_job(CONFIG, config, "send", {"src": "alpha:tank/a", "dst": "beta:bk/a",
                                                   "recursive": True}, now=0)  # fmt: skip
    assert send.kind == "adhoc"
    snap = send.steps["snapshot-alpha"]
    assert snap.args == SnapshotArgs(names=("tank/a@zfleet-19700101T000000Z",), recursive=True)
    assert send.steps["inventory-alpha"].deps == ["snapshot-alpha"]
    assert send.steps["plan"].deps == ["inventory-alpha", "inventory-beta"]
    assert send.options["params"]["src"] == "alpha:tank/a@zfleet-19700101T000000Z"
    dry = new_adhoc_job(CONFIG, config, "send", {"src": "alpha:tank/a", "dst": "beta:bk/a"},
                        dry_run=True)  # fmt: skip
    assert "snapshot-alpha" not in dry.steps  # a dry run changes nothing
    clone = new_adhoc_job(CONFIG, config, "clone", {"src": "alpha:tank/a@s1", "dst": "beta:bk/w"})
    assert clone.steps["inventory-beta"].args == InventoryArgs(roots=("bk",))  # its whole pool
    ls = new_adhoc_job(CONFIG, config, "ls", {})
    # every pool of each host (and the stores, from the first)
    first, second = (s.args for s in ls.steps.values())
    assert isinstance(first, InventoryArgs) and first.roots == ()
    assert [r.name for r in first.stores] == ["cellar"] and second == InventoryArgs(roots=())
    for verb, params, message in [
        ("send", {"src": "alpha:tank/a", "dst": "alpha:tank/a/b"}, "overlaps"),
        ("send", {"src": "gamma:tank/a", "dst": "beta:bk/a"}, "unknown host 'gamma'"),
        ("destroy", {"src": "alpha:tank/a"}, "needs a snapshot"),
        ("diff", {"src": "alpha:tank/a@s1", "other": "alpha:tank/b@s2"}, "two snapshots of"),
        ("clone", {"src": "alpha:tank/a", "dst": "beta:bk/w"}, "needs a snapshot"),
        ("send", {"src": "alpha:tank/a", "dst": "store:vault"}, "unknown store 'vault'"),
        ("send", {"src": "alpha:tank/a", "dst": "store:cellar:tank/b"}, "keeps the source's"),
    ]:
        with pytest.raises(AddressError, match=message):
            new_adhoc_job(CONFIG, config, verb, params)
