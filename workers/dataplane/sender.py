"""push_transfer: one `zfs send`, compressed on several threads, fanned out to many targets.

Every target is opened first (a peer answers HELLO with its resume token, if it holds a partial
receive of this stream). Targets without a token share one full send; each target with a token
gets its own `zfs send -t` for the rest. A target that fails drops out and the others go on; the
report says per target what happened, and the caller retries the failed ones later on their own.

The reader looks at records only where it matters (the BEGIN, to check each peer's grant at the
source); past that it cuts the stream into plain byte chunks. Every consumer takes any split
(``zfs receive``, the object store's record framer), while walking every record in Python costs
about 14 us a record here (protocol.stream, unverified): under 100 MB/s on metadata-heavy streams.
"""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import structlog

from protocol.errors import (
    ConfigError,
    GrantError,
    TransferCancelled,
    TransferError,
    ZfleetError,
)
from protocol.frames import Prepared, compress_payload
from protocol.grants import read_claims
from protocol.log import context, context_thread
from protocol.stream import BeginInfo, parse_begin, read_records
from workers.dataplane.compress import ParallelCompressor, default_threads
from workers.dataplane.memory import keep_stream_buffers
from workers.dataplane.progress import ProgressCallback, ProgressMeter
from workers.dataplane.sinks import Chunk, LinkOptions, PeerSink, Sink, make_sink
from workers.dataplane.targets import Target, TransferReport
from workers.zfs.base import SendSpec, SendStream

log = structlog.get_logger(__name__)

# 256 KiB: a chunk, its compressed form and zstd's tables stay within a core's L2 cache (2 MiB
# here), which made the whole transfer cheaper than with 1 MiB chunks (about 1.6 vs 1.75 CPU s/GB
# over loopback, 2.0 vs 2.3 over mutual TLS, bench/transfer.py), though each frame costs about
# 50 us a peer in Python at both ends; zstd -1 only looks 512 KiB back anyway, so the ratio
# stays the same to 0.001
CHUNK_SIZE: Final = 256 << 10
MIN_CHUNK: Final = 4096
MIN_LEVEL: Final = 1  # zstd's levels
MAX_LEVEL: Final = 22
MAX_CHUNK: Final = 16 << 20  # well under a frame's payload limit


class SendSource(Protocol):
    """What the sender needs from a ZFS backend (every ZfsBackend has these)."""

    def send(self, spec: SendSpec) -> SendStream: ...

    def estimate(self, spec: SendSpec) -> int: ...


@dataclass(frozen=True)
class SendOptions:
    """Tuning of one push; the defaults suit a LAN."""

    chunk_size: int = CHUNK_SIZE
    threads: int | None = None  # compression threads; None: one per core
    link: LinkOptions = field(default_factory=LinkOptions)
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ConfigError(
                f"chunk size must be {MIN_CHUNK}..{MAX_CHUNK} bytes, got {self.chunk_size}"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"compression threads must be at least 1, got {self.threads}")


def read_chunks(stream: SendStream, size: int, cancel: threading.Event) -> Iterator[bytes]:
    """The send stream in chunks of ``size`` bytes (the last may be shorter)."""
    pending = bytearray()
    while not cancel.is_set():
        data = stream.read(size - len(pending))
        if not data:
            break
        if not pending and len(data) == size:
            yield data
            continue
        pending += data
        if len(pending) >= size:
            yield bytes(pending)
            pending.clear()
    if pending and not cancel.is_set():
        yield bytes(pending)


def push_transfer(
    backend: SendSource,
    send_spec: SendSpec,
    targets: Sequence[Target],
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    compression_level: int = 1,
    bwlimit: int | None = None,
    options: SendOptions | None = None,
) -> TransferReport:
    """Send ``send_spec`` to every target at once; a report per target, never an exception
    for one target's failure (a bad argument is a ConfigError). ``bwlimit`` (bytes/s) applies
    to each peer link on its own."""
    opts = options or SendOptions()
    keep_stream_buffers()
    if not MIN_LEVEL <= compression_level <= MAX_LEVEL:
        raise ConfigError(
            f"compression level must be {MIN_LEVEL}..{MAX_LEVEL}, got {compression_level}"
        )
    # every line of this transfer, from any of its threads, names the dataset sent
    with context(dataset=send_spec.snapshot.split("@", 1)[0]):
        stop = cancel or threading.Event()
        started = time.monotonic()
        bound = log.bind(snapshot=send_spec.snapshot, targets=len(targets))
        sinks = [
            make_sink(t, send_spec, opts.link, stop, tls=opts.tls, throttle_rate=bwlimit)
            for t in targets
        ]
        _open_all(sinks)
        groups: dict[str | None, list[Sink]] = {}
        for sink in sinks:
            if sink.error is None:
                groups.setdefault(sink.resume_token, []).append(sink)
        bound.info("transfer.started", resumes=sum(1 for token in groups if token))

        # the full send (if any) goes first and reports progress; resumed sends run beside it
        work = sorted(groups.items(), key=lambda item: item[0] is not None)
        estimate: list[int | None] = [None]

        def run(token: str | None, members: list[Sink], report_progress: bool) -> None:
            spec = send_spec if token is None else replace(send_spec, resume_token=token)
            meter = ProgressMeter(send_spec.snapshot, progress if report_progress else None)
            if report_progress and progress is not None:
                estimate[0] = meter.estimate = _estimate(backend, spec)
            _fan_out(
                backend, spec, members, cancel=stop, meter=meter, level=compression_level, opts=opts
            )

        threads = [
            context_thread(run, args=(token, members, False), name="zfleet-send")
            for token, members in work[1:]
        ]
        for thread in threads:
            thread.start()
        if work:
            run(*work[0], True)
        for thread in threads:
            thread.join()
        report = TransferReport(
            snapshot=send_spec.snapshot,
            targets=tuple(sink.report() for sink in sinks),
            elapsed=time.monotonic() - started,
            estimate=estimate[0],
        )
        bound.info(
            "transfer.finished",
            ok=report.ok,
            failed=[t.target for t in report.failed()],
            elapsed=round(report.elapsed, 3),
        )
        return report


def _open_all(sinks: Sequence[Sink]) -> None:
    """Open and start every sink at once: a peer that hangs in its handshake must not delay the
    others."""

    def open_one(sink: Sink) -> None:
        try:
            sink.open()
        except ZfleetError as exc:
            sink.fail(exc)
            return
        sink.start()  # from now on it heartbeats while the others open

    threads = [context_thread(open_one, args=(s,), name="zfleet-open") for s in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _check_first(chunks: Iterator[bytes], sinks: Sequence[Sink], spec: SendSpec) -> Iterator[bytes]:
    """Pass the chunks on, after a look at the stream's BEGIN in the first one.

    A peer whose grant names other guids than the send produced is failed here, before a byte
    goes to it: the server would refuse it anyway, but the mistake (usually the planner's) is
    clearer said at the source. Compound streams are left to the server's fuller check.
    """
    first = next(chunks, None)
    if first is None:
        return
    begin = _peek_begin(first)
    if begin is not None:
        log.info(
            "transfer.stream",
            snapshot=spec.snapshot,
            toname=begin.toname,
            toguid=f"{begin.toguid:#x}",
            fromguid=f"{begin.fromguid:#x}",
            features=list(begin.feature_names),
        )
        for sink in sinks:
            if isinstance(sink, PeerSink) and not begin.compound:
                _check_peer_grant(sink, begin.fromguid, begin.toguid)
    yield first
    yield from chunks


def _peek_begin(data: bytes) -> BeginInfo | None:
    try:
        return parse_begin(next(read_records(io.BytesIO(data), verify=False)))
    except (ZfleetError, StopIteration):
        return None  # not in this chunk, or not readable: the server decides


def _check_peer_grant(sink: PeerSink, fromguid: int, toguid: int) -> None:
    try:
        claims = read_claims(sink.target.grant)
    except GrantError as exc:
        sink.fail(exc)
        return
    if (claims.fromguid, claims.toguid) != (fromguid, toguid):
        sink.fail(
            GrantError(
                f"the send produced {fromguid:#x} -> {toguid:#x}, but the grant for "
                f"{sink.label} allows {claims.fromguid:#x} -> {claims.toguid:#x}"
            )
        )


def _estimate(backend: SendSource, spec: SendSpec) -> int | None:
    try:
        return backend.estimate(spec)
    except ZfleetError as exc:  # progress without a total is still progress
        log.warning("transfer.estimate_failed", snapshot=spec.snapshot, error=str(exc))
        return None


def _compressor(level: int, *, digest: bool) -> Callable[[bytes], Prepared]:
    def compress(data: bytes) -> Prepared:
        return compress_payload(data, level, digest=digest)

    return compress


def _needs_digest(sinks: Sequence[Sink], tls: ssl.SSLContext | None) -> bool:
    """Whether a payload digest is worth computing at compression time: only a peer over plain
    TCP puts one in its frames (over mutual TLS the AEAD authenticates every byte; files and the
    object store take the raw bytes). Over TLS that saves hashing every wire byte once, about
    5% of the transfer's CPU (BLAKE3 over a 78 MB wire at some 5.7 GB/s)."""
    return tls is None and any(isinstance(sink, PeerSink) for sink in sinks)


def _fan_out(
    backend: SendSource,
    spec: SendSpec,
    sinks: list[Sink],
    *,
    cancel: threading.Event,
    meter: ProgressMeter,
    level: int,
    opts: SendOptions,
) -> None:
    """One send into ``sinks`` (opened and started); every sink ends finished or failed."""
    live = list(sinks)
    try:
        stream = backend.send(spec)
    except ZfleetError as exc:
        for sink in live:
            sink.fail(exc)
        return
    pool = ParallelCompressor(
        _compressor(level, digest=_needs_digest(sinks, opts.tls)),
        threads=opts.threads or default_threads(),
    )
    try:
        chunks = _check_first(read_chunks(stream, opts.chunk_size, cancel), sinks, spec)
        for seq, (raw, prepared) in enumerate(pool.map(chunks)):
            chunk = Chunk(seq, raw, prepared)
            live = [sink for sink in live if sink.put(chunk)]
            meter.add(len(raw), len(prepared.data))
            if not live or cancel.is_set():
                break
        if cancel.is_set():
            raise TransferCancelled(f"transfer of {spec.snapshot} cancelled")
        if not live:
            stream.cancel()
            return
        stream.close()  # raises if `zfs send` failed: then no target may see an END
    except ZfleetError as exc:
        stream.cancel()
        for sink in sinks:  # fail() keeps an earlier error; it also waits for the sink's thread
            sink.fail(exc)
        return
    except Exception as exc:  # a backend bug must not leave sinks and children behind
        stream.cancel()
        wrapped = TransferError(f"send of {spec.snapshot} failed: {type(exc).__name__}: {exc}")
        for sink in sinks:
            sink.fail(wrapped)
        raise
    finally:
        for sink in sinks:
            if sink not in live:
                sink.join()  # a sink that dropped out is still finishing its abort
    for sink in live:
        sink.finish()
    meter.finish()
