"""A returning old primary's worker fences its moved datasets before anything else runs there.

Real `zfleet worker` processes on a simulated fleet with a real redis-server: the role records
are written as a failover writes them (``RoleStore.hand_over``), then the worker starts. Its
datasets of the job turn read-only before its stream server starts and before its heartbeat
appears; a primary, a plain replica and aside datasets are left alone; a worker that cannot read
Redis does not start and changes nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.config import load_config
from coordinator.rolestate import RoleStore
from tests.integration.test_failover_fleet import HOSTS, JOB
from tests.integration.test_fleet_sync import build_source
from tests.services.fleet import Fleet, _kill, running_fleet, zfleet_binary
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)
from workers.roles import ROLE_PROP
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALPHA = ("tank/img", "tank/img/base", "tank/img/base/child", "tank/img/app1", "tank/img/app3")
ASIDE = "tank/img/base.diverged-earlier"


def readonly(backend: SimBackend, name: str) -> str | None:
    """``readonly``'s local value on ``name`` (None when inherited or default)."""
    got = backend.get(name, ["readonly"])["readonly"]
    return got.value if got.source == "local" else None


def events(fleet: Fleet, name: str) -> list[str]:
    lines = (fleet.root / "logs" / f"{name}.log").read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(str(json.loads(line).get("event")))
        except ValueError:
            continue
    return out


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as f:
        alpha = f.backend("alpha")
        build_source(alpha)
        alpha.clone("tank/img/base@b2", ASIDE)  # a rejoin's aside dataset, say
        gamma = f.backend("gamma")
        gamma.create_pool("bk")
        gamma.create("bk/img")
        gamma.create("bk/img/base")
        f.backend("beta").create_pool("bk")
        yield f


def test_old_primary_is_fenced_before_its_worker_serves(fleet: Fleet) -> None:
    alpha, gamma = fleet.backend("alpha"), fleet.backend("gamma")
    # epoch 0, alpha the primary: a worker start changes nothing
    fleet.start_worker("alpha")
    assert all(readonly(alpha, n) is None for n in ALPHA)
    _kill(fleet.workers.pop("alpha"), signal.SIGKILL)

    # what a failover from alpha to beta records; gamma still holds a dataset promoted in an
    # earlier epoch whose demotion never ran
    jc = load_config(fleet.config).jobs["img"]
    roles = RoleStore(fleet.client())
    bump = roles.hand_over(jc, seen=0, to="beta", request="failover-test", old_out="alpha")
    assert bump.won
    gamma.set("bk/img/base", {ROLE_PROP: "primary"})

    before = len(events(fleet, "worker-alpha"))
    fleet.start_worker("alpha")  # returns once the heartbeat is there
    for name in ALPHA:
        assert readonly(alpha, name) == "on", name
    assert readonly(alpha, ASIDE) is None  # kept aside by a rejoin: not the job's line
    seen = events(fleet, "worker-alpha")[before:]
    assert "worker.fenced" in seen and "stream_server.started" in seen, seen
    assert seen.index("worker.fenced") < seen.index("stream_server.started"), seen

    fleet.start_worker("gamma")
    assert readonly(gamma, "bk/img/base") == "on"
    assert readonly(gamma, "bk/img") is None  # a plain replica: nothing moved away from it

    # the new primary's worker restarts: nothing of it is fenced
    fleet.backend("beta").create("bk/img")
    fleet.start_worker("beta")
    assert readonly(fleet.backend("beta"), "bk/img") is None
    assert "worker.fenced" not in events(fleet, "worker-beta")


def test_a_worker_that_cannot_read_the_roles_does_not_start(fleet: Fleet) -> None:
    env = {**fleet.env, "ZFLEET_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = subprocess.run(
        [zfleet_binary(), "worker", "--host", "alpha", "--config", str(fleet.config)],
        env=env, capture_output=True, text=True, timeout=60, cwd=fleet.root, check=False,
    )  # fmt: skip
    assert out.returncode == 4, (out.returncode, out.stdout, out.stderr)
    assert "stream_server.started" not in out.stdout + out.stderr
    assert all(readonly(fleet.backend("alpha"), n) is None for n in ALPHA)
