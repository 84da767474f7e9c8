"""bench/kills.py runs short: each victim (source worker, target worker, coordinator, Redis)
SIGKILLed twice at a seeded random point of a sync job with full, incremental and clone sends to
two targets, started again, and the job must end as a job without a fault would: succeeded, no
job lost from Redis, replicas equal to the source (guids, origins, files of every snapshot),
nothing the source lacks on a target, one snapshot per dataset on the source, no holds or
partial receive state left. The figure is ``python bench/kills.py --kills 20``.
"""

from __future__ import annotations

import pytest

from bench import kills
from tests.conftest import need
from tests.services.redis import redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]  # ~2 min


def test_every_victim_killed_mid_job_the_job_still_ends_right() -> None:
    need(redis_binary() is not None, "redis-server")
    out = kills.run(2, seed=5, layer=256 * 1024, timeout=90)
    bad = [(r["victim"], r["run"], r["problems"]) for r in out["runs"] if r["problems"]]
    assert not bad, bad
    assert list(out["victims"]) == list(kills.VICTIMS)
    for victim, fig in out["victims"].items():
        assert (fig["runs"], fig["succeeded"]) == (2, 2), (victim, fig)
        assert all(fig[kind] == 0 for kind in kills.PROBLEMS), (victim, fig)
