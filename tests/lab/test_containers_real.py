"""A container moved with its state between two real-ZFS lab VMs (issue 15, outcome 4).

A real redis-server, one `zfleet worker` per VM on this machine (real backend and podman over
the VM's ssh prefix), a coordinator and the `zfleet container` commands. On VM 1 the image is a
dataset holding busybox (no registry is reachable from the lab); the container's PID 1 keeps a
random token and a counter in shell variables, in memory only, shows them in /tmp/state and
appends each count to /tmp/counts through a descriptor it opened once.

`zfleet container send --live --stop-source` pre-copies the datasets while it runs, freezes it
(a CRIU checkpoint into the checkpoint dataset), sends the increment and restores it on VM 2:
the token is the same there, the counter goes on from where it was frozen and the open
descriptor goes on appending, which only a restore of the process gives (a cold start draws a new
token and counts from 1). The report's figures are printed: bytes pre-copied while it ran, the
frozen time (the downtime) with its checkpoint and restore parts, and bytes moved while frozen.

Where CRIU cannot work in the VMs, `criu check`'s words are printed and the same command must
deliver a cold migration (stop, atomic snapshot, send, start): the files arrive, the process
starts afresh.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from protocol.errors import ContainerError
from tests.lab.remote import on_host
from tests.lab.test_fleet_sync_real import JOB_TIMEOUT
from tests.services.fleet import Fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.containers.podman import PodmanRuntime
from workers.containers.runtime import State
from workers.lab.lab import LabHost

pytestmark = pytest.mark.lab

REMOTE_STORE: Final = Path("/var/lib/zfleet/containers")  # app/cli/worker.py REMOTE_CONTAINERS
# PID 1: a token and a counter held in shell variables; /tmp/state shows them, and each count is
# appended to /tmp/counts through a descriptor opened once (fd 3), which stays open throughout
LOOP: Final = ("trap 'exit 0' TERM; exec 3>>/tmp/counts; "
               "t=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \\n'); i=0; "
               "while :; do i=$((i+1)); echo \"$t $i\" > /tmp/state; echo $i >&3; sleep 0.5; done")


def runtime(host: LabHost) -> PodmanRuntime:
    return PodmanRuntime(REMOTE_STORE / host.name, exec_prefix=host.exec_prefix, timeout=300)


def state(host: LabHost, name: str) -> tuple[str, int]:
    text = runtime(host).execute(name, ("/bin/busybox", "cat", "/tmp/state"), timeout=120)
    token, count = text.split()
    return token, int(count)


def wait_state(host: LabHost, name: str, above: int = 0, timeout: float = 180) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = state(host, name)
            if got[1] > above:
                return got
        except (ValueError, ContainerError):  # not started yet, or the file is being written
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, f"{name} on {host.name} does not count past {above}"
        time.sleep(1)


@pytest.fixture
def fleet(tmp_path: Path, lab_hosts: list[LabHost],
          redis_server: RedisServer) -> Iterator[tuple[Fleet, str, str]]:  # noqa: F811
    alpha = lab_hosts[0]
    tag = secrets.token_hex(3)
    name, image = f"ctr{tag}", f"tank/img{tag}/busybox"
    on_host(alpha, " && ".join([
        f"zfs create -p {image}", f"cd /{image}",
        "mkdir -p bin etc tmp proc sys dev home var/log/zfleet",
        "cp /bin/busybox bin/busybox", "ln -s busybox bin/sh", "zpool sync",
        f"zfs snapshot {image}@v1",
    ]))  # fmt: skip
    (tmp_path / "logs").mkdir()
    config = tmp_path / "fleet.toml"
    config.write_text("".join(f'[hosts.{h.name}]\nbackend = "real"\n'
                              f"exec_prefix = {json.dumps(list(h.exec_prefix))}\n\n"
                              for h in lab_hosts))  # fmt: skip
    f = Fleet(root=tmp_path, config=config, server=redis_server, hosts=[h.name for h in lab_hosts])
    try:
        for h in lab_hosts:
            f.start_worker(h.name)
        f.start_coordinator()
        yield f, name, image
    finally:
        f.close()
        for h in lab_hosts:
            runtime(h).remove(name)
            on_host(h, f"zfs destroy -r tank/zfleet-containers/{name} 2>/dev/null; "
                       f"zfs destroy -r tank/img{tag} 2>/dev/null; true")


def zc(fleet: Fleet, *args: str) -> dict[str, Any]:
    out = fleet.cli("container", args[0], "--config", str(fleet.config), "--json", *args[1:],
                    timeout=JOB_TIMEOUT)  # fmt: skip
    assert out.returncode == 0, (f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n"
                                 + fleet.logs())  # fmt: skip
    return dict(json.loads(out.stdout))


def test_a_container_moves_live_between_lab_vms_with_its_memory(
    fleet: tuple[Fleet, str, str], lab_hosts: list[LabHost],
) -> None:  # fmt: skip
    f, name, image = fleet
    alpha, beta = lab_hosts
    reason = runtime(alpha).checkpoint_support()
    print(f"\nCRIU in the lab VMs: {'works' if reason is None else reason}")
    job = zc(f, "create", name, "--image", f"{alpha.name}:{image}@v1", "--on", alpha.name,
             "--", "/bin/sh", "-c", LOOP)  # fmt: skip
    assert job["status"] == "succeeded", job
    token, before = wait_state(alpha, name, above=2)
    runtime(alpha).execute(name, ("/bin/sh", "-c", "echo made-on-vm1 > /etc/note"))

    job = zc(f, "send", name, "--to", beta.name, "--live", "--stop-source")
    report = job["report"]["container"]
    assert report["live"] and report["precopy_bytes"] > 0 and report["freeze_bytes"] > 0
    assert runtime(beta).inspect(name).state is State.RUNNING
    assert runtime(alpha).inspect(name).state is not State.RUNNING
    assert runtime(beta).execute(name, ("/bin/busybox", "cat", "/etc/note")) == "made-on-vm1\n"
    again, after = wait_state(beta, name)
    if reason is None:
        # the process's memory came along: the same token, the count going on past the freeze
        assert report["mode"] == "criu" and report["restored"] == "criu", report
        assert again == token and after >= before, (token, before, again, after)
        # and its open file: the same descriptor, still appending one count after another
        fd = runtime(beta).execute(name, ("/bin/busybox", "readlink", "/proc/1/fd/3"))
        assert fd.strip() == "/tmp/counts", fd
        later = wait_state(beta, name, above=after)[1]
        counts = runtime(beta).execute(name, ("/bin/busybox", "cat", "/tmp/counts")).split()
        assert counts[: later] == [str(i) for i in range(1, later + 1)], counts
    else:
        assert report["mode"] == "cold", report
        assert any("CRIU cannot work" in n for n in job["report"]["notes"]), job["report"]
        assert again != token  # a cold start: a new process, a new token
    print(f"lab live send ({report['mode']}): {report['precopy_bytes']:,} B pre-copied while "
          f"running; frozen (downtime) {report['frozen_ms']} ms = checkpoint "
          f"{report['checkpoint_ms']} ms + final increment + restore {report['restore_ms']} ms; "
          f"{report['freeze_bytes']:,} B moved while frozen; state before {token} {before}, "
          f"after {again} {after}")
