"""A framed connection: protocol/frames over a plain or TLS socket, with timeouts that mean stall.

Every socket operation of one connection happens on one thread (TLS objects must not be shared
between threads), so a sender checks for a peer's early ERROR by polling between frames.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from typing import Any, Final

from protocol import errors
from protocol.errors import FrameError, TransferError, TransferInterrupted, ZfleetError
from protocol.frames import Frame, FrameDecoder, FrameKind, Prepared, encode_frame_parts
from workers.dataplane.throttle import Throttle

# of the conversation (frames have their own version); 2: HELLO carries the typed ReceiveSpec
PROTOCOL_VERSION: Final = 2

# a stalled peer shows up as a send that makes no progress; slices keep that measure honest
_SEND_SLICE: Final = 256 * 1024


class Wire:
    """Frames in and out over ``sock``; numbering of outgoing frames is kept here."""

    def __init__(self, sock: socket.socket, *, peer: str, timeout: float) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        self.sent_bytes = 0
        self.received_bytes = 0
        self._seq = 0
        self._decoder = FrameDecoder()
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
        parts = encode_frame_parts(Frame(kind, self._seq, header or {}), prepared=prepared)
        self._seq += 1
        step = _SEND_SLICE if throttle is None else min(_SEND_SLICE, max(4096, throttle.rate // 4))
        size = 0
        try:
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), step):
                    piece = view[start : start + step]
                    if throttle is not None:
                        throttle.wait(len(piece), stop)
                    self.sock.sendall(piece)
                size += len(part)
        except TimeoutError as exc:
            raise TransferInterrupted(
                f"peer {self.peer} stalled: nothing accepted for {self.timeout:g}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise TransferInterrupted(f"connection to {self.peer} lost: {exc}") from exc
        self.sent_bytes += size
        return size

    # -- in ----------------------------------------------------------------------------------
    def _read_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                size = self.sock.recv_into(view[got:], min(n - got, 1 << 20))
            except TimeoutError as exc:
                raise TransferInterrupted(
                    f"peer {self.peer} stalled: nothing received for {self.timeout:g}s"
                ) from exc
            except (OSError, ssl.SSLError) as exc:
                raise TransferInterrupted(f"connection to {self.peer} lost: {exc}") from exc
            if not size:
                raise TransferInterrupted(
                    f"connection to {self.peer} closed after {self.received_bytes + got} bytes"
                )
            got += size
        self.received_bytes += n
        return bytes(buf)

    def recv(self, timeout: float | None = None) -> Frame:
        """The next frame; raises TransferInterrupted on a drop or stall, FrameError if corrupt."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            frame = self._decoder.read_from(self._read_exact)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        if frame is None:
            raise TransferInterrupted(f"connection to {self.peer} closed")
        return frame

    def readable(self) -> bool:
        """True when a frame (or a close) is waiting, without blocking."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
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
