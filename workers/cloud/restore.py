"""Restore: regenerate a stored stream byte for byte, running checksums included.

``restore_stream`` yields bytes chunks the data plane pipes into ``zfs receive``; memory stays
bounded by one batch of records (their blobs are fetched with one ranged GET per pack and batch).
The whole stream's keyed digest is checked at the end: a restore never ends "successfully" with
bytes that differ from what was uploaded. ``restore_chain`` lists the streams, full first, that
rebuild a snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Final

import structlog

from protocol.errors import StoreCorrupt
from workers.cloud import manifest as mf
from workers.cloud.packs import Location, open_blob, pack_key
from workers.cloud.records import ZERO, Drr, fletcher4, pack_cksum
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)

BATCH_RECORDS: Final = 256
CHUNK_BYTES: Final = 1024 * 1024


def fetch_blobs(repo: Repository, ids: Sequence[bytes]) -> dict[bytes, bytes]:
    """The plaintext of ``ids``, one ranged read per pack."""
    by_pack: dict[str, list[Location]] = defaultdict(list)
    for blob_id in set(ids):
        loc = repo.index.get(blob_id)
        if loc is None:
            raise StoreCorrupt(f"blob {blob_id.hex()[:16]} is not in the index (pack lost?)")
        by_pack[loc.pack].append(loc)
    out: dict[bytes, bytes] = {}
    for pack, locs in by_pack.items():
        start = min(loc.entry.offset for loc in locs)
        end = max(loc.entry.offset + loc.entry.length for loc in locs)
        data = repo.target.get(pack_key(pack), start, end - start)
        if len(data) != end - start:
            raise StoreCorrupt(f"pack {pack[:16]} is shorter than its index says")
        for loc in locs:
            e = loc.entry
            sealed = data[e.offset - start : e.offset - start + e.length]
            out[e.id] = open_blob(repo.crypto, e, sealed, f"pack {pack[:16]}")
    return out


def restore_stream(repo: Repository, m: mf.Manifest) -> Iterator[bytes]:
    """The original stream of manifest ``m``, as chunks of about 1 MiB."""
    state = ZERO
    digest = repo.crypto.stream_digest()
    out = bytearray()
    held: bytes | None = None
    size = 0
    for seg_id in m.segments:
        what = f"segment of {m.snapshot}"
        entries = mf.decode_segment(fetch_blobs(repo, [seg_id])[seg_id], what)
        for i in range(0, len(entries), BATCH_RECORDS):
            batch = entries[i : i + BATCH_RECORDS]
            blobs = fetch_blobs(repo, [b for _h, b, _c in batch if b is not None])
            for header, blob, literal in batch:
                if int.from_bytes(header[:4], "little") == Drr.BEGIN:
                    state = fletcher4(header, ZERO)
                    out += header
                else:
                    state = fletcher4(header, state)
                    cksum = literal if literal is not None else pack_cksum(state)
                    state = fletcher4(cksum, state)
                    out += header
                    out += cksum
                if blob is not None:
                    payload = blobs[blob]
                    state = fletcher4(payload, state)
                    out += payload
                if len(out) >= CHUNK_BYTES:
                    if held is not None:
                        yield held
                    held = bytes(out)
                    out.clear()
                    digest.update(held)
                    size += len(held)
    digest.update(out)
    size += len(out)
    if size != m.size or digest.digest() != m.digest:
        raise StoreCorrupt(f"restored stream of {m.snapshot} differs from the one uploaded")
    # The last chunk (with the END record) is held back until the digest matched, so that
    # `zfs receive` never commits a stream that differs from the one uploaded.
    if held is not None:
        yield held
    if out:
        yield bytes(out)
    log.debug("restore.stream_done", snapshot=m.snapshot, bytes=size)


def restore_chain(repo: Repository, snapshot: str | int) -> list[mf.Manifest]:
    """The manifests to replay, full first, to rebuild ``snapshot`` (a name or a guid)."""
    manifests, _broken = mf.load_all(repo.target, repo.crypto)
    return mf.chain_to(manifests, snapshot)
