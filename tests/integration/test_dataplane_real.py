"""The data plane over real `zfs send`/`zfs receive -s` child processes.

Both hosts use the real backend (argv, pipes, process groups); `zfs` there is the front end over
a simulated pool (tests/services/dataplane.py: zfs_shims), so the receive's resume token, the
`send -t` that follows, and the kill of a cancelled child are all real process work.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.grants import new_grant, sign_grant
from tests.services.dataplane import faulty_proxy, live_children, zfs_shims
from workers.dataplane import (
    LinkOptions,
    Outcome,
    PeerTarget,
    SendOptions,
    StreamServer,
    push_transfer,
)
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.real import RealBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = b"fleet-secret-for-real-tests-0123"
# every `zfs` here is a Python process: on a loaded machine one can take seconds to start
OPTIONS = SendOptions(
    chunk_size=128 * 1024, link=LinkOptions(heartbeat_interval=0.5, stall_timeout=30.0)
)


def _host(tmp_path: Path, name: str) -> RealBackend:
    env = zfs_shims(tmp_path / name / "bin", tmp_path / name / "pools")
    subprocess.run(["zpool", "create", "tank"], env=env, check=True, timeout=60)
    return RealBackend(env=env, timeout=60)


def _files(backend: RealBackend, dataset: str) -> dict[str, bytes]:
    root = Path(backend.mountpoint(dataset) or "")
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _eventually(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return bool(condition())


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[RealBackend, RealBackend, StreamServer]]:
    alpha, beta = _host(tmp_path, "alpha"), _host(tmp_path, "beta")
    alpha.create("tank/src")
    root = Path(alpha.mountpoint("tank/src") or "")
    for i in range(3):
        (root / f"f{i}.bin").write_bytes(os.urandom(800_000))
    alpha.snapshot(["tank/src@s1"])
    server = StreamServer(
        beta,
        host="beta",
        bind=("127.0.0.1", 0),
        secret=SECRET,
        stall_timeout=30.0,
        heartbeat_interval=0.5,
    )
    with server:
        yield alpha, beta, server


def _target(alpha: RealBackend, server: StreamServer, address=None) -> PeerTarget:
    toguid = int(alpha.get("tank/src@s1", ["guid"])["guid"].value)
    grant = new_grant(
        transfer_id=uuid.uuid4().hex,
        host="beta",
        dataset="tank/dst",
        fromguid=0,
        toguid=toguid,
        ttl=300,
    )
    return PeerTarget(
        "beta", address or server.address, ReceiveSpec("tank/dst"), sign_grant(SECRET, grant)
    )


def test_cut_then_resumed_through_real_processes(hosts) -> None:
    alpha, beta, server = hosts
    total = 3 * 800_000  # about: the files are random, so the stream is about their size
    target = _target(alpha, server)
    with faulty_proxy(server.address, cut_after=total // 2) as proxy:
        cut = push_transfer(
            alpha,
            SendSpec("tank/src@s1"),
            [PeerTarget("beta", proxy.address, target.receive, target.grant)],
            options=OPTIONS,
        )
    assert cut.targets[0].outcome is Outcome.FAILED
    assert _eventually(lambda: beta.resume_token("tank/dst") is not None)
    again = push_transfer(alpha, SendSpec("tank/src@s1"), [target], options=OPTIONS)
    [result] = again.targets
    assert result.outcome is Outcome.OK and result.resumed, result
    assert result.stream_bytes < total * 0.8
    assert _files(beta, "tank/dst") == _files(alpha, "tank/src")


def test_cancel_kills_and_reaps_both_children_and_keeps_partial_state(hosts) -> None:
    alpha, beta, server = hosts
    cancel = threading.Event()

    def on_progress(event) -> None:
        if event.stream_bytes >= 600_000:
            cancel.set()

    report = push_transfer(
        alpha,
        SendSpec("tank/src@s1"),
        [_target(alpha, server)],
        cancel=cancel,
        progress=on_progress,
        bwlimit=400_000,
        options=SendOptions(chunk_size=128 * 1024, threads=1, link=OPTIONS.link),
    )
    assert report.targets[0].outcome is Outcome.CANCELLED
    # zfs send (this side) and zfs receive (the server's) are gone, not left as zombies
    assert _eventually(lambda: live_children() == [])
    assert _eventually(lambda: beta.resume_token("tank/dst") is not None)
    assert not beta.exists("tank/dst@s1")
