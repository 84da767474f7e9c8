"""TLS for the data plane's connections, through memory buffers rather than ssl.SSLSocket.

ssl.SSLSocket gives the reader one TLS record (at most 16 KiB) per call, reads every record with
two system calls and polls between them; over a stream of hundreds of MB that cost more CPU than
the cipher (a 77 MB loopback stream here: 0.97-1.14 s per GB received through SSLSocket, 0.58-0.67
through memory buffers, AES-256-GCM both ways). :class:`TlsStream` reads the socket in large
pieces into an ``ssl.MemoryBIO``, decrypts each complete record from memory straight into the
caller's buffer, and encrypts a whole batch of writes before sending it with one call. A batch
goes in whole records, the small pieces (a frame's preamble and header) riding with the payload's
bytes: written on their own they made two tiny records a frame, each encrypted, sent and decrypted
with a call of its own.

It offers the few socket methods the data plane's Wire uses (``recv_into``, ``sendmsg``,
``settimeout``, ``fileno``, ``shutdown``, ``close``), so a Wire runs over either. Timeouts are the
socket's: a peer that sends or accepts nothing for that long raises TimeoutError, as a plain socket
does. The handshake is the ssl module's own (certificates, host names, versions, ciphers all come
from the SSLContext); only where the bytes go changes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any, Final

# one receive takes what the socket holds, up to this; records decrypt from it without syscalls
_READ_SIZE: Final = 1 << 20
# taken from the engine's output a piece at a time, so a large batch needs no large buffer
_WRITE_SIZE: Final = 1 << 20
# the most plaintext one TLS record carries (RFC 8446 5.1; TLS 1.2 the same)
RECORD_SIZE: Final = 16 << 10


class TlsStream:
    """One TLS connection over ``sock``, after :meth:`client` or :meth:`server` made the
    handshake."""

    def __init__(
        self,
        sock: socket.socket,
        obj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        self.raw = sock
        self._obj = obj
        self._in = incoming
        self._out = outgoing
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)
        self._eof = False

    @classmethod
    def client(
        cls, context: ssl.SSLContext, sock: socket.socket, server_hostname: str
    ) -> TlsStream:
        """Handshake as the client of ``sock`` (which keeps its timeout); raises ssl.SSLError or
        OSError (TimeoutError included) when it fails."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        stream = cls(sock, obj, incoming, outgoing)
        stream._handshake()
        return stream

    @classmethod
    def server(
        cls, context: ssl.SSLContext, sock: socket.socket, *, within: float | None = None
    ) -> TlsStream:
        """Handshake as the server of ``sock``; raises as :meth:`client` does. With ``within``
        the whole handshake must be done in that many seconds (a client trickling its hello a
        byte at a time gets a TimeoutError, however short each wait); the socket's own timeout
        is back in place afterwards."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_side=True)
        stream = cls(sock, obj, incoming, outgoing)
        if within is None:
            stream._handshake()
            return stream
        timeout = sock.gettimeout()
        try:
            stream._handshake(deadline=time.monotonic() + within)
        finally:
            sock.settimeout(timeout)
        return stream

    def _handshake(self, deadline: float | None = None) -> None:
        while True:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("the TLS handshake took too long") from None
                    self.raw.settimeout(left)
                if not self._pull():
                    raise ConnectionResetError(
                        "peer closed the connection in the TLS handshake"
                    ) from None
                continue
            except ssl.SSLError:
                # the alert that says why (an unknown CA, a bad name) is in the outgoing buffer:
                # the peer should read it rather than a bare close
                with contextlib.suppress(OSError):
                    self._flush()
                raise
            self._flush()  # our last flight (and a server's session tickets)
            return

    def _flush(self) -> None:
        """Send what the TLS engine wrote. Each send waits at most the socket's timeout for room,
        so a batch of any size stalls only when the peer accepts nothing for that long."""
        while self._out.pending:
            with memoryview(self._out.read(_WRITE_SIZE)) as view:
                sent = 0
                while sent < len(view):
                    sent += self.raw.send(view[sent:])

    def _pull(self) -> bool:
        """Move what the socket holds into the TLS engine; False at the end of the stream."""
        size = self.raw.recv_into(self._view)
        if not size:
            self._eof = True
            self._in.write_eof()
            return False
        self._in.write(self._view[:size])
        return True

    # -- the socket methods a Wire uses ------------------------------------------------------
    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        """Decrypted bytes into ``buffer`` (at least one, at most ``nbytes`` when given); 0 once
        the peer has closed."""
        size = nbytes or len(buffer)
        while True:
            try:
                # with a buffer, read() returns a count (typeshed says bytes)
                got: Any = self._obj.read(size, buffer)
            except ssl.SSLWantReadError:
                self._flush()  # reading may have produced an answer (a key update)
                if self._eof or not self._pull():
                    return 0
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return 0  # close_notify, or the TCP stream ended: the frames say if that was early
            first = int(got)
            total = first + self._more(buffer, first, size)
            self._flush()
            return total

    def _more(self, buffer: memoryview, start: int, size: int) -> int:
        """Decrypt the further records already received into ``buffer[start:size]``, without
        waiting for the socket; the bytes added.

        The engine hands out one record (16 KiB at most) per read: taking every complete one here
        saves a round through the caller per record (some 40 for a 512 KiB frame).
        """
        got = start
        while got < size and (self._in.pending or self._obj.pending()):
            try:
                with buffer[got:size] as rest:
                    more: Any = self._obj.read(size - got, rest)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break  # a record not yet whole, or the end: the next call says which
            if not more:
                break
            got += int(more)
        return got - start

    def recv(self, size: int) -> bytes:
        buf = bytearray(size)
        with memoryview(buf) as view:
            got = self.recv_into(view)
        return bytes(buf[:got])

    def sendmsg(self, buffers: Iterable[Any]) -> int:
        """Encrypt ``buffers`` and send them all; their length. TimeoutError when the peer takes
        nothing for the socket's timeout."""
        total = 0
        head = bytearray()  # the bytes of a record not yet whole, gathered from small pieces
        for data in buffers:
            with memoryview(data) as view, view.cast("B") as part:
                total += len(part)
                start = 0
                if head:
                    start = min(len(part), RECORD_SIZE - len(head))
                    head += part[:start]
                    if len(head) < RECORD_SIZE:
                        continue
                    self._encrypt(head)
                    head.clear()
                whole = start + (len(part) - start) // RECORD_SIZE * RECORD_SIZE
                if whole > start:
                    with part[start:whole] as records:
                        self._encrypt(records)
                head += part[whole:]
        if head:
            self._encrypt(head)
        self._flush()
        return total

    def _encrypt(self, data: bytearray | memoryview) -> None:
        """All of ``data`` into the outgoing buffer, as records (the engine takes it all at once,
        its output being memory; the loop only guards the promise)."""
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                with view[done:] as rest:
                    done += self._obj.write(rest)

    def sendall(self, data: Any) -> None:
        self.sendmsg([data])

    def pending(self) -> int:
        """Bytes received but not yet read (decrypted or not)."""
        return self._obj.pending() + self._in.pending

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def fileno(self) -> int:
        return self.raw.fileno()

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._obj.cipher()

    def getpeercert(self) -> Any:
        return self._obj.getpeercert()
