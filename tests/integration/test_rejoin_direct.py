"""A rejoin straight after a failover, before the new primary synced anything.

The old primary's diverged write is split aside, which changes its parent's live tree (the
aside's mountpoint directory) without any snapshot of the parent to receive: the rejoin itself
has nothing to send for the parent. The next sync must still take increments on every dataset
of the rejoined host, the parent included, instead of failing with DestinationModified.
"""

from __future__ import annotations

import os
import time

import pytest

from bus import records
from coordinator import engine
from coordinator.jobstore import JobStore
from tests.integration.test_failover_fleet import fleet, run, snaps, sync  # noqa: F401  (fixture)
from tests.integration.test_fleet_sync import write
from tests.services.fleet import Fleet
from tests.services.redis import redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ObjType

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_rejoin_without_a_sync_from_the_new_primary_then_syncs_incrementally(
    fleet: Fleet,  # noqa: F811
) -> None:
    client = fleet.client()
    store = JobStore(client)
    sync(fleet, store)
    alpha = fleet.backend("alpha")
    write(alpha, "tank/img/base", "unreplicated", os.urandom(16 * 1024))
    fleet.kill_worker("alpha")
    assert records.get_beat(client, "alpha") is None
    out = run(fleet, "failover", "alpha", "--job", "img", "--wait")
    assert out["details"][0]["status"] == "succeeded", out  # type: ignore[index]

    fleet.start_worker("alpha")  # straight back: beta has not synced since it took over
    out = run(fleet, "rejoin", "alpha", "--wait")
    (job,) = out["details"]  # type: ignore[misc]
    assert job["status"] == "succeeded", job
    assert job["report"]["aside"] == [f"tank/img/base.diverged-{job['id']}"]

    write(fleet.backend("beta"), "bk/img", "top", os.urandom(8 * 1024))
    write(fleet.backend("beta"), "bk/img/base", "later", os.urandom(8 * 1024))
    time.sleep(1.1)  # one-second snapshot names
    nxt = sync(fleet, store)
    assert nxt.status == engine.JOB_SUCCEEDED
    to_alpha = [s for s in nxt.steps.values() if s.kind == "transfer"
                and any(t.host == "alpha" for t in s.args.targets)]  # fmt: skip
    assert to_alpha and all(s.args.send.from_snap for s in to_alpha)
    for mine, theirs in (("tank/img", "bk/img"), ("tank/img/base", "bk/img/base")):
        assert snaps(fleet, "alpha", mine) == snaps(fleet, "beta", theirs), mine
    rows = alpha.list("tank/img", recursive=True, types=[ObjType.FILESYSTEM])
    assert f"tank/img/base.diverged-{job['id']}" in {r.name for r in rows}  # still kept aside
