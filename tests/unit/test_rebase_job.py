"""The rebase job kind's pure parts: requests, the plan (order, hosts, bases), replicas, the
step messages' strictness and the proposal files the CLI reads."""

from __future__ import annotations

import pytest

from app.cli.rebasefleet import proposal_pairs
from coordinator import jobkinds
from coordinator.config import parse_config
from coordinator.graph import FleetGraph
from coordinator.rebasejob import (
    KIND,
    Request,
    new_rebase_job,
    plan_rebase,
    replicas,
    requests_for,
    requests_from_pairs,
)
from protocol.errors import AddressError, ConfigError, MessageError
from protocol.messages import decode, encode
from protocol.rebasesteps import RebaseArgs, RebaseReplicaArgs
from protocol.steps import SnapshotArgs, args_from_data, args_to_data
from tests.unit.fleetfakes import dataset, graph_of, guid_of, job_config

TEXT = job_config('recursive = true\nsnapshot = "zfleet-%Y%m%dT%H%M%SZ"')
CONFIG = parse_config(TEXT)


def test_the_kind_and_its_step_messages_are_registered_and_strict() -> None:
    assert jobkinds.get(KIND).name == "rebase"
    args = RebaseArgs(image="tank/t/app", onto="tank/t/base@v1", onto_guid=7, prefer="image",
                      keep_content=True, before=("stop", "app"))  # fmt: skip
    assert decode(encode(args)) == args
    assert args_from_data(args_to_data(args)) == args
    data = args_to_data(RebaseReplicaArgs(dataset="bk/t/app", guid=3, aside="bk/t/app.x"))
    with pytest.raises(MessageError):
        args_from_data({**data, "unknown": 1})
    with pytest.raises(ValueError, match="not a snapshot"):
        RebaseArgs(image="tank/t/app", onto="tank/t/base")
    with pytest.raises(ValueError, match="prefer"):
        RebaseArgs(image="tank/t/app", onto="tank/t/base@v1", prefer="mine")


def test_bad_requests_fail_before_a_job_exists() -> None:
    with pytest.raises(AddressError, match="a snapshot is needed"):
        requests_for(CONFIG, ["alpha:tank/t/app"], "alpha:tank/t/base")
    with pytest.raises(AddressError, match="unknown host 'delta'"):
        requests_for(CONFIG, ["delta:tank/t/app"], "alpha:tank/t/base@v1")
    good = requests_for(CONFIG, ["alpha:tank/t/app"], "alpha:tank/t/base@v1")
    with pytest.raises(ConfigError, match="no job named 'nope'"):
        new_rebase_job(TEXT, CONFIG, good, sync="nope")
    with pytest.raises(ConfigError, match="named twice"):
        new_rebase_job(TEXT, CONFIG, good * 2)
    with pytest.raises(ConfigError, match="--prefer"):
        new_rebase_job(TEXT, CONFIG, good, prefer="mine")
    with pytest.raises(ConfigError, match="unknown host"):
        requests_from_pairs(CONFIG, "delta", [("tank/t/a", "tank/t/b")])


def test_the_job_inventories_every_host_the_sync_touches_then_plans() -> None:
    reqs = requests_for(CONFIG, ["alpha:tank/t/app", "beta:bk/t/app"], "alpha:tank/t/base@v1")
    job = new_rebase_job(TEXT, CONFIG, reqs, sync="j", keep_content=True, now=0)
    assert sorted(job.steps) == ["inventory-alpha", "inventory-beta", "inventory-gamma", "plan"]
    assert job.steps["plan"].deps == ["inventory-alpha", "inventory-beta", "inventory-gamma"]


def _graph() -> FleetGraph:
    base = dataset("tank/t/base", ["v1"])
    return graph_of(
        alpha=[dataset("tank/t"), base, dataset("tank/t/app", ["s"]),
               dataset("tank/t/web", ["s"]), dataset("tank/t/db", ["s"])],
        beta=[dataset("bk/t"), dataset("bk/t/base", ["v1"], guid_from="tank/t/base"),
              dataset("bk/t/app", ["s"], guid_from="tank/t/app")],
        gamma=[dataset("bk/t")],
    )  # fmt: skip


def test_hosts_run_in_parallel_one_host_in_turn_the_base_found_by_guid() -> None:
    reqs = requests_for(CONFIG, ["alpha:tank/t/app", "alpha:tank/t/web", "beta:bk/t/app"],
                        "alpha:tank/t/base@v1")  # fmt: skip
    plan = plan_rebase(_graph(), reqs, {"keep_content": True})
    assert not plan.refusals
    by_id = {s.id: s for s in plan.steps}
    a1, a2, b1 = by_id["rebase-1"], by_id["rebase-2"], by_id["rebase-3"]
    assert (a1.host, a2.host, b1.host) == ("alpha", "alpha", "beta")
    assert a2.deps == ("rebase-1",) and a1.deps == () and b1.deps == ()
    assert isinstance(b1.args, RebaseArgs)
    assert b1.args.onto == "bk/t/base@v1"  # beta's copy of the base, by guid
    assert b1.args.onto_guid == guid_of("tank/t/base@v1") and b1.args.keep_content


def test_a_missing_base_or_image_refuses_everything() -> None:
    reqs = requests_for(CONFIG, ["alpha:tank/t/app", "gamma:bk/t/app"], "alpha:tank/t/base@v1")
    plan = plan_rebase(_graph(), reqs, {})
    assert plan.steps == ()
    reasons = [r.reason for r in plan.refusals]
    assert reasons == ["gamma:bk/t/app does not exist"]
    reqs = requests_for(CONFIG, ["alpha:tank/t/app"], "alpha:tank/t/base@v7")
    assert [r.reason for r in plan_rebase(_graph(), reqs, {}).refusals] == [
        "alpha:tank/t/base@v7 does not exist"]
    graph_b = graph_of(beta=[dataset("bk/t"), dataset("bk/t/app", ["s"])],
                       alpha=[dataset("tank/t/base", ["v1"])])  # fmt: skip
    reqs = requests_for(CONFIG, ["beta:bk/t/app"], "alpha:tank/t/base@v1")
    (refusal,) = plan_rebase(graph_b, reqs, {}).refusals
    assert "beta holds no copy of alpha:tank/t/base@v1" in refusal.reason


def test_a_proposal_rebases_bases_before_their_dependents() -> None:
    # db onto web, web onto base: web first, then its snapshot, then db
    pairs = [("tank/t/db", "tank/t/web"), ("tank/t/web", "tank/t/base@v1"),
             ("tank/t/app", "tank/t/web")]  # fmt: skip
    plan = plan_rebase(_graph(), requests_from_pairs(CONFIG, "alpha", pairs),
                       {"stamp": "20260101T000000Z", "keep_content": True})  # fmt: skip
    order = [(s.id, getattr(s.args, "image", None) or s.args.names) for s in plan.steps]
    assert order[0] == ("rebase-1", "tank/t/web")
    snap = plan.steps[1]
    assert isinstance(snap.args, SnapshotArgs)
    assert snap.args.names == ("tank/t/web@zfleet-base-20260101T000000Z",)
    assert snap.deps == ("rebase-1",)
    rest = list(plan.steps[2:])
    assert [getattr(s.args, "image", "") for s in rest] == ["tank/t/db", "tank/t/app"]
    assert all(isinstance(s.args, RebaseArgs) and s.args.onto == snap.args.names[0]
               and snap.id in s.deps for s in rest)  # fmt: skip
    with pytest.raises(ConfigError, match="cycle"):
        plan_rebase(_graph(), requests_from_pairs(
            CONFIG, "alpha", [("tank/t/db", "tank/t/web"), ("tank/t/web", "tank/t/db")]), {})


def test_replicas_follow_the_sync_jobs_mapping() -> None:
    assert replicas(CONFIG, "j", "alpha", "tank/t/app") == [("beta", "bk/t/app"),
                                                           ("gamma", "bk/t/app")]
    assert replicas(CONFIG, "j", "beta", "tank/t/app") == []
    assert replicas(CONFIG, "j", "alpha", "tank/other") == []


def test_proposal_files_in_both_forms() -> None:
    dedup = {"clusters": [{"base": "tank/i/web", "base_snapshot": "s1", "base_bytes": 1,
                           "members": [{"dataset": "tank/i/db", "bytes_now": 1}]}]}
    assert proposal_pairs(dedup) == [("tank/i/db", "tank/i/web@s1")]
    hand = {"clusters": [{"base": "tank/i/web", "members": ["tank/i/db", "tank/i/py"]}]}
    assert proposal_pairs(hand) == [("tank/i/db", "tank/i/web"), ("tank/i/py", "tank/i/web")]
    for bad in ({}, {"clusters": [{"base": 1, "members": []}]}, {"clusters": []},
                {"clusters": [{"base": "a/b", "members": [3]}]}):  # fmt: skip
        with pytest.raises(ConfigError):
            proposal_pairs(bad)
    assert Request.from_data(Request("a", "p/x", "p/y@s", "a").to_data()).image == "p/x"
