"""A framed connection: protocol/frames over a plain socket or a TlsStream, with timeouts that mean
stall.

Every socket operation of one connection happens on one thread (TLS objects must not be shared
between threads), so a sender checks for a peer's early ERROR by polling between frames. A frame
goes out gathered (preamble, header, payload and digest in one ``sendmsg`` where the socket takes
them, or encrypted together over TLS), in slices only under a bandwidth limit. Over mutual TLS,
frames go without their digest (protocol/frames), since TLS's AEAD already authenticates every
byte between the two hosts; on a plain socket every frame carries one and must.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from typing import Any, Final, Protocol

from protocol import errors
from protocol.errors import FrameError, TransferError, TransferInterrupted, ZfleetError
from protocol.frames import Frame, FrameDecoder, FrameKind, Prepared, encode_frame_parts
from workers.dataplane.throttle import Throttle
from workers.dataplane.tlsio import TlsStream

# of the conversation (frames have their own version); 2: HELLO carries the typed ReceiveSpec
PROTOCOL_VERSION: Final = 2

# a stalled peer shows up as a send that makes no progress; slices keep that measure honest
_SEND_SLICE: Final = 256 * 1024


class Transport(Protocol):
    """What a Wire needs of its connection: a socket.socket or a tlsio.TlsStream."""

    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int: ...

    def recv(self, size: int, /) -> bytes: ...

    def sendmsg(self, buffers: list[memoryview], /) -> int: ...

    def settimeout(self, timeout: float | None, /) -> None: ...

    def fileno(self) -> int: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class Wire:
    """Frames in and out over ``sock``; numbering of outgoing frames is kept here."""

    def __init__(self, sock: Transport, *, peer: str, timeout: float) -> None:
        if isinstance(sock, ssl.SSLSocket):  # its sendmsg is not implemented
            raise TransferError("a Wire runs over a tlsio.TlsStream, not an ssl.SSLSocket")
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.sent_bytes = 0
        self.received_bytes = 0
        self._seq = 0
        self._deadline: float | None = None  # monotonic time the frame being read must end by
        # mutual TLS authenticates every byte (AEAD): frame digests would check it a second time
        self.authenticated = isinstance(sock, TlsStream)
        self._decoder = FrameDecoder(authenticated_transport=self.authenticated)
        sock.settimeout(timeout)

    # -- out ---------------------------------------------------------------------------------
    def send(
        self,
        kind: FrameKind,
        header: dict[str, Any] | None = None,
        prepared: Prepared | None = None,
        *,
        throttle: Throttle | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Encode and write one frame; returns the bytes written. Raises TransferInterrupted.

        With ``throttle`` the frame goes out in small slices at the limited rate, so that even
        a slow link keeps bytes flowing (a peer waiting for a whole frame would call it a stall).
        """
        parts = encode_frame_parts(
            Frame(kind, self._seq, header or {}), prepared=prepared, digest=not self.authenticated
        )
        self._seq += 1
        size = sum(len(part) for part in parts)
        try:
            if throttle is None:
                # one gathered write; each send waits at most the timeout for room
                self._send_all([memoryview(part) for part in parts])
            else:
                step = min(_SEND_SLICE, max(4096, throttle.rate // 4))
                for batch in _batches(parts, step):
                    throttle.wait(sum(len(view) for view in batch), stop)
                    self._send_all(batch)
        except TimeoutError as exc:
            raise TransferInterrupted(
                f"peer {self.peer} stalled: nothing accepted for {self.timeout:g}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransferInterrupted(f"connection to {self.peer} lost: {exc}") from exc
        self.sent_bytes += size
        return size

    def _send_all(self, views: list[memoryview]) -> None:
        """Write ``views`` in order; a socket may take part of them per call."""
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= len(views[0]):
                sent -= len(views[0])
                views = views[1:]
            if sent:
                views = [views[0][sent:], *views[1:]]

    # -- in ----------------------------------------------------------------------------------
    def _fill(self, view: memoryview) -> int:
        """Read what is there (at least a byte) into ``view``; the peer's close is an interruption
        (it never closes between frames of a conversation still going)."""
        if self._deadline is not None:
            # the whole frame within the limit: a peer trickling a byte at a time cannot hold
            # the connection by staying just inside the timeout of each recv
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TransferInterrupted(f"peer {self.peer} did not send a whole frame in time")
            self.sock.settimeout(left)
        try:
            size = self.sock.recv_into(view)
        except TimeoutError as exc:
            if self._deadline is not None:
                raise TransferInterrupted(
                    f"peer {self.peer} did not send a whole frame in time"
                ) from exc
            raise TransferInterrupted(
                f"peer {self.peer} stalled: nothing received for {self.timeout:g}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransferInterrupted(f"connection to {self.peer} lost: {exc}") from exc
        if not size:
            raise TransferInterrupted(
                f"connection to {self.peer} closed after {self.received_bytes} bytes"
            )
        self.received_bytes += size
        return size

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame; raises TransferInterrupted on a drop or stall, FrameError if corrupt.

        With ``timeout`` the whole frame must arrive within that many seconds (not each piece).
        """
        if timeout is not None:
            self._deadline = time.monotonic() + timeout
        try:
            frame = self._decoder.read_into(self._fill)
        finally:
            if timeout is not None:
                self._deadline = None
                self.sock.settimeout(self.timeout)
        if frame is None:
            raise TransferInterrupted(f"connection to {self.peer} closed")
        return frame

    def readable(self) -> bool:
        """True when a frame (or a close) is waiting, without blocking."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # closed: let the next recv say how
        return bool(ready)

    def send_error(self, exc: BaseException) -> None:
        """Tell the peer why we stop (best effort: the connection may be gone already)."""
        header = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, errors.StreamIncomplete) and exc.token:
            header["resume_token"] = exc.token
        with contextlib.suppress(ZfleetError):
            self.send(FrameKind.ERROR, header)

    def linger(self, timeout: float) -> None:
        """Finish our side, then discard what the peer still sends until it closes or ``timeout``.

        Closing with unread input makes the kernel send a reset, which can destroy our last
        frame (the ERROR that says why) before the peer reads it.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.sock.recv(1 << 16):
                pass
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        """Close now; a peer blocked on us sees the connection end."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _batches(parts: list[bytes], step: int) -> list[list[memoryview]]:
    """The frame's parts cut into batches of about ``step`` bytes; the small parts (preamble,
    header, digest) ride along with their neighbouring payload bytes."""
    batches: list[list[memoryview]] = []
    batch: list[memoryview] = []
    room = step
    for part in parts:
        view = memoryview(part)
        while len(view) > 0:
            piece = view[:room] if len(view) > room else view
            batch.append(piece)
            view = view[len(piece) :]
            room -= len(piece)
            if room <= 0:
                batches.append(batch)
                batch, room = [], step
    if batch:
        batches.append(batch)
    return batches


def error_from_frame(frame: Frame) -> ZfleetError:
    """Rebuild the error a peer sent in an ERROR frame as the same class of the error tree."""
    name = str(frame.header.get("error", "TransferError"))
    message = str(frame.header.get("message", "peer reported an error"))
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ZfleetError):
        try:
            rebuilt = cls(message)
        except TypeError:  # a class whose constructor wants more than a message
            rebuilt = TransferError(f"{name}: {message}")
        if isinstance(rebuilt, errors.StreamIncomplete):
            rebuilt.token = frame.header.get("resume_token")
        return rebuilt
    return TransferError(f"peer error {name}: {message}")


def expect(frame: Frame, *kinds: FrameKind) -> Frame:
    """``frame`` if of one of ``kinds``; the peer's error if an ERROR; else a FrameError."""
    if frame.kind in kinds:
        return frame
    if frame.kind == FrameKind.ERROR:
        raise error_from_frame(frame)
    wanted = "/".join(k.name for k in kinds)
    raise FrameError(f"expected a {wanted} frame, got {frame.kind.name} (seq {frame.seq})")
