"""Service fixtures for data-plane tests: a misbehaving TCP proxy and a recording ZFS double.

``FaultyProxy`` sits between a sender and a stream server on 127.0.0.1 and can cut the connection
after N client bytes (a dropped link) or stop forwarding after N bytes (a stalled peer).
``RecordingBackend`` is a stand-in ZFS for unit tests of the wire protocol: it sends given stream
bytes and records what a receive was given and whether it was applied or aborted.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.errors import DatasetNotFound, StreamError, StreamIncomplete, ZfsError
from protocol.stream import read_records
from workers.zfs.base import ObjType, ReceiveResult, ReceiveSpec, SendSpec, ZfsObject


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 that forwards to ``upstream``, then misbehaves on demand.

    ``cut_after``: close both sides once that many client->server bytes went through.
    ``stall_after``: after that many client->server bytes, stop forwarding in both directions
    (sockets stay open, like a hung peer), until ``stop``.
    ``flip_at``: invert the client->server byte at that offset (corruption on the wire).
    Only the first connection misbehaves when ``once`` is set.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        cut_after: int | None = None,
        stall_after: int | None = None,
        flip_at: int | None = None,
        once: bool = True,
    ) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.stall_after = stall_after
        self.flip_at = flip_at
        self.once = once
        self.forwarded: list[int] = []  # client->server bytes per connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        index = 0
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            faulty = index == 0 or not self.once
            self.forwarded.append(0)
            for src, dst, counted in ((client, server, True), (server, client, False)):
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, index, counted, faulty), daemon=True
                )
                thread.start()
                self._threads.append(thread)
            index += 1

    def _pump(
        self, src: socket.socket, dst: socket.socket, index: int, counted: bool, faulty: bool
    ) -> None:
        try:
            while not self._stop.is_set():
                if faulty and self._stalled(index):
                    self._stop.wait()
                    return
                data = src.recv(65536)
                if not data:
                    break
                if counted and faulty and self.cut_after is not None:
                    room = self.cut_after - self.forwarded[index]
                    if room <= len(data):
                        dst.sendall(data[: max(room, 0)])
                        self.forwarded[index] += max(room, 0)
                        self._close(src, dst)
                        return
                if counted and faulty and self.flip_at is not None:
                    at = self.flip_at - self.forwarded[index]
                    if 0 <= at < len(data):
                        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                if counted and faulty and self.stall_after is not None:
                    data = data[: max(self.stall_after - self.forwarded[index], 0)]
                dst.sendall(data)
                if counted:
                    self.forwarded[index] += len(data)
        except OSError:
            pass
        self._close(src, dst)

    def _stalled(self, index: int) -> bool:
        return self.stall_after is not None and self.forwarded[index] >= self.stall_after

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._close(*self._sockets)
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)


class _Stream:
    def __init__(
        self, data: bytes, fail_after: int | None = None, pause: tuple[int, float] | None = None
    ) -> None:
        self._fh = io.BytesIO(data)
        self._fail_after = fail_after
        self._pause = pause
        self.cancelled = False
        self.read_upto = 0  # how far the sender has read

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._fh.tell() >= self._fail_after:
            raise ZfsError("send failed: I/O error", stderr="warning: cannot send: I/O error")
        if self._pause is not None and self._fh.tell() >= self._pause[0]:
            time.sleep(self._pause[1])  # a send that goes quiet (a slow disk, a busy pool)
            self._pause = None
        data = self._fh.read(n)
        self.read_upto += len(data)
        return data

    def close(self) -> None:
        self._fh.close()

    def cancel(self) -> None:
        self.cancelled = True
        self._fh.close()


@dataclass
class _Receive:
    backend: RecordingBackend
    spec: ReceiveSpec
    data: bytearray = field(default_factory=bytearray)

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def finish(self) -> ReceiveResult:
        if self.backend.fail_receive:
            raise ZfsError(self.backend.fail_receive)
        try:  # as zfs receive does: a stream that stops short is not applied, but kept
            for _ in read_records(io.BytesIO(bytes(self.data)), verify=True):
                pass
        except StreamError as exc:
            self.abort()
            raise StreamIncomplete(f"incomplete stream: {exc}") from exc
        self.backend.applied[self.spec.target] = bytes(self.data)
        return ReceiveResult(self.spec.target, f"{self.spec.target}@received", len(self.data))

    def abort(self) -> None:
        self.backend.aborted[self.spec.target] = bytes(self.data)


class RecordingBackend:
    """Sends ``streams[snapshot]``; records receives. Only what the data plane calls."""

    def __init__(self, streams: dict[str, bytes] | None = None) -> None:
        self.streams = streams or {}
        self.applied: dict[str, bytes] = {}
        self.aborted: dict[str, bytes] = {}
        self.receives: list[ReceiveSpec] = []
        self.sent: list[_Stream] = []
        self.fail_receive: str | None = None
        self.fail_send_after: int | None = None
        self.pause_send: tuple[int, float] | None = None

    def send(self, spec: SendSpec) -> _Stream:
        if spec.snapshot not in self.streams:
            raise DatasetNotFound(f"cannot open '{spec.snapshot}': dataset does not exist")
        stream = _Stream(self.streams[spec.snapshot], self.fail_send_after, self.pause_send)
        self.sent.append(stream)
        return stream

    def estimate(self, spec: SendSpec) -> int:
        return len(self.streams[spec.snapshot])

    def receive(self, spec: ReceiveSpec) -> _Receive:
        self.receives.append(spec)
        return _Receive(self, spec)

    def list(self, root: str | None = None, **_: Any) -> list[ZfsObject]:
        if root not in self.applied:
            raise DatasetNotFound(f"cannot open '{root}': dataset does not exist")
        return [ZfsObject(name=root, type=ObjType.FILESYSTEM, guid=1, createtxg=1, creation=0)]


@contextlib.contextmanager
def faulty_proxy(upstream: tuple[str, int], **kwargs: Any) -> Iterator[FaultyProxy]:
    """A FaultyProxy that is stopped on the way out."""
    proxy = FaultyProxy(upstream, **kwargs)
    try:
        yield proxy
    finally:
        proxy.stop()


def zfs_shims(bin_dir: Path, sim_root: Path) -> dict[str, str]:
    """An environment where `zfs` and `zpool` are the front end over a simulated pool root.

    A RealBackend given this environment runs real child processes (argv, pipes, exit codes,
    process-group kills) while the pools live in ``sim_root``.
    """
    bin_dir.mkdir(parents=True)
    for program in ("zfs", "zpool"):
        shim = bin_dir / program
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m workers.zfs.front {program} "$@"\n')
        shim.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "ZFLEET_SIM_ROOT": str(sim_root),
    }


def live_children() -> list[int]:
    """Pids whose parent is this process (running or not yet reaped)."""
    me = str(os.getpid())
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == me:
            found.append(int(status.parent.name))
    return found
