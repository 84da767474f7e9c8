"""Content-addressed blobs packed into pack objects, and the repository index that finds them.

A blob is one payload (a WRITE block, a bonus buffer, a segment of manifest headers...), named by
its keyed BLAKE3 id, zstd-compressed when that helps, then sealed. Blobs are appended to a pack
until it reaches its target size (16 MiB by default, 64 MiB at most); the pack ends with its own
sealed header listing its blobs, so a pack can be read (verify, index rebuild) on its own:

    pack := sealed blob* || sealed header || u32 header length (little endian)

A pack's name is the keyed BLAKE3 of its bytes, so a flipped bit shows without decrypting.
The repository index is a set of immutable segments (``index/<id>``), one per upload, each
listing the packs that upload wrote; writers never rewrite another writer's segment, so two
concurrent uploads cannot lose each other's entries (creation is ``put_if_absent``).
"""

from __future__ import annotations

import enum
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import msgpack
import structlog
import zstandard

from protocol.errors import ConfigError, StoreCorrupt, StoreError
from workers.cloud.crypto import Crypto
from workers.cloud.targets import Target

log = structlog.get_logger(__name__)

MIB: Final = 1024 * 1024
PACK_TARGET: Final = 16 * MIB
PACK_MAX: Final = 64 * MIB
ZSTD_LEVEL: Final = 3
_TRAILER: Final = struct.Struct("<I")
_HEADER_AAD: Final = b"zfleet pack header"
_INDEX_AAD: Final = b"zfleet index segment"


class BlobKind(enum.IntEnum):
    DATA = 0  # a record payload
    META = 1  # a segment of a stream manifest


FLAG_ZSTD: Final = 1


@dataclass(frozen=True)
class BlobEntry:
    """Where one blob sits inside a pack."""

    id: bytes
    kind: BlobKind
    flags: int
    offset: int
    length: int  # stored (sealed) length
    raw_length: int


@dataclass(frozen=True)
class Location:
    """Where the repository index says a blob is."""

    pack: str
    entry: BlobEntry


def pack_key(pack_id: str) -> str:
    """The object key of a pack."""
    return f"data/{pack_id[:2]}/{pack_id}"


def pack_id_of(key: str) -> str:
    """The pack id in a pack's object key."""
    return key.rsplit("/", 1)[-1]


def _blob_aad(blob_id: bytes) -> bytes:
    return b"zfleet blob " + blob_id


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    # ZstdCompressor objects are not thread-safe: one per thread.
    c: zstandard.ZstdCompressor | None = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def seal_blob(crypto: Crypto, blob_id: bytes, data: bytes | memoryview) -> tuple[int, bytes]:
    """Compress (when smaller) and seal one blob: ``(flags, sealed bytes)``."""
    packed = _compressor().compress(data)
    if len(packed) < len(data):
        return FLAG_ZSTD, crypto.seal(packed, _blob_aad(blob_id))
    return 0, crypto.seal(data, _blob_aad(blob_id))


def open_blob(crypto: Crypto, entry: BlobEntry, sealed: bytes, where: str) -> bytes:
    """A blob's plaintext, checked against its id; :class:`StoreCorrupt` if anything is off."""
    what = f"blob {entry.id.hex()[:16]} in {where}"
    data = crypto.open(sealed, _blob_aad(entry.id), what)
    if entry.flags & FLAG_ZSTD:
        try:
            data = _decompressor().decompress(data, max_output_size=entry.raw_length)
        except zstandard.ZstdError as e:
            raise StoreCorrupt(f"{what}: does not decompress") from e
    if len(data) != entry.raw_length or crypto.content_id(data) != entry.id:
        raise StoreCorrupt(f"{what}: content does not match its id")
    return data


class PackWriter:
    """Accumulates sealed blobs into one pack."""

    def __init__(self, crypto: Crypto) -> None:
        self._crypto = crypto
        self._buf = bytearray()
        self.entries: list[BlobEntry] = []

    @property
    def size(self) -> int:
        return len(self._buf)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, blob_id: bytes, kind: BlobKind, data: bytes | memoryview) -> BlobEntry:
        """Append one blob; returns its entry (offset within this pack)."""
        flags, sealed = seal_blob(self._crypto, blob_id, data)
        return self.add_sealed(blob_id, kind, flags, sealed, len(data))

    def add_sealed(
        self, blob_id: bytes, kind: BlobKind, flags: int, sealed: bytes, raw_length: int
    ) -> BlobEntry:
        """Append a blob already sealed by :func:`seal_blob` (on another thread)."""
        entry = BlobEntry(blob_id, kind, flags, len(self._buf), len(sealed), raw_length)
        self._buf += sealed
        self.entries.append(entry)
        return entry

    def finish(self) -> tuple[str, bytes]:
        """The pack's id and bytes; the writer is empty afterwards."""
        rows = [
            [e.id, int(e.kind), e.flags, e.offset, e.length, e.raw_length] for e in self.entries
        ]
        header = self._crypto.seal(msgpack.packb(rows), _HEADER_AAD)
        self._buf += header
        self._buf += _TRAILER.pack(len(header))
        data = bytes(self._buf)
        pack_id = self._crypto.content_id(data).hex()
        self._buf = bytearray()
        self.entries = []
        return pack_id, data


def _entries_from_rows(rows: object, what: str) -> list[BlobEntry]:
    out: list[BlobEntry] = []
    try:
        if not isinstance(rows, list):
            raise TypeError
        for r in rows:
            blob_id, kind, flags, offset, length, raw = r
            if not isinstance(blob_id, bytes) or len(blob_id) != 32:
                raise TypeError
            out.append(
                BlobEntry(blob_id, BlobKind(kind), int(flags), int(offset), int(length), int(raw))
            )
    except (TypeError, ValueError) as e:
        raise StoreCorrupt(f"{what}: malformed blob list") from e
    return out


def read_pack_header(crypto: Crypto, pack_id: str, data: bytes) -> list[BlobEntry]:
    """The blob entries of a whole pack, after checking its name matches its bytes."""
    what = f"pack {pack_id[:16]}"
    if crypto.content_id(data).hex() != pack_id:
        raise StoreCorrupt(f"{what}: content does not match its name")
    if len(data) < _TRAILER.size:
        raise StoreCorrupt(f"{what}: truncated")
    (hlen,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    start = len(data) - _TRAILER.size - hlen
    if start < 0:
        raise StoreCorrupt(f"{what}: bad header length")
    header = crypto.open(data[start : len(data) - _TRAILER.size], _HEADER_AAD, f"{what} header")
    try:
        rows = msgpack.unpackb(header)
    except ValueError as e:
        raise StoreCorrupt(f"{what}: header is not msgpack") from e
    entries = _entries_from_rows(rows, what)
    if any(e.offset + e.length > start for e in entries):
        raise StoreCorrupt(f"{what}: a blob lies outside the pack")
    return entries


# -- the repository index ---------------------------------------------------------------------


class Index:
    """blob id -> location, loaded from every ``index/`` segment (thread-safe for lookups)."""

    def __init__(self) -> None:
        self._blobs: dict[bytes, Location] = {}
        self.segments: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def get(self, blob_id: bytes) -> Location | None:
        return self._blobs.get(blob_id)

    def add(self, pack: str, entries: Iterable[BlobEntry]) -> None:
        with self._lock:
            for e in entries:
                self._blobs.setdefault(e.id, Location(pack, e))

    def packs(self) -> set[str]:
        """Every pack some index entry points into."""
        return {loc.pack for loc in self._blobs.values()}

    def items(self) -> Iterator[tuple[bytes, Location]]:
        return iter(list(self._blobs.items()))

    def add_segment(self, seg: str, sealed: bytes, crypto: Crypto) -> None:
        """Add the entries of one stored index segment."""
        for pack, entries in read_segment(crypto, seg, sealed):
            self.add(pack, entries)
        self.segments.add(seg)

    @classmethod
    def load(cls, target: Target, crypto: Crypto) -> Index:
        """Read every index segment of the repository."""
        index = cls()
        for info in target.list("index/"):
            index.add_segment(info.key.rsplit("/", 1)[-1], target.get(info.key), crypto)
        log.debug("index.loaded", segments=len(index.segments), blobs=len(index))
        return index


def encode_segment(crypto: Crypto, packs: dict[str, list[BlobEntry]]) -> tuple[str, bytes]:
    """A sealed index segment for ``packs`` and its id."""
    body = {
        pid: [[e.id, int(e.kind), e.flags, e.offset, e.length, e.raw_length] for e in entries]
        for pid, entries in packs.items()
    }
    sealed = crypto.seal(
        zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(msgpack.packb(body)), _INDEX_AAD
    )
    return crypto.content_id(sealed).hex(), sealed


def read_segment(crypto: Crypto, seg: str, sealed: bytes) -> list[tuple[str, list[BlobEntry]]]:
    """The (pack, entries) pairs of one index segment."""
    what = f"index segment {seg[:16]}"
    if crypto.content_id(sealed).hex() != seg:
        raise StoreCorrupt(f"{what}: content does not match its name")
    try:
        body = msgpack.unpackb(
            zstandard.ZstdDecompressor().decompress(crypto.open(sealed, _INDEX_AAD, what))
        )
    except (ValueError, zstandard.ZstdError) as e:
        raise StoreCorrupt(f"{what}: undecodable") from e
    if not isinstance(body, dict):
        raise StoreCorrupt(f"{what}: malformed")
    return [(str(pid), _entries_from_rows(rows, what)) for pid, rows in body.items()]


def write_segment(target: Target, crypto: Crypto, packs: dict[str, list[BlobEntry]]) -> str:
    """Store one immutable index segment; returns its id."""
    seg, sealed = encode_segment(crypto, packs)
    try:
        target.put_if_absent(f"index/{seg}", sealed)
    except StoreError as e:
        # Same content, same name: another writer stored the identical segment already.
        if target.head(f"index/{seg}") is None:
            raise
        log.debug("index.segment_exists", segment=seg, error=str(e))
    return seg


def check_pack_target(size: int) -> int:
    """A validated pack target size (tests use small packs; production 16-64 MiB)."""
    if not 4096 <= size <= PACK_MAX:
        raise ConfigError(f"pack size must be between 4 KiB and {PACK_MAX // MIB} MiB")
    return size
