"""Restore: regenerate a stored stream byte for byte, running checksums included.

``restore_stream`` yields bytes chunks the data plane pipes into ``zfs receive``; memory stays
bounded by one batch of records (at most 8 MiB of payload), one read run and a few cached
compression groups.
The whole stream's keyed digest is checked at the end: a restore never ends "successfully" with
bytes that differ from what was uploaded. ``restore_chain`` lists the streams, full first, that
rebuild a snapshot.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from typing import Final

import structlog

from protocol.errors import StoreCorrupt
from protocol.stream import Fletcher4
from workers.cloud import manifest as mf
from workers.cloud.packs import BlobEntry, blob_from_group, open_group, pack_key
from workers.cloud.records import Drr, pack_cksum
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)

BATCH_RECORDS: Final = 256
BATCH_BYTES: Final = 8 * 1024 * 1024  # payload bytes fetched at once (large blocks: fewer)
CHUNK_BYTES: Final = 1024 * 1024
CACHED_GROUPS: Final = 16  # about 16 MiB of decompressed groups
MAX_GAP: Final = 1024 * 1024  # unneeded bytes read rather than making another request


class BlobReader:
    """Reads blobs by id: one ranged GET per run of nearby groups, groups decrypted once.

    Each group is cut into the blobs asked for as soon as it is opened, so one call holds at
    most one read run and the blobs it returns; the last few groups are cached for the next.
    """

    def __init__(self, repo: Repository, cached_groups: int | None = None) -> None:
        self._repo = repo
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._max = CACHED_GROUPS if cached_groups is None else cached_groups

    def _remember(self, key: tuple[str, int], group: bytes) -> None:
        self._cache[key] = group
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def fetch(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """The plaintext of every blob in ``ids``."""
        repo = self._repo
        out: dict[bytes, bytes] = {}
        # pack -> group offset -> the blobs wanted from that group
        todo: dict[str, dict[int, list[BlobEntry]]] = defaultdict(lambda: defaultdict(list))
        for blob_id in set(ids):
            loc = repo.index.get(blob_id)
            if loc is None:
                raise StoreCorrupt(
                    f"blob {blob_id.hex()[:16]} is not in the index: run `zfleet cloud verify`"
                )
            key = (loc.pack, loc.entry.offset)
            cached = self._cache.get(key)
            if cached is None:
                todo[loc.pack][loc.entry.offset].append(loc.entry)
                continue
            self._cache.move_to_end(key)
            out[blob_id] = blob_from_group(repo.crypto, loc.entry, cached, f"pack {loc.pack[:16]}")
        for pack, groups in todo.items():
            where = f"pack {pack[:16]}"
            heads = sorted((wanted[0] for wanted in groups.values()), key=lambda e: e.offset)
            for run in _runs(heads):
                start, end = run[0].offset, run[-1].offset + run[-1].length
                data = repo.target.get(pack_key(pack), start, end - start)
                if len(data) != end - start:
                    raise StoreCorrupt(f"{where} is shorter than its index says")
                for head in run:
                    sealed = data[head.offset - start : head.offset - start + head.length]
                    group = open_group(repo.crypto, head, sealed, where)
                    self._remember((pack, head.offset), group)
                    for e in groups[head.offset]:
                        out[e.id] = blob_from_group(repo.crypto, e, group, where)
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


def _batches(repo: Repository, entries: list[mf.Entry]) -> Iterator[list[mf.Entry]]:
    """Consecutive records whose payloads add up to at most BATCH_BYTES (or BATCH_RECORDS)."""
    batch: list[mf.Entry] = []
    size = 0
    for entry in entries:
        loc = repo.index.get(entry[1]) if entry[1] is not None else None
        length = loc.entry.raw_length if loc is not None else 0
        if batch and (size + length > BATCH_BYTES or len(batch) >= BATCH_RECORDS):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch


def restore_stream(repo: Repository, m: mf.Manifest) -> Iterator[bytes]:
    """The original stream of manifest ``m``, as chunks of about 1 MiB."""
    reader = BlobReader(repo)
    running = Fletcher4()
    digest = repo.crypto.stream_digest()
    out = bytearray()
    held: bytes | None = None
    size = 0
    for seg_id in m.segments:
        what = f"segment of {m.snapshot}"
        entries = mf.decode_segment(reader.fetch([seg_id])[seg_id], what)
        for batch in _batches(repo, entries):
            blobs = reader.fetch(b for _h, b, _c in batch if b is not None)
            for header, blob, literal in batch:
                # The bytes after what the checksum must know first (the whole BEGIN; the
                # header of any other record) are summed in one pass, straight from ``out``.
                start = len(out)
                if int.from_bytes(header[:4], "little") == Drr.BEGIN:
                    running.reset()
                    out += header
                else:
                    running.update(header)
                    out += header
                    out += literal if literal is not None else pack_cksum(running.value)
                    start += len(header)
                if blob is not None:
                    out += blobs[blob]
                with memoryview(out) as view:
                    running.update(view[start:])
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
