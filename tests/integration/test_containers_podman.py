"""Containers on datasets with real podman (runc, --rootfs on a sim dataset clone).

Two simulated hosts on one machine, each with its own podman store. The step handlers run as a
worker runs them; the datasets move between the hosts as real send streams (the fleet test,
test_containers_fleet.py, moves them through the coordinator and the data plane instead).

- cold migration: a container whose root is a clone of a busybox image, with home and log
  datasets, is stopped on alpha, its datasets snapshotted atomically and sent to beta (the root
  as an incremental from the image, so it arrives as a clone), and started there on them;
  files written into the root, home and log are all there, and the down time is measured.
- live checkpoint/restore with CRIU: skipped, with CRIU's own error as the reason, on hosts
  where ``criu check`` fails (kernel 6.x with CRIU 3.17: "vdso: Unexpected rt vDSO area
  bounds"); docs/containers.md says so. That is the host's limit, not a missing service, so it
  skips under CI=true as well.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol.containersteps import (
    ContainerCheckpointArgs,
    ContainerCreateArgs,
    ContainerMount,
    ContainerPrepareArgs,
    ContainerRestoreArgs,
    ContainerSpec,
    ContainerStopArgs,
)
from protocol.zfs import ReceiveSpec, SendSpec
from tests.conftest import need, need_binary
from workers.containers.podman import PodmanRuntime
from workers.containers.runtime import State
from workers.steps import StepContext, run_step
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IMAGE = "tank/images/busybox"
# PID 1 of the container: counts in memory, logs each boot, leaves on SIGTERM at once
LOOP = ("trap 'exit 0' TERM; echo boot $(hostname) >> /var/log/app/boot; i=0; "
        "while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done")  # fmt: skip


@dataclass
class Host:
    name: str
    backend: SimBackend
    runtime: PodmanRuntime

    def ctx(self) -> StepContext:
        return StepContext(host=self.name, backend=self.backend,
                           extra={"containers": self.runtime})  # fmt: skip

    def files(self, dataset: str) -> Path:
        mp = self.backend.mountpoint(dataset)
        assert mp is not None
        return Path(mp)


def busybox_image(backend: SimBackend) -> str:
    """A minimal image: the static busybox and the directories a root needs."""
    backend.create("tank/images", parents=True)
    backend.create(IMAGE)
    root = Path(backend.mountpoint(IMAGE) or "")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "var/log/app", "home"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(need_binary("busybox"), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc" / "image-version").write_text("v1\n")
    backend.snapshot([f"{IMAGE}@v1"])
    return f"{IMAGE}@v1"


def spec(name: str) -> ContainerSpec:
    return ContainerSpec(
        name=name, image=f"{IMAGE}@v1", root=f"tank/zfleet-containers/{name}/root",
        checkpoints=f"tank/zfleet-containers/{name}/checkpoints",
        mounts=(ContainerMount("home", f"tank/home/{name}", "/home"),
                ContainerMount("log", f"tank/log/{name}", "/var/log/app")),
        command=("/bin/sh", "-c", LOOP),
    )  # fmt: skip


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Host]]:
    need(shutil.which("podman") is not None, "podman (scripts/system-deps containers)")
    out = {}
    for name in ("alpha", "beta"):
        be = SimBackend(tmp_path / name)
        be.create_pool("tank")
        out[name] = Host(name, be, PodmanRuntime(tmp_path / f"podman-{name}"))
    busybox_image(out["alpha"].backend)
    for ds in ("tank/home/web", "tank/log/web"):
        out["alpha"].backend.create(ds, parents=True)
    (out["alpha"].files("tank/home/web") / "notes.txt").write_text("my notes\n")
    try:
        yield out
    finally:
        for h in out.values():
            h.runtime.remove("web")


def wait_for(fn: object, timeout: float = 20.0) -> None:
    assert callable(fn)
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def move(src: SimBackend, dst: SimBackend, send: SendSpec, recv: ReceiveSpec) -> int:
    """One send stream from src received on dst; its size in bytes."""
    stream = src.send(send)
    sink = dst.receive(recv)
    size = 0
    try:
        while chunk := stream.read(1 << 20):
            sink.write(chunk)
            size += len(chunk)
    finally:
        stream.close()
    sink.finish()
    return size


def counter(h: Host, name: str) -> int:
    return int(h.runtime.execute(name, ("/bin/busybox", "cat", "/tmp/count")).strip() or 0)


def test_cold_migration_between_hosts(hosts: dict[str, Host]) -> None:
    alpha, beta = hosts["alpha"], hosts["beta"]
    s = spec("web")
    run_step(alpha.ctx(), ContainerCreateArgs(spec=s))
    assert alpha.runtime.inspect("web").state is State.RUNNING
    assert alpha.backend.get(s.root, ["origin"])["origin"].value == s.image
    wait_for(lambda: counter(alpha, "web") > 2)
    alpha.runtime.execute("web", ("/bin/sh", "-c", "echo made-in-alpha > /etc/state"))
    assert (alpha.files(s.root) / "etc" / "state").read_text() == "made-in-alpha\n"

    down_from = time.monotonic()
    done = run_step(alpha.ctx(), ContainerCheckpointArgs(spec=s, snapshot="m1", cold=True,
                                                         leave_running=False))  # fmt: skip
    assert done["mode"] == "cold" and done["was_running"] and not done["resumed"]
    assert alpha.runtime.inspect("web").state is State.STOPPED
    again = run_step(alpha.ctx(), ContainerCheckpointArgs(spec=s, snapshot="m1", cold=True,
                                                          leave_running=False))  # fmt: skip
    assert again["existed"] and not again["resumed"]  # a second attempt changes nothing
    run_step(beta.ctx(), ContainerPrepareArgs(datasets=(
        "tank/images", "tank/zfleet-containers/web", "tank/home", "tank/log")))
    sizes = {"image": move(alpha.backend, beta.backend, SendSpec(snapshot=s.image),
                           ReceiveSpec(target=IMAGE, no_mount=True))}  # fmt: skip
    sizes["root"] = move(alpha.backend, beta.backend,
                         SendSpec(snapshot=f"{s.root}@m1", from_snap=s.image),
                         ReceiveSpec(target=s.root, origin=s.image, no_mount=True))  # fmt: skip
    for kind, ds in (("checkpoints", s.checkpoints), *((m.kind, m.dataset) for m in s.mounts)):
        sizes[kind] = move(alpha.backend, beta.backend, SendSpec(snapshot=f"{ds}@m1"),
                           ReceiveSpec(target=ds, no_mount=True))  # fmt: skip
    out = run_step(beta.ctx(), ContainerRestoreArgs(spec=s, snapshot="m1", rollback=False))
    down = time.monotonic() - down_from
    assert out["mode"] == "cold"
    assert beta.runtime.inspect("web").state is State.RUNNING
    wait_for(lambda: counter(beta, "web") > 0)

    # the root arrived as a clone of the image: its stream holds only what the container wrote
    assert beta.backend.get(s.root, ["origin"])["origin"].value == s.image
    assert sizes["root"] < sizes["image"] // 20
    read = beta.runtime.execute
    assert read("web", ("/bin/busybox", "cat", "/etc/state")) == "made-in-alpha\n"
    assert read("web", ("/bin/busybox", "cat", "/home/notes.txt")) == "my notes\n"
    boots = read("web", ("/bin/busybox", "cat", "/var/log/app/boot")).splitlines()
    assert boots == ["boot web", "boot web"]  # once on alpha, once on beta, one log
    # the source is stopped, not gone: a cold send with --stop-source leaves it so
    assert alpha.runtime.inspect("web").state is State.STOPPED
    run_step(alpha.ctx(), ContainerStopArgs(name="web", remove=True))
    assert not alpha.runtime.inspect("web").exists
    print(f"\ncold migration: down {down:.2f} s; streams "
          + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()))


def test_checkpoint_and_restore_with_criu(hosts: dict[str, Host]) -> None:
    alpha = hosts["alpha"]
    reason = alpha.runtime.checkpoint_support()
    if reason is not None:
        # the host's kernel and CRIU cannot work together: not a missing service (see module)
        pytest.skip(f"CRIU cannot checkpoint on this host: {reason}")
    s = spec("web")
    run_step(alpha.ctx(), ContainerCreateArgs(spec=s))
    wait_for(lambda: counter(alpha, "web") > 5)
    done = run_step(alpha.ctx(), ContainerCheckpointArgs(spec=s, snapshot="c1"))
    assert done["mode"] == "criu" and done["resumed"]
    at_checkpoint = int((alpha.files(s.checkpoints) / "c1.json").stat().st_size > 0)
    assert at_checkpoint
    wait_for(lambda: counter(alpha, "web") > 20)
    run_step(alpha.ctx(), ContainerRestoreArgs(spec=s, snapshot="c1"))
    # the counter lives only in memory: restored from the image it goes on from the checkpoint,
    # a cold start would begin again at 1
    value = counter(alpha, "web")
    assert 5 < value < 20
