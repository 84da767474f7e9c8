"""`zfleet container` against a real fleet: redis-server, `zfleet worker` processes for alpha, beta
and gamma (gamma without podman on its PATH), a coordinator, and real podman on the sim datasets.

One story: create a container on alpha from a busybox image snapshot with home and log datasets
(recorded in Redis, found by dataset); a CRIU checkpoint is refused in one line where CRIU cannot
work, a cold one is taken; send it cold to beta with --stop-source (the root arrives as a clone,
the files with it; down time and bytes reported); send it back --live (pre-copy while it runs,
then the freeze moves only the increment; cold with a note where CRIU cannot work); restore the
cold checkpoint; and a host without podman says so with exit code 7.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli.common import EXIT_NO_RUNTIME
from bus import containers as records
from tests.conftest import need, need_binary
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.containers.podman import PodmanRuntime
from workers.containers.runtime import State
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = ("alpha", "beta", "gamma")
IMAGE = "tank/images/busybox"
LOOP = ("trap 'exit 0' TERM; echo boot $(hostname) >> /var/log/zfleet/boot; i=0; "
        "while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done")  # fmt: skip


def busybox_image(backend: SimBackend) -> None:
    backend.create("tank/images", parents=True)
    backend.create(IMAGE)
    root = Path(backend.mountpoint(IMAGE) or "")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "var/log/zfleet", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(need_binary("busybox"), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    backend.snapshot([f"{IMAGE}@v1"])


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    need(shutil.which("podman") is not None, "podman (scripts/system-deps containers)")
    with running_fleet(tmp_path, redis_server, HOSTS, "") as f:
        alpha = f.backend("alpha")
        alpha.create_pool("tank")
        busybox_image(alpha)
        alpha.create("tank/home/web", parents=True)
        alpha.create("tank/log/web", parents=True)
        Path(alpha.mountpoint("tank/home/web") or "", "notes.txt").write_text("my notes\n")
        for host in ("beta", "gamma"):
            f.backend(host).create_pool("tank")
        f.start_worker("alpha")
        f.start_worker("beta")
        # gamma's worker finds no podman: only the venv's own programs are on its PATH
        f.start_worker("gamma", PATH=str(Path(sys.executable).parent))
        f.start_coordinator()
        try:
            yield f
        finally:
            for host in HOSTS:
                runtime(f, host).remove("web")


def runtime(fleet: Fleet, host: str) -> PodmanRuntime:
    return PodmanRuntime(fleet.root / "data" / "containers" / host)


def zc(fleet: Fleet, *args: str, code: int = 0) -> tuple[dict[str, Any], str]:
    # the options before the arguments: a COMMAND after `--` takes everything that follows
    out = fleet.cli("container", args[0], "--config", str(fleet.config), "--json", *args[1:],
                    timeout=300)  # fmt: skip
    assert out.returncode == code, (f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n"
                                    + fleet.logs())  # fmt: skip
    return (dict(json.loads(out.stdout)) if out.stdout.strip() else {}), out.stderr


def read(fleet: Fleet, host: str, path: str) -> str:
    return runtime(fleet, host).execute("web", ("/bin/busybox", "cat", path))


def wait_running(fleet: Fleet, host: str) -> None:
    deadline = time.monotonic() + 30
    while "count" not in runtime(fleet, host).execute("web", ("/bin/busybox", "ls", "/tmp")):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_container_story(fleet: Fleet) -> None:
    job, _ = zc(fleet, "create", "web", "--image", f"alpha:{IMAGE}@v1", "--home",
                "tank/home/web", "--log", "alpha:tank/log/web", "--on", "alpha", "--",
                "/bin/sh", "-c", LOOP)  # fmt: skip
    assert job["status"] == "succeeded"
    alpha, beta = fleet.backend("alpha"), fleet.backend("beta")
    root = "tank/zfleet-containers/web/root"
    assert alpha.get(root, ["origin"])["origin"].value == f"{IMAGE}@v1"
    assert runtime(fleet, "alpha").inspect("web").state is State.RUNNING
    with fleet.client() as c:
        rec = records.get(c, "web")
        assert rec is not None and rec.host == "alpha"
        assert [r.name for r in records.using_dataset(c, "alpha", "tank/home")] == ["web"]
        assert records.using_dataset(c, "beta", "tank/home") == []
    listed = fleet.cli("container", "ls", "--uses", "alpha:tank/log", "--json", "--config",
                       str(fleet.config))  # fmt: skip
    assert [r["name"] for r in json.loads(listed.stdout)] == ["web"], listed.stderr
    wait_running(fleet, "alpha")
    runtime(fleet, "alpha").execute("web", ("/bin/sh", "-c", "echo made-on-alpha > /etc/state"))

    # a CRIU checkpoint: refused in one line where CRIU cannot work, else taken
    reason = runtime(fleet, "alpha").checkpoint_support()
    if reason is not None:
        _, err = zc(fleet, "checkpoint", "web", code=1)
        assert err.count("\n") == 1 and "CRIU cannot checkpoint web on alpha" in err
        assert "vdso" in err or reason.split(";")[0] in err
    job, _ = zc(fleet, "checkpoint", "web", "--as", "before-send", "--cold")
    assert job["status"] == "succeeded"
    assert alpha.exists("tank/home/web@before-send") and alpha.exists(f"{root}@before-send")
    assert runtime(fleet, "alpha").inspect("web").state is State.RUNNING  # started again

    # cold send to beta, the original stopped
    job, _ = zc(fleet, "send", "web", "--to", "beta", "--stop-source")
    cold = job["report"]["container"]
    assert cold["mode"] == "cold" and cold["restored"] == "cold"
    assert beta.get(root, ["origin"])["origin"].value == f"{IMAGE}@v1"  # a clone there too
    assert runtime(fleet, "beta").inspect("web").state is State.RUNNING
    assert runtime(fleet, "alpha").inspect("web").state is State.STOPPED
    assert read(fleet, "beta", "/etc/state") == "made-on-alpha\n"
    assert read(fleet, "beta", "/home/notes.txt") == "my notes\n"
    assert read(fleet, "beta", "/var/log/zfleet/boot").splitlines().count("boot web") >= 2
    roots = [s for s in job["step_list"] if s["kind"] == "transfer"]
    # --json prints each step's message as its repr
    image_moved = sum(int(s["result"].get("bytes") or 0) for s in roots
                      if f"source='{IMAGE}'" in str(s["args"]))  # fmt: skip
    assert cold["freeze_bytes"] > 0 and image_moved > 2_000_000
    with fleet.client() as c:
        rec = records.get(c, "web")
        assert rec is not None and rec.host == "beta" and "send-" in rec.checkpoints[-1].name
    wait_running(fleet, "beta")
    runtime(fleet, "beta").execute("web", ("/bin/sh", "-c", "echo made-on-beta > /etc/state"))

    # live back to alpha: pre-copy while it runs; the image is there, so only increments move
    job, _ = zc(fleet, "send", "web", "--to", "alpha", "--live", "--stop-source")
    live = job["report"]["container"]
    assert live["live"] and live["precopy_bytes"] > 0
    assert live["freeze_bytes"] < cold["freeze_bytes"]  # no image, only what changed since
    if reason is not None:
        assert live["mode"] == "cold"
        assert any("CRIU cannot work on beta" in n for n in job["report"]["notes"])
    assert runtime(fleet, "alpha").inspect("web").state is State.RUNNING
    assert read(fleet, "alpha", "/etc/state") == "made-on-beta\n"
    print(f"\ncold send: frozen {cold['frozen_ms']} ms, {cold['freeze_bytes']:,} B "
          f"(image {image_moved:,} B); live back: frozen {live['frozen_ms']} ms, "
          f"{live['freeze_bytes']:,} B while frozen, {live['precopy_bytes']:,} B pre-copied")

    # restore the cold checkpoint taken on alpha before the first send
    job, _ = zc(fleet, "restore", "web@before-send")
    assert job["status"] == "succeeded"
    wait_running(fleet, "alpha")
    assert read(fleet, "alpha", "/etc/state") == "made-on-alpha\n"
    zc(fleet, "restore", "web@no-such", code=2)

    # a host without podman: one line, exit code 7, nothing created
    gamma = fleet.backend("gamma")
    busybox_image(gamma)
    _, err = zc(fleet, "create", "db", "--image", f"gamma:{IMAGE}@v1", "--on", "gamma",
                code=EXIT_NO_RUNTIME)  # fmt: skip
    assert err.count("\n") == 1 and "gamma has no container runtime" in err
    assert "podman is not installed" in err
    assert not gamma.exists("tank/zfleet-containers/db/root")
