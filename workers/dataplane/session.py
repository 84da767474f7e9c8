"""One incoming stream on a stream server: check the grant, check BEGIN, then `zfs receive -s`.

Order matters for safety: nothing reaches ``zfs receive`` until the grant verifies, its transfer id
is not replayed, and the stream's first BEGIN record (read and checksummed here) carries the
granted from/to guids. A stream cut short leaves the receive's partial state for a resume.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from protocol.errors import (
    DatasetNotFound,
    FrameError,
    GrantError,
    MessageError,
    ResumeTokenStale,
    StreamFormatError,
    StreamTruncated,
    TransferError,
    ZfleetError,
)
from protocol.frames import FrameKind
from protocol.grants import Grant, verify_grant
from protocol.log import context, context_thread
from protocol.messages import from_dict
from protocol.stream import DrrType, Record, decode_resume_token, parse_begin, read_records
from workers.dataplane.ledger import GrantLedger
from workers.dataplane.wire import PROTOCOL_VERSION, Wire, expect
from workers.zfs.base import ObjType, ReceiveResult, ReceiveSink, ReceiveSpec, ZfsObject

log = structlog.get_logger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
_MAX_HEADER_RECORDS: Final = 4  # a compound header is BEGIN, END, then the first sub-BEGIN
# what a sender may ask ``zfs receive -o`` to set here (workers/steps.py asks canmount=noauto)
_SETTABLE: Final[Mapping[str, tuple[str, ...]]] = {"canmount": ("noauto", "off")}


class ReceiveBackend(Protocol):
    """What the stream server needs from a ZFS backend (every ZfsBackend has these)."""

    def receive(self, spec: ReceiveSpec) -> ReceiveSink: ...

    def list(
        self, root: str | None = None, *, recursive: bool = True, types: Any = ...
    ) -> list[ZfsObject]: ...


@dataclass(frozen=True)
class ServerContext:
    """What every session of one server shares."""

    backend: ReceiveBackend
    host: str
    secret: bytes
    ledger: GrantLedger
    heartbeat_interval: float
    busy_wait: float = 0.0  # how long a retry waits for the connection it replaces to end
    handshake_timeout: float = HANDSHAKE_TIMEOUT  # the whole HELLO must arrive within this
    clock: Callable[[], float] = time.time


class _StreamReader:
    """The stream bytes carried by DATA frames, as a file for the record reader.

    Every byte handed out is also kept until ``take_prefix``, so the bytes read to check BEGIN are
    passed on to ``zfs receive`` unchanged.
    """

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._buffer = bytearray()
        self._prefix = bytearray()
        self.ended: dict[str, Any] | None = None
        self.stream_bytes = 0
        self.frames = 0

    def next_payload(self) -> bytes | None:
        """The next DATA payload, or None at END; heartbeats are skipped."""
        if self.ended is not None:
            return None
        while True:
            frame = expect(self._wire.recv(), FrameKind.DATA, FrameKind.HEARTBEAT, FrameKind.END)
            if frame.kind == FrameKind.HEARTBEAT:
                continue
            if frame.kind == FrameKind.END:
                self.ended = dict(frame.header)
                return None
            self.frames += 1
            self.stream_bytes += len(frame.payload)
            return bytes(frame.payload)

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            payload = self.next_payload()
            if payload is None:
                break
            self._buffer += payload
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._prefix += data
        return data

    def take_prefix(self) -> bytes:
        """Everything received so far, in order (read or still buffered), once."""
        data = bytes(self._prefix + self._buffer)
        self._prefix.clear()
        self._buffer.clear()
        return data


def serve_stream(
    wire: Wire, ctx: ServerContext, *, on_granted: Callable[[], None] | None = None
) -> None:
    """Handle one connection to the end; refusals go back to the sender as ERROR frames.

    The HELLO must arrive whole within ``ctx.handshake_timeout`` (a trickle does not stretch it);
    ``on_granted`` is called once its grant has been checked. Every line logged while serving
    (here, in the backend, in helper threads) carries the host and peer, and once the grant is
    read its transfer id and target dataset."""
    with context(host=ctx.host, peer=wire.peer):
        try:
            hello = expect(wire.recv(timeout=ctx.handshake_timeout), FrameKind.HELLO)
            grant = _check_hello(hello.header, ctx)
        except ZfleetError as exc:
            log.warning("stream.refused", error=str(exc), error_type=type(exc).__name__)
            wire.send_error(exc)
            return
        if on_granted is not None:
            on_granted()
        with context(transfer_id=grant.transfer_id, dataset=grant.dataset):
            _serve_granted(wire, ctx, grant, hello.header)


def _serve_granted(wire: Wire, ctx: ServerContext, grant: Grant, header: Mapping[str, Any]) -> None:
    ended = False
    try:
        result = _receive(wire, ctx, grant, header)
        # into the ledger (fsynced) before the sender hears of it: a worker killed between the
        # two must still refuse the grant after its restart
        ctx.ledger.end(grant, applied=True)
        ended = True
        wire.send(FrameKind.RESULT, {"snapshot": result.snapshot, "bytes": result.bytes_received})
        log.info("stream.applied", snapshot=result.snapshot, bytes=result.bytes_received)
    except ZfleetError as exc:
        log.warning("stream.failed", error=str(exc), error_type=type(exc).__name__)
        wire.send_error(exc)
    except Exception as exc:  # a backend bug: the sender still deserves an answer
        log.exception("stream.crashed")
        wire.send_error(TransferError(f"receiver failed: {type(exc).__name__}: {exc}"))
    finally:
        if not ended:
            ctx.ledger.end(grant, applied=False)


def _check_hello(header: Mapping[str, Any], ctx: ServerContext) -> Grant:
    if header.get("version") != PROTOCOL_VERSION:
        raise FrameError(
            f"sender speaks data-plane version {header.get('version')!r}, "
            f"this server {PROTOCOL_VERSION}"
        )
    token = header.get("grant")
    if not isinstance(token, str):
        raise GrantError("HELLO carries no grant")
    grant = verify_grant(ctx.secret, token, now=ctx.clock())
    if grant.host != ctx.host:
        raise GrantError(f"grant is for host {grant.host!r}, this is {ctx.host!r}")
    if header.get("target") != grant.dataset:
        raise GrantError(f"grant is for dataset {grant.dataset!r}, not {header.get('target')!r}")
    ctx.ledger.begin(grant, wait=ctx.busy_wait)
    return grant


def _resume_token(backend: ReceiveBackend, dataset: str) -> str | None:
    try:
        rows = backend.list(dataset, recursive=False, types=(ObjType.FILESYSTEM, ObjType.VOLUME))
    except DatasetNotFound:
        return None
    for row in rows:
        if row.name == dataset and row.receive_resume_token not in (None, "", "-"):
            return row.receive_resume_token
    return None


def _receive_spec(grant: Grant, header: Mapping[str, Any]) -> ReceiveSpec:
    """The sender's typed receive options; the target dataset and -F come from the grant alone
    (the coordinator signed them), so a sender cannot redirect or force a receive."""
    try:
        asked = from_dict(header.get("receive"), ReceiveSpec)
    except MessageError as exc:
        raise FrameError(f"HELLO receive options are malformed: {exc}") from exc
    if asked.target != grant.dataset:
        raise FrameError(f"HELLO asks to receive into {asked.target}, the grant is for "
                         f"{grant.dataset}")  # fmt: skip
    for prop, value in asked.set_props.items():
        # the grant does not sign receive options: a sender may only ask for what zfleet's own
        # senders ask (a replica that does not mount), never e.g. mountpoint=/etc on this host
        if value not in _SETTABLE.get(prop, ()):
            raise GrantError(f"HELLO asks to set {prop}={value!r} on receive; a sender may only "
                             f"set canmount=noauto or off")  # fmt: skip
    return dataclasses.replace(asked, resumable=True, force=grant.force)


def _receive(
    wire: Wire, ctx: ServerContext, grant: Grant, header: Mapping[str, Any]
) -> ReceiveResult:
    spec = _receive_spec(grant, header)
    token = _resume_token(ctx.backend, grant.dataset)
    offset = None
    if token is not None:
        state = decode_resume_token(token)
        if state.toguid != grant.toguid:
            raise ResumeTokenStale(
                f"{grant.dataset} holds a partial receive of another stream "
                f"(toguid {state.toguid:#x}); discard it with `zfs receive -A {grant.dataset}`"
            )
        offset = state.bytes
    wire.send(FrameKind.ACCEPT, {"resume_token": token, "resume_offset": offset})

    reader = _StreamReader(wire)
    _check_begin(read_records(reader, verify=True), grant)
    sink = ctx.backend.receive(spec)
    try:
        payload: bytes | None = reader.take_prefix()
        while payload is not None:
            _write(sink, payload)
            payload = reader.next_payload()
        _check_end(reader)
    except _ReceiveFailed as failed:
        sink.abort()  # reap it; it already said why
        raise failed.error from None
    except ZfleetError as exc:
        # the incoming stream stopped short (a drop, a stall, a cancel, a corrupt frame): end
        # the receive's input as a dropped pipe would, so that `-s` saves what it got
        _end_short(sink, grant, exc)
        raise
    except BaseException:
        sink.abort()
        raise
    try:
        return _finish(sink, wire, ctx.heartbeat_interval)
    except BaseException:
        sink.abort()
        raise


class _ReceiveFailed(Exception):
    """The receive refused a write: its error, kept apart from the stream's own errors."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _write(sink: ReceiveSink, data: bytes) -> None:
    try:
        sink.write(data)
    except Exception as exc:
        raise _ReceiveFailed(exc) from exc


def _end_short(sink: ReceiveSink, grant: Grant, cause: ZfleetError) -> None:
    try:
        sink.finish()
    except ZfleetError as exc:  # expected: the receive reports an incomplete stream
        log.info("stream.partial_kept", dataset=grant.dataset, receive=str(exc), cause=str(cause))
    except Exception:
        log.exception("stream.partial_failed", dataset=grant.dataset)
        sink.abort()
    else:
        # every byte of the stream had arrived; only our END was lost
        log.warning("stream.applied_without_end", dataset=grant.dataset, cause=str(cause))


def _check_begin(records: Iterator[Record], grant: Grant) -> None:
    """Refuse a stream whose BEGIN does not carry the granted guids, before it is applied.

    A plain stream's BEGIN names its from/to guids. A compound stream (-R, -I, -p) opens with a
    header BEGIN whose guids are zero: then the first sub-stream must start from the granted
    fromguid, and the header's snapshot list (when it has one, as -R and -p do) must hold the
    granted guids. An -I header has no list and its last guid shows only at the stream's end;
    the grant still pins where the chain starts.
    The record after a BEGIN is read too: its checksum covers the BEGIN's bytes.
    """
    try:
        first = next(records)
    except StopIteration:
        raise StreamTruncated("the stream ended before its BEGIN record", offset=0) from None
    begin = parse_begin(first)
    if not begin.compound:
        next(records, None)
        _match(grant, begin.fromguid, begin.toguid)
        return
    header = begin.nvlist.to_python() if begin.nvlist is not None else {}
    _refuse_package(header, grant)
    listed = _listed_guids(header)
    wanted = {grant.toguid} | ({grant.fromguid} if grant.fromguid else set())
    if listed and not wanted <= listed:
        raise GrantError(
            f"compound stream {begin.toname!r} does not hold the granted snapshots "
            f"({grant.fromguid:#x} -> {grant.toguid:#x})"
        )
    for _, record in zip(range(_MAX_HEADER_RECORDS), records, strict=False):
        if record.type == DrrType.BEGIN:
            sub = parse_begin(record)
            next(records, None)
            if sub.fromguid != grant.fromguid:
                raise GrantError(
                    f"stream does not match its grant: its first sub-stream starts from "
                    f"{sub.fromguid:#x}, grant allows {grant.fromguid:#x}"
                )
            return
    raise StreamFormatError("compound stream without a sub-stream BEGIN", offset=0)


def _match(grant: Grant, fromguid: int, toguid: int) -> None:
    if (fromguid, toguid) != (grant.fromguid, grant.toguid):
        raise GrantError(
            f"stream does not match its grant: BEGIN is {fromguid:#x} -> {toguid:#x}, "
            f"grant allows {grant.fromguid:#x} -> {grant.toguid:#x}"
        )


def _refuse_package(nvlist: Mapping[str, Any], grant: Grant) -> None:
    """Refuse a ``zfs send -p`` / ``-R`` package that would set properties here or receive more
    datasets than the one granted.

    zfleet's senders never send such packages (the planner's sends carry no -p or -R). The
    grant signs a dataset and its guids, not properties: a stream that brought
    ``mountpoint=/etc`` or ``sharenfs=on`` with it would have this host mount or export the
    replica wherever the sender chose (at the latest when a failover promotes it), and a -R
    package would create children the grant never named. An empty property list (``-p`` of a
    dataset without local properties) changes nothing and passes.
    """
    fss = nvlist.get("fss")
    if not isinstance(fss, dict):
        return
    if len(fss) > 1:
        raise GrantError(
            f"the stream is a package of {len(fss)} datasets (zfs send -R); the grant is for "
            f"{grant.dataset} alone"
        )
    carried: set[str] = set()
    for fs in fss.values():
        if not isinstance(fs, dict):
            continue
        props = fs.get("props")
        if isinstance(props, dict):
            carried.update(str(k) for k in props)
        snapprops = fs.get("snapprops")
        if isinstance(snapprops, dict):
            for each in snapprops.values():
                if isinstance(each, dict):
                    carried.update(f"{k} (of a snapshot)" for k in each)
    if carried:
        raise GrantError(
            f"the stream carries properties ({', '.join(sorted(carried))}): a sender may not set "
            f"properties on this host (zfs send -p/-R); send without them"
        )


def _listed_guids(nvlist: Mapping[str, Any]) -> set[int]:
    """Every snapshot guid a compound header's ``fss`` lists."""
    guids: set[int] = set()
    fss = nvlist.get("fss")
    if isinstance(fss, dict):
        for fs in fss.values():
            snaps = fs.get("snaps") if isinstance(fs, dict) else None
            if isinstance(snaps, dict):
                guids.update(v for v in snaps.values() if isinstance(v, int))
    return guids


def _check_end(reader: _StreamReader) -> None:
    end = reader.ended or {}
    if end.get("stream_bytes") != reader.stream_bytes or end.get("frames") != reader.frames:
        raise FrameError(
            f"END says {end.get('stream_bytes')} bytes in {end.get('frames')} frames, "
            f"received {reader.stream_bytes} in {reader.frames}"
        )


def _finish(sink: ReceiveSink, wire: Wire, interval: float) -> ReceiveResult:
    """Finish the receive while heartbeats tell the sender we are alive (finishing can take a
    while on a real pool)."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            try:
                wire.send(FrameKind.HEARTBEAT)
            except ZfleetError:
                return

    beater = context_thread(beat, name="zfleet-heartbeat", daemon=True)
    beater.start()
    try:
        return sink.finish()
    finally:
        done.set()
        beater.join()
