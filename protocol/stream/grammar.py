"""The grammar of a send stream: which record may come next.

A plain stream is BEGIN, records, END. A compound stream (``zfs send -R``/``-I``/``-p``) is a
BEGIN of header type COMPOUNDSTREAM, an END, sub-streams each BEGIN...END, and a final END.
Streams may follow one another. The reader and the writer share this so that neither accepts
what the other would refuse.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from protocol.errors import StreamFormatError
from protocol.stream.types import DMU_BACKUP_MAGIC, DrrType, HeaderType


class Position(enum.Enum):
    """What the grammar expects next (the value reads well in an error message)."""

    TOP = "expecting a BEGIN record"
    OUTER = "expecting the END that follows a compound stream's BEGIN"
    BETWEEN = "expecting a sub-stream's BEGIN or the compound stream's final END"
    SUB = "inside a stream"


@dataclass
class Grammar:
    """Where a reader or writer stands in the stream grammar; refuses records out of place."""

    state: Position = Position.TOP
    compound: bool = False  # inside a compound stream (between its BEGIN and final END)
    stream_toguid: int = 0  # toguid of the BEGIN whose END is due
    outer_toguid: int = 0  # toguid of the compound BEGIN (its ENDs repeat it)

    def expected_end_toguid(self) -> int:
        return self.stream_toguid if self.state is Position.SUB else self.outer_toguid

    def advance(self, drr: DrrType, header: bytes, *, order: str, offset: int, index: int) -> None:
        """Move past a record of type ``drr``, or raise a format error."""

        def bad(why: str) -> StreamFormatError:
            return StreamFormatError(f"{why} ({self.state.value})", offset=offset, record=index)

        if drr == DrrType.BEGIN:
            if self.state not in (Position.TOP, Position.BETWEEN):
                raise bad("unexpected BEGIN record")
            magic, versioninfo = struct.unpack_from(order + "QQ", header, 8)
            if magic != DMU_BACKUP_MAGIC:
                raise bad(f"bad BEGIN magic 0x{magic:x}")
            (toguid,) = struct.unpack_from(order + "Q", header, 40)
            hdrtype = versioninfo & 3
            if self.state is Position.TOP and hdrtype == HeaderType.COMPOUNDSTREAM:
                self.state, self.compound, self.outer_toguid = Position.OUTER, True, toguid
            elif hdrtype == HeaderType.SUBSTREAM:
                self.state, self.stream_toguid = Position.SUB, toguid
            else:
                raise bad(f"BEGIN has header type {hdrtype}")
        elif drr == DrrType.END:
            if self.state is Position.SUB:
                self.state = Position.BETWEEN if self.compound else Position.TOP
            elif self.state is Position.OUTER:
                self.state = Position.BETWEEN
            elif self.state is Position.BETWEEN:
                self.state, self.compound = Position.TOP, False
            else:
                raise bad("unexpected END record")
        elif self.state is not Position.SUB:
            raise bad(f"unexpected {drr.wire_name} record")
