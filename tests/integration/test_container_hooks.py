"""Containers stopped before their datasets are swapped and started after (coordinator/
containerhooks.py), on a whole simulated fleet with real podman: redis-server, `zfleet worker`
processes for alpha and beta, a coordinator, the `zfleet` CLI.

- switchover: a container runs on alpha on datasets the job `pool` replicates to beta (alpha's
  whole pool tank to beta's bk/tank: image, root clone, checkpoints, home). `zfleet switchover`
  stops it before alpha is demoted and starts it on beta after the promote, its spec renamed to
  beta's datasets; what it wrote on alpha is there, and the record says it runs on beta.
- rebase: the container's home is rebased onto a base; the container is stopped before the swap
  and started after it, and sees the same files.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import containers as records
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.conftest import need, need_binary
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.containers.podman import PodmanRuntime
from workers.containers.runtime import State
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = ("alpha", "beta")
IMAGE = "tank/images/busybox"
JOB = """
[jobs.pool]
source = "alpha:tank"
targets = ["beta:bk/tank"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.pool.failover]
candidates = ["beta"]
policy = "manual"
"""
LOOP = ("trap 'exit 0' TERM; echo boot $(hostname) >> /home/boot; i=0; "
        "while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done")  # fmt: skip


def busybox_image(backend: SimBackend) -> None:
    backend.create("tank/images", parents=True)
    backend.create(IMAGE)
    root = Path(backend.mountpoint(IMAGE) or "")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(need_binary("busybox"), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    backend.snapshot([f"{IMAGE}@v1"])


def runtime(fleet: Fleet, host: str) -> PodmanRuntime:
    return PodmanRuntime(fleet.root / "data" / "containers" / host)


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    need(shutil.which("podman") is not None, "podman (scripts/system-deps containers)")
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as f:
        alpha = f.backend("alpha")
        alpha.create_pool("tank")
        busybox_image(alpha)
        alpha.create("tank/home/web", parents=True)
        Path(alpha.mountpoint("tank/home/web") or "", "notes.txt").write_text("my notes\n")
        alpha.create("tank/base")
        alpha.snapshot(["tank/base@b1"])
        f.backend("beta").create_pool("bk")
        for host in HOSTS:
            f.start_worker(host)
        f.start_coordinator()
        try:
            yield f
        finally:
            for host in HOSTS:
                runtime(f, host).remove("web")


def cli(fleet: Fleet, command: str, *args: str) -> dict[str, Any]:
    # the options before the arguments: a COMMAND after `--` takes everything that follows
    out = fleet.cli(*command.split(), "--config", str(fleet.config), "--json", *args,
                    timeout=300)  # fmt: skip
    assert out.returncode == 0, (f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n"
                                 + fleet.logs())  # fmt: skip
    return dict(json.loads(out.stdout)) if out.stdout.strip().startswith("{") else {
        "list": json.loads(out.stdout)}


def read(fleet: Fleet, host: str, path: str) -> str:
    return runtime(fleet, host).execute("web", ("/bin/busybox", "cat", path))


def wait_counting(fleet: Fleet, host: str) -> None:
    deadline = time.monotonic() + 30
    while "count" not in runtime(fleet, host).execute("web", ("/bin/busybox", "ls", "/tmp")):
        assert time.monotonic() < deadline, f"web on {host} does not count"
        time.sleep(0.2)


def create(fleet: Fleet) -> None:
    job = cli(fleet, "container create", "web", "--image", f"alpha:{IMAGE}@v1", "--home",
              "tank/home/web", "--on", "alpha", "--", "/bin/sh", "-c", LOOP)  # fmt: skip
    assert job["status"] == "succeeded", job
    wait_counting(fleet, "alpha")


def steps(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(s["id"]): s for s in job["step_list"]}


def test_switchover_stops_the_container_before_the_demote_and_starts_it_on_the_new_primary(
    fleet: Fleet,
) -> None:
    create(fleet)
    runtime(fleet, "alpha").execute("web", ("/bin/sh", "-c", "echo made-on-alpha > /etc/state"))
    store = JobStore(fleet.client())
    first = wait_job(store, str(cli(fleet, "sync", "pool")["id"]), timeout=120)
    assert first.status == engine.JOB_SUCCEEDED, f"{first.error}\n{fleet.logs()}"

    out = cli(fleet, "switchover", "pool", "--to", "beta", "--wait")
    (job,) = out["details"]
    assert job["status"] == "succeeded", (job, fleet.logs())
    by_id = steps(job)
    stop, start = by_id["container-stop-alpha-web"], by_id["container-start-beta-web"]
    assert stop["status"] == start["status"] == "succeeded"
    # stopped before alpha went read-only, started after beta became writable
    assert "demote-old" in by_id and stop["id"] in by_id["demote-old"]["deps"]
    assert "promote-new" in start["deps"]
    assert job["report"]["containers"] == {"stopped": ["web"], "started": ["web"]}

    assert runtime(fleet, "alpha").inspect("web").state is State.STOPPED
    assert runtime(fleet, "beta").inspect("web").state is State.RUNNING
    wait_counting(fleet, "beta")
    assert read(fleet, "beta", "/etc/state") == "made-on-alpha\n"  # in the root clone
    assert read(fleet, "beta", "/home/notes.txt") == "my notes\n"
    assert read(fleet, "beta", "/home/boot").splitlines() == ["boot web", "boot web"]
    beta = fleet.backend("beta")
    assert beta.get("bk/tank/zfleet-containers/web/root", ["origin"])["origin"].value == (
        "bk/tank/images/busybox@v1")  # still a clone of the image, under beta's names
    with fleet.client() as c:
        rec = records.get(c, "web")
        assert rec is not None and (rec.host, rec.state, rec.copies) == ("beta", "running",
                                                                          ("alpha",))
        assert rec.spec.root == "bk/tank/zfleet-containers/web/root"
        assert [m.dataset for m in rec.spec.mounts] == ["bk/tank/home/web"]
    listed = cli(fleet, "container ls", "--uses", "beta:bk/tank/home")["list"]
    assert [r["name"] for r in listed] == ["web"]


def test_rebase_stops_the_container_around_the_swap_of_its_home(fleet: Fleet) -> None:
    create(fleet)
    out = cli(fleet, "rebase", "alpha:tank/home/web", "--onto", "alpha:tank/base@b1")
    job = out.get("details", [out])[0]
    assert job["status"] == "succeeded", (job, fleet.logs())
    by_id = steps(job)
    stop, start = by_id["container-stop-alpha-web"], by_id["container-start-alpha-web"]
    (rebase,) = [s for s in by_id.values() if s["kind"] == "rebase"]
    assert stop["id"] in rebase["deps"] and rebase["id"] in start["deps"]
    assert stop["result"]["stopped"] and start["result"]["started"]
    # the job's times are kept to the millisecond or so: compare them at that
    assert round(float(stop["finished_at"]), 3) <= round(float(rebase["started_at"]), 3)
    assert round(float(rebase["finished_at"]), 3) <= round(float(start["started_at"]), 3)
    assert runtime(fleet, "alpha").inspect("web").state is State.RUNNING
    wait_counting(fleet, "alpha")
    assert read(fleet, "alpha", "/home/notes.txt") == "my notes\n"
    assert read(fleet, "alpha", "/home/boot").splitlines() == ["boot web", "boot web"]
    assert fleet.backend("alpha").get("tank/home/web", ["origin"])["origin"].value == (
        "tank/base@b1")
    with fleet.client() as c:
        rec = records.get(c, "web")
        assert rec is not None and (rec.host, rec.state) == ("alpha", "running")
