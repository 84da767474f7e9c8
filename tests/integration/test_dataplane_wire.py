"""The data plane over real loopback sockets: grants, BEGIN checks, fan-out, TLS, stalls, cancel.

The ZFS side is a recording double (tests/services/dataplane.py) fed with real OpenZFS streams,
so these tests pin the wire protocol; tests/integration/test_dataplane_sim.py runs the same
paths into the simulated ZFS backend, resume included.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.cli.ca import init_ca, issue_host
from protocol.errors import ConfigError
from protocol.frames import Frame, FrameDecoder, FrameKind, compress_payload, encode_frame
from protocol.grants import new_grant, sign_grant
from protocol.messages import to_dict
from protocol.stream import parse_begin, read_records
from tests.conftest import ZFS_STREAMS
from tests.services.dataplane import RecordingBackend, faulty_proxy
from workers.dataplane.progress import ProgressEvent
from workers.dataplane.sender import SendOptions, push_transfer
from workers.dataplane.server import StreamServer
from workers.dataplane.sinks import LinkOptions
from workers.dataplane.targets import FileTarget, Outcome, PeerTarget, StoreTarget
from workers.dataplane.wire import PROTOCOL_VERSION, Wire
from workers.tls import TlsConfig, client_context
from workers.zfs.base import ReceiveSpec, SendSpec

pytestmark = pytest.mark.integration

SECRET = b"fleet-secret-for-tests-0123456789"
FULL = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
INCR = (ZFS_STREAMS / "incr-s1-s2.zstream").read_bytes()
SNAP = "tank/src@s1"
FAST = SendOptions(
    chunk_size=64 * 1024, link=LinkOptions(heartbeat_interval=0.2, stall_timeout=2.0)
)


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait for the server's side of a failure (it learns of it after the sender)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _guids(stream: bytes) -> tuple[int, int]:
    import io

    begin = parse_begin(next(read_records(io.BytesIO(stream))))
    return begin.fromguid, begin.toguid


def _grant(
    *,
    host: str = "beta",
    dataset: str = "tank/dst",
    stream: bytes = FULL,
    secret: bytes = SECRET,
    ttl: float = 60,
    transfer_id: str | None = None,
    toguid: int | None = None,
) -> str:
    fromguid, stream_toguid = _guids(stream)
    grant = new_grant(
        transfer_id=transfer_id or uuid.uuid4().hex,
        host=host,
        dataset=dataset,
        fromguid=fromguid,
        toguid=stream_toguid if toguid is None else toguid,
        ttl=ttl,
    )
    return sign_grant(secret, grant)


def _peer(
    server: StreamServer, grant: str, *, dataset: str = "tank/dst", address=None
) -> PeerTarget:
    return PeerTarget(
        host="beta",
        address=address or server.address,
        receive=ReceiveSpec(target=dataset),
        grant=grant,
    )


@pytest.fixture
def receiver() -> Iterator[tuple[StreamServer, RecordingBackend]]:
    backend = RecordingBackend()
    server = StreamServer(
        backend,
        host="beta",
        bind=("127.0.0.1", 0),
        secret=SECRET,
        stall_timeout=2.0,
        heartbeat_interval=0.2,
    )
    server.start()
    yield server, backend
    server.stop()


@pytest.fixture
def source() -> RecordingBackend:
    return RecordingBackend({SNAP: FULL, "tank/src@s2": INCR})


def test_granted_stream_is_applied_byte_for_byte(receiver, source) -> None:
    server, target = receiver
    events: list[ProgressEvent] = []
    report = push_transfer(
        source, SendSpec(SNAP), [_peer(server, _grant())], progress=events.append, options=FAST
    )
    assert report.ok, report
    assert target.applied["tank/dst"] == FULL
    [result] = report.targets
    assert result.stream_bytes == len(FULL)
    assert 0 < result.wire_bytes < len(FULL)  # compressed on the wire
    assert result.snapshot == "tank/dst@received"
    assert events[-1].done and events[-1].stream_bytes == len(FULL)
    assert events[-1].estimate == len(FULL)


@pytest.mark.parametrize(
    ("grant_args", "message"),
    [
        ({"secret": b"another-secret-entirely-0123"}, "does not verify"),
        ({"ttl": 0.001}, "expired"),
        ({"host": "gamma"}, "for host 'gamma'"),
        ({"dataset": "tank/other"}, "for dataset 'tank/other'"),
        ({"toguid": 12345}, "the send produced"),  # caught at the source already
        ({"stream": INCR}, "the send produced"),
    ],
)
def test_bad_grants_are_refused_and_nothing_is_received(
    receiver, source, grant_args, message
) -> None:
    server, target = receiver
    grant = _grant(**grant_args)
    time.sleep(0.01)
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, grant)], options=FAST)
    [result] = report.targets
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "GrantError"
    assert message in (result.error or "")
    assert not result.retryable
    assert target.receives == [] and target.applied == {}


def test_a_replayed_grant_is_refused(receiver, source) -> None:
    server, target = receiver
    grant = _grant()
    assert push_transfer(source, SendSpec(SNAP), [_peer(server, grant)], options=FAST).ok
    target.applied.clear()
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, grant)], options=FAST)
    assert report.targets[0].error_type == "GrantError"
    assert "replayed" in (report.targets[0].error or "")
    assert target.applied == {}


def test_a_stream_with_a_corrupt_begin_is_refused_before_receive(receiver) -> None:
    server, target = receiver
    corrupt = bytearray(FULL)
    corrupt[20] ^= 0xFF  # inside the BEGIN header, covered by its checksum
    source = RecordingBackend({SNAP: bytes(corrupt)})
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, _grant())], options=FAST)
    [result] = report.targets
    assert result.outcome is Outcome.FAILED
    assert result.error_type in {"StreamChecksumError", "StreamFormatError", "GrantError"}
    assert target.receives == []


def test_a_frame_corrupted_on_the_wire_is_refused_and_not_applied(receiver, source) -> None:
    server, target = receiver
    with faulty_proxy(server.address, flip_at=200_000) as proxy:
        report = push_transfer(
            source, SendSpec(SNAP), [_peer(server, _grant(), address=proxy.address)], options=FAST
        )
    [result] = report.targets
    assert result.outcome is Outcome.FAILED
    assert result.error_type in {"FrameError", "TransferInterrupted"}
    assert target.applied == {}


def test_fan_out_a_failing_target_drops_out_and_the_others_finish(
    receiver, source, tmp_path: Path
) -> None:
    server, target = receiver
    with faulty_proxy(server.address, cut_after=50_000) as proxy:
        report = push_transfer(
            source,
            SendSpec(SNAP),
            [
                _peer(
                    server, _grant(dataset="tank/cut"), dataset="tank/cut", address=proxy.address
                ),
                _peer(server, _grant(dataset="tank/dst")),
                FileTarget(tmp_path / "copy.zstream"),
            ],
            options=FAST,
        )
    cut, good, file = report.targets
    assert cut.outcome is Outcome.FAILED and cut.retryable
    assert cut.error_type == "TransferInterrupted"
    assert good.outcome is Outcome.OK and file.outcome is Outcome.OK
    assert target.applied == {"tank/dst": FULL}
    assert (tmp_path / "copy.zstream").read_bytes() == FULL
    # the target keeps the partial state for a resume
    assert _eventually(lambda: "tank/cut" in target.aborted)
    assert [t.target for t in report.failed()] == ["beta:tank/cut"]


def test_a_stalled_peer_is_detected_by_heartbeat_timeout(receiver, source) -> None:
    server, target = receiver
    started = time.monotonic()
    with faulty_proxy(server.address, stall_after=30_000) as proxy:
        report = push_transfer(
            source, SendSpec(SNAP), [_peer(server, _grant(), address=proxy.address)], options=FAST
        )
        elapsed = time.monotonic() - started
        assert _eventually(lambda: "tank/dst" in target.aborted)
    [result] = report.targets
    assert result.outcome is Outcome.FAILED and result.retryable
    assert "stalled" in (result.error or "")
    assert elapsed < 10
    assert target.applied == {}


def test_cancel_stops_every_target_and_keeps_partial_state(receiver) -> None:
    server, target = receiver
    big = FULL * 1  # one fixture: cancel after the first progress event
    source = RecordingBackend({SNAP: big})
    cancel = threading.Event()
    report = push_transfer(
        source,
        SendSpec(SNAP),
        [_peer(server, _grant())],
        cancel=cancel,
        progress=lambda event: cancel.set(),
        options=SendOptions(chunk_size=64 * 1024, threads=1, link=FAST.link),
    )
    [result] = report.targets
    assert result.outcome is Outcome.CANCELLED
    assert result.error_type == "TransferCancelled"
    assert source.sent[0].cancelled
    assert _eventually(lambda: "tank/dst" in target.aborted)
    assert target.applied == {}


def test_bandwidth_limit_slows_the_link(receiver, source) -> None:
    server, _ = receiver
    started = time.monotonic()
    report = push_transfer(
        source,
        SendSpec(SNAP),
        [_peer(server, _grant())],
        bwlimit=100_000,
        options=SendOptions(chunk_size=64 * 1024, link=FAST.link),
    )
    elapsed = time.monotonic() - started
    wire = report.targets[0].wire_bytes
    assert report.ok
    # the first second's worth goes as a burst; the rest at the limit
    assert elapsed >= (wire - 100_000) / 100_000 * 0.8


def test_a_receive_that_fails_reports_the_zfs_error(receiver, source) -> None:
    server, target = receiver
    target.fail_receive = "destination tank/dst has been modified"
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, _grant())], options=FAST)
    [result] = report.targets
    assert result.error_type == "ZfsError" and "has been modified" in (result.error or "")


def test_tls_transfer_and_a_client_from_another_ca_is_refused(source, tmp_path: Path) -> None:
    fleet, rogue = tmp_path / "fleet", tmp_path / "rogue"
    init_ca(fleet)
    init_ca(rogue)
    for host in ("alpha", "beta"):
        issue_host(fleet, host)
    issue_host(rogue, "alpha")
    target = RecordingBackend()
    server = StreamServer(
        target,
        host="beta",
        bind=("127.0.0.1", 0),
        secret=SECRET,
        tls=TlsConfig.for_host(fleet, "beta"),
    )
    with server:
        good = SendOptions(tls=client_context(TlsConfig.for_host(fleet, "alpha")))
        report = push_transfer(source, SendSpec(SNAP), [_peer(server, _grant())], options=good)
        assert report.ok and target.applied["tank/dst"] == FULL
        bad = SendOptions(
            tls=client_context(
                TlsConfig(fleet / "ca.crt", rogue / "alpha.crt", rogue / "alpha.key")
            )
        )
        report = push_transfer(
            source,
            SendSpec(SNAP),
            [_peer(server, _grant(dataset="tank/x"), dataset="tank/x")],
            options=bad,
        )
        assert report.targets[0].outcome is Outcome.FAILED
        assert "tank/x" not in target.applied and len(target.receives) == 1


def test_fan_out_to_a_peer_and_the_object_store_in_one_send(
    receiver, source, tmp_path: Path
) -> None:
    from workers.cloud import manifest as mf
    from workers.cloud.blobstore import LocalBlobStore
    from workers.cloud.ingest import StreamIngest
    from workers.cloud.repo import RepoKey, Repository
    from workers.cloud.restore import restore_stream

    server, target = receiver
    repo = Repository.init(
        LocalBlobStore(tmp_path / "store"),
        RepoKey(passphrase="pw"),
        pack_size=256 * 1024,
        scrypt_n=2**10,
    )

    def broken(spec: SendSpec) -> StreamIngest:
        raise RuntimeError("bucket went away")

    report = push_transfer(
        source,
        SendSpec(SNAP),
        [
            _peer(server, _grant()),
            StoreTarget("local", lambda spec: StreamIngest(repo)),
            StoreTarget("broken", broken),
        ],
        options=FAST,
    )
    peer, store, failed = report.targets
    assert peer.outcome is Outcome.OK and store.outcome is Outcome.OK
    assert failed.outcome is Outcome.FAILED and "bucket went away" in (failed.error or "")
    assert failed.error_type == "TransferError"
    assert target.applied["tank/dst"] == FULL
    [manifest] = mf.load_all(repo.target, repo.crypto)[0]
    assert b"".join(restore_stream(repo, manifest)) == FULL


def test_a_send_that_fails_midway_applies_nowhere(receiver, source, tmp_path: Path) -> None:
    server, target = receiver
    source.fail_send_after = 300_000
    report = push_transfer(
        source,
        SendSpec(SNAP),
        [_peer(server, _grant()), FileTarget(tmp_path / "copy.zstream")],
        options=FAST,
    )
    assert [t.outcome for t in report.targets] == [Outcome.FAILED, Outcome.FAILED]
    assert all(t.error_type == "ZfsError" for t in report.targets)
    assert source.sent[0].cancelled
    assert _eventually(lambda: "tank/dst" in target.aborted)
    assert target.applied == {}
    assert not (tmp_path / "copy.zstream").exists()
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_a_quiet_send_is_kept_alive_by_heartbeats(receiver, source) -> None:
    server, target = receiver
    source.pause_send = (200_000, 3.0)  # longer than the 2 s stall timeout on both ends
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, _grant())], options=FAST)
    assert report.ok, report
    assert target.applied["tank/dst"] == FULL


class _SlowWriter:
    """A store upload that takes its time, and remembers how much it got."""

    def __init__(self, source: RecordingBackend) -> None:
        self.source = source
        self.got = 0
        self.max_lead = 0

    def write(self, data: bytes) -> int:
        time.sleep(0.01)
        self.got += len(data)
        self.max_lead = max(self.max_lead, self.source.sent[0].read_upto - self.got)
        return len(data)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_the_slowest_sink_sets_the_pace_and_memory_stays_bounded(receiver, tmp_path: Path) -> None:
    server, target = receiver
    source = RecordingBackend({SNAP: FULL})
    slow = _SlowWriter(source)
    chunk, depth, threads = 16 * 1024, 4, 2
    options = SendOptions(
        chunk_size=chunk,
        threads=threads,
        link=LinkOptions(heartbeat_interval=0.2, stall_timeout=5.0, queue_depth=depth),
    )
    report = push_transfer(
        source,
        SendSpec(SNAP),
        [
            _peer(server, _grant()),
            StoreTarget("slow", lambda spec: slow),
            FileTarget(tmp_path / "f"),
        ],
        options=options,
    )
    assert report.ok, report
    assert slow.got == len(FULL) and target.applied["tank/dst"] == FULL
    # the reader never ran further ahead of the slowest sink than the queues allow: its queue,
    # the compressor's chunks in flight, the chunk in hand and the one being written
    assert slow.max_lead <= (depth + 2 * threads + 2) * chunk


S1, S2, S3 = 0x5EC22A1DF8E9C54B, 0x9DB4A8F3DB3410A, 0x6B471A10ECF3BBB1  # fx/base, fixtures


@pytest.mark.parametrize(
    ("fixture", "fromguid", "toguid", "accepted"),
    [
        ("replicate-R-base-s3", 0, S3, True),
        ("replicate-R-base-s3", 0, 0x1234, False),  # not among the stream's snapshots
        ("full-s1-props", 0, S1, True),
        ("incr-I-s1-s3", S1, S3, True),
        ("incr-I-s1-s3", S2, S3, False),  # the chain starts elsewhere
    ],
)
def test_compound_streams_are_checked_against_the_grant(
    receiver, fixture, fromguid, toguid, accepted
) -> None:
    server, target = receiver
    data = (ZFS_STREAMS / f"{fixture}.zstream").read_bytes()
    grant = sign_grant(
        SECRET,
        new_grant(
            transfer_id=uuid.uuid4().hex,
            host="beta",
            dataset="tank/dst",
            fromguid=fromguid,
            toguid=toguid,
            ttl=60,
        ),
    )
    source = RecordingBackend({SNAP: data})
    report = push_transfer(source, SendSpec(SNAP), [_peer(server, grant)], options=FAST)
    if accepted:
        assert report.ok, report
        assert target.applied["tank/dst"] == data
    else:
        assert report.targets[0].error_type == "GrantError"
        assert target.receives == []


def _raw_exchange(server: StreamServer, data: bytes) -> Frame:
    """Send raw bytes to the server and decode its answer."""
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    [frame] = FrameDecoder().feed(answer)
    return frame


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: beta\r\n\r\n", "FrameError", "bad magic"),
        (encode_frame(Frame(FrameKind.HELLO, 0, {"version": PROTOCOL_VERSION})), "GrantError",
         "no grant"),
        (encode_frame(Frame(FrameKind.HELLO, 0, {"version": 9})), "FrameError", "version 9"),
        (encode_frame(Frame(FrameKind.DATA, 0, {}, b"x")), "FrameError", "expected a HELLO"),
    ],
)
def test_junk_from_a_client_gets_a_clear_error_frame(receiver, data, error, message) -> None:
    server, target = receiver
    frame = _raw_exchange(server, data)
    assert frame.kind is FrameKind.ERROR
    assert frame.header["error"] == error and message in frame.header["message"]
    assert target.receives == []


def test_a_peer_that_never_answers_fails_alone_after_the_stall_timeout(receiver, source) -> None:
    server, target = receiver
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts or reads
        started = time.monotonic()
        report = push_transfer(
            source,
            SendSpec(SNAP),
            [_peer(server, _grant(), address=silent.getsockname()), _peer(server, _grant())],
            options=FAST,
        )
        elapsed = time.monotonic() - started
    hung, good = report.targets
    assert good.outcome is Outcome.OK and target.applied["tank/dst"] == FULL
    assert hung.outcome is Outcome.FAILED and "stalled" in (hung.error or "")
    assert elapsed < 2 * FAST.link.stall_timeout


def test_the_server_checks_begin_itself_whatever_the_sender_claims(receiver) -> None:
    # a sender that skips its own check (old, buggy or hostile) meets the server's
    server, target = receiver
    grant = _grant(toguid=12345)
    with socket.create_connection(server.address, timeout=5) as sock:
        wire = Wire(sock, peer="beta", timeout=5)
        wire.send(FrameKind.HELLO, {"version": PROTOCOL_VERSION, "grant": grant,
                                    "target": "tank/dst",
                                    "receive": to_dict(ReceiveSpec("tank/dst"))})  # fmt: skip
        assert wire.recv().kind is FrameKind.ACCEPT
        wire.send(FrameKind.DATA, prepared=compress_payload(FULL[:100_000], 1))
        answer = wire.recv()
    assert answer.kind is FrameKind.ERROR and answer.header["error"] == "GrantError"
    assert "does not match its grant" in answer.header["message"]
    assert target.receives == []


def test_a_receive_option_the_server_does_not_know_is_refused_not_dropped(receiver) -> None:
    server, target = receiver
    asked = {**to_dict(ReceiveSpec("tank/dst")), "heal_corruption": True}
    with socket.create_connection(server.address, timeout=5) as sock:
        wire = Wire(sock, peer="beta", timeout=5)
        wire.send(FrameKind.HELLO, {"version": PROTOCOL_VERSION, "grant": _grant(),
                                    "target": "tank/dst", "receive": asked})  # fmt: skip
        answer = wire.recv()
    assert answer.kind is FrameKind.ERROR and "heal_corruption" in answer.header["message"]
    assert target.receives == []


def test_a_port_in_use_is_a_clear_config_error(receiver) -> None:
    server, _ = receiver
    other = StreamServer(RecordingBackend(), host="beta", bind=server.address, secret=SECRET)
    with pytest.raises(ConfigError, match="cannot listen"):
        other.start()


def test_a_link_slower_than_a_frame_per_stall_timeout_still_flows(source) -> None:
    target = RecordingBackend()
    link = LinkOptions(heartbeat_interval=0.2, stall_timeout=1.5)
    server_side = StreamServer(
        target,
        host="beta",
        bind=("127.0.0.1", 0),
        secret=SECRET,
        stall_timeout=1.5,
        heartbeat_interval=0.2,
    )
    with server_side:
        # one frame of ~100 kB at 30 kB/s takes 3 s: the bytes must trickle, not wait and burst
        report = push_transfer(
            source,
            SendSpec("tank/src@s2"),
            [_peer(server_side, _grant(stream=INCR))],
            bwlimit=30_000,
            options=SendOptions(chunk_size=256 * 1024, link=link),
        )
    assert report.ok, report
    assert target.applied["tank/dst"] == INCR
