"""Transfers between two simulated ZFS hosts over the data plane: resume, fan-out, cancel.

Each host is a SimBackend (real OpenZFS stream format, resumable receive with tokens); the
source sends through push_transfer, the target's StreamServer applies with `zfs receive -s`.
A TCP proxy on 127.0.0.1 cuts the first connection after N bytes; the retry must move only
about the rest, and the target's files must equal the source's.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.grants import new_grant, sign_grant
from tests.services.dataplane import faulty_proxy
from workers.dataplane.sender import SendOptions, push_transfer
from workers.dataplane.server import StreamServer
from workers.dataplane.sinks import LinkOptions
from workers.dataplane.targets import Outcome, PeerTarget
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration

SECRET = b"fleet-secret-for-sim-tests-012345"
OPTIONS = SendOptions(
    chunk_size=128 * 1024, link=LinkOptions(heartbeat_interval=0.2, stall_timeout=3.0)
)
FILE_SIZES = (1_500_000, 1_200_000, 900_000, 300_000)  # random bytes: wire ~ stream bytes


def _guid(backend: SimBackend, name: str) -> int:
    return int(backend.get(name, ["guid"])["guid"].value)


def _token(backend: SimBackend, dataset: str) -> str | None:
    if not backend.exists(dataset):
        return None
    rows = backend.list(dataset, recursive=False, types=(ObjType.FILESYSTEM, ObjType.VOLUME))
    return next((r.receive_resume_token for r in rows if r.name == dataset), None)


def _files(backend: SimBackend, dataset: str) -> dict[str, bytes]:
    root = Path(backend.mountpoint(dataset) or "")
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def alpha(tmp_path: Path) -> Iterator[SimBackend]:
    backend = SimBackend(tmp_path / "alpha")
    backend.create_pool("tank")
    backend.create("tank/src")
    root = Path(backend.mountpoint("tank/src") or "")
    for i, size in enumerate(FILE_SIZES):
        (root / f"file{i}.bin").write_bytes(os.urandom(size))
    (root / "notes.txt").write_text("hello fleet\n" * 1000)
    backend.snapshot(["tank/src@s1"])
    yield backend


@pytest.fixture
def beta(tmp_path: Path) -> Iterator[tuple[SimBackend, StreamServer]]:
    backend = SimBackend(tmp_path / "beta")
    backend.create_pool("tank")
    server = StreamServer(
        backend,
        host="beta",
        bind=("127.0.0.1", 0),
        secret=SECRET,
        stall_timeout=3.0,
        heartbeat_interval=0.2,
    )
    with server:
        yield backend, server


def _target(
    source: SimBackend,
    server: StreamServer,
    dataset: str,
    *,
    snap: str = "tank/src@s1",
    from_snap: str | None = None,
    address: tuple[str, int] | None = None,
) -> PeerTarget:
    grant = new_grant(
        transfer_id=uuid.uuid4().hex,
        host="beta",
        dataset=dataset,
        fromguid=_guid(source, from_snap) if from_snap else 0,
        toguid=_guid(source, snap),
        ttl=120,
    )
    return PeerTarget(
        "beta", address or server.address, ReceiveSpec(dataset), sign_grant(SECRET, grant)
    )


def test_a_cut_transfer_resumes_with_only_the_rest(alpha, beta) -> None:
    dst, server = beta
    total = alpha.estimate(SendSpec("tank/src@s1"))
    target = _target(alpha, server, "tank/dst")
    with faulty_proxy(server.address, cut_after=total // 2) as proxy:
        cut = push_transfer(
            alpha,
            SendSpec("tank/src@s1"),
            [PeerTarget(target.host, proxy.address, target.receive, target.grant)],
            options=OPTIONS,
        )
    [first] = cut.targets
    assert first.outcome is Outcome.FAILED and first.retryable
    deadline = time.monotonic() + 30
    while _token(dst, "tank/dst") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _token(dst, "tank/dst") is not None  # partial state kept for the resume

    again = push_transfer(alpha, SendSpec("tank/src@s1"), [target], options=OPTIONS)
    [second] = again.targets
    assert second.outcome is Outcome.OK, second
    assert second.resumed and second.resume_offset is not None
    assert 0 < second.resume_offset < total
    remaining = total - second.resume_offset
    # the retry moves about the rest: the remaining bytes plus a resumed BEGIN
    assert remaining <= second.stream_bytes <= remaining + 64 * 1024
    assert second.stream_bytes < total * 0.75
    assert _files(dst, "tank/dst") == _files(alpha, "tank/src")
    assert _guid(dst, "tank/dst@s1") == _guid(alpha, "tank/src@s1")
    assert _token(dst, "tank/dst") is None


def test_fan_out_to_two_hosts_and_the_cut_one_resumes_alone(alpha, beta) -> None:
    dst, server = beta
    total = alpha.estimate(SendSpec("tank/src@s1"))
    good = _target(alpha, server, "tank/one")
    flaky = _target(alpha, server, "tank/two")
    with faulty_proxy(server.address, cut_after=total // 3) as proxy:
        report = push_transfer(
            alpha,
            SendSpec("tank/src@s1"),
            [good, PeerTarget(flaky.host, proxy.address, flaky.receive, flaky.grant)],
            options=OPTIONS,
        )
    assert [t.outcome for t in report.targets] == [Outcome.OK, Outcome.FAILED]
    assert _files(dst, "tank/one") == _files(alpha, "tank/src")
    deadline = time.monotonic() + 30
    while _token(dst, "tank/two") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    retry = push_transfer(alpha, SendSpec("tank/src@s1"), [flaky], options=OPTIONS)
    assert retry.ok and retry.targets[0].resumed
    assert retry.targets[0].stream_bytes < total
    assert _files(dst, "tank/two") == _files(alpha, "tank/src")


def test_cancel_keeps_partial_state_and_a_later_push_finishes(alpha, beta) -> None:
    dst, server = beta
    target = _target(alpha, server, "tank/dst")
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(event) -> None:
        seen.append(event.stream_bytes)
        if event.stream_bytes >= 1_000_000:
            cancel.set()

    slow = SendOptions(chunk_size=128 * 1024, threads=1, link=OPTIONS.link)
    report = push_transfer(
        alpha,
        SendSpec("tank/src@s1"),
        [target],
        cancel=cancel,
        progress=on_progress,
        bwlimit=500_000,  # slow enough that the cancel lands mid-stream
        options=slow,
    )
    assert report.targets[0].outcome is Outcome.CANCELLED
    assert not dst.exists("tank/dst@s1")
    deadline = time.monotonic() + 30
    while _token(dst, "tank/dst") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _token(dst, "tank/dst") is not None
    finish = push_transfer(alpha, SendSpec("tank/src@s1"), [target], options=OPTIONS)
    assert finish.ok and finish.targets[0].resumed
    assert _files(dst, "tank/dst") == _files(alpha, "tank/src")


def test_incremental_after_full_and_a_mismatched_grant_applies_nothing(alpha, beta) -> None:
    dst, server = beta
    assert push_transfer(
        alpha, SendSpec("tank/src@s1"), [_target(alpha, server, "tank/dst")], options=OPTIONS
    ).ok
    root = Path(alpha.mountpoint("tank/src") or "")
    (root / "notes.txt").write_text("changed\n")
    alpha.snapshot(["tank/src@s2"])
    incremental = SendSpec("tank/src@s2", from_snap="tank/src@s1")
    # a grant for the full s2 stream does not let an incremental in (fromguid differs)
    wrong = _target(alpha, server, "tank/dst", snap="tank/src@s2")
    refused = push_transfer(alpha, incremental, [wrong], options=OPTIONS)
    assert refused.targets[0].error_type == "GrantError"
    assert not dst.exists("tank/dst@s2")
    right = _target(alpha, server, "tank/dst", snap="tank/src@s2", from_snap="tank/src@s1")
    report = push_transfer(alpha, incremental, [right], options=OPTIONS)
    assert report.ok, report
    assert _files(dst, "tank/dst") == _files(alpha, "tank/src")
    assert _guid(dst, "tank/dst@s2") == _guid(alpha, "tank/src@s2")


def test_a_server_restart_mid_stream_is_resumed_by_the_next_push(alpha, tmp_path: Path) -> None:
    dst = SimBackend(tmp_path / "beta2")
    dst.create_pool("tank")
    first = StreamServer(dst, host="beta", bind=("127.0.0.1", 0), secret=SECRET)
    first.start()
    target = _target(alpha, first, "tank/dst")
    stopper = threading.Thread(target=first.stop)

    def stop_midway(event) -> None:
        if event.stream_bytes >= 1_000_000 and not stopper.is_alive() and not stopper.ident:
            stopper.start()

    report = push_transfer(
        alpha,
        SendSpec("tank/src@s1"),
        [target],
        progress=stop_midway,
        bwlimit=1_000_000,
        options=SendOptions(chunk_size=128 * 1024, threads=1, link=OPTIONS.link),
    )
    stopper.join()
    assert report.targets[0].outcome is Outcome.FAILED and report.targets[0].retryable
    second = StreamServer(dst, host="beta", bind=("127.0.0.1", 0), secret=SECRET)
    with second:
        moved = PeerTarget("beta", second.address, target.receive, target.grant)
        again = push_transfer(alpha, SendSpec("tank/src@s1"), [moved], options=OPTIONS)
    assert again.ok and again.targets[0].resumed
    assert _files(dst, "tank/dst") == _files(alpha, "tank/src")


def test_partial_state_of_another_stream_is_reported_not_overwritten(alpha, beta) -> None:
    dst, server = beta
    total = alpha.estimate(SendSpec("tank/src@s1"))
    target = _target(alpha, server, "tank/dst")
    with faulty_proxy(server.address, cut_after=total // 2) as proxy:
        push_transfer(
            alpha,
            SendSpec("tank/src@s1"),
            [PeerTarget(target.host, proxy.address, target.receive, target.grant)],
            options=OPTIONS,
        )
    deadline = time.monotonic() + 30
    while _token(dst, "tank/dst") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    token = _token(dst, "tank/dst")
    alpha.snapshot(["tank/src@s2"])
    other = _target(alpha, server, "tank/dst", snap="tank/src@s2")
    report = push_transfer(alpha, SendSpec("tank/src@s2"), [other], options=OPTIONS)
    [result] = report.targets
    assert result.error_type == "ResumeTokenStale"
    assert "zfs receive -A tank/dst" in (result.error or "")
    assert _token(dst, "tank/dst") == token  # the partial receive is still there to resume


def test_a_stream_corrupt_midway_is_refused_by_the_receive_and_not_applied(alpha, beta) -> None:
    from tests.services.dataplane import RecordingBackend

    dst, server = beta
    stream = alpha.send(SendSpec("tank/src@s1"))
    data = bytearray(stream.read())
    stream.close()
    data[len(data) // 2] ^= 0x55  # inside a WRITE payload, far past BEGIN: only checksums see it
    source = RecordingBackend({"tank/src@s1": bytes(data)})
    target = _target(alpha, server, "tank/dst")
    report = push_transfer(source, SendSpec("tank/src@s1"), [target], options=OPTIONS)
    [result] = report.targets
    assert result.outcome is Outcome.FAILED
    assert "checksum" in (result.error or "").lower(), result
    assert not dst.exists("tank/dst@s1")
