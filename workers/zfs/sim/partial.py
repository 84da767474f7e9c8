"""The saved state of a cut ``zfs receive -s``: what arrived, and where to resume."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack

from protocol.errors import ZfsError

from .blocks import HOLE


@dataclass
class PartialObject:
    """An object as far as the stream has rebuilt it: its bonus and its records so far."""

    bonus: bytes
    blocks: list[bytes] = field(default_factory=list)
    raw_type: int = 19


@dataclass
class PartialState:
    """Everything a resumed receive needs; ``object``/``offset`` are where the token points."""

    toguid: int
    fromguid: int
    toname: str
    base: int  # the snapshot the stream applies to (0 for a full stream)
    raw: bool = False
    object: int = 0
    offset: int = 0
    nbytes: int = 0  # stream bytes received so far (the token's 'bytes')
    objects: dict[int, PartialObject] = field(default_factory=dict)
    freed: set[int] = field(default_factory=set)

    def blocks(self) -> Iterator[bytes]:
        for obj in self.objects.values():
            for block in obj.blocks:
                if block != HOLE:
                    yield block

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb(
                {
                    "toguid": self.toguid,
                    "fromguid": self.fromguid,
                    "toname": self.toname,
                    "base": self.base,
                    "raw": self.raw,
                    "object": self.object,
                    "offset": self.offset,
                    "bytes": self.nbytes,
                    "objects": {
                        k: [v.bonus, b"".join(v.blocks), v.raw_type]
                        for k, v in self.objects.items()
                    },
                    "freed": sorted(self.freed),
                }
            )
        )

    @classmethod
    def decode(cls, blob: bytes) -> PartialState:
        try:
            raw = msgpack.unpackb(blob, strict_map_key=False)
            objects = {
                int(k): PartialObject(
                    bytes(v[0]),
                    [bytes(v[1][i : i + 32]) for i in range(0, len(v[1]), 32)],
                    int(v[2]),
                )
                for k, v in raw["objects"].items()
            }
            return cls(
                int(raw["toguid"]),
                int(raw["fromguid"]),
                str(raw["toname"]),
                int(raw["base"]),
                bool(raw["raw"]),
                int(raw["object"]),
                int(raw["offset"]),
                int(raw["bytes"]),
                objects,
                {int(x) for x in raw["freed"]},
            )
        except (ValueError, KeyError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise ZfsError(f"saved receive state is damaged: {exc}") from exc
