"""Encrypted datasets replicate raw: every send of one is ``zfs send -w``, plain ones never."""

from __future__ import annotations

import dataclasses

from coordinator.planner import plan_sync
from tests.unit.fleetfakes import dataset, graph_of, job
from workers.zfs.base import ObjType, ZfsObject


def encrypted(rows: list[ZfsObject]) -> list[ZfsObject]:
    """The rows of an encrypted dataset as `zfs list` reports them (cipher on every row)."""
    return [dataclasses.replace(r, encryption="aes-256-gcm",
                                keystatus="available" if r.type is not ObjType.SNAPSHOT else None)
            for r in rows]  # fmt: skip


def raw_flags(plan: object) -> dict[str, tuple[bool, str | None]]:
    return {
        s.args.send.snapshot: (s.args.send.raw, s.args.send.from_snap)
        for s in plan.transfers()  # type: ignore[attr-defined]
    }


def test_encrypted_source_sends_raw_full_incremental_and_clone() -> None:
    g = graph_of(
        alpha=[
            encrypted(dataset("tank/t", ["s1", "s2"])),
            encrypted(dataset("tank/t/c", ["c1"], origin="tank/t@s1")),
            dataset("tank/t/plain", ["p1", "p2"]),
        ],
        beta=[], gamma=[],
    )  # fmt: skip
    plan = plan_sync(g, job(), job_id="J")
    flags = raw_flags(plan)
    assert flags["tank/t@s1"] == (True, None)
    assert flags["tank/t@s2"] == (True, "tank/t@s1")
    assert flags["tank/t/c@c1"] == (True, "tank/t@s1")  # a clone: raw, from its origin
    assert flags["tank/t/plain@p1"] == (False, None)
    assert flags["tank/t/plain@p2"][0] is False
    assert plan.refusals == ()


def test_locked_replica_still_takes_raw_increments() -> None:
    """A target without the key (keystatus unavailable) is an ordinary incremental target."""
    locked = [dataclasses.replace(r, keystatus="unavailable") for r in
              encrypted(dataset("bk/t", ["s1"], guid_from="tank/t"))]  # fmt: skip
    g = graph_of(alpha=[encrypted(dataset("tank/t", ["s1", "s2", "s3"]))], beta=[locked])
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert raw_flags(plan) == {"tank/t@s3": (True, "tank/t@s1")}  # one -I hop, raw


def test_plain_copy_of_an_encrypted_source_is_refused_with_the_reason() -> None:
    g = graph_of(
        alpha=[encrypted(dataset("tank/t", ["s1", "s2"]))],
        beta=[dataset("bk/t", ["s1"], guid_from="tank/t")],
    )
    plan = plan_sync(g, job(targets='["beta:bk/t"]'), job_id="J")
    assert plan.transfers() == []
    (refusal,) = plan.refusals
    assert "unencrypted copy" in refusal.reason and refusal.target == "beta:bk/t"
