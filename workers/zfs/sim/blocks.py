"""A content-addressed store of records: one file per distinct 128 KiB block.

Snapshots, clones and received streams all point at records by their BLAKE3 digest, so a block
shared by many snapshots or clones is stored once. A block file is written to a temporary name
and renamed into place, so a killed writer leaves either the whole block or a stray temporary
file (swept by :meth:`BlockStore.sweep`), never a torn block under a real name.

A receive stores its blocks through a :class:`BlockWriter`: the files are made on a thread of
their own while the stream goes on being read and verified (making a file is mostly the
kernel's work, done without the interpreter lock).
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import blake3

from protocol.errors import ZfsError

HASH_LEN: Final = 32
HOLE: Final = bytes(HASH_LEN)  # the block id of a hole (a record never written, all zeros)
_READ_SIZE: Final = 1 << 18
WRITER_DEPTH: Final = 32  # blocks queued for the writer thread (4 MiB of 128 KiB records)


def digest(data: bytes) -> bytes:
    """The block id of ``data``."""
    return blake3.blake3(data).digest()


class BlockStore:
    """Blocks of one pool, under ``<pool>/blocks/ab/cdef...``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, block: bytes) -> Path:
        name = block.hex()
        return self.root / name[:2] / name[2:]

    def put(self, data: bytes) -> bytes:
        """Store ``data`` (if not already there) and return its block id."""
        block = digest(data)
        self.put_as(block, data)
        return block

    def put_as(self, block: bytes, data: bytes) -> None:
        """Store ``data`` under an id the caller computed (ciphertext of an encrypted block)."""
        path = os.path.join(self.root, block[:1].hex(), block[1:].hex())
        try:
            # Already there: refresh its age, so a sweep does not take a block wanted again.
            os.utime(path)
            return
        except FileNotFoundError:
            pass
        # A dot name: never read as a block, and swept if a killed writer leaves it behind. Unique
        # per writer (not just per process): two threads storing the same block must not
        # truncate each other's temporary file and rename a torn block into place.
        tmp = os.path.join(
            os.path.dirname(path),
            f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp",
        )
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ZfsError(f"cannot write block {block.hex()}: {exc.strerror}") from exc

    def get(self, block: bytes) -> bytes:
        """The bytes of a block; a missing block means the pool lost data."""
        try:
            fd = os.open(os.path.join(self.root, block[:1].hex(), block[1:].hex()), os.O_RDONLY)
        except OSError as exc:
            raise ZfsError(f"pool I/O error: block {block.hex()} is missing") from exc
        try:
            # one read of a size no block reaches: a block is one record (at most 128 KiB, or
            # a sealed record a little more), so the second read of a loop is never needed
            parts = [os.read(fd, _READ_SIZE)]
            while len(parts[-1]) == _READ_SIZE:
                parts.append(os.read(fd, _READ_SIZE))
        except OSError as exc:
            raise ZfsError(f"pool I/O error: block {block.hex()}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def has(self, block: bytes) -> bool:
        return self.path(block).exists()

    def sweep(self, live: Iterable[bytes], *, grace: float = 600.0) -> int:
        """Delete blocks not in ``live`` and stray temporary files; returns the count.

        Files younger than ``grace`` seconds are kept: another process may have written them for
        a transaction it has not committed yet.
        """
        keep = {b.hex() for b in live}
        cutoff = time.time() - grace
        removed = 0
        if not self.root.exists():
            return 0
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                name = sub.name + entry.name
                if entry.name.startswith(".") or name not in keep:
                    try:
                        if entry.stat().st_mtime > cutoff:
                            continue
                        os.unlink(entry.path)
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed


class BlockWriter:
    """Stores blocks into a :class:`BlockStore` on a thread of its own.

    :meth:`put` returns the block id at once; the file exists once :meth:`flush` has returned
    (call it before committing anything that names the blocks). A failed write is raised by the
    next :meth:`put` or by :meth:`flush`. At most ``depth`` blocks wait, so memory stays flat.
    """

    def __init__(self, store: BlockStore, depth: int = WRITER_DEPTH) -> None:
        self.store = store
        self._queue: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue(depth)
        self._thread: threading.Thread | None = None
        self._error: ZfsError | None = None
        self._seen: set[bytes] = set()  # queued once already: a repeated record is stored once

    def put(self, data: bytes) -> bytes:
        block = digest(data)
        self.put_as(block, data)
        return block

    def put_as(self, block: bytes, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if block in self._seen:
            return
        self._seen.add(block)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zfleet-sim-blocks", daemon=True)
            self._thread.start()
        self._queue.put((block, data))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    self.store.put_as(*item)
            except ZfsError as exc:
                self._error = exc
            except OSError as exc:
                self._error = ZfsError(f"cannot write block {item[0].hex()}: {exc}")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every block put so far is stored; raise the first failure."""
        if self._thread is not None:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop the thread (after what is queued); safe to call more than once."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
