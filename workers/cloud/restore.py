"""Restore: regenerate a stored stream byte for byte, running checksums included.

``restore_stream`` yields bytes chunks the data plane pipes into ``zfs receive``; memory stays
bounded by one batch of records and a few cached compression groups (blobs are fetched with
one ranged GET per pack and batch).
The whole stream's keyed digest is checked at the end: a restore never ends "successfully" with
bytes that differ from what was uploaded. ``restore_chain`` lists the streams, full first, that
rebuild a snapshot.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from typing import Final

import structlog

from protocol.errors import StoreCorrupt
from workers.cloud import manifest as mf
from workers.cloud.packs import BlobEntry, Location, blob_from_group, open_group, pack_key
from workers.cloud.records import ZERO, Drr, fletcher4, pack_cksum
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)

BATCH_RECORDS: Final = 256
CHUNK_BYTES: Final = 1024 * 1024
CACHED_GROUPS: Final = 16  # about 16 MiB of decompressed groups
MAX_GAP: Final = 1024 * 1024  # unneeded bytes read rather than making another request


class BlobReader:
    """Reads blobs by id: one ranged GET per pack and batch, groups decrypted once and cached."""

    def __init__(self, repo: Repository, cached_groups: int = CACHED_GROUPS) -> None:
        self._repo = repo
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._max = cached_groups

    def _remember(self, key: tuple[str, int], group: bytes) -> None:
        self._cache[key] = group
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def fetch(self, ids: Sequence[bytes]) -> dict[bytes, bytes]:
        """The plaintext of every blob in ``ids``."""
        repo = self._repo
        locs: list[Location] = []
        missing: dict[str, dict[int, BlobEntry]] = defaultdict(dict)  # pack -> group offset
        for blob_id in set(ids):
            loc = repo.index.get(blob_id)
            if loc is None:
                raise StoreCorrupt(
                    f"blob {blob_id.hex()[:16]} is not in the index: run `zfleet cloud verify`"
                )
            locs.append(loc)
            if (loc.pack, loc.entry.offset) not in self._cache:
                missing[loc.pack][loc.entry.offset] = loc.entry
        for pack, groups in missing.items():
            for run in _runs(sorted(groups.values(), key=lambda e: e.offset)):
                start, end = run[0].offset, run[-1].offset + run[-1].length
                data = repo.target.get(pack_key(pack), start, end - start)
                if len(data) != end - start:
                    raise StoreCorrupt(f"pack {pack[:16]} is shorter than its index says")
                for e in run:
                    sealed = data[e.offset - start : e.offset - start + e.length]
                    group = open_group(repo.crypto, e, sealed, f"pack {pack[:16]}")
                    self._remember((pack, e.offset), group)
        out: dict[bytes, bytes] = {}
        for loc in locs:
            group = self._cache[(loc.pack, loc.entry.offset)]
            self._cache.move_to_end((loc.pack, loc.entry.offset))
            out[loc.entry.id] = blob_from_group(
                repo.crypto, loc.entry, group, f"pack {loc.pack[:16]}"
            )
        return out


def _runs(groups: list[BlobEntry]) -> list[list[BlobEntry]]:
    """Groups (sorted by offset) split where reading the gap would cost more than a request."""
    runs: list[list[BlobEntry]] = []
    for e in groups:
        if runs and e.offset - (runs[-1][-1].offset + runs[-1][-1].length) <= MAX_GAP:
            runs[-1].append(e)
        else:
            runs.append([e])
    return runs


def restore_stream(repo: Repository, m: mf.Manifest) -> Iterator[bytes]:
    """The original stream of manifest ``m``, as chunks of about 1 MiB."""
    reader = BlobReader(repo)
    state = ZERO
    digest = repo.crypto.stream_digest()
    out = bytearray()
    held: bytes | None = None
    size = 0
    for seg_id in m.segments:
        what = f"segment of {m.snapshot}"
        entries = mf.decode_segment(reader.fetch([seg_id])[seg_id], what)
        for i in range(0, len(entries), BATCH_RECORDS):
            batch = entries[i : i + BATCH_RECORDS]
            blobs = reader.fetch([b for _h, b, _c in batch if b is not None])
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
