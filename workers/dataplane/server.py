"""The per-host stream server: accepts framed streams from peers and applies granted ones.

One thread per connection (streams are few and long; each spends its time in zfs receive and
zstd, both of which release the GIL). ``stop`` closes the listener and every connection; each
receive in progress is aborted with its partial state kept for a resume.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import structlog

from protocol.errors import ConfigError, ZfleetError
from protocol.log import context_thread
from workers.dataplane.ledger import GrantLedger
from workers.dataplane.memory import keep_stream_buffers
from workers.dataplane.session import (
    HANDSHAKE_TIMEOUT,
    ReceiveBackend,
    ServerContext,
    serve_stream,
)
from workers.dataplane.tlsio import TlsStream
from workers.dataplane.wire import Transport, Wire
from workers.tls import TlsConfig, server_context

log = structlog.get_logger(__name__)

_BACKLOG: Final = 64
_ACCEPT_POLL: Final = 0.5  # the accept loop wakes this often to notice stop()
_LINGER: Final = 2.0  # how long a refused sender gets to read our ERROR before we hang up
_BUSY_WAIT: Final = 5.0


class StreamServer:
    """Listens on ``bind`` and applies streams granted (by ``secret``) to ``host``.

    ``ledger_path`` (a file under the worker's data directory) keeps used grants across
    restarts; without it they are remembered for this process's life only. At most
    ``max_connections`` are served at once; a connection must send its whole HELLO within
    ``handshake_timeout`` seconds, and one still waiting for its grant to be checked is cut
    when the slots are full and another connects (see ``_admit``).
    """

    def __init__(
        self,
        backend: ReceiveBackend,
        *,
        host: str,
        bind: tuple[str, int],
        secret: bytes,
        tls: TlsConfig | None = None,
        stall_timeout: float = 30.0,
        heartbeat_interval: float = 2.0,
        max_connections: int = 64,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        ledger_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_interval >= stall_timeout:
            raise ConfigError("heartbeat interval must be shorter than the stall timeout")
        self._ctx = ServerContext(
            backend=backend,
            host=host,
            secret=secret,
            ledger=GrantLedger(clock, path=ledger_path),
            heartbeat_interval=heartbeat_interval,
            # well inside the sender's patience for our ACCEPT (its stall timeout)
            busy_wait=min(_BUSY_WAIT, stall_timeout / 2),
            handshake_timeout=handshake_timeout,
            clock=clock,
        )
        self._bind = bind
        self._tls = server_context(tls) if tls is not None else None
        self._stall_timeout = stall_timeout
        self._max_connections = max_connections
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: dict[threading.Thread, socket.socket] = {}
        # connections whose HELLO has not been granted yet, oldest first (see _admit)
        self._pending: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when bound to port 0)."""
        if self._listener is None:
            raise ConfigError("stream server not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and start accepting; returns at once."""
        keep_stream_buffers()
        try:
            family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
            listener = socket.create_server(self._bind, family=family, backlog=_BACKLOG)
        except OSError as exc:
            raise ConfigError(f"stream server cannot listen on {self._bind}: {exc}") from exc
        listener.settimeout(_ACCEPT_POLL)
        self._listener = listener
        self._thread = context_thread(self._accept_loop, name="zfleet-stream-server")
        self._thread.start()
        log.info("stream_server.started", host=self._ctx.host, address=self.address)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, cut every connection (partial receives stay resumable), join."""
        self._stopping.set()
        if self._listener is not None:
            # wakes the accept() in progress at once (Linux) instead of at the next poll
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in connections:
            thread.join(timeout)
        log.info("stream_server.stopped", host=self._ctx.host)

    def __enter__(self) -> StreamServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    log.error("stream_server.accept_failed", error=str(exc))
                return
            thread = context_thread(
                self._serve, args=(sock, f"{peer[0]}:{peer[1]}"), name="zfleet-stream"
            )
            if not self._admit(thread, sock, f"{peer[0]}:{peer[1]}"):
                sock.close()
                continue
            thread.start()

    def _admit(self, thread: threading.Thread, sock: socket.socket, peer: str) -> bool:
        """Make room for a new connection, or refuse it (False).

        When every slot is taken, the connection that has waited longest for its grant to be
        checked is cut to make room: a sender with a grant sends its HELLO at once, so a flood of
        connections that never finish theirs cannot keep it out (it would, were new connections
        refused instead). Only when every slot holds a granted transfer is the newcomer refused;
        its sender retries later."""
        with self._lock:
            if len(self._connections) >= self._max_connections:
                if not self._pending:
                    log.warning("stream_server.busy", peer=peer)
                    return False
                oldest = next(iter(self._pending))
                victim = self._pending.pop(oldest)
                log.warning("stream_server.handshake_evicted", peer=peer)
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)
                # its thread leaves _connections when it ends; the new one may go over by the
                # few being evicted at this moment, never by more
            self._connections[thread] = sock
            self._pending[thread] = sock
        return True

    def _granted(self) -> None:
        with self._lock:
            self._pending.pop(threading.current_thread(), None)

    def _serve(self, sock: socket.socket, peer: str) -> None:
        try:
            sock.settimeout(self._ctx.handshake_timeout)
            conn: Transport = sock
            if self._tls is not None:
                try:
                    # stop() still shuts the plain socket down, which ends the TLS stream too
                    conn = TlsStream.server(self._tls, sock, within=self._ctx.handshake_timeout)
                except (ssl.SSLError, OSError) as exc:
                    log.warning("stream.tls_refused", peer=peer, error=str(exc))
                    return
            wire = Wire(conn, peer=peer, timeout=self._stall_timeout)
            try:
                serve_stream(wire, self._ctx, on_granted=self._granted)
            except ZfleetError as exc:  # only when even the ERROR frame could not go out
                log.warning("stream.dropped", peer=peer, error=str(exc))
            wire.linger(_LINGER)
        finally:
            try:
                sock.close()
            finally:
                with self._lock:
                    self._connections.pop(threading.current_thread(), None)
                    self._pending.pop(threading.current_thread(), None)
