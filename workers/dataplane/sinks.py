"""Sinks: where one fanned-out send goes. Each runs on its own thread behind a bounded queue.

The sender puts every chunk into every live sink's queue; a full queue blocks the sender, so the
slowest sink sets the pace and memory stays bounded (queue depth x chunk size per sink). A sink
that fails stops taking chunks and drops out; the others carry on.

The queue is two C queues (the chunks, and one credit per free slot) rather than a queue.Queue:
its Python-level locks and condition variables, taken for every chunk and every sink, held the
GIL for about half of what the sender thread did in a fan-out to three peers (py-spy --gil).
"""

from __future__ import annotations

import abc
import os
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from protocol.errors import (
    ConfigError,
    RetryableError,
    TransferCancelled,
    TransferError,
    TransferInterrupted,
    ZfleetError,
)
from protocol.frames import FrameKind, Prepared
from protocol.log import context_thread
from protocol.messages import to_dict
from workers.dataplane.targets import (
    FileTarget,
    Outcome,
    PeerTarget,
    StoreTarget,
    StoreWriter,
    Target,
    TargetReport,
)
from workers.dataplane.throttle import Throttle
from workers.dataplane.tlsio import TlsStream
from workers.dataplane.wire import PROTOCOL_VERSION, Transport, Wire, error_from_frame, expect
from workers.zfs.base import SendSpec

log = structlog.get_logger(__name__)

_POLL: Final = 0.2  # how often a waiting thread looks at the cancel flag
# how often a peer sink looks for an early ERROR between frames: a look is a select() call (and a
# release of the GIL) per frame otherwise, some 500 per 134 MB per peer
_LOOK: Final = 0.05


@dataclass(frozen=True)
class Chunk:
    """One piece of the send stream, raw and as framed on the wire."""

    seq: int
    raw: bytes
    wire: Prepared


@dataclass(frozen=True)
class LinkOptions:
    """Timing of a peer link: heartbeats while idle, and how long silence means a stall."""

    heartbeat_interval: float = 2.0
    stall_timeout: float = 30.0
    connect_timeout: float = 10.0
    queue_depth: int = 16  # chunks: 4 MiB of 256 KiB chunks per sink

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.stall_timeout:
            raise ConfigError(
                "heartbeat interval must be positive and shorter than the stall timeout "
                f"({self.heartbeat_interval} vs {self.stall_timeout})"
            )
        if self.connect_timeout <= 0 or self.queue_depth < 1:
            raise ConfigError("connect timeout must be positive and queue depth at least 1")


_END: Final = object()


class Sink(abc.ABC):
    """One target of a fan-out: opened first, then fed chunks from its own thread."""

    label: str

    def __init__(self, options: LinkOptions, cancel: threading.Event) -> None:
        self.options = options
        self.cancel = cancel
        self.error: ZfleetError | None = None
        self.resume_token: str | None = None
        self.resume_offset: int | None = None
        self.snapshot: str | None = None
        self.stream_bytes = 0
        self.wire_bytes = 0
        # chunks for the sink's thread, and a credit per free slot: the sender takes a credit
        # before it adds a chunk, the sink's thread gives one back for every chunk it takes
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._room: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(options.queue_depth):
            self._room.put(None)
        self._thread: threading.Thread | None = None
        self._finished = False

    # -- called by the sender ----------------------------------------------------------------
    @abc.abstractmethod
    def open(self) -> None:
        """Connect and agree on the stream (may learn a resume token). Raises ZfleetError."""

    def start(self) -> None:
        self._thread = context_thread(self._run, name=f"zfleet-sink {self.label}")
        self._thread.start()

    def put(self, chunk: Chunk) -> bool:
        """Queue ``chunk``, waiting while the queue is full; False once this sink has failed."""
        return self._put(chunk)

    def _put(self, item: object) -> bool:
        while self.error is None:
            if self.cancel.is_set():
                return False
            try:
                self._room.get(timeout=_POLL)
            except queue.Empty:
                continue
            self._queue.put(item)
            return True
        return False

    def finish(self) -> None:
        """No more chunks: complete the target and wait for its answer."""
        self._put(_END)
        self.join()

    def fail(self, exc: ZfleetError) -> None:
        """Stop this sink because of ``exc`` (the send failed, or it was cancelled)."""
        if self.error is None:
            self.error = exc
        if self._thread is None:
            self._abort(exc)
        self.join()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def report(self) -> TargetReport:
        """This target's outcome."""
        if self.error is None and self._finished:
            outcome = Outcome.OK
        elif isinstance(self.error, TransferCancelled):
            outcome = Outcome.CANCELLED
        else:
            outcome = Outcome.FAILED
        error = self.error if outcome is not Outcome.OK else None
        if outcome is Outcome.FAILED and error is None:
            error = TransferError("the sink stopped before the end of the stream")
        return TargetReport(
            target=self.label,
            outcome=outcome,
            wire_bytes=self.wire_bytes,
            stream_bytes=self.stream_bytes,
            resumed=self.resume_token is not None,
            resume_offset=self.resume_offset,
            snapshot=self.snapshot,
            error=str(error) if error else None,
            error_type=type(error).__name__ if error else None,
            retryable=isinstance(error, RetryableError),
        )

    # -- the sink's own thread ------------------------------------------------------------------
    def _run(self) -> None:
        last = time.monotonic()
        try:
            while True:
                if self.error is not None:
                    raise self.error
                if self.cancel.is_set():
                    raise TransferCancelled("transfer cancelled")
                try:
                    item = self._queue.get(timeout=min(_POLL, self.options.heartbeat_interval))
                except queue.Empty:
                    if time.monotonic() - last >= self.options.heartbeat_interval:
                        self._idle()
                        last = time.monotonic()
                    continue
                self._room.put(None)
                if item is _END:
                    self._complete()
                    self._finished = True
                    return
                assert isinstance(item, Chunk)
                self._write(item)
                last = time.monotonic()
        except ZfleetError as exc:
            self._stop(exc)
        except OSError as exc:  # a file or socket error not already wrapped
            self._stop(TransferInterrupted(f"{self.label}: {exc}"))
        except Exception as exc:  # a bug must fail this target, not kill the thread silently
            log.exception("transfer.sink_crashed", target=self.label)
            self._stop(TransferError(f"{self.label}: {type(exc).__name__}: {exc}"))

    def _stop(self, exc: ZfleetError) -> None:
        if self.error is None:
            self.error = exc
        log.warning("transfer.sink_failed", target=self.label, error=str(exc))
        try:
            self._abort(self.error)
        except (ZfleetError, OSError) as abort_exc:
            log.warning("transfer.sink_abort_failed", target=self.label, error=str(abort_exc))

    @abc.abstractmethod
    def _write(self, chunk: Chunk) -> None: ...

    def _idle(self) -> None:  # noqa: B027  (most sinks have nothing to do while idle)
        """Nothing to write for a while (peers send a heartbeat)."""

    @abc.abstractmethod
    def _complete(self) -> None: ...

    @abc.abstractmethod
    def _abort(self, exc: ZfleetError) -> None: ...


class PeerSink(Sink):
    """A peer's stream server: HELLO/ACCEPT, DATA frames, END, then its RESULT."""

    def __init__(
        self,
        target: PeerTarget,
        options: LinkOptions,
        cancel: threading.Event,
        *,
        tls: ssl.SSLContext | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        super().__init__(options, cancel)
        self.target = target
        self.label = target.label
        self._tls = tls
        self._throttle = throttle
        self._wire: Wire | None = None
        self._frames = 0
        self._next_look = 0.0  # monotonic time of the next look for an early ERROR

    def open(self) -> None:
        target = self.target
        try:
            sock = socket.create_connection(target.address, timeout=self.options.connect_timeout)
        except OSError as exc:
            raise TransferInterrupted(
                f"cannot reach {self.label} at {target.address}: {exc}"
            ) from exc
        conn: Transport = sock
        try:
            if self._tls is not None:
                conn = TlsStream.client(self._tls, sock, server_hostname=target.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise TransferError(f"TLS handshake with {self.label} failed: {exc}") from exc
        wire = Wire(conn, peer=self.label, timeout=self.options.stall_timeout)
        self._wire = wire
        spec = target.receive
        wire.send(
            FrameKind.HELLO,
            {
                "version": PROTOCOL_VERSION,
                "grant": target.grant,
                "target": spec.target,
                # the whole typed spec (strict: an option the peer lacks is refused there)
                "receive": to_dict(spec, binary=True),
            },
        )
        accept = expect(wire.recv(), FrameKind.ACCEPT)
        token = accept.header.get("resume_token")
        self.resume_token = token if isinstance(token, str) and token else None
        offset = accept.header.get("resume_offset")
        self.resume_offset = offset if isinstance(offset, int) else None
        log.info("transfer.peer_accepted", target=self.label, resume=self.resume_token is not None)

    def _write(self, chunk: Chunk) -> None:
        wire = self._live_wire()
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + _LOOK
            if wire.readable():
                # the server only speaks mid-stream to refuse: read why, and stop
                expect(wire.recv(), FrameKind.HEARTBEAT)
        try:
            self.wire_bytes += wire.send(
                FrameKind.DATA, prepared=chunk.wire, throttle=self._throttle, stop=self.cancel
            )
        except TransferInterrupted as exc:
            raise (self._reason(wire) or exc) from exc
        self.stream_bytes += len(chunk.raw)
        self._frames += 1

    def _idle(self) -> None:
        self._live_wire().send(FrameKind.HEARTBEAT)

    @staticmethod
    def _reason(wire: Wire) -> ZfleetError | None:
        """The ERROR a peer sent before it hung up on us, if it is still there to read."""
        try:
            frame = wire.recv(timeout=1.0)
        except ZfleetError:
            return None
        return error_from_frame(frame) if frame.kind == FrameKind.ERROR else None

    def _complete(self) -> None:
        wire = self._live_wire()
        wire.send(FrameKind.END, {"stream_bytes": self.stream_bytes, "frames": self._frames})
        while True:
            # the server heartbeats while its receive finishes; silence longer than that is a stall
            frame = expect(wire.recv(), FrameKind.HEARTBEAT, FrameKind.RESULT)
            if frame.kind == FrameKind.RESULT:
                snap = frame.header.get("snapshot")
                self.snapshot = snap if isinstance(snap, str) else None
                break
        wire.close()
        log.info("transfer.peer_done", target=self.label, stream_bytes=self.stream_bytes)

    def _abort(self, exc: ZfleetError) -> None:
        if self._wire is None:
            return
        self._wire.send_error(exc)
        self._wire.close()

    def _live_wire(self) -> Wire:
        if self._wire is None:
            raise TransferError(f"{self.label}: not connected")
        return self._wire


class StoreSink(Sink):
    """The object store: raw stream bytes go to an upload that records and dedups them."""

    def __init__(
        self, target: StoreTarget, spec: SendSpec, options: LinkOptions, cancel: threading.Event
    ):
        super().__init__(options, cancel)
        self.target = target
        self.label = target.label
        self._spec = spec
        self._writer: StoreWriter | None = None

    def open(self) -> None:
        self._writer = _guard(self.label, lambda: self.target.open(self._spec))

    def _live(self) -> StoreWriter:
        if self._writer is None:
            raise TransferError(f"{self.label}: not opened")
        return self._writer

    def _write(self, chunk: Chunk) -> None:
        writer = self._live()
        _guard(self.label, lambda: writer.write(chunk.raw))
        self.stream_bytes += len(chunk.raw)
        self.wire_bytes += len(chunk.raw)

    def _complete(self) -> None:
        writer = self._live()
        _guard(self.label, writer.finish)

    def _abort(self, exc: ZfleetError) -> None:
        if self._writer is not None:
            _guard(self.label, self._writer.abort)


class FileSink(Sink):
    """A local file: written under a temporary name, renamed into place only when complete."""

    def __init__(self, target: FileTarget, options: LinkOptions, cancel: threading.Event):
        super().__init__(options, cancel)
        self.label = target.label
        self.path = target.path
        self._partial = target.path.with_name(target.path.name + ".partial")
        self._fh: Any = None

    def open(self) -> None:
        try:
            self._fh = self._partial.open("wb")
        except OSError as exc:
            raise TransferError(f"{self.label}: cannot open {self._partial}: {exc}") from exc

    def _write(self, chunk: Chunk) -> None:
        self._fh.write(chunk.raw)
        self.stream_bytes += len(chunk.raw)
        self.wire_bytes += len(chunk.raw)

    def _complete(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._partial, self.path)

    def _abort(self, exc: ZfleetError) -> None:
        if self._fh is not None:
            self._fh.close()
        Path(self._partial).unlink(missing_ok=True)


def _guard(label: str, call: Any) -> Any:
    """Run a store call; a dependency's exception becomes a TransferError, ours pass through."""
    try:
        return call()
    except ZfleetError:
        raise
    except Exception as exc:  # the store adapter is another team's code: wrap, never leak
        raise TransferError(f"{label}: {type(exc).__name__}: {exc}") from exc


def make_sink(
    target: Target,
    spec: SendSpec,
    options: LinkOptions,
    cancel: threading.Event,
    *,
    tls: ssl.SSLContext | None,
    throttle_rate: int | None,
) -> Sink:
    """The sink for ``target``: each peer gets its own bandwidth limit."""
    if isinstance(target, PeerTarget):
        throttle = Throttle(throttle_rate) if throttle_rate is not None else None
        return PeerSink(target, options, cancel, tls=tls, throttle=throttle)
    if isinstance(target, StoreTarget):
        return StoreSink(target, spec, options, cancel)
    return FileSink(target, options, cancel)
