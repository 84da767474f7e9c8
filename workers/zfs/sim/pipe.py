"""A bounded in-memory pipe between a receive's writer and the thread that applies the stream.

``zfs receive`` reads its stream from a pipe while ``zfs send`` is still writing it: the two
work at the same time and the stream never lands on disk whole. :class:`BytePipe` gives the
simulated receive the same shape inside one process: the writer (a data-plane thread, the
``zfs`` front end) pushes chunks, the applying thread reads exact sizes (a record header, then
its payload), and the writer waits while more than ``limit`` bytes are buffered, so memory
stays flat whatever the stream's size.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final

DEFAULT_LIMIT: Final = 8 << 20


class Chunks:
    """Bytes queued as the chunks they came in, handed out in any sizes with as few copies as
    possible (a read of exactly one queued chunk is that chunk)."""

    __slots__ = ("_chunks", "_head", "size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already taken
        self.size = 0  # bytes queued and not taken yet

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self.size += len(chunk)

    def clear(self) -> None:
        self._chunks.clear()
        self._head = 0
        self.size = 0

    def take(self, n: int) -> bytes:
        """The next ``min(n, size)`` bytes."""
        n = min(n, self.size)
        if n == 0:
            return b""
        first = self._chunks[0]
        if self._head == 0 and len(first) == n:
            self._chunks.popleft()
            self.size -= n
            return first
        parts: list[bytes] = []
        need = n
        while need:
            chunk = self._chunks[0]
            part = chunk[self._head : self._head + need]
            parts.append(part)
            need -= len(part)
            self._head += len(part)
            if self._head == len(chunk):
                self._chunks.popleft()
                self._head = 0
        self.size -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)


class BytePipe:
    """One writer, one reader; :meth:`close` is the writer's end of input, :meth:`stop` the
    reader's going away (later writes are refused, so the writer stops sending).

    Each side wakes the other only when it waits and can now go on (a reader taking a 312-byte
    header from a full pipe must not wake a writer that would find it still full): a stream of
    small records then costs no thread switch per record.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._cond = threading.Condition()
        self._chunks = Chunks()
        self._want = 0  # what a waiting reader needs (may exceed limit: a 16 MiB payload)
        self._limit = limit
        self._eof = False
        self._stopped = False
        self._reader_waits = False
        self._writer_waits = False

    def _room(self) -> bool:
        return self._chunks.size < max(self._limit, self._want)

    def write(self, data: bytes) -> bool:
        """Buffer ``data``, waiting for room; False when the reader has stopped."""
        chunk = bytes(data)
        with self._cond:
            while not self._room() and not self._stopped:
                self._writer_waits = True
                self._cond.wait()
            self._writer_waits = False
            if self._stopped:
                return False
            if chunk:
                self._chunks.append(chunk)
                if self._reader_waits and self._chunks.size >= self._want:
                    self._cond.notify_all()
            return True

    def close(self) -> None:
        """No more input: a reader gets what is left, then short reads."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stop(self) -> None:
        """The reader is done (finished or failed): drop what is buffered, refuse more."""
        with self._cond:
            self._stopped = True
            self._chunks.clear()
            self._cond.notify_all()

    def read(self, n: int) -> bytes:
        """``n`` bytes, fewer only at end of input."""
        with self._cond:
            if self._chunks.size < n and not self._eof:
                self._want = n
                if self._writer_waits and self._room():
                    self._cond.notify_all()  # a big payload: the writer may fill past limit
                while self._chunks.size < n and not self._eof:
                    self._reader_waits = True
                    self._cond.wait()
                self._reader_waits = False
                self._want = 0
            out = self._chunks.take(n)
            if self._writer_waits and self._room():
                self._cond.notify_all()
            return out
