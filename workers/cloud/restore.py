"""Restore: regenerate a stored stream byte for byte, running checksums included.

``restore_stream`` yields bytes chunks the data plane pipes into ``zfs receive``; memory stays
bounded by a few batches of records (at most 1 MiB of payload each: the one being laid out, the
one read ahead, the chunk held back), one read run and a few cached compression groups.
The whole stream's keyed digest is checked at the end: a restore never ends "successfully" with
bytes that differ from what was uploaded. ``restore_chain`` lists the streams, full first, that
rebuild a snapshot.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Final

import structlog

from protocol.errors import StoreCorrupt
from protocol.stream import Fletcher4
from protocol.stream.fletcher4 import piece_sums
from workers.cloud import manifest as mf
from workers.cloud.packs import BlobEntry, blob_from_group, open_group, pack_key
from workers.cloud.records import CKSUM_SIZE, Drr, pack_cksum
from workers.cloud.repo import Repository

log = structlog.get_logger(__name__)

BATCH_RECORDS: Final = 512
BATCH_BYTES: Final = 1024 * 1024  # payload bytes fetched at once (large blocks: fewer)
READ_AHEAD: Final = 1  # batches read while the one before is laid out
CACHED_GROUPS: Final = 4  # about 4 MiB of decompressed groups
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


def _all_batches(repo: Repository, m: mf.Manifest) -> Iterator[list[mf.Entry]]:
    """Every batch of the stream, segment after segment (segments read as they are needed)."""
    reader = BlobReader(repo, cached_groups=1)
    for seg_id in m.segments:
        entries = mf.decode_segment(reader.fetch([seg_id])[seg_id], f"segment of {m.snapshot}")
        yield from _batches(repo, entries)


_ZERO_CKSUM: Final = bytes(32)


def _assemble(
    batch: list[mf.Entry], blobs: dict[bytes, bytes], running: Fletcher4
) -> bytearray:
    """The stream bytes of a batch of records, checksums regenerated from ``running``.

    The records are laid out with empty checksum fields first; the running checksum at every
    field (and its restart at every BEGIN) then comes from one pass of ``piece_sums`` over the
    whole batch and a few integer operations per record, each field's value folded in as it
    is filled.
    """
    out = bytearray()
    marks: list[tuple[int, bytes | None]] = []  # checksum field offsets (literal or None)
    begins: list[int] = []
    for header, blob, literal in batch:
        if int.from_bytes(header[:4], "little") == Drr.BEGIN:
            begins.append(len(out))
            out += header
        else:
            out += header
            marks.append((len(out), literal))
            out += _ZERO_CKSUM
        if blob is not None:
            out += blobs[blob]
    cuts = [*begins, *(at for at, _ in marks), *(at + CKSUM_SIZE for at, _ in marks)]
    pieces = iter(piece_sums(out, cuts))
    events = sorted([(at, 1, None) for at in begins] + [(at, 2, lit) for at, lit in marks])
    pos = 0
    for at, what, literal in events:
        while pos < at:
            piece = next(pieces)
            running.fold(piece)
            pos += piece[0] * 4
        if what == 1:  # BEGIN: a new (sub)stream, a new running checksum
            running.reset()
            continue
        value = literal if literal is not None else pack_cksum(running.value)
        out[at : at + CKSUM_SIZE] = value
        running.update(value)
        while pos < at + CKSUM_SIZE:  # the field's own piece(s), summed while it was empty
            pos += next(pieces)[0] * 4
    for piece in pieces:
        running.fold(piece)
    return out  # handed out as it is: never changed afterwards


def restore_stream(repo: Repository, m: mf.Manifest) -> Iterator[bytes | bytearray]:
    """The original stream of manifest ``m``, as chunks of a few MiB.

    Reading runs ahead on a thread (ranged GETs, decryption and decompression release the GIL)
    while this one lays out the records of the batch before.
    """
    reader = BlobReader(repo)
    running = Fletcher4()
    digest = repo.crypto.stream_digest()
    held: bytearray | None = None
    size = 0
    ahead: deque[tuple[list[mf.Entry], cf.Future[dict[bytes, bytes]]]] = deque()
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-read") as pool:
        try:
            batches = _all_batches(repo, m)
            while True:
                while len(ahead) <= READ_AHEAD:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    ids = [b for _h, b, _c in batch if b is not None]
                    ahead.append((batch, pool.submit(reader.fetch, ids)))
                if not ahead:
                    break
                batch, fetched = ahead.popleft()
                chunk = _assemble(batch, fetched.result(), running)
                digest.update(chunk)
                size += len(chunk)
                if held is not None:
                    yield held
                held = chunk
        finally:
            for _batch, fut in ahead:
                fut.cancel()
    if size != m.size or digest.digest() != m.digest:
        raise StoreCorrupt(f"restored stream of {m.snapshot} differs from the one uploaded")
    # The last chunk (with the END record) is held back until the digest matched, so that
    # `zfs receive` never commits a stream that differs from the one uploaded.
    if held is not None:
        yield held
    log.debug("restore.stream_done", snapshot=m.snapshot, bytes=size)


def restore_chain(repo: Repository, snapshot: str | int) -> list[mf.Manifest]:
    """The manifests to replay, full first, to rebuild ``snapshot`` (a name or a guid)."""
    manifests, _broken = mf.load_all(repo.target, repo.crypto)
    return mf.chain_to(manifests, snapshot)
