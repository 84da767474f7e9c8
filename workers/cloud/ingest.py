"""The store's sink: a send stream is pushed in, record by record, and leaves as packs.

``StreamIngest.write(bytes)`` is what the data plane's fan-out sender calls next to its peer sinks;
memory stays bounded (one incomplete record, one open pack, ``max_inflight`` packs uploading on a
small thread pool, or none with ``max_inflight=0``: then each pack is uploaded inline, one
manifest segment). ``finish()`` commits: packs, then an index segment,
then the manifest; only the manifest makes the stream visible, so an aborted or crashed upload
never leaves a half stream. An aborted upload (the sender was cut, the store went away for a
while) still indexes the packs it did store, so that the retry of the same stream deduplicates
against them and uploads only the rest; nothing refers to them until a manifest does, and prune
removes them after its grace period if none ever does. A crashed upload leaves its packs
unindexed, for prune.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Final

import structlog

from protocol.errors import (
    StoreConflict,
    StoreError,
    StoreUnavailable,
    StreamChecksumError,
    StreamFormatError,
    StreamTruncated,
)
from protocol.stream import Fletcher4
from protocol.stream.fletcher4 import piece_sums
from workers.cloud import manifest as mf
from workers.cloud.leases import LEASE_TTL, Lease, check_no_prune
from workers.cloud.packs import BlobEntry, BlobKind, PackWriter, pack_key, write_segment
from workers.cloud.records import (
    CKSUM_OFFSET,
    CKSUM_SIZE,
    HEADER_SIZE,
    Batch,
    Begin,
    Drr,
    Framer,
    pack_cksum,
    parse_begin,
)
from workers.cloud.repo import Repository, now

log = structlog.get_logger(__name__)

MAX_INFLIGHT: Final = 2
ENTRY_OVERHEAD: Final = 40  # a manifest entry beyond its header: blob id and msgpack framing


@dataclass(frozen=True)
class StreamRef:
    """What an upload produced: the manifest naming the stream, and what it cost."""

    manifest: str
    snapshot: str
    toguid: int
    fromguid: int
    size: int
    new_blobs: int
    new_bytes: int  # bytes of packs this upload wrote
    records: int


class StreamIngest:
    """Stores one send stream in a repository. Use from one thread (the sender's)."""

    def __init__(
        self,
        repo: Repository,
        *,
        host: str = "",
        lease_ttl: float = LEASE_TTL,
        upload_threads: int = 2,
        seal_threads: int = 2,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self._repo = repo
        self._crypto = repo.crypto
        self._host = host
        # The lease comes before any look at the index (see leases.py for why).
        self._lease = Lease(repo.target, ttl=lease_ttl, host=host or None)
        try:
            check_no_prune(repo.target)
            self._index = repo.fresh_index()
        except BaseException:
            self._lease.release()
            raise
        self._log = log.bind(upload=self._lease.upload, repo=repo.config.id)
        self._framer = Framer()
        self._digest = repo.crypto.stream_digest()
        self._running = Fletcher4()  # the stream's running checksum, restarted at each BEGIN
        self._begins: list[Begin] = []
        self._last_kind: int | None = None
        self._entries: list[mf.Entry] = []
        self._entry_bytes = 0
        self._segments: list[bytes] = []
        # zstd and AEAD release the GIL: groups are sealed on these threads while we parse.
        self._sealers = cf.ThreadPoolExecutor(max_workers=seal_threads, thread_name_prefix="seal")
        self._writer = PackWriter(self._crypto, self._sealers)
        self._pending: set[bytes] = set()  # blob ids written by this upload
        self._new_packs: dict[str, list[BlobEntry]] = {}
        self._stored: set[str] = set()  # new packs whose upload completed
        self._kept = 0  # blob bytes an aborted upload left indexed for its retry
        self._used_packs: set[str] = set()
        self._new_bytes = 0
        self._pool = cf.ThreadPoolExecutor(max_workers=upload_threads, thread_name_prefix="pack-up")
        self._inflight: deque[cf.Future[None]] = deque()
        self._max_inflight = max_inflight
        self._closed = False

    # -- records ------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview) -> None:
        """Consume the next bytes of the stream (any split, any size)."""
        if self._closed:
            raise StoreError("write after finish() or abort()")
        self._digest.update(data)
        batch = self._framer.split(data)
        try:
            self._records(batch)
        finally:
            batch.view.release()
        if batch.error is not None:
            raise batch.error
        self._lease.renew_if_due()

    def _records(self, batch: Batch) -> None:
        """Check and store a batch of whole records.

        The running checksum is needed at every record's checksum field (and restarts at each
        BEGIN): the pieces between those points are summed for the whole batch at once
        (``piece_sums``), then folded in record order, a few integer operations per record.
        """
        view, records = batch.view, batch.records
        if not records:
            return
        # Only whole words have a checksum: stop at the first record whose payload is not (it
        # is rejected below, after its own checksum, as a record-by-record check would).
        limit = len(view)
        cuts: list[int] = []
        for kind, start, end in records:
            cuts.append(start)
            if kind != Drr.BEGIN:
                cuts.append(start + CKSUM_OFFSET)
            if (end - start) % 4:
                limit = end
                break
        pieces = iter(piece_sums(view[:limit], cuts))
        running = self._running
        pos = 0  # bytes of view folded into running
        for n, (kind, start, end) in enumerate(records):
            header = bytes(view[start : start + HEADER_SIZE])
            stop = start if kind == Drr.BEGIN else start + CKSUM_OFFSET
            while pos < stop:
                piece = next(pieces)
                running.fold(piece)
                pos += piece[0] * 4
            literal = None
            if kind == Drr.BEGIN:
                self._begins.append(parse_begin(header, batch.offset + end))
                # Every (sub)stream restarts its running checksum; BEGIN's own field is toname.
                running.reset()
                norm = header
            else:
                stored = header[CKSUM_OFFSET:]
                if stored != pack_cksum(running.value):
                    # libzfs ends compound streams (and their header part) with END records that
                    # carry no checksum; any other mismatch is a damaged stream.
                    if kind != Drr.END or stored != bytes(CKSUM_SIZE):
                        raise StreamChecksumError(
                            "record checksum does not match the stream",
                            offset=batch.offset + start,
                            record=batch.record + n,
                        )
                    literal = stored
                norm = header[:CKSUM_OFFSET]
            if (end - start) % 4:
                raise StreamFormatError(
                    "payload length is not a multiple of 4", offset=batch.offset + end
                )
            blob = (
                self._blob(view[start + HEADER_SIZE : end], BlobKind.DATA)
                if end - start > HEADER_SIZE
                else None
            )
            self._last_kind = kind
            self._entries.append((norm, blob, literal))
            self._entry_bytes += len(norm) + ENTRY_OVERHEAD
            if self._entry_bytes >= mf.SEGMENT_BYTES:
                self._flush_segment()
        for piece in pieces:
            running.fold(piece)

    def _blob(self, data: bytes | memoryview, kind: BlobKind) -> bytes:
        blob_id = self._crypto.content_id(data)
        if blob_id in self._pending:
            return blob_id
        loc = self._index.get(blob_id)
        if loc is not None:
            self._used_packs.add(loc.pack)
            return blob_id
        self._writer.add(blob_id, kind, bytes(data))  # copied only when new
        self._pending.add(blob_id)
        if self._writer.size >= self._repo.config.pack_size:
            self._flush_pack()
        return blob_id

    def _flush_segment(self) -> None:
        if self._entries:
            self._segments.append(self._blob(mf.encode_segment(self._entries), BlobKind.META))
            self._entries = []
            self._entry_bytes = 0

    # -- packs --------------------------------------------------------------------------------

    def _flush_pack(self) -> None:
        if not len(self._writer):
            return
        pack_id, parts, entries = self._writer.finish()
        size = sum(map(len, parts))
        self._new_packs[pack_id] = entries
        self._new_bytes += size
        self._lease.add(pack_id)  # listed before it exists, so prune never misses it
        if not self._max_inflight:  # uploads inline: one pack in memory at a time
            self._upload(pack_id, parts)
            return
        while len(self._inflight) >= self._max_inflight:
            self._inflight.popleft().result()
        self._inflight.append(self._pool.submit(self._upload, pack_id, parts))
        self._log.debug("pack.queued", pack=pack_id[:16], bytes=size, blobs=len(entries))

    def _upload(self, pack_id: str, parts: tuple[bytes, ...]) -> None:
        # A conflict means same name, same bytes: another upload stored this very pack.
        with contextlib.suppress(StoreConflict):
            self._repo.target.put_parts_if_absent(pack_key(pack_id), parts)
        self._stored.add(pack_id)

    def _drain(self) -> None:
        while self._inflight:
            self._inflight.popleft().result()

    # -- end ----------------------------------------------------------------------------------

    def finish(self) -> StreamRef:
        """Commit the stream: upload what is left, write index and manifest, drop the lease."""
        if self._closed:
            raise StoreError("finish() called twice")
        try:
            self._framer.close()
            if not self._begins:
                raise StreamTruncated("empty stream", offset=0)
            if self._last_kind != Drr.END:
                raise StreamTruncated(
                    "stream ends without an END record", offset=self._framer.offset
                )
            self._flush_segment()
            self._flush_pack()
            self._drain()
            # before the index names the new packs: an index entry for a pruned pack would let
            # later uploads deduplicate against data that is gone
            self._check_lease_held()
            if self._new_packs:
                seg = write_segment(self._repo.target, self._crypto, self._new_packs)
                for pack_id, entries in self._new_packs.items():
                    self._index.add(pack_id, entries)
                self._index.segments.add(seg)
            ref = self._commit_manifest()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._pool.shutdown()
        self._sealers.shutdown()
        self._lease.release()
        self._log.info(
            "upload.finished",
            snapshot=ref.snapshot,
            bytes=ref.size,
            new_bytes=ref.new_bytes,
            manifest=ref.manifest[:16],
        )
        return ref

    def _check_lease_held(self) -> None:
        """Before the manifest makes the stream visible, make sure its packs all survived.

        A sender that stalled longer than the lease lets a prune run without seeing this upload;
        then every pack the stream refers to is checked, and a lost one fails the upload
        (retryable: nothing became visible) instead of committing a stream that cannot restore.
        """
        if now() < self._lease.expires:
            self._lease.renew_if_due()
            return
        self._log.warning("lease.expired_before_commit")
        packs = self._used_packs | set(self._new_packs)
        lost = [p for p in sorted(packs) if self._repo.target.head(pack_key(p)) is None]
        if lost:
            raise StoreUnavailable(
                f"the upload outlived its lease and {len(lost)} pack(s) it needs were pruned; "
                "retry the upload"
            )
        self._lease.renew_if_due()

    def _commit_manifest(self) -> StreamRef:
        first = self._begins[0]
        subs = [b for b in self._begins if not b.compound] or [first]
        packs = sorted(self._used_packs | set(self._new_packs))
        m = mf.Manifest(
            dataset=first.toname.split("@", 1)[0],
            snapshot=first.toname,
            toguid=subs[-1].toguid,
            fromguid=subs[0].fromguid,
            flags=first.flags,
            features=first.features,
            compound=first.compound,
            resuming=any(b.resuming for b in subs),
            substreams=tuple(mf.Substream(b.toname, b.toguid, b.fromguid) for b in subs),
            size=self._framer.offset,
            digest=self._digest.digest(),
            segments=tuple(self._segments),
            packs=tuple(packs),
            created=now(),
            host=self._host,
        )
        manifest_id = mf.store(self._repo.target, self._crypto, m)
        return StreamRef(
            manifest=manifest_id,
            snapshot=m.snapshot,
            toguid=m.toguid,
            fromguid=m.fromguid,
            size=m.size,
            new_blobs=sum(len(e) for e in self._new_packs.values()),
            new_bytes=self._new_bytes,
            records=self._framer.records,
        )

    def abort(self) -> None:
        """Give up: nothing becomes visible; uploaded packs are left for prune."""
        if self._closed:
            return
        self._closed = True
        for fut in self._inflight:
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sealers.shutdown(wait=True, cancel_futures=True)
        self._index_stored_packs()  # under the lease still: no prune can run in between
        try:
            self._lease.release()
        except StoreError as e:
            self._log.warning("lease.release_failed", error=str(e))
        self._log.info("upload.aborted", bytes=self._framer.offset,
                       packs_kept=len(self._stored), bytes_kept=self._kept)  # fmt: skip

    def _index_stored_packs(self) -> None:
        """One index segment for the packs already stored, so a retry need not send them again."""
        stored = {p: e for p, e in self._new_packs.items() if p in self._stored}
        self._kept = 0
        if not stored or set(stored) <= self._index.packs():
            return  # nothing stored, or finish() indexed them already
        if now() >= self._lease.expires:
            # a prune may have run without seeing this upload: its packs may be gone
            self._log.warning("upload.packs_not_indexed", packs=len(stored), reason="lease expired")
            return
        try:
            seg = write_segment(self._repo.target, self._crypto, stored)
        except StoreError as e:  # the store may be what failed: prune will take the packs
            self._log.warning("upload.packs_not_indexed", packs=len(stored), error=str(e))
            return
        for pack_id, entries in stored.items():
            self._index.add(pack_id, entries)
        self._index.segments.add(seg)
        self._kept = sum(e.raw_length for es in stored.values() for e in es)
