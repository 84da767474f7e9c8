"""Server-side pieces without sockets: replay ledger, error round trip, chunking of a send."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from protocol import errors
from protocol.errors import ConfigError, GrantError, TransferInterrupted
from protocol.frames import Frame, FrameKind
from protocol.grants import new_grant
from workers.dataplane.ledger import GrantLedger
from workers.dataplane.sender import SendOptions, push_transfer, read_chunks
from workers.dataplane.sinks import LinkOptions
from workers.dataplane.targets import FileTarget, PeerTarget
from workers.dataplane.wire import error_from_frame, expect
from workers.zfs.base import ReceiveSpec, SendSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _grant(tid: str, clock: Clock, ttl: float = 60):
    return new_grant(
        transfer_id=tid, host="b", dataset="p/d", fromguid=0, toguid=1, ttl=ttl, now=clock.now
    )


def test_ledger_refuses_a_transfer_id_that_was_applied_until_it_expires() -> None:
    clock = Clock()
    ledger = GrantLedger(clock)
    grant = _grant("t1", clock)
    ledger.begin(grant)
    with pytest.raises(TransferInterrupted, match="still streaming"):
        ledger.begin(grant)  # a second connection for a transfer in flight: try again later
    ledger.end(grant, applied=True)
    with pytest.raises(GrantError, match="replayed"):
        ledger.begin(grant)
    clock.now += 61  # expired: the grant itself is refused by then, the ledger may forget it
    ledger.begin(grant)


def test_a_retry_waits_for_the_connection_it_replaces_to_end() -> None:
    clock = Clock()
    ledger = GrantLedger(clock)
    grant = _grant("t3", clock)
    ledger.begin(grant)
    ender = threading.Timer(0.2, lambda: ledger.end(grant, applied=False))
    ender.start()
    ledger.begin(grant, wait=5.0)  # returns once the old connection let go
    ender.join()


def test_ledger_allows_a_resume_after_an_interrupted_attempt() -> None:
    clock = Clock()
    ledger = GrantLedger(clock)
    grant = _grant("t2", clock)
    ledger.begin(grant)
    ledger.end(grant, applied=False)
    ledger.begin(grant)  # the same grant may reconnect to finish its stream


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("GrantError", errors.GrantError),
        ("DestinationModified", errors.DestinationModified),
        ("StreamChecksumError", errors.StreamChecksumError),
        ("NameError_", errors.TransferError),  # needs more than a message: wrapped
        ("SomethingElse", errors.TransferError),
        ("ValueError", errors.TransferError),  # never rebuild a non-zfleet class
    ],
)
def test_peer_errors_come_back_as_the_same_class(name: str, cls: type) -> None:
    frame = Frame(FrameKind.ERROR, 3, {"error": name, "message": "why"})
    rebuilt = error_from_frame(frame)
    assert type(rebuilt) is cls
    assert "why" in str(rebuilt)
    with pytest.raises(cls):
        expect(frame, FrameKind.ACCEPT)


def test_stream_incomplete_keeps_its_token() -> None:
    frame = Frame(
        FrameKind.ERROR, 1, {"error": "StreamIncomplete", "message": "cut", "resume_token": "1-ab"}
    )
    rebuilt = error_from_frame(frame)
    assert isinstance(rebuilt, errors.StreamIncomplete) and rebuilt.token == "1-ab"


def test_an_unexpected_frame_is_a_frame_error() -> None:
    with pytest.raises(errors.FrameError, match="expected a ACCEPT"):
        expect(Frame(FrameKind.DATA, 0, {}, b"x"), FrameKind.ACCEPT)


class _Trickle:
    """A send that hands out odd-sized pieces, as a pipe does."""

    def __init__(self, data: bytes) -> None:
        self._fh = io.BytesIO(data)
        self._sizes = [7, 1000, 3, 50000]
        self._i = 0

    def read(self, n: int = -1) -> bytes:
        self._i += 1
        return self._fh.read(min(n, self._sizes[self._i % 4]))

    def close(self) -> None: ...

    def cancel(self) -> None: ...


def test_read_chunks_gives_full_chunks_in_order() -> None:
    data = bytes(range(256)) * 1000
    chunks = list(read_chunks(_Trickle(data), 4096, threading.Event()))  # type: ignore[arg-type]
    assert b"".join(chunks) == data
    assert all(len(c) == 4096 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4096


def test_read_chunks_stops_on_cancel() -> None:
    cancel = threading.Event()
    cancel.set()
    assert list(read_chunks(_Trickle(b"x" * 100), 10, cancel)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SendOptions(chunk_size=10), "chunk size"),
        (lambda: SendOptions(chunk_size=1 << 30), "chunk size"),
        (lambda: SendOptions(threads=0), "threads"),
        (lambda: LinkOptions(heartbeat_interval=5, stall_timeout=2), "shorter than the stall"),
        (lambda: LinkOptions(queue_depth=0), "queue depth"),
    ],
)
def test_bad_tuning_is_a_config_error(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize(("level", "bwlimit"), [(0, None), (23, None), (1, 0), (1, -5)])
def test_bad_push_arguments_fail_before_anything_starts(level: int, bwlimit: int | None) -> None:
    class Untouchable:
        def send(self, spec: SendSpec) -> None:
            raise AssertionError("no send may start")

        def estimate(self, spec: SendSpec) -> int:
            raise AssertionError("no estimate either")

    target = FileTarget(Path("/nonexistent/never-written"))
    with pytest.raises(ConfigError):
        push_transfer(
            Untouchable(),  # type: ignore[arg-type]
            SendSpec("p/a@s"),
            [target] if bwlimit is None else [_peer_target()],
            compression_level=level,
            bwlimit=bwlimit,
        )


def _peer_target() -> PeerTarget:
    return PeerTarget("b", ("127.0.0.1", 9), ReceiveSpec("p/d"), "x.y")


def test_used_grants_survive_a_restart_and_expire_from_the_file(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "grants.ledger"
    ledger = GrantLedger(clock, path=path)
    short, long = _grant("short", clock, ttl=10), _grant("long", clock, ttl=100)
    for grant in (short, long):
        ledger.begin(grant)
        ledger.end(grant, applied=True)
    interrupted = _grant("cut", clock)
    ledger.begin(interrupted)
    ledger.end(interrupted, applied=False)

    clock.now += 50
    with path.open("a") as fh:
        fh.write("17000")  # a torn last line, as a crash mid-append leaves
    restarted = GrantLedger(clock, path=path)
    with pytest.raises(GrantError, match="replayed"):
        restarted.begin(long)
    restarted.begin(short)  # expired: the ledger let it go (verify_grant refuses it anyway)
    restarted.begin(interrupted)  # never applied: may still resume
    assert path.read_text().splitlines() == [f"{long.expires!r} long"]


def test_an_unreadable_ledger_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "grants.ledger"
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="cannot be read"):
        GrantLedger(Clock(), path=path)
