"""Per-stream manifests: the stream's record headers, normalised, plus references to its blobs.

A stream is kept as a list of entries, one per record: the header without its running checksum
(BEGIN keeps all 312 bytes: its checksum field is the tail of ``drr_toname``), the id of the blob
holding its payload, and the stored checksum only in the one case it is not the one restore
would regenerate (the checksum-less END records libzfs writes around compound streams).
Entries are grouped into segments stored as META blobs, so a manifest object stays small and
ingest memory stays bounded.

Manifests chain: an incremental's ``fromguid`` is the ``toguid`` of the manifest it applies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgpack

from protocol.errors import StoreCorrupt, StoreError
from workers.cloud.blobstore import BlobStore
from workers.cloud.crypto import Crypto

MANIFEST_VERSION: Final = 1
SEGMENT_BYTES: Final = 1024 * 1024  # raw header bytes per segment (about 3,700 records)
_AAD: Final = b"zfleet manifest"

# One record: (normalised header, payload blob id or None, literal checksum or None).
Entry = tuple[bytes, bytes | None, bytes | None]


@dataclass(frozen=True)
class Substream:
    """One BEGIN..END part of a (possibly compound) stream."""

    toname: str
    toguid: int
    fromguid: int


@dataclass(frozen=True)
class Manifest:
    """What the store knows about one uploaded stream."""

    dataset: str
    snapshot: str  # the first BEGIN's toname (``pool/fs@snap``)
    toguid: int
    fromguid: int
    flags: int
    features: int
    compound: bool
    resuming: bool
    substreams: tuple[Substream, ...]
    size: int  # stream bytes
    digest: bytes  # keyed BLAKE3 of the whole stream, checked at the end of a restore
    segments: tuple[bytes, ...]  # META blob ids, in order
    packs: tuple[str, ...]  # every pack holding a blob of this stream
    created: float
    host: str = ""
    id: str = field(default="", compare=False)

    @property
    def full(self) -> bool:
        return self.fromguid == 0


def encode(crypto: Crypto, m: Manifest) -> tuple[str, bytes]:
    """The sealed manifest and its id (the keyed hash of the sealed bytes)."""
    body = {
        "v": MANIFEST_VERSION,
        "dataset": m.dataset,
        "snapshot": m.snapshot,
        "toguid": m.toguid,
        "fromguid": m.fromguid,
        "flags": m.flags,
        "features": m.features,
        "compound": m.compound,
        "resuming": m.resuming,
        "subs": [[s.toname, s.toguid, s.fromguid] for s in m.substreams],
        "size": m.size,
        "digest": m.digest,
        "segments": list(m.segments),
        "packs": list(m.packs),
        "created": m.created,
        "host": m.host,
    }
    sealed = crypto.seal(msgpack.packb(body), _AAD)
    return crypto.content_id(sealed).hex(), sealed


def decode(crypto: Crypto, manifest_id: str, sealed: bytes) -> Manifest:
    """A manifest from its sealed bytes; :class:`StoreCorrupt` on any damage."""
    what = f"manifest {manifest_id[:16]}"
    if crypto.content_id(sealed).hex() != manifest_id:
        raise StoreCorrupt(f"{what}: content does not match its name")
    try:
        b = msgpack.unpackb(crypto.open(sealed, _AAD, what))
        if b["v"] != MANIFEST_VERSION:
            raise StoreCorrupt(f"{what}: unknown version {b['v']}")
        return Manifest(
            dataset=str(b["dataset"]),
            snapshot=str(b["snapshot"]),
            toguid=int(b["toguid"]),
            fromguid=int(b["fromguid"]),
            flags=int(b["flags"]),
            features=int(b["features"]),
            compound=bool(b["compound"]),
            resuming=bool(b["resuming"]),
            substreams=tuple(Substream(str(n), int(t), int(f)) for n, t, f in b["subs"]),
            size=int(b["size"]),
            digest=bytes(b["digest"]),
            segments=tuple(bytes(s) for s in b["segments"]),
            packs=tuple(str(p) for p in b["packs"]),
            created=float(b["created"]),
            host=str(b["host"]),
            id=manifest_id,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreCorrupt(f"{what}: malformed") from e


def encode_segment(entries: Sequence[Entry]) -> bytes:
    """The raw (unsealed) bytes of a segment blob."""
    return bytes(msgpack.packb([list(e) for e in entries]))


def decode_segment(data: bytes, what: str) -> list[Entry]:
    """The entries of a segment blob."""
    try:
        rows = msgpack.unpackb(data)
        out: list[Entry] = []
        for header, blob, cksum in rows:
            if not isinstance(header, bytes) or len(header) not in (280, 312):
                raise TypeError
            out.append((header, blob, cksum))
        return out
    except (TypeError, ValueError) as e:
        raise StoreCorrupt(f"{what}: malformed segment") from e


def store(target: BlobStore, crypto: Crypto, m: Manifest) -> str:
    """Write a manifest (create-only); returns its id."""
    manifest_id, sealed = encode(crypto, m)
    target.put_if_absent(f"manifests/{manifest_id}", sealed)
    return manifest_id


def load_all(target: BlobStore, crypto: Crypto) -> tuple[list[Manifest], dict[str, StoreError]]:
    """Every manifest, oldest first, and the ones that could not be read (id -> error)."""
    found: list[Manifest] = []
    broken: dict[str, StoreError] = {}
    for info in target.list("manifests/"):
        mid = info.key.rsplit("/", 1)[-1]
        try:
            found.append(decode(crypto, mid, target.get(info.key)))
        except StoreError as e:
            broken[mid] = e
    found.sort(key=lambda m: (m.created, m.id))
    return found, broken


def chain_to(manifests: Iterable[Manifest], snapshot_or_guid: str | int) -> list[Manifest]:
    """The manifests to replay, full first, to rebuild a snapshot (by name or guid).

    Raises :class:`StoreError` when the snapshot or a link of its chain is not in the store.
    """
    ms = list(manifests)
    by_toguid: dict[int, Manifest] = {}
    for m in ms:
        if not m.resuming:
            by_toguid.setdefault(m.toguid, m)
    target: Manifest | None = None
    for m in reversed(ms):
        names = {m.snapshot, *(s.toname for s in m.substreams)}
        if m.resuming:
            continue
        if (
            snapshot_or_guid in (m.toguid, str(m.toguid))
            or snapshot_or_guid == m.snapshot
            or (
                snapshot_or_guid in names
                and m.substreams
                and m.substreams[-1].toname == snapshot_or_guid
            )
        ):
            target = m
            break
    if target is None:
        raise StoreError(f"no stream for {snapshot_or_guid!r} in the store")
    chain = [target]
    seen = {target.toguid}
    while chain[0].fromguid:
        parent = by_toguid.get(chain[0].fromguid)
        if parent is None or parent.toguid in seen:
            raise StoreError(
                f"the chain to {target.snapshot} is broken: no stream ends at guid "
                f"{chain[0].fromguid:#x} (needed by {chain[0].snapshot})"
            )
        seen.add(parent.toguid)
        chain.insert(0, parent)
    return chain
