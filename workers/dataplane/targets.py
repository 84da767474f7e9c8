"""Where a transfer goes, and what happened there: the data plane's public value types."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from workers.zfs.base import ReceiveSpec, SendSpec


class StoreWriter(Protocol):
    """The object store's upload of one stream (workers/cloud's StreamIngest keeps this shape)."""

    def write(self, data: bytes) -> int | None: ...

    def finish(self) -> object: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class PeerTarget:
    """A peer host's stream server, and the grant the coordinator signed for this stream.

    ``receive.target`` must be the grant's dataset; ``receive.force`` is ignored (only the
    signed grant can allow ``-F``).
    """

    host: str
    address: tuple[str, int]
    receive: ReceiveSpec
    grant: str

    @property
    def label(self) -> str:
        return f"{self.host}:{self.receive.target}"


@dataclass(frozen=True)
class StoreTarget:
    """The object store: ``open`` starts an upload of the given send's raw stream bytes."""

    name: str
    open: Callable[[SendSpec], StoreWriter] = field(compare=False)

    @property
    def label(self) -> str:
        return f"store:{self.name}"


@dataclass(frozen=True)
class FileTarget:
    """A local file that receives the raw send stream (an export, or a test's witness)."""

    path: Path

    @property
    def label(self) -> str:
        return f"file:{self.path}"


Target = PeerTarget | StoreTarget | FileTarget


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TargetReport:
    """What one target got: bytes on the wire and of the stream, and how it ended."""

    target: str
    outcome: Outcome
    wire_bytes: int = 0  # framed, compressed bytes written to this target
    stream_bytes: int = 0  # send-stream bytes this attempt delivered
    resumed: bool = False
    resume_offset: int | None = None  # stream bytes the target already had (from its token)
    snapshot: str | None = None  # what the target reports it now holds
    error: str | None = None
    error_type: str | None = None  # the error class name, from protocol.errors
    retryable: bool = False


@dataclass(frozen=True)
class TransferReport:
    """One push: the send that fed it and one report per target, in the order given."""

    snapshot: str
    targets: tuple[TargetReport, ...]
    elapsed: float
    estimate: int | None = None

    @property
    def ok(self) -> bool:
        """True when every target got the whole stream."""
        return all(t.outcome is Outcome.OK for t in self.targets)

    def failed(self) -> tuple[TargetReport, ...]:
        """The targets to try again later (each resumes on its own)."""
        return tuple(t for t in self.targets if t.outcome is not Outcome.OK)
