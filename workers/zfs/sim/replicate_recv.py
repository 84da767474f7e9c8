"""Receiving a compound stream (``-I``, ``-p``, ``-R``): route each substream to its dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from protocol.errors import InvalidOperation, ProtocolError, StreamIncomplete
from protocol.stream import BeginInfo, DrrType, Record, parse_begin

from . import db
from .landing import set_received

if TYPE_CHECKING:
    from .receive import SimReceiveSink


class CompoundReceiver:
    """Walks a compound stream: wrapper BEGIN/END, substreams, final END."""

    def __init__(self, sink: SimReceiveSink, info: BeginInfo) -> None:
        self.sink = sink
        self.info = info
        self.nvlist: dict[str, Any] = info.nvlist.to_python() if info.nvlist else {}
        self.top = info.toname.split("@")[0]
        self.target = sink.spec.target.split("@")[0]

    def _next(self, records: Iterator[Record]) -> Record:
        try:
            return next(records)
        except StopIteration:
            raise StreamIncomplete("cannot receive: incomplete stream") from None
        except ProtocolError as exc:
            raise StreamIncomplete(f"cannot receive: incomplete stream ({exc})") from exc

    def _map(self, source: str) -> str:
        if source == self.top:
            return self.target
        if source.startswith(self.top + "/"):
            return self.target + source[len(self.top) :]
        return self.target

    def run(self, records: Iterator[Record]) -> str | None:
        wrapper_end = self._next(records)
        if wrapper_end.type != DrrType.END:
            raise InvalidOperation("cannot receive: invalid stream (compound header without END)")
        fss = self.nvlist.get("fss") or {}
        props_by_name = {
            e.get("name"): e.get("props") or {} for e in fss.values() if isinstance(e, dict)
        }
        last: str | None = None
        done: set[str] = set()
        while True:
            rec = self._next(records)
            if rec.type == DrrType.END:
                return last
            if rec.type != DrrType.BEGIN:
                raise InvalidOperation(
                    "cannot receive: invalid stream (record outside a substream)"
                )
            sub = parse_begin(rec)
            source = sub.toname.split("@")[0]
            target = self._map(source)
            last = self.sink._substream(records, sub, target, rec)
            if source in props_by_name and target not in done:
                done.add(target)
                with self.sink.lock, db.txg(self.sink.pool.conn):
                    set_received(self.sink.pool, target, props_by_name[source], self.sink.spec)
