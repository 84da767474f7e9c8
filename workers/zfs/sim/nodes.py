"""Objects (znodes) and manifests: what a snapshot is made of.

An object is a file, directory or symlink with a number (its ZFS object id), metadata (the
"bonus": type, mode, owner, mtime, size) and a content: a list of 128 KiB records, each a block id
or a hole. A directory's content is its entry list (name -> object id); a symlink's content is its
target. Treating all three alike lets one code path store, compare, send and receive them.

A manifest maps object ids to node digests; a node digest names one version of one object, so an
unchanged object costs a snapshot 40 bytes, not a copy.
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import blake3
import msgpack
import zstandard

from protocol.errors import ZfsError

from .blocks import HASH_LEN, HOLE

RECORD: Final = 128 * 1024  # recordsize: every object's content is cut in records of this size
ROOT_OBJECT: Final = 34  # the root directory's object id, as on a fresh OpenZFS filesystem
VOLUME_OBJECT: Final = 1  # a volume's data object
FIRST_OBJECT: Final = 128  # first object id handed to files, as OpenZFS does

BONUS: Final = struct.Struct("<BBHIIIqQ")  # version, kind, pad, mode, uid, gid, mtime_ns, size
BONUS_VERSION: Final = 1
ENTRY_HEAD: Final = struct.Struct("<QH")  # object id, name length


class Kind(enum.IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3


@dataclass(frozen=True)
class Meta:
    """The bonus of an object: everything but its content."""

    kind: Kind
    mode: int  # permission bits and the set-id/sticky bits (no file type bits)
    uid: int
    gid: int
    mtime_ns: int
    size: int

    def encode(self) -> bytes:
        return BONUS.pack(
            BONUS_VERSION, self.kind, 0, self.mode, self.uid, self.gid, self.mtime_ns, self.size
        )

    @classmethod
    def decode(cls, data: bytes) -> Meta:
        if len(data) != BONUS.size:
            raise ZfsError(f"object metadata has {len(data)} bytes, not {BONUS.size}")
        version, kind, _pad, mode, uid, gid, mtime_ns, size = BONUS.unpack_from(data)
        if version != BONUS_VERSION or kind not in Kind._value2member_map_:
            raise ZfsError(f"object metadata has unknown version {version} or kind {kind}")
        return cls(Kind(kind), mode, uid, gid, mtime_ns, size)


@dataclass(frozen=True)
class Node:
    """One version of one object: its bonus bytes and its records."""

    bonus: bytes
    blocks: tuple[bytes, ...]

    @property
    def digest(self) -> bytes:
        h = blake3.blake3(len(self.bonus).to_bytes(4, "little"))
        h.update(self.bonus)
        for block in self.blocks:
            h.update(block)
        return h.digest()

    @property
    def meta(self) -> Meta:
        return Meta.decode(self.bonus)

    def record_len(self, index: int, size: int) -> int:
        """Bytes of record ``index`` for an object of ``size`` bytes."""
        return max(0, min(RECORD, size - index * RECORD))

    def meta_size(self) -> int:
        """The object's size; for an encrypted bonus (a locked raw receive), its records' span."""
        try:
            return self.meta.size
        except ZfsError:
            return len(self.blocks) * RECORD

    def allocated(self) -> int:
        """Bytes held by records that are not holes."""
        size = self.meta_size()
        return sum(self.record_len(i, size) for i, b in enumerate(self.blocks) if b != HOLE)

    def blocks_blob(self) -> bytes:
        return b"".join(self.blocks)

    @staticmethod
    def split_blocks(blob: bytes) -> tuple[bytes, ...]:
        return tuple(blob[i : i + HASH_LEN] for i in range(0, len(blob), HASH_LEN))


def encode_entries(entries: Mapping[str, int]) -> bytes:
    """A directory's content: its entries sorted by name."""
    out = bytearray()
    for name in sorted(entries):
        raw = name.encode("utf-8", "surrogateescape")
        out += ENTRY_HEAD.pack(entries[name], len(raw)) + raw
    return bytes(out)


def decode_entries(data: bytes) -> dict[str, int]:
    """Inverse of :func:`encode_entries`; raises ZfsError on a damaged entry list."""
    entries: dict[str, int] = {}
    pos = 0
    while pos < len(data):
        if pos + ENTRY_HEAD.size > len(data):
            raise ZfsError("directory entry list is truncated")
        obj, length = ENTRY_HEAD.unpack_from(data, pos)
        pos += ENTRY_HEAD.size
        name = data[pos : pos + length].decode("utf-8", "surrogateescape")
        if len(name) == 0 or "/" in name or name in (".", ".."):
            raise ZfsError(f"directory entry {name!r} is not a valid file name")
        entries[name] = obj
        pos += length
    return entries


def chunks(data: bytes) -> Iterator[bytes]:
    """``data`` cut into records."""
    for i in range(0, len(data), RECORD):
        yield data[i : i + RECORD]


Manifest = dict[int, bytes]  # object id -> node digest

# A zstd context must never be used by two threads at once: it releases the GIL while it works,
# so a shared one garbles (or fails on) concurrent manifests. Threads of one process that use
# separate SimBackends (or a send thread and a receive) are not serialized by any lock.
_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    cctx: zstandard.ZstdCompressor | None = getattr(_local, "cctx", None)
    if cctx is None:
        cctx = _local.cctx = zstandard.ZstdCompressor(level=3)
    return cctx


def _dctx() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def encode_manifest(manifest: Mapping[int, bytes]) -> bytes:
    flat: list[object] = []
    for obj in sorted(manifest):
        flat += [obj, manifest[obj]]
    return _cctx().compress(msgpack.packb(flat))


def decode_manifest(blob: bytes) -> Manifest:
    try:
        flat = msgpack.unpackb(_dctx().decompress(blob))
    except (zstandard.ZstdError, ValueError, msgpack.UnpackException) as exc:
        raise ZfsError(f"snapshot manifest is damaged: {exc}") from exc
    return {int(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat), 2)}
