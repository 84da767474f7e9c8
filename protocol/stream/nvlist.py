"""OpenZFS packed nvlists (libnvpair's ``nvlist_pack``), both encodings, decode and encode.

A packed nvlist starts with four bytes: encoding (0 native, 1 XDR), byte order (1 little-endian)
and two reserved bytes. Send streams use XDR for the compound BEGIN of ``-R``/``-I``/``-p`` and
native little-endian for a resuming or raw BEGIN; resume tokens use native.

Native is the in-memory ``nvpair_t`` image: a 16-byte pair header (size, name size, element
count, type), the name padded to 8 bytes, the value padded to 8 bytes; an embedded nvlist follows
its pair as version, flags, pairs and a 4-byte zero. XDR is big-endian in 4-byte units: each
pair carries its encoded and its native size, the name, type, element count and value; a list
ends with two zero words. Sizes are recomputed on encode, so decode-then-encode gives the same
bytes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import ProtocolError

NV_ENCODE_NATIVE: Final = 0
NV_ENCODE_XDR: Final = 1
NV_UNIQUE_NAME: Final = 1
_NVPAIR_HEADER: Final = 16
_NVLIST_T: Final = 24  # sizeof (nvlist_t): version, nvflag, priv pointer, flag, pad
_MAX_DEPTH: Final = 64


class DataType(enum.IntEnum):
    """``data_type_t`` from sys/nvpair.h."""

    BOOLEAN = 1  # a flag: present, no value
    BYTE = 2
    INT16 = 3
    UINT16 = 4
    INT32 = 5
    UINT32 = 6
    INT64 = 7
    UINT64 = 8
    STRING = 9
    BYTE_ARRAY = 10
    INT16_ARRAY = 11
    UINT16_ARRAY = 12
    INT32_ARRAY = 13
    UINT32_ARRAY = 14
    INT64_ARRAY = 15
    UINT64_ARRAY = 16
    STRING_ARRAY = 17
    HRTIME = 18
    NVLIST = 19
    NVLIST_ARRAY = 20
    BOOLEAN_VALUE = 21
    INT8 = 22
    UINT8 = 23
    BOOLEAN_ARRAY = 24
    INT8_ARRAY = 25
    UINT8_ARRAY = 26
    DOUBLE = 27


# scalar integer types: (struct code, size in native memory)
_INT_SCALARS: Final[dict[DataType, str]] = {
    DataType.BYTE: "B",
    DataType.INT8: "b",
    DataType.UINT8: "B",
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.BOOLEAN_VALUE: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.HRTIME: "q",
}
_INT_ARRAYS: Final[dict[DataType, DataType]] = {
    DataType.INT8_ARRAY: DataType.INT8,
    DataType.UINT8_ARRAY: DataType.UINT8,
    DataType.INT16_ARRAY: DataType.INT16,
    DataType.UINT16_ARRAY: DataType.UINT16,
    DataType.INT32_ARRAY: DataType.INT32,
    DataType.UINT32_ARRAY: DataType.UINT32,
    DataType.BOOLEAN_ARRAY: DataType.BOOLEAN_VALUE,
    DataType.INT64_ARRAY: DataType.INT64,
    DataType.UINT64_ARRAY: DataType.UINT64,
}
_XDR_INT_CODE: Final[dict[str, str]] = {
    "B": "I",
    "b": "i",
    "h": "i",
    "H": "I",
    "i": "i",
    "I": "I",
    "q": "q",
    "Q": "Q",
}


@dataclass(frozen=True)
class NvPair:
    """One name/value pair with its OpenZFS data type."""

    name: str
    type: DataType
    value: Any


class NvList(Mapping[str, Any]):
    """A decoded nvlist: an ordered mapping of names to values that remembers each type.

    Values: ``int`` (all integer types), ``bool`` (BOOLEAN_VALUE, and ``True`` for a BOOLEAN
    flag), ``float``, ``str``, ``bytes`` (BYTE_ARRAY), ``NvList``, and lists of those.
    """

    def __init__(
        self, pairs: Sequence[NvPair] = (), *, version: int = 0, nvflag: int = NV_UNIQUE_NAME
    ) -> None:
        self.pairs: tuple[NvPair, ...] = tuple(pairs)
        self.version = version
        self.nvflag = nvflag
        self._index = {p.name: p for p in reversed(self.pairs)}

    def __getitem__(self, name: str) -> Any:
        return self._index[name].value

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(p.name for p in self.pairs))

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"NvList({dict(self)!r})"

    def type_of(self, name: str) -> DataType:
        """The data type of the pair called ``name``."""
        return self._index[name].type

    def to_python(self) -> dict[str, Any]:
        """Plain dicts and lists all the way down (for JSON output)."""

        def conv(v: Any) -> Any:
            if isinstance(v, NvList):
                return v.to_python()
            if isinstance(v, list):
                return [conv(x) for x in v]
            if isinstance(v, bytes):
                return v.hex()
            return v

        return {k: conv(v) for k, v in self.items()}


# -- decode -----------------------------------------------------------------------------------


class _Buf:
    """A cursor over packed bytes that turns every overrun into a ProtocolError."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(
                f"nvlist ends early: needs {n} bytes at byte {self.pos} of {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        return st.unpack(self.take(st.size))


def _align(n: int, to: int) -> int:
    return (n + to - 1) & ~(to - 1)


def _cstr(raw: bytes) -> str:
    try:
        return raw.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"nvlist string is not UTF-8: {raw[:40]!r}") from exc


def nvlist_decode(data: bytes) -> NvList:
    """Decode a packed nvlist (native or XDR, either byte order).

    Raises :class:`ProtocolError` with the byte position on anything malformed.
    """
    data = bytes(data)
    if len(data) < 4:
        raise ProtocolError(f"nvlist too short: {len(data)} bytes")
    encoding, endian = data[0], data[1]
    buf = _Buf(data, 4)
    if encoding == NV_ENCODE_XDR:
        result = _xdr_list(buf, 0)
    elif encoding == NV_ENCODE_NATIVE:
        if endian not in (0, 1):
            raise ProtocolError(f"nvlist has an unknown byte order {endian}")
        order = "<" if endian == 1 else ">"
        version, nvflag = buf.unpack(struct.Struct(order + "iI"))
        result = _native_list(buf, order, 0, version, nvflag)
    else:
        raise ProtocolError(f"nvlist has an unknown encoding {encoding}")
    return result


def _check_type(raw: int, pos: int) -> DataType:
    try:
        return DataType(raw)
    except ValueError:
        raise ProtocolError(f"nvlist pair has unknown data type {raw} at byte {pos}") from None


def _native_list(buf: _Buf, order: str, depth: int, version: int, nvflag: int) -> NvList:
    # An embedded list's version and flags sit in the nvlist_t image inside its pair; only the
    # top-level list writes them ahead of its pairs.
    if depth > _MAX_DEPTH:
        raise ProtocolError("nvlist nested too deeply")
    pairs: list[NvPair] = []
    head = struct.Struct(order + "ihhii")
    while True:
        start = buf.pos
        (size,) = struct.unpack(order + "i", buf.take(4))
        if size == 0:
            return NvList(pairs, version=version, nvflag=nvflag)
        buf.pos = start
        size, name_sz, _reserve, nelem, raw_type = buf.unpack(head)
        dtype = _check_type(raw_type, start)
        if size < _NVPAIR_HEADER or name_sz < 1 or nelem < 0:
            raise ProtocolError(f"nvlist pair at byte {start} has impossible sizes")
        body = _Buf(buf.take(size - _NVPAIR_HEADER))
        name_area = _align(_NVPAIR_HEADER + name_sz, 8) - _NVPAIR_HEADER
        name = _cstr(body.take(name_sz))
        body.pos = name_area
        value = _native_value(body, buf, dtype, nelem, order=order, depth=depth)
        pairs.append(NvPair(name, dtype, value))


def _native_value(
    body: _Buf, outer: _Buf, dtype: DataType, nelem: int, *, order: str, depth: int
) -> Any:
    if dtype == DataType.BOOLEAN:
        return True
    if dtype in _INT_SCALARS:
        (v,) = struct.unpack(
            order + _INT_SCALARS[dtype], body.take(struct.calcsize(_INT_SCALARS[dtype]))
        )
        return bool(v) if dtype == DataType.BOOLEAN_VALUE else v
    if dtype == DataType.DOUBLE:
        return struct.unpack(order + "d", body.take(8))[0]
    if dtype == DataType.STRING:
        return _cstr(body.data[body.pos :])
    if dtype == DataType.BYTE_ARRAY:
        return body.take(nelem)
    if dtype in _INT_ARRAYS:
        code = _INT_SCALARS[_INT_ARRAYS[dtype]]
        values = list(
            struct.unpack(f"{order}{nelem}{code}", body.take(nelem * struct.calcsize(code)))
        )
        return [bool(v) for v in values] if dtype == DataType.BOOLEAN_ARRAY else values
    if dtype == DataType.STRING_ARRAY:
        body.take(8 * nelem)  # pointers, zero when packed
        strings = body.data[body.pos :].split(b"\0")
        if len(strings) < nelem:
            raise ProtocolError("nvlist string array has fewer strings than elements")
        return [_cstr(s) for s in strings[:nelem]]
    image = struct.Struct(order + "iI16x")
    if dtype == DataType.NVLIST:
        return _native_list(outer, order, depth + 1, *body.unpack(image))
    # NVLIST_ARRAY: pointers then nvlist_t images in the pair, the lists' pairs after it
    body.take(8 * nelem)
    heads = [body.unpack(image) for _ in range(nelem)]
    return [_native_list(outer, order, depth + 1, *h) for h in heads]


def _xdr_list(buf: _Buf, depth: int) -> NvList:
    if depth > _MAX_DEPTH:
        raise ProtocolError("nvlist nested too deeply")
    version, nvflag = buf.unpack(struct.Struct(">iI"))
    pairs: list[NvPair] = []
    while True:
        start = buf.pos
        encoded_size, decoded_size = buf.unpack(struct.Struct(">ii"))
        if encoded_size == 0 and decoded_size == 0:
            return NvList(pairs, version=version, nvflag=nvflag)
        name = _xdr_string(buf)
        raw_type, nelem = buf.unpack(struct.Struct(">ii"))
        dtype = _check_type(raw_type, start)
        if nelem < 0:
            raise ProtocolError(f"nvlist pair at byte {start} has a negative element count")
        pairs.append(NvPair(name, dtype, _xdr_value(buf, dtype, nelem, depth)))


def _xdr_string(buf: _Buf) -> str:
    (n,) = struct.unpack(">I", buf.take(4))
    raw = buf.take(_align(n, 4))
    return _cstr(raw[:n])


def _xdr_value(buf: _Buf, dtype: DataType, nelem: int, depth: int) -> Any:
    if dtype == DataType.BOOLEAN:
        return True
    if dtype in _INT_SCALARS:
        code = _XDR_INT_CODE[_INT_SCALARS[dtype]]
        (v,) = struct.unpack(">" + code, buf.take(struct.calcsize(code)))
        return bool(v) if dtype == DataType.BOOLEAN_VALUE else v
    if dtype == DataType.DOUBLE:
        return struct.unpack(">d", buf.take(8))[0]
    if dtype == DataType.STRING:
        return _xdr_string(buf)
    if dtype == DataType.BYTE_ARRAY:
        return buf.take(_align(nelem, 4))[:nelem]
    if dtype in _INT_ARRAYS:
        (count,) = struct.unpack(">I", buf.take(4))
        if count != nelem:
            raise ProtocolError(f"nvlist array count {count} differs from its {nelem} elements")
        code = _XDR_INT_CODE[_INT_SCALARS[_INT_ARRAYS[dtype]]]
        values = list(struct.unpack(f">{nelem}{code}", buf.take(nelem * struct.calcsize(code))))
        return [bool(v) for v in values] if dtype == DataType.BOOLEAN_ARRAY else values
    if dtype == DataType.STRING_ARRAY:
        return [_xdr_string(buf) for _ in range(nelem)]
    if dtype == DataType.NVLIST:
        return _xdr_list(buf, depth + 1)
    return [_xdr_list(buf, depth + 1) for _ in range(nelem)]


# -- encode -----------------------------------------------------------------------------------


def _infer(name: str, value: Any) -> NvPair:
    if value is None:
        return NvPair(name, DataType.BOOLEAN, True)
    if isinstance(value, bool):
        return NvPair(name, DataType.BOOLEAN_VALUE, value)
    if isinstance(value, int):
        return NvPair(name, DataType.UINT64 if value >= 0 else DataType.INT64, value)
    if isinstance(value, float):
        return NvPair(name, DataType.DOUBLE, value)
    if isinstance(value, str):
        return NvPair(name, DataType.STRING, value)
    if isinstance(value, bytes | bytearray):
        return NvPair(name, DataType.BYTE_ARRAY, bytes(value))
    if isinstance(value, Mapping):
        return NvPair(name, DataType.NVLIST, _as_nvlist(value))
    if isinstance(value, list | tuple):
        items = list(value)
        if items and all(isinstance(v, Mapping) for v in items):
            return NvPair(name, DataType.NVLIST_ARRAY, [_as_nvlist(v) for v in items])
        if items and all(isinstance(v, str) for v in items):
            return NvPair(name, DataType.STRING_ARRAY, items)
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            return NvPair(name, DataType.UINT64_ARRAY, items)
    raise ProtocolError(f"cannot encode nvlist value {name!r} of type {type(value).__name__}")


def _as_nvlist(value: Mapping[str, Any]) -> NvList:
    if isinstance(value, NvList):
        return value
    return NvList([_infer(k, v) for k, v in value.items()])


def nvlist_encode(value: Mapping[str, Any], *, encoding: int = NV_ENCODE_XDR) -> bytes:
    """Pack ``value`` as OpenZFS does (native little-endian or XDR).

    An :class:`NvList` keeps its types; for a plain mapping the types are inferred: ``None`` is a
    BOOLEAN flag, ``bool`` BOOLEAN_VALUE, ``int`` UINT64 (INT64 if negative), ``str`` STRING,
    ``bytes`` BYTE_ARRAY, a mapping an NVLIST, and lists of those the array types.
    """
    nvl = _as_nvlist(value)
    if encoding == NV_ENCODE_XDR:
        return bytes([NV_ENCODE_XDR, 1, 0, 0]) + _xdr_encode_list(nvl)
    if encoding == NV_ENCODE_NATIVE:
        head = struct.pack("<iI", nvl.version, nvl.nvflag)
        return bytes([NV_ENCODE_NATIVE, 1, 0, 0]) + head + _native_encode_pairs(nvl)
    raise ProtocolError(f"unknown nvlist encoding {encoding}")


def _elements(p: NvPair) -> int:
    if p.type == DataType.BOOLEAN:
        return 0
    if p.type == DataType.BYTE_ARRAY:
        return len(p.value)
    if isinstance(p.value, list):
        return len(p.value)
    return 1


def _native_value_size(p: NvPair) -> int:
    t, v = p.type, p.value
    if t == DataType.BOOLEAN:
        return 0
    if t in _INT_SCALARS:
        return struct.calcsize(_INT_SCALARS[t])
    if t == DataType.DOUBLE:
        return 8
    if t == DataType.STRING:
        return len(str(v).encode()) + 1
    if t == DataType.BYTE_ARRAY:
        return len(v)
    if t in _INT_ARRAYS:
        return struct.calcsize(_INT_SCALARS[_INT_ARRAYS[t]]) * len(v)
    if t == DataType.STRING_ARRAY:
        return 8 * len(v) + sum(len(s.encode()) + 1 for s in v)
    if t == DataType.NVLIST:
        return _NVLIST_T
    return (8 + _NVLIST_T) * len(v)


def _native_pair_size(p: NvPair) -> int:
    return _align(_NVPAIR_HEADER + len(p.name.encode()) + 1, 8) + _align(_native_value_size(p), 8)


def _pack_ints(order: str, t: DataType, values: Sequence[Any]) -> bytes:
    code = _INT_SCALARS[t]
    return struct.pack(f"{order}{len(values)}{code}", *(int(v) for v in values))


def _native_encode_pairs(nvl: NvList) -> bytes:
    out = []
    for p in nvl.pairs:
        name = p.name.encode()
        size = _native_pair_size(p)
        head = struct.pack("<ihhii", size, len(name) + 1, 0, _elements(p), p.type)
        name_area = name + b"\0" * (
            _align(_NVPAIR_HEADER + len(name) + 1, 8) - _NVPAIR_HEADER - len(name)
        )
        t, v = p.type, p.value
        trailer = b""
        if t == DataType.BOOLEAN:
            value = b""
        elif t in _INT_SCALARS:
            value = _pack_ints("<", t, [v])
        elif t == DataType.DOUBLE:
            value = struct.pack("<d", v)
        elif t == DataType.STRING:
            value = str(v).encode() + b"\0"
        elif t == DataType.BYTE_ARRAY:
            value = bytes(v)
        elif t in _INT_ARRAYS:
            value = _pack_ints("<", _INT_ARRAYS[t], v)
        elif t == DataType.STRING_ARRAY:
            value = b"\0" * (8 * len(v)) + b"".join(s.encode() + b"\0" for s in v)
        elif t == DataType.NVLIST:
            value = struct.pack("<iI16x", v.version, v.nvflag)
            trailer = _native_encode_pairs(v)
        else:
            value = b"\0" * (8 * len(v)) + b"".join(
                struct.pack("<iI16x", x.version, x.nvflag) for x in v
            )
            trailer = b"".join(_native_encode_pairs(x) for x in v)
        body = head + name_area + value
        out.append(body + b"\0" * (size - len(body)) + trailer)
    out.append(b"\0\0\0\0")
    return b"".join(out)


def _xdr_str(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">I", len(raw)) + raw + b"\0" * (_align(len(raw), 4) - len(raw))


def _xdr_encode_list(nvl: NvList) -> bytes:
    out = [struct.pack(">iI", nvl.version, nvl.nvflag)]
    for p in nvl.pairs:
        t, v = p.type, p.value
        if t == DataType.BOOLEAN:
            value = b""
        elif t in _INT_SCALARS:
            value = struct.pack(">" + _XDR_INT_CODE[_INT_SCALARS[t]], int(v))
        elif t == DataType.DOUBLE:
            value = struct.pack(">d", v)
        elif t == DataType.STRING:
            value = _xdr_str(str(v))
        elif t == DataType.BYTE_ARRAY:
            value = bytes(v) + b"\0" * (_align(len(v), 4) - len(v))
        elif t in _INT_ARRAYS:
            code = _XDR_INT_CODE[_INT_SCALARS[_INT_ARRAYS[t]]]
            value = struct.pack(f">I{len(v)}{code}", len(v), *(int(x) for x in v))
        elif t == DataType.STRING_ARRAY:
            value = b"".join(_xdr_str(s) for s in v)
        elif t == DataType.NVLIST:
            value = _xdr_encode_list(v)
        else:
            value = b"".join(_xdr_encode_list(x) for x in v)
        rest = _xdr_str(p.name) + struct.pack(">ii", t, _elements(p)) + value
        out.append(struct.pack(">ii", 8 + len(rest), _native_pair_size(p)) + rest)
    out.append(b"\0" * 8)
    return b"".join(out)
