"""Write valid ZFS send streams, computing every running fletcher-4 checksum.

Used by the simulated backend to produce real-format streams, and by the object store to
regenerate a stream byte for byte from normalised headers (:meth:`StreamWriter.write_raw`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final, Protocol

from protocol.errors import StreamFormatError
from protocol.stream.fletcher4 import Fletcher4
from protocol.stream.grammar import Grammar, Position
from protocol.stream.nvlist import NV_ENCODE_NATIVE, NV_ENCODE_XDR, nvlist_encode
from protocol.stream.record import payload_size
from protocol.stream.types import (
    CHECKSUM_LE,
    CHECKSUM_OFFSET,
    DMU_BACKUP_MAGIC,
    DMU_OST_ZFS,
    DMU_OT_PLAIN_FILE_CONTENTS,
    DMU_OT_SA,
    FEATURE_MASK,
    FEATURE_SHIFT,
    LAYOUTS,
    MAXNAMELEN,
    RECORD_SIZE,
    UNION_OFFSET,
    DrrType,
    HeaderType,
)

# Keys of a decoded ``Record.fields`` that are derived, so a decoded dict can be written back.
_DERIVED: Final = frozenset({"payloadlen", "record_checksum", "hdrtype", "features"})
_ZERO_TAIL: Final = bytes(RECORD_SIZE - CHECKSUM_OFFSET)


class Writable(Protocol):
    """Anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> Any: ...


def _pad8(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 8)


class StreamWriter:
    """Writes records to ``fp`` as OpenZFS does; refuses records out of place.

    Every record gets ``toguid`` from the current BEGIN unless given. Call :meth:`begin`, the
    records, then :meth:`end`; a compound stream is ``begin(..., compound=True)``, ``end()``,
    then each sub-stream, then a final ``end()``.
    """

    def __init__(self, fp: Writable) -> None:
        self._fp = fp
        self._running = Fletcher4()
        self._grammar = Grammar()
        self._toguid = 0
        self.offset = 0  # bytes written so far
        self.records = 0

    # -- the generic paths ---------------------------------------------------------------------

    def write_record(
        self, drr_type: DrrType, fields: Mapping[str, Any], payload: bytes = b""
    ) -> None:
        """Write one record from its typed fields (names as in :attr:`Record.fields`)."""
        drr_type = DrrType(drr_type)
        layout = LAYOUTS[drr_type]
        unknown = set(fields) - set(layout.names) - _DERIVED - {"versioninfo"}
        if unknown:
            raise StreamFormatError(
                f"{drr_type.wire_name} has no field(s) {', '.join(sorted(unknown))}"
            )
        values: list[Any] = []
        for name, width, default in zip(layout.names, layout.groups, layout.defaults, strict=True):
            value: Any = fields.get(name)
            if name == "toguid" and value is None:
                value = self._toguid
            if drr_type == DrrType.BEGIN and name == "toname":
                value = str(value or "").encode()
                if len(value) >= MAXNAMELEN:
                    raise StreamFormatError(f"BEGIN toname is {len(value)} bytes; limit 255")
            elif drr_type == DrrType.BEGIN and name == "versioninfo" and value is None:
                hdrtype = int(fields.get("hdrtype", HeaderType.SUBSTREAM))
                value = hdrtype | ((int(fields.get("features", 0)) & FEATURE_MASK) << FEATURE_SHIFT)
            if value is None:
                value = default
            if width == 4:
                if not isinstance(value, tuple | list) or len(value) != 4:
                    raise StreamFormatError(f"{drr_type.wire_name} {name} must be four integers")
                values.extend(value)
            else:
                values.append(value)
        try:
            union = layout.le.pack(*values)
        except (struct.error, TypeError) as exc:
            raise StreamFormatError(f"{drr_type.wire_name} field out of range: {exc}") from exc
        payloadlen = len(payload) if drr_type == DrrType.BEGIN else 0
        header = struct.pack("<II", drr_type, payloadlen) + union
        header += bytes(RECORD_SIZE - len(header))
        self._emit(drr_type, header, payload)

    def write_raw(self, header: bytes, payload: bytes = b"") -> None:
        """Write a record from its header with or without the running checksum (312 or 280
        bytes, e.g. :attr:`Record.normalized_header`): the checksums are recomputed, so a stream
        read and re-emitted record by record comes out byte for byte the same."""
        if len(header) not in (CHECKSUM_OFFSET, RECORD_SIZE):
            raise StreamFormatError(f"record header must be 280 or 312 bytes, not {len(header)}")
        (raw_type,) = struct.unpack_from("<I", header)
        try:
            drr_type = DrrType(raw_type)
        except ValueError:
            raise StreamFormatError(f"unknown record type {raw_type}") from None
        if drr_type != DrrType.BEGIN:
            header = header[:CHECKSUM_OFFSET] + _ZERO_TAIL
        elif len(header) < RECORD_SIZE:
            header += _ZERO_TAIL
        self._emit(drr_type, header, payload)

    def _emit(self, drr_type: DrrType, header: bytes, payload: bytes) -> None:
        expected = payload_size(drr_type, header)
        if expected != len(payload):
            raise StreamFormatError(
                f"{drr_type.wire_name} payload is {len(payload)} bytes but its header says "
                f"{expected}",
                offset=self.offset,
                record=self.records,
            )
        wrapper_end = drr_type == DrrType.END and self._grammar.state in (
            Position.OUTER,
            Position.BETWEEN,
        )
        self._grammar.advance(drr_type, header, order="<", offset=self.offset, index=self.records)
        if drr_type == DrrType.END:
            # drr_end carries the checksum of everything before it
            header = header[:UNION_OFFSET] + CHECKSUM_LE.pack(*self._running.value) + header[40:]
        self._running.update(header[:CHECKSUM_OFFSET])
        if drr_type == DrrType.BEGIN:
            (self._toguid,) = struct.unpack_from("<Q", header, 40)
        elif wrapper_end:
            # libzfs writes the ENDs of a compound stream's wrapper without a record checksum
            header = header[:CHECKSUM_OFFSET] + _ZERO_TAIL
        else:
            header = header[:CHECKSUM_OFFSET] + CHECKSUM_LE.pack(*self._running.value)
        self._running.update(header[CHECKSUM_OFFSET:])
        self._fp.write(header)
        if payload:
            self._running.update(payload)
            self._fp.write(payload)
        self.offset += RECORD_SIZE + len(payload)
        self.records += 1
        if drr_type == DrrType.END:
            self._running.reset()

    # -- one method per record type ------------------------------------------------------------

    def begin(
        self,
        toguid: int,
        fromguid: int,
        toname: str,
        *,
        features: int = 0,
        flags: int = 0,
        creation_time: int = 0,
        type: int = DMU_OST_ZFS,
        compound: bool = False,
        payload_nvlist: Mapping[str, Any] | None = None,
        payload: bytes | None = None,
    ) -> None:
        """Open a stream (or sub-stream). ``payload_nvlist`` is packed XDR for a compound BEGIN
        and native otherwise, as OpenZFS does; ``payload`` gives the packed bytes directly."""
        if payload is None and payload_nvlist is not None:
            encoding = NV_ENCODE_XDR if compound else NV_ENCODE_NATIVE
            payload = nvlist_encode(payload_nvlist, encoding=encoding)
        hdrtype = HeaderType.COMPOUNDSTREAM if compound else HeaderType.SUBSTREAM
        fields = {
            "magic": DMU_BACKUP_MAGIC,
            "hdrtype": hdrtype,
            "features": int(features),
            "creation_time": creation_time,
            "type": type,
            "flags": flags,
            "toguid": toguid,
            "fromguid": fromguid,
            "toname": toname,
        }
        self.write_record(DrrType.BEGIN, fields, payload or b"")

    def object(
        self,
        object: int,
        *,
        type: int = DMU_OT_PLAIN_FILE_CONTENTS,
        bonustype: int = DMU_OT_SA,
        blksz: int = 131072,
        bonus: bytes = b"",
        **fields: Any,
    ) -> None:
        """An OBJECT record; ``bonus`` is the bonus buffer (padded to 8 bytes on the wire)."""
        fields.setdefault("bonuslen", len(bonus))
        fields.setdefault("dn_slots", 1)
        self.write_record(
            DrrType.OBJECT,
            {"object": object, "type": type, "bonustype": bonustype, "blksz": blksz, **fields},
            _pad8(bonus) if not fields.get("raw_bonuslen") else bonus,
        )

    def freeobjects(self, firstobj: int, numobjs: int) -> None:
        """A FREEOBJECTS record."""
        self.write_record(DrrType.FREEOBJECTS, {"firstobj": firstobj, "numobjs": numobjs})

    def write(
        self,
        object: int,
        offset: int,
        data: bytes,
        *,
        type: int = DMU_OT_PLAIN_FILE_CONTENTS,
        logical_size: int | None = None,
        compressiontype: int = 0,
        **fields: Any,
    ) -> None:
        """A WRITE record. With ``compressiontype`` set, ``data`` is the compressed block and
        ``logical_size`` its uncompressed size."""
        if compressiontype:
            fields["compressed_size"] = len(data)
            if logical_size is None:
                raise StreamFormatError("a compressed WRITE needs its logical_size")
        record = {
            "object": object,
            "type": type,
            "offset": offset,
            "logical_size": len(data) if logical_size is None else logical_size,
            "compressiontype": compressiontype,
            **fields,
        }
        self.write_record(DrrType.WRITE, record, data)

    def free(self, object: int, offset: int, length: int) -> None:
        """A FREE record (``length`` of 2**64-1 frees to the end of the object)."""
        self.write_record(DrrType.FREE, {"object": object, "offset": offset, "length": length})

    def write_byref(self, object: int, offset: int, length: int, **fields: Any) -> None:
        """A WRITE_BYREF record (dedup streams: the data is elsewhere in the stream)."""
        self.write_record(
            DrrType.WRITE_BYREF, {"object": object, "offset": offset, "length": length, **fields}
        )

    def spill(self, object: int, data: bytes, **fields: Any) -> None:
        """A SPILL record carrying a spill block."""
        fields.setdefault("length", len(data))
        self.write_record(DrrType.SPILL, {"object": object, **fields}, data)

    def write_embedded(
        self,
        object: int,
        offset: int,
        length: int,
        data: bytes,
        *,
        lsize: int | None = None,
        **fields: Any,
    ) -> None:
        """A WRITE_EMBEDDED record: ``data`` (at most 112 bytes) lives in the block pointer."""
        record = {
            "object": object,
            "offset": offset,
            "length": length,
            "psize": len(data),
            "lsize": len(data) if lsize is None else lsize,
            **fields,
        }
        self.write_record(DrrType.WRITE_EMBEDDED, record, _pad8(data))

    def object_range(self, firstobj: int, numslots: int, **fields: Any) -> None:
        """An OBJECT_RANGE record (raw streams)."""
        self.write_record(
            DrrType.OBJECT_RANGE, {"firstobj": firstobj, "numslots": numslots, **fields}
        )

    def redact(self, object: int, offset: int, length: int) -> None:
        """A REDACT record."""
        self.write_record(DrrType.REDACT, {"object": object, "offset": offset, "length": length})

    def end(self, toguid: int | None = None) -> None:
        """Close the current stream; ``toguid`` defaults to its BEGIN's."""
        if toguid is None:
            toguid = (
                self._toguid if self._grammar.state is Position.SUB else self._grammar.outer_toguid
            )
        self.write_record(DrrType.END, {"toguid": toguid})
