"""Receive resume tokens (``zfs get receive_resume_token``), decoded and encoded.

OpenZFS's format (dsl_dataset.c builds it, libzfs_sendrecv.c reads it)::

    <version>-<fletcher-4 word 0 of the compressed bytes, hex>-<packed nvlist size, hex>-<hex>

where ``<hex>`` is the zlib-compressed (level 6) native nvlist holding ``fromguid`` (for an
incremental), ``object``, ``offset``, ``bytes``, ``toguid``, ``toname`` and BOOLEAN flags such as
``largeblockok``, ``embedok``, ``compressok``, ``rawok``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

from protocol.errors import ProtocolError, TokenError
from protocol.stream.fletcher4 import fletcher4
from protocol.stream.nvlist import NV_ENCODE_NATIVE, DataType, NvList, NvPair, nvlist_decode
from protocol.stream.nvlist import nvlist_encode as _encode

TOKEN_VERSION: Final = 1
_ZLIB_LEVEL: Final = 6  # what the kernel's gzip_compress uses, so tokens match byte for byte
_MAX_PACKED: Final = 1 << 20
_TOKEN_RE: Final = re.compile(r"^(\d+)-([0-9a-fA-F]+)-([0-9a-fA-F]+)-([0-9a-fA-F]*)$")
FLAG_NAMES: Final = ("largeblockok", "embedok", "compressok", "rawok", "savedok")


@dataclass(frozen=True)
class ResumeToken:
    """Where an interrupted receive stopped, and how its stream was being sent."""

    toguid: int
    toname: str
    object: int = 0
    offset: int = 0
    bytes: int = 0
    fromguid: int = 0  # 0 for a full stream
    largeblockok: bool = False
    embedok: bool = False
    compressok: bool = False
    rawok: bool = False
    savedok: bool = False
    # any other pairs a newer OpenZFS adds (redact_snaps, ...), kept for round trips
    extra: NvList = field(default_factory=NvList)

    @property
    def incremental(self) -> bool:
        return self.fromguid != 0


def decode_resume_token(token: str) -> ResumeToken:
    """Decode a token; raises :class:`TokenError` saying what is wrong with it."""
    m = _TOKEN_RE.match(token.strip())
    if m is None:
        raise TokenError(
            "resume token is malformed: expected <version>-<checksum>-<size>-<hex payload>"
        )
    version, checksum, packed_size, hex_payload = m.groups()
    if int(version) != TOKEN_VERSION:
        raise TokenError(f"resume token has version {version}; only version 1 is known")
    if len(hex_payload) % 2:
        raise TokenError("resume token payload has an odd number of hex digits")
    compressed = bytes.fromhex(hex_payload)
    if fletcher4(compressed)[0] != int(checksum, 16):
        raise TokenError("resume token is corrupt (checksum mismatch)")
    size = int(packed_size, 16)
    if size > _MAX_PACKED:
        raise TokenError(f"resume token claims an nvlist of {size} bytes")
    try:
        packed = zlib.decompress(compressed, bufsize=max(size, 1))
    except zlib.error as exc:
        raise TokenError(f"resume token payload does not decompress: {exc}") from exc
    if len(packed) != size:
        raise TokenError(f"resume token nvlist is {len(packed)} bytes, header says {size}")
    try:
        nvl = nvlist_decode(packed)
    except ProtocolError as exc:
        raise TokenError(f"resume token nvlist is invalid: {exc}") from exc
    return _from_nvlist(nvl)


def _from_nvlist(nvl: NvList) -> ResumeToken:
    def uint(name: str, required: bool) -> int:
        if name not in nvl:
            if required:
                raise TokenError(f"resume token lacks {name!r}")
            return 0
        value = nvl[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TokenError(f"resume token {name!r} is not an integer")
        return value

    toname = nvl.get("toname")
    if not isinstance(toname, str):
        raise TokenError("resume token lacks 'toname'")
    known = {"fromguid", "object", "offset", "bytes", "toguid", "toname", *FLAG_NAMES}
    flags: dict[str, Any] = {name: name in nvl for name in FLAG_NAMES}
    return ResumeToken(
        toguid=uint("toguid", True),
        toname=toname,
        object=uint("object", True),
        offset=uint("offset", True),
        bytes=uint("bytes", False),
        fromguid=uint("fromguid", False),
        extra=NvList([p for p in nvl.pairs if p.name not in known]),
        **flags,
    )


def resume_token_nvlist(token: ResumeToken) -> NvList:
    """The token's nvlist, pairs in the kernel's order."""
    pairs: list[NvPair] = []
    if token.fromguid:
        pairs.append(NvPair("fromguid", DataType.UINT64, token.fromguid))
    pairs += [
        NvPair("object", DataType.UINT64, token.object),
        NvPair("offset", DataType.UINT64, token.offset),
        NvPair("bytes", DataType.UINT64, token.bytes),
        NvPair("toguid", DataType.UINT64, token.toguid),
        NvPair("toname", DataType.STRING, token.toname),
    ]
    pairs += [NvPair(n, DataType.BOOLEAN, True) for n in FLAG_NAMES if getattr(token, n)]
    pairs += token.extra.pairs
    return NvList(pairs)


def encode_resume_token(token: ResumeToken) -> str:
    """The token string OpenZFS would show for this receive state."""
    packed = _encode(resume_token_nvlist(token), encoding=NV_ENCODE_NATIVE)
    compressed = zlib.compress(packed, _ZLIB_LEVEL)
    checksum = fletcher4(compressed)[0]
    return f"{TOKEN_VERSION}-{checksum:x}-{len(packed):x}-{compressed.hex()}"
