"""A content-addressed store of records: one file per distinct 128 KiB block.

Snapshots, clones and received streams all point at records by their BLAKE3 digest, so a block
shared by many snapshots or clones is stored once. A block file is written to a temporary name
and renamed into place, so a killed writer leaves either the whole block or a stray temporary
file (swept by :meth:`BlockStore.sweep`), never a torn block under a real name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import blake3

from protocol.errors import ZfsError

HASH_LEN: Final = 32
HOLE: Final = bytes(HASH_LEN)  # the block id of a hole (a record never written, all zeros)


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
            return self.path(block).read_bytes()
        except OSError as exc:
            raise ZfsError(f"pool I/O error: block {block.hex()} is missing") from exc

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
