"""Typed, versioned task and event messages, encoded with msgpack.

A message is a frozen dataclass registered under a *kind* string and a *version*::

    @message("step.event", version=1)
    @dataclass(frozen=True)
    class StepEvent:
        job_id: str
        ...

``encode(msg)`` gives a msgpack map ``{"kind": ..., "v": ..., <field>: <value>, ...}``;
``decode(data, expect=StepEvent)`` gives the dataclass back. ``to_dict``/``from_dict`` do the same
with plain JSON-safe data (bytes become base64 text) so Celery's serializers can carry a message
as an ordinary task argument.

Field types the codec understands: ``str``, ``int`` (``bool`` is never taken for an ``int``;
ints from -2**63 to 2**64-1, so unsigned 64-bit guids fit), ``float``, ``bool``, ``bytes``,
``None``, enums (sent by value), ``X | None`` and other unions, ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``/``Mapping[str, X]``, ``Literal[...]`` and nested
frozen dataclasses (sent as maps of their fields, registered or not).

Compatibility rules, so that hosts running different releases can talk:

- a field missing from the data takes its default; a missing field *without* a default is a
  :class:`MessageError` naming the kind and the field;
- keys the receiver does not know are **ignored**, so a newer sender may add optional fields
  without a version bump; ``kind`` and ``v`` are reserved and cannot be field names;
- an incompatible change (a renamed, removed or retyped field, a new field without a default) gets
  a new version: register the new class under the same kind with ``version=2`` and keep the old
  class registered as long as old peers exist. An unknown kind or version is a MessageError.

Adding a message elsewhere: import :func:`message` in your own module and decorate your frozen
dataclass; the module must be imported before ``decode`` meets that kind (import it from the
package that handles it). Every failure to read or write a message is a
:class:`protocol.errors.MessageError`; no msgpack exception ever leaks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

import msgpack

from protocol.errors import MessageError

KIND_KEY: Final = "kind"
VERSION_KEY: Final = "v"
# Messages carry references, never bulk bytes; a large host's inventory still fits easily.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

M = TypeVar("M")
T = TypeVar("T")

_Convert = Callable[[Any], Any]  # checks and converts one value; raises _Bad


@dataclass(frozen=True)
class _Entry:
    cls: type[Any]
    kind: str
    version: int


_BY_KEY: dict[tuple[str, int], _Entry] = {}
# Classes that refuse keys they do not know (see ``strict`` below).
_STRICT: set[type[Any]] = set()
_BY_CLASS: dict[type[Any], _Entry] = {}
# Converters compiled once per (class, direction); the value is a field name -> converter table.
_FIELDS_CACHE: dict[tuple[type[Any], str], tuple[tuple[str, _Convert, bool], ...]] = {}


def message(kind: str, *, version: int = 1, strict: bool = False) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as message ``kind`` at ``version`` (a class decorator).

    ``strict`` messages refuse keys they do not know instead of ignoring them: for orders whose
    every field changes what is done (a send flag, a receive option), where dropping one that a
    newer sender meant would do something else than asked.
    """
    if not kind or not isinstance(kind, str):
        raise TypeError("a message kind must be a non-empty string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError("a message version must be a positive int")

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"message {kind!r}: {cls.__name__} must be a frozen dataclass")
        for f in dataclasses.fields(cls):
            if f.name in (KIND_KEY, VERSION_KEY):
                raise TypeError(f"message {kind!r}: field name {f.name!r} is reserved")
        key = (kind, version)
        if key in _BY_KEY and _BY_KEY[key].cls is not cls:
            raise TypeError(f"message {kind!r} v{version} is already registered")
        # Refuse unsupported field types at import, not at first use; a forward reference to
        # a class defined later is left to be checked at first use.
        with contextlib.suppress(NameError):
            _fields(cls, "in")
        entry = _Entry(cls, kind, version)
        if strict:
            _STRICT.add(cls)
        _BY_KEY[key] = entry
        _BY_CLASS[cls] = entry
        return cls

    return register


def strict(cls: type[T]) -> type[T]:
    """Make a nested (unregistered) frozen dataclass refuse unknown keys, as strict messages do."""
    _STRICT.add(cls)
    return cls


def kind_of(cls_or_msg: object) -> tuple[str, int]:
    """The (kind, version) a message class or instance is registered under."""
    cls = cls_or_msg if isinstance(cls_or_msg, type) else type(cls_or_msg)
    entry = _BY_CLASS.get(cls)
    if entry is None:
        raise MessageError(f"{cls.__name__} is not a registered message")
    return entry.kind, entry.version


def registered() -> dict[tuple[str, int], type[Any]]:
    """Every registered message class by (kind, version)."""
    return {key: entry.cls for key, entry in _BY_KEY.items()}


# -- public codec -----------------------------------------------------------------------------


def encode(msg: object) -> bytes:
    """A registered message as msgpack bytes; MessageError if a field has the wrong type."""
    plain = _to_plain(msg, binary=True)
    try:
        return cast(bytes, msgpack.packb(plain, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:  # unreachable after validation
        kind, _ = kind_of(msg)
        raise MessageError(f"message {kind!r} cannot be packed: {exc}") from exc


@typing.overload
def decode(data: bytes, expect: None = None) -> object: ...
@typing.overload
def decode(data: bytes, expect: type[M]) -> M: ...


def decode(data: bytes, expect: type[M] | None = None) -> M | object:
    """The message in ``data``; with ``expect``, MessageError unless it is that class."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MessageError(f"message data must be bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is too large ({len(data)} > {MAX_MESSAGE_BYTES} bytes)")
    try:
        plain = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except (ValueError, TypeError, UnicodeDecodeError, msgpack.UnpackException) as exc:
        raise MessageError(f"message is not valid msgpack: {exc}") from exc
    except RecursionError as exc:  # deeply nested garbage
        raise MessageError("message is nested too deeply") from exc
    return from_dict(plain, expect)


def to_dict(msg: object, *, binary: bool = False) -> dict[str, Any]:
    """A message as plain data with ``kind`` and ``v``; bytes as base64 text unless ``binary``."""
    return _to_plain(msg, binary=binary)


@typing.overload
def from_dict(data: object, expect: None = None) -> object: ...
@typing.overload
def from_dict(data: object, expect: type[M]) -> M: ...


def from_dict(data: object, expect: type[M] | None = None) -> M | object:
    """The message in plain data (as from :func:`to_dict` or msgpack); MessageError if invalid."""
    if not isinstance(data, Mapping):
        raise MessageError(f"a message must be a map, not {type(data).__name__}")
    kind = data.get(KIND_KEY)
    version = data.get(VERSION_KEY)
    if not isinstance(kind, str):
        raise MessageError("message has no 'kind' string")
    if len(kind) > 200:
        raise MessageError(f"message kind is too long: {_short(kind)}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MessageError(f"message {kind!r} has no integer version 'v'")
    entry = _BY_KEY.get((kind, version))
    if entry is None:
        known = sorted(v for (k, v) in _BY_KEY if k == kind)
        if not known:
            raise MessageError(f"unknown message kind {_short(kind)}")
        raise MessageError(
            f"message {kind!r} has unknown version {version} (known: {', '.join(map(str, known))})"
        )
    if expect is not None and entry.cls is not expect:
        want = _BY_CLASS.get(expect)
        want_name = want.kind if want else expect.__name__
        raise MessageError(f"expected message {want_name!r}, got {kind!r} v{version}")
    try:
        return cast(M, _dataclass_from(entry.cls, data))
    except _Bad as bad:
        raise bad.error(kind) from None
    except RecursionError as exc:
        raise MessageError(f"message {kind!r} is nested too deeply") from exc


# -- plain-data conversion --------------------------------------------------------------------
#
# Converters raise the internal _Bad without building any text; each container on the way up
# adds its step of the field path, and the public entry points turn it into a MessageError. So
# a valid message costs no string formatting, and an invalid one is named precisely.


class _Bad(Exception):
    """A value that does not fit its field; ``template`` is formatted only when reported."""

    def __init__(self, template: str, **values: object) -> None:
        super().__init__(template)
        self.template = template
        self.values = values
        self.steps: list[str] = []  # innermost first

    def at(self, step: str) -> _Bad:
        self.steps.append(step)
        return self

    def error(self, kind: str) -> MessageError:
        path = "".join(reversed(self.steps)).lstrip(".")
        return MessageError(f"message {kind!r}: " + self.template.format(path=path, **self.values))


def _to_plain(msg: object, *, binary: bool) -> dict[str, Any]:
    entry = _BY_CLASS.get(type(msg))
    if entry is None:
        raise MessageError(f"{type(msg).__name__} is not a registered message")
    out: dict[str, Any] = {KIND_KEY: entry.kind, VERSION_KEY: entry.version}
    try:
        out.update(_dataclass_to(msg, "out-bin" if binary else "out-text"))
    except _Bad as bad:
        raise bad.error(entry.kind) from None
    return out


def _dataclass_to(obj: object, mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, convert, _required in _fields(type(obj), mode):
        try:
            out[name] = convert(getattr(obj, name))
        except _Bad as bad:
            raise bad.at("." + name) from None
    return out


def _dataclass_from(cls: type[Any], data: Mapping[Any, Any]) -> Any:
    values: dict[str, Any] = {}
    for name, convert, required in _fields(cls, "in"):
        if name in data:
            try:
                values[name] = convert(data[name])
            except _Bad as bad:
                raise bad.at("." + name) from None
        elif required:
            raise _Bad("missing field '{path}'").at("." + name)
    # Unknown keys are ignored on purpose (newer senders may add optional fields), except by
    # strict classes, where an option this side does not know must not be silently dropped.
    if cls in _STRICT:
        known = {name for name, _c, _r in _fields(cls, "in")} | {KIND_KEY, VERSION_KEY}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise _Bad("{cls} does not support {names} (unknown here: refused, not ignored)",
                       cls=cls.__name__, names=", ".join(map(repr, unknown)))
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ refusing the values
        raise _Bad("{cls}: {exc}", cls=cls.__name__, exc=exc) from None


def _fields(cls: type[Any], mode: str) -> tuple[tuple[str, _Convert, bool], ...]:
    cached = _FIELDS_CACHE.get((cls, mode))
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    table = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        table.append((f.name, _converter(hints[f.name], mode, cls.__name__), required))
    result = tuple(table)
    _FIELDS_CACHE[(cls, mode)] = result
    return result


_MUST_BE: Final = "field '{path}' must be {want}, not {got}"


def _converter(tp: Any, mode: str, owner: str) -> _Convert:
    """A function checking (and converting) one value of type ``tp`` in direction ``mode``.

    ``mode`` is "in" (plain data -> Python), "out-bin" (Python -> msgpack-ready) or "out-text"
    (Python -> JSON-ready: bytes as base64 text). ``owner`` names the class for setup errors.
    """
    inbound = mode == "in"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any or tp is object:
        raise TypeError(f"{owner}: fields typed Any cannot be checked; name a type")
    if tp is type(None) or tp is None:

        def none(v: Any) -> Any:
            if v is not None:
                raise _Bad(_MUST_BE, want="null", got=type(v).__name__)
            return None

        return none
    if tp is bool:

        def boolean(v: Any) -> Any:
            if v is not True and v is not False:
                raise _Bad(_MUST_BE, want="a bool", got=type(v).__name__)
            return v

        return boolean
    if tp is int:

        def integer(v: Any) -> Any:
            if type(v) is not int:
                if not isinstance(v, int) or isinstance(v, bool):
                    raise _Bad(_MUST_BE, want="an int", got=type(v).__name__)
                v = int(v)
            if not INT_MIN <= v <= INT_MAX:
                raise _Bad("field '{path}' is out of range ({v})", v=_short(v))
            return v

        return integer
    if tp is float:

        def real(v: Any) -> Any:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise _Bad(_MUST_BE, want="a number", got=type(v).__name__)
            if isinstance(v, int) and not INT_MIN <= v <= INT_MAX:
                raise _Bad("field '{path}' is out of range ({v})", v=_short(v))
            return float(v)

        return real
    if tp is str:

        def text(v: Any) -> Any:
            if type(v) is not str:
                if not isinstance(v, str):
                    raise _Bad(_MUST_BE, want="a string", got=type(v).__name__)
                v = str(v)
            return v

        return text
    if tp is bytes:

        def blob(v: Any) -> Any:
            if inbound and isinstance(v, str):
                try:
                    return base64.b64decode(v.encode("ascii"), validate=True)
                except (binascii.Error, UnicodeEncodeError):
                    raise _Bad("field '{path}' is not valid base64") from None
            if not isinstance(v, bytes | bytearray):
                raise _Bad(_MUST_BE, want="bytes", got=type(v).__name__)
            if mode == "out-text":
                return base64.b64encode(bytes(v)).decode("ascii")
            return bytes(v)

        return blob
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}
        allowed = ", ".join(repr(x) for x in members)
        value_conv = _converter(type(next(iter(tp)).value), mode, owner) if members else None

        def enumeration(v: Any) -> Any:
            if inbound:
                raw = value_conv(v) if value_conv else v
                member = members.get(raw)
                if member is None:
                    raise _Bad(
                        "field '{path}' must be one of {allowed}, got {v}",
                        allowed=allowed,
                        v=_short(v),
                    )
                return member
            if not isinstance(v, tp):
                raise _Bad(_MUST_BE, want=tp.__name__, got=type(v).__name__)
            return value_conv(v.value) if value_conv else v.value

        return enumeration
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        cls = tp

        def nested(v: Any) -> Any:
            if inbound:
                if not isinstance(v, Mapping):
                    raise _Bad(_MUST_BE, want=f"a map ({cls.__name__})", got=type(v).__name__)
                return _dataclass_from(cls, v)
            if not isinstance(v, cls):
                raise _Bad(_MUST_BE, want=cls.__name__, got=type(v).__name__)
            return _dataclass_to(v, mode)

        return nested
    if origin is Literal:
        choices = args
        shown = ", ".join(map(repr, choices))

        def literal(v: Any) -> Any:
            # Compare types too: True == 1, but a bool is not the literal 1.
            if not any(type(a) is type(v) and a == v for a in choices):
                raise _Bad(
                    "field '{path}' must be one of {shown}, got {v}", shown=shown, v=_short(v)
                )
            return v

        return literal
    if origin is typing.Union or origin is types.UnionType:
        names = " | ".join(_type_name(a) for a in args)
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            inner = _converter(others[0], mode, owner)

            def optional(v: Any) -> Any:
                if v is None:
                    return None
                try:
                    return inner(v)
                except _Bad as bad:
                    if bad.steps:  # the right type, wrong inside: keep the precise error
                        raise
                    raise _Bad(_MUST_BE, want=names, got=type(v).__name__) from None

            return optional
        branches = [_converter(a, mode, owner) for a in args]

        def union(v: Any) -> Any:
            deep: _Bad | None = None
            for branch in branches:
                try:
                    return branch(v)
                except _Bad as bad:
                    if bad.steps and deep is None:
                        deep = bad
            if deep is not None:
                raise deep
            raise _Bad(_MUST_BE, want=names, got=type(v).__name__)

        return union
    if origin is tuple or origin is list:
        is_tuple = origin is tuple
        fixed: list[_Convert] | None = None
        each: _Convert = _converter(args[0] if args else str, mode, owner)
        if is_tuple and not (len(args) == 2 and args[1] is Ellipsis):
            fixed = [_converter(a, mode, owner) for a in args]

        def sequence(v: Any) -> Any:
            if not isinstance(v, list | tuple):
                raise _Bad(_MUST_BE, want="a list", got=type(v).__name__)
            convs = fixed
            if convs is not None and len(v) != len(convs):
                raise _Bad("field '{path}' must have {n} items, not {m}", n=len(convs), m=len(v))
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(convs[i](x) if convs is not None else each(x))
                except _Bad as bad:
                    raise bad.at(f"[{i}]") from None
            if inbound:
                return tuple(out) if is_tuple else out
            return out

        return sequence
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        key_conv = _converter(args[0] if args else str, mode, owner)
        val_conv = _converter(args[1] if args else str, mode, owner)

        def mapping(v: Any) -> Any:
            if not isinstance(v, Mapping):
                raise _Bad(_MUST_BE, want="a map", got=type(v).__name__)
            out = {}
            for k, x in v.items():
                try:
                    out[key_conv(k)] = val_conv(x)
                except _Bad as bad:
                    raise bad.at(f"[{k!r}]") from None
            return out

        return mapping
    raise TypeError(f"{owner}: field type {tp!r} is not supported")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", repr(tp))


# -- the first set of messages ----------------------------------------------------------------


class StepState(enum.StrEnum):
    """Where a step's attempt is."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ResultValue = str | int | bool | None


@message("step.event", version=1)
@dataclass(frozen=True)
class StepEvent:
    """A worker's report on one attempt of one step, read by the coordinator's job engine.

    ``error_type`` is the error tree's class name (``"DestinationModified"``); ``retryable`` says
    whether the engine may run another attempt. ``result`` carries small typed facts (guids,
    byte counts, the snapshot created), never bulk data.
    """

    job_id: str
    step_id: str
    attempt: int
    host: str
    state: StepState
    error_type: str | None = None
    error_message: str | None = None
    retryable: bool = False
    result: Mapping[str, ResultValue] = field(default_factory=dict)
    at: float | None = None  # unix seconds when the worker emitted it


@message("step.call", version=2)
@dataclass(frozen=True)
class StepCall:
    """The coordinator asks a host's worker to run one attempt of one step.

    ``args`` is the step's own typed message (:mod:`protocol.steps`), encoded: the worker decodes
    it and dispatches on its type, so a step kind it does not know, or an argument it does not
    support, is refused before a single ZFS command runs. ``epoch`` is the job's fencing token
    within ``fence`` (the scope it fences, such as a replication job's name; empty: not fenced):
    a worker refuses a call whose epoch is older than the scope's current one. ``time_limit`` is
    the seconds the step may run before the worker's watchdog stops it (0: the worker's default).

    Version 2 replaced version 1's ``step_kind`` and ``args_json`` (untyped JSON) with ``args``.
    """

    job_id: str
    step_id: str
    attempt: int
    host: str
    args: bytes
    epoch: int = 0
    fence: str = ""
    time_limit: float = 0.0
