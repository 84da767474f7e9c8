"""Choosing a failed primary's successor from the fleet graph, and the flap protection."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from coordinator.graph import FleetGraph
from coordinator.roles import FailoverRoles, choose_candidate, flap_wait, gate, placements
from workers.zfs.base import ObjType, ZfsObject

T0 = 1_700_000_000


def rows(dataset: str, snaps: Sequence[tuple[str, int]]) -> list[ZfsObject]:
    """A filesystem and its snapshots; each snapshot's guid is its number, created T0 + 60*n."""
    out = [ZfsObject(dataset, ObjType.FILESYSTEM, guid=hash(dataset) & 0xFFFF, createtxg=1,
                     creation=T0)]  # fmt: skip
    for i, (short, guid) in enumerate(snaps):
        out.append(ZfsObject(f"{dataset}@{short}", ObjType.SNAPSHOT, guid=guid, createtxg=10 + i,
                             creation=T0 + 60 * guid))  # fmt: skip
    return out


def fleet() -> FleetGraph:
    """alpha (primary) has s1..s4 on two datasets; beta has s1..s2, gamma s1..s3 of both,
    delta only s3 of one (and a foreign s9 of the other)."""
    g = FleetGraph()
    a = [("s1", 1), ("s2", 2), ("s3", 3), ("s4", 4)]
    g.add_inventory("alpha", rows("tank/a", a) + rows("tank/b", a))
    g.add_inventory("beta", rows("bk/a", a[:2]) + rows("bk/b", a[:2]))
    g.add_inventory("gamma", rows("bk/a", a[:3]) + rows("bk/b", a[:3]))
    g.add_inventory("delta", rows("bk/a", a[2:3]) + rows("bk/b", [("s9", 9)]))
    return g


PLACED = placements(
    ["tank/a", "tank/b"],
    {h: {"tank/a": "bk/a", "tank/b": "bk/b"} for h in ("beta", "gamma", "delta")},
)


def roles(*candidates: str) -> FailoverRoles:
    return FailoverRoles(job="images", primary="alpha", candidates=candidates)


def test_auto_picks_the_replica_with_the_newest_common_snapshot() -> None:
    d = choose_candidate(fleet(), roles("auto"), "alpha", PLACED, failed_at=T0 + 300)
    assert d.chosen == "gamma"
    assert [(r.primary_dataset, r.snapshot, r.behind) for r in d.replicas] == [
        ("tank/a", "s3", 1), ("tank/b", "s3", 1),
    ]  # fmt: skip
    assert d.data_loss_window == 300 - 180  # s3 was taken at T0+180
    by_host = {c.host: c for c in d.considered}
    assert not by_host["delta"].eligible
    assert "bk/b has no snapshot in common with tank/b" in by_host["delta"].reason


def test_the_ordered_list_wins_over_freshness_and_auto_fills_in() -> None:
    d = choose_candidate(fleet(), roles("beta", "auto"), "alpha", PLACED, failed_at=T0 + 300)
    assert (d.chosen, d.data_loss_window) == ("beta", 300 - 120)
    assert d.reason.startswith("listed candidate")
    d = choose_candidate(
        fleet(), roles("beta", "auto"), "alpha", PLACED, failed_at=T0 + 300, down=["beta"]
    )
    assert d.chosen == "gamma" and d.reason.startswith("auto")


def test_no_eligible_candidate_says_why_for_each_host() -> None:
    d = choose_candidate(
        fleet(), roles("delta"), "alpha", PLACED, failed_at=T0 + 300, down=["gamma"]
    )
    assert d.chosen is None and d.data_loss_window is None
    assert "delta: bk/b has no snapshot in common" in d.reason
    assert d.replicas == ()


def test_a_primary_that_never_reported_falls_back_to_the_replicas_newest() -> None:
    g = fleet()
    del g.hosts["alpha"]
    d = choose_candidate(g, roles("auto"), "alpha", PLACED, failed_at=T0 + 600)
    # gamma and delta both reach s3 on their oldest; delta's s9 makes its data newer overall
    assert d.chosen == "delta"
    assert d.data_loss_window == 600 - 180
    g.hosts["delta"].datasets["bk/a"] = g.hosts["beta"].datasets["bk/a"]  # now only s1..s2
    assert choose_candidate(g, roles("auto"), "alpha", PLACED, failed_at=T0).chosen == "gamma"


def test_a_host_without_the_dataset_or_inventory_is_not_eligible() -> None:
    g = fleet()
    del g.hosts["beta"].datasets["bk/b"]
    where = {
        "beta": {"tank/a": "bk/a", "tank/b": "bk/b"},
        "omega": {"tank/a": "x/a", "tank/b": "x/b"},
    }
    placed = placements(["tank/a", "tank/b"], where)
    d = choose_candidate(g, roles("omega", "beta"), "alpha", placed, failed_at=T0)
    assert d.chosen is None
    reasons = {c.host: c.reason for c in d.considered}
    assert reasons == {"beta": "bk/b is missing", "omega": "no inventory from this host"}


@pytest.mark.parametrize(
    ("last", "now", "wait"),
    [(None, 100.0, 0.0), (0.0, 100.0, 1700.0), (0.0, 1800.0, 0.0), (500.0, 100.0, 1800.0)],
)
def test_flap_wait(last: float | None, now: float, wait: float) -> None:
    assert flap_wait(last, now, 1800) == wait


def test_gate_manual_policy_and_min_interval() -> None:
    manual = FailoverRoles(job="j", primary="alpha", policy="manual", min_interval=600)
    auto = FailoverRoles(job="j", primary="alpha", policy="auto", min_interval=600)
    assert not gate(manual, last_failover_at=None, now=1000, from_alert=True).allowed
    assert gate(manual, last_failover_at=None, now=1000, from_alert=False).allowed
    g = gate(auto, last_failover_at=900, now=1000, from_alert=True)
    assert (g.allowed, g.wait) == (False, 500)
    assert "failed over 100s ago" in g.reason
    assert gate(auto, last_failover_at=300, now=1000, from_alert=True).allowed
    backwards = gate(auto, last_failover_at=1500, now=1000, from_alert=False)  # clock stepped back
    assert (backwards.allowed, backwards.wait) == (False, 600)
    assert "failed over 0s ago" in backwards.reason
