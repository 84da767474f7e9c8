"""The data plane's wire format: versioned, digested frames with a msgpack header.

One frame on the wire::

    preamble (28 bytes, big-endian)
        magic      4s   b"ZFLF"
        version    B    FRAME_VERSION (2; version 1 is still read)
        kind       B    FrameKind
        flags      B    bit 0: payload is zstd-compressed; bit 1 (version 2): no digest
        reserved   B    0
        seq        Q    0, 1, 2 ... per connection and direction
        header_len I    bytes of the msgpack header (a map with string keys)
        wire_len   I    bytes of the payload as sent
        plain_len  I    bytes of the payload once decompressed (= wire_len when raw)
    header     msgpack map
    payload    raw or one zstd frame (with its content size)
    digest     16 bytes, keyed when a key is given:
               version 2: BLAKE3 over preamble + header + BLAKE3-256(payload)
               version 1: BLAKE3 over preamble + header + payload

Version 2 hashes the payload on its own so that the sender hashes it once, on the thread that
compressed it, however many peers the frame goes to: each connection then hashes only its own
preamble and header (sequence numbers differ per connection) with the payload's 32-byte digest,
which stands for the payload as well as the payload itself would (BLAKE3 is collision-resistant).
The receiver's work is the same as for version 1. A frame without a digest (flag bit 1) is
accepted only by a decoder told that its transport authenticates every byte already (mutual TLS,
whose AEAD catches any change in transit); on any other connection it is refused, so the flag
cannot be used to slip a frame past the check.

Why BLAKE3: it runs at 5.7 GB/s on one core here (so it costs little next to zstd), it is already
a dependency for dedup content ids, and being cryptographic it catches every corruption, not just
likely ones; keyed with a per-transfer secret it authenticates the frame as well. The digest is
checked before the header is parsed or the payload decompressed, and every length is checked
against the limits as soon as the preamble is read, before any buffer for the body is allocated.
A compressed payload must declare its decompressed size, which must equal ``plain_len``, so a
decompression bomb is refused before it expands.

The data plane compresses DATA payloads on several threads: :func:`compress_payload` gives a
:class:`Prepared` payload (raw when zstd does not shrink it), which :func:`encode_frame` takes as
``prepared=``. :class:`FrameDecoder` reads incrementally (``feed`` bytes from a non-blocking
socket), blocking (``read_from(read_exact)``) or blocking into its own reused buffer
(``read_into(fill)``, for sockets: ``fill`` is a ``recv_into``, so a frame's bytes are copied once,
by the kernel, and a compressed payload is expanded straight from there). Every problem is a
:class:`protocol.errors.FrameError`; once one occurs the decoder refuses further input, since the
stream has lost its framing.
"""

from __future__ import annotations

import enum
import hmac
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import blake3
import msgpack
import zstandard

from protocol.errors import FrameError

MAGIC: Final = b"ZFLF"
FRAME_VERSION: Final = 2
_READABLE_VERSIONS: Final = (1, 2)
PREAMBLE: Final = struct.Struct(">4sBBBBQIII")
PREAMBLE_SIZE: Final = PREAMBLE.size
DIGEST_SIZE: Final = 16
KEY_SIZE: Final = 32  # BLAKE3's key length
MAX_HEADER: Final = 64 * 1024
MAX_PAYLOAD: Final = 64 * 1024 * 1024
MAX_SEQ: Final = 2**64 - 1
DEFAULT_LEVEL: Final = 3

FLAG_ZSTD: Final = 0x01
FLAG_NO_DIGEST: Final = 0x02  # version 2 only, on an authenticated transport only
_KNOWN_FLAGS: Final = {1: FLAG_ZSTD, 2: FLAG_ZSTD | FLAG_NO_DIGEST}
PAYLOAD_DIGEST_SIZE: Final = 32


class FrameKind(enum.IntEnum):
    """What a frame is for; the conversation is the data plane's business."""

    HELLO = 1  # sender -> receiver: transfer id, grant, stream facts
    ACCEPT = 2  # receiver -> sender: go ahead (and from which offset when resuming)
    DATA = 3  # stream bytes
    END = 4  # no more DATA; totals for checking
    RESULT = 5  # receiver -> sender: what the receive produced
    HEARTBEAT = 6  # either way, to tell a stall from a slow stream
    ERROR = 7  # either way: error type and message, then the connection closes


class Codec(enum.IntEnum):
    RAW = 0
    ZSTD = 1


@dataclass(frozen=True)
class Frame:
    """One decoded frame; ``payload`` is always the plain (decompressed) bytes."""

    kind: FrameKind
    seq: int
    header: Mapping[str, Any] = field(default_factory=dict)
    payload: bytes = b""


@dataclass(frozen=True)
class Prepared:
    """A payload made ready for the wire, possibly on another thread."""

    data: bytes  # the bytes that go on the wire
    codec: Codec
    plain_len: int  # length once decompressed
    digest: bytes | None = None  # BLAKE3-256 of ``data``, when already computed


def payload_digest(data: bytes | memoryview) -> bytes:
    """The digest a version-2 frame's digest covers in place of its payload."""
    return bytes(blake3.blake3(data).digest(length=PAYLOAD_DIGEST_SIZE))


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # A ZstdCompressor must not be shared between threads; keep one per thread and level.
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def compress_payload(data: bytes, level: int = DEFAULT_LEVEL, *, digest: bool = True) -> Prepared:
    """``data`` zstd-compressed at ``level``, or raw when compression does not make it smaller,
    with the digest of what goes on the wire (computed here, once for every peer).

    ``digest=False`` leaves the digest out, for payloads that go only where frames carry none
    (mutual TLS) or as raw bytes (files, the object store); a frame that does need one computes
    it when encoded. Thread-safe; zstd and BLAKE3 release the GIL, so several threads compress in
    parallel.
    """
    if len(data) > MAX_PAYLOAD:
        raise FrameError(f"payload is too large ({len(data)} > {MAX_PAYLOAD} bytes)")
    if not 1 <= level <= 22:
        raise FrameError(f"zstd level must be 1..22, not {level}")
    if data:
        packed = _compressor(level).compress(data)
        if len(packed) < len(data):
            return Prepared(
                packed, Codec.ZSTD, len(data), payload_digest(packed) if digest else None
            )
    raw = bytes(data)
    return Prepared(raw, Codec.RAW, len(raw), payload_digest(raw) if digest else None)


def encode_frame_parts(
    frame: Frame,
    *,
    compress: bool | int = False,
    prepared: Prepared | None = None,
    key: bytes | None = None,
    digest: bool = True,
) -> list[bytes]:
    """The frame as a list of byte strings to write in order (no copy of a large payload).

    ``compress`` is False, True (level 3) or a zstd level. With ``prepared`` (from
    :func:`compress_payload`) the payload goes as prepared and ``frame.payload`` must be empty.
    ``digest=False`` leaves the digest out, for a transport that authenticates every byte (the
    decoder at the other end must be told so).
    """
    if not isinstance(frame.kind, FrameKind):
        raise FrameError(f"unknown frame kind {frame.kind!r}")
    if not isinstance(frame.seq, int) or not 0 <= frame.seq <= MAX_SEQ:
        raise FrameError(f"frame sequence number out of range: {frame.seq!r}")
    if prepared is None:
        if compress is False:
            prepared = Prepared(bytes(frame.payload), Codec.RAW, len(frame.payload))
        else:
            level = DEFAULT_LEVEL if compress is True else int(compress)
            prepared = compress_payload(frame.payload, level)
    elif frame.payload:
        raise FrameError("give the payload either in the frame or prepared, not both")
    if prepared.plain_len > MAX_PAYLOAD or len(prepared.data) > MAX_PAYLOAD:
        raise FrameError(f"payload is too large ({prepared.plain_len} > {MAX_PAYLOAD} bytes)")
    try:
        header = msgpack.packb(dict(frame.header), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"frame header cannot be encoded: {exc}") from exc
    if len(header) > MAX_HEADER:
        raise FrameError(f"frame header is too large ({len(header)} > {MAX_HEADER} bytes)")
    flags = FLAG_ZSTD if prepared.codec is Codec.ZSTD else 0
    if not digest:
        flags |= FLAG_NO_DIGEST
    preamble = PREAMBLE.pack(
        MAGIC,
        FRAME_VERSION,
        int(frame.kind),
        flags,
        0,
        frame.seq,
        len(header),
        len(prepared.data),
        prepared.plain_len,
    )
    if not digest:
        return [preamble, header, prepared.data]
    hasher = _hasher(key)
    hasher.update(preamble)
    hasher.update(header)
    hasher.update(prepared.digest or payload_digest(prepared.data))
    return [preamble, header, prepared.data, hasher.digest(length=DIGEST_SIZE)]


def encode_frame(
    frame: Frame,
    *,
    compress: bool | int = False,
    prepared: Prepared | None = None,
    key: bytes | None = None,
    digest: bool = True,
) -> bytes:
    """The frame as bytes; see :func:`encode_frame_parts` for the arguments."""
    return b"".join(
        encode_frame_parts(frame, compress=compress, prepared=prepared, key=key, digest=digest)
    )


def _hasher(key: bytes | None) -> Any:
    if key is None:
        return blake3.blake3()
    if len(key) != KEY_SIZE:
        raise FrameError(f"frame key must be {KEY_SIZE} bytes, not {len(key)}")
    return blake3.blake3(key=key)


# -- decoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Preamble:
    version: int
    kind: FrameKind
    flags: int
    seq: int
    header_len: int
    wire_len: int
    plain_len: int
    raw: bytes

    @property
    def digest_len(self) -> int:
        return 0 if self.flags & FLAG_NO_DIGEST else DIGEST_SIZE

    @property
    def body_len(self) -> int:
        return self.header_len + self.wire_len + self.digest_len


class FrameDecoder:
    """Turns a byte stream into frames, checking digests, limits and sequence numbers.

    ``first_seq`` is the number the first frame must carry; each next frame must carry the
    next number. ``check_seq=False`` turns that off (for reading frames out of context).
    ``authenticated_transport=True`` (mutual TLS) lets frames come without a digest.
    """

    def __init__(
        self,
        *,
        key: bytes | None = None,
        max_header: int = MAX_HEADER,
        max_payload: int = MAX_PAYLOAD,
        first_seq: int = 0,
        check_seq: bool = True,
        authenticated_transport: bool = False,
    ) -> None:
        _hasher(key)  # refuse a bad key now rather than at the first frame
        self._key = key
        self._undigested_ok = authenticated_transport
        self._max_header = min(max_header, MAX_HEADER)
        self._max_payload = min(max_payload, MAX_PAYLOAD)
        self._next_seq = first_seq
        self._check_seq = check_seq
        self._buf = bytearray()
        self._pending: _Preamble | None = None
        self._failed: FrameError | None = None
        self._offset = 0  # stream offset of the frame being read, for error messages
        self.frames = 0
        # read_into's buffers, reused frame after frame (a fresh buffer per frame costs a zeroing
        # pass and, being large, page faults); the body one grows to the largest frame seen
        self._head = bytearray(PREAMBLE_SIZE)
        self._body = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes from the stream; return the frames they complete (possibly none)."""
        self._check_usable()
        self._buf += data
        out: list[Frame] = []
        pos = 0  # consumed bytes; removed from the buffer once, so big feeds stay linear
        view = memoryview(self._buf)
        try:
            while True:
                if self._pending is None:
                    if len(view) - pos < PREAMBLE_SIZE:
                        break
                    self._pending = self._parse_preamble(bytes(view[pos : pos + PREAMBLE_SIZE]))
                    pos += PREAMBLE_SIZE
                pre = self._pending
                if len(view) - pos < pre.body_len:
                    break
                with view[pos : pos + pre.body_len] as body:
                    frame = self._finish(pre, body)
                pos += pre.body_len
                self._pending = None
                out.append(frame)
        except FrameError as exc:
            self._failed = exc
            raise
        finally:
            view.release()  # the buffer cannot shrink while a view of it exists
            del self._buf[:pos]
        return out

    def close(self) -> None:
        """Declare the end of the stream; FrameError if it stopped inside a frame."""
        self._check_usable()
        if self._pending is not None or self._buf:
            have = len(self._buf) + (PREAMBLE_SIZE if self._pending else 0)
            want = PREAMBLE_SIZE + self._pending.body_len if self._pending else PREAMBLE_SIZE
            self._failed = self._truncated(have, want)
            raise self._failed

    def read_from(self, read_exact: Callable[[int], bytes]) -> Frame | None:
        """Read one frame with a blocking ``read_exact(n)`` (fewer bytes only at end of stream).

        None at a clean end of stream (no byte of a next frame); FrameError on a cut frame.
        """
        self._check_usable()
        if self._buf or self._pending is not None:
            raise FrameError("read_from cannot follow a partial feed")
        try:
            head = _read(read_exact, PREAMBLE_SIZE)
            if not head:
                return None
            if len(head) < PREAMBLE_SIZE:
                raise self._truncated(len(head), PREAMBLE_SIZE)
            pre = self._parse_preamble(head)
            body = _read(read_exact, pre.body_len)
            if len(body) < pre.body_len:
                raise self._truncated(PREAMBLE_SIZE + len(body), PREAMBLE_SIZE + pre.body_len)
            return self._finish(pre, memoryview(body))
        except FrameError as exc:
            self._failed = exc
            raise

    def read_into(self, fill: Callable[[memoryview], int]) -> Frame | None:
        """Read one frame with a blocking ``fill(view)`` that reads into ``view`` and returns the
        bytes it read (0 only at end of stream), as ``socket.recv_into`` and ``readinto`` do.

        None at a clean end of stream; FrameError on a cut frame. The frame's bytes land in a
        buffer this decoder reuses, and the returned payload never refers to it.
        """
        self._check_usable()
        if self._buf or self._pending is not None:
            raise FrameError("read_into cannot follow a partial feed")
        try:
            with memoryview(self._head) as head:
                got = _fill(fill, head)
                if not got:
                    return None
                if got < PREAMBLE_SIZE:
                    raise self._truncated(got, PREAMBLE_SIZE)
                pre = self._parse_preamble(bytes(head))
            if len(self._body) < pre.body_len:
                self._body = bytearray(pre.body_len)
            with memoryview(self._body) as whole, whole[: pre.body_len] as body:
                got = _fill(fill, body)
                if got < pre.body_len:
                    raise self._truncated(PREAMBLE_SIZE + got, PREAMBLE_SIZE + pre.body_len)
                return self._finish(pre, body)
        except FrameError as exc:
            self._failed = exc
            raise

    def _truncated(self, have: int, want: int) -> FrameError:
        return FrameError(
            f"stream truncated inside frame {self.frames} at offset {self._offset}: "
            f"{have} of {want} bytes"
        )

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise FrameError(f"frame stream already failed: {self._failed}")

    def _parse_preamble(self, raw: bytes) -> _Preamble:
        magic, version, kind, flags, reserved, seq, header_len, wire_len, plain_len = (
            PREAMBLE.unpack(raw)
        )
        where = f"frame {self.frames} at offset {self._offset}"
        if magic != MAGIC:
            raise FrameError(f"{where}: bad magic {magic!r} (not a zfleet frame stream)")
        if version not in _READABLE_VERSIONS:
            raise FrameError(
                f"{where}: unsupported frame version {version} (this side reads "
                f"{'/'.join(map(str, _READABLE_VERSIONS))})"
            )
        try:
            frame_kind = FrameKind(kind)
        except ValueError:
            raise FrameError(f"{where}: unknown frame kind {kind}") from None
        if flags & ~_KNOWN_FLAGS[version] or reserved:
            raise FrameError(f"{where}: unknown flags 0x{flags:02x}/0x{reserved:02x}")
        if flags & FLAG_NO_DIGEST and not self._undigested_ok:
            raise FrameError(
                f"{where}: frame without a digest on a connection that does not authenticate "
                "its bytes"
            )
        if not 1 <= header_len <= self._max_header:
            raise FrameError(f"{where}: header length {header_len} outside 1..{self._max_header}")
        if wire_len > self._max_payload or plain_len > self._max_payload:
            raise FrameError(
                f"{where}: payload of {max(wire_len, plain_len)} bytes exceeds the limit "
                f"({self._max_payload})"
            )
        if not flags & FLAG_ZSTD and wire_len != plain_len:
            raise FrameError(f"{where}: raw payload lengths disagree ({wire_len} != {plain_len})")
        return _Preamble(version, frame_kind, flags, seq, header_len, wire_len, plain_len, raw)

    def _finish(self, pre: _Preamble, body: memoryview) -> Frame:
        where = f"frame {self.frames} at offset {self._offset}"
        header_end = pre.header_len
        payload_end = header_end + pre.wire_len
        if pre.digest_len:
            hasher = _hasher(self._key)
            hasher.update(pre.raw)
            if pre.version == 1:
                hasher.update(body[:payload_end])
            else:
                hasher.update(body[:header_end])
                hasher.update(payload_digest(body[header_end:payload_end]))
            sent = bytes(body[payload_end : payload_end + DIGEST_SIZE])
            if not hmac.compare_digest(hasher.digest(length=DIGEST_SIZE), sent):
                raise FrameError(f"{where}: digest mismatch (corrupt or forged frame)")
        if self._check_seq and pre.seq != self._next_seq:
            raise FrameError(
                f"{where}: sequence number {pre.seq}, expected {self._next_seq} "
                "(a frame was lost, repeated or reordered)"
            )
        header = _decode_header(bytes(body[:header_end]), where)
        with body[header_end:payload_end] as wire:
            # either way the one copy out of the receive buffer: zstd expands from it in place
            if pre.flags & FLAG_ZSTD:
                payload = _decompress(wire, pre.plain_len, where)
            else:
                payload = bytes(wire)
        self._next_seq = pre.seq + 1
        self._offset += PREAMBLE_SIZE + pre.body_len
        self.frames += 1
        return Frame(pre.kind, pre.seq, header, payload)


def _read(read_exact: Callable[[int], bytes], n: int) -> bytes:
    try:
        data = read_exact(n)
    except EOFError:
        return b""
    if len(data) > n:
        raise FrameError(f"reader returned {len(data)} bytes when asked for {n}")
    return bytes(data)


def _fill(fill: Callable[[memoryview], int], view: memoryview) -> int:
    """Fill ``view`` with ``fill``; the bytes read (fewer only at end of stream)."""
    got = 0
    size = len(view)
    while got < size:
        with view[got:] as rest:
            n = fill(rest)
        if not n:
            break
        if not 0 < n <= size - got:
            raise FrameError(f"reader claims {n} bytes into a buffer of {size - got}")
        got += n
    return got


def _decode_header(raw: bytes, where: str) -> dict[str, Any]:
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (
        ValueError,
        TypeError,
        UnicodeDecodeError,
        RecursionError,
        msgpack.UnpackException,
    ) as exc:
        raise FrameError(f"{where}: header is not valid msgpack: {exc}") from exc
    if not isinstance(header, dict) or not all(isinstance(k, str) for k in header):
        raise FrameError(f"{where}: header must be a map with string keys")
    return header


def _decompress(wire: bytes | memoryview, plain_len: int, where: str) -> bytes:
    try:
        declared = zstandard.frame_content_size(wire)
    except zstandard.ZstdError as exc:
        raise FrameError(f"{where}: compressed payload is not a zstd frame: {exc}") from exc
    # The declared size is what zstd would allocate: refuse any mismatch before expanding.
    if declared != plain_len:
        raise FrameError(
            f"{where}: compressed payload declares {declared} bytes, the frame {plain_len}"
        )
    try:
        plain = _decompressor().decompress(wire, max_output_size=plain_len)
    except zstandard.ZstdError as exc:
        raise FrameError(f"{where}: compressed payload is corrupt: {exc}") from exc
    if len(plain) != plain_len:
        raise FrameError(f"{where}: payload decompressed to {len(plain)} bytes, not {plain_len}")
    return plain
