"""The data plane: framed, compressed, resumable streams between host workers and to storage.

``push_transfer`` runs on the source host: one ``zfs send`` fanned out to many targets.
``StreamServer`` runs on every host and applies granted streams with ``zfs receive -s``.

One connection, in protocol/frames frames (sender -> server unless marked)::

    HELLO   {grant, target, receive options}
    ACCEPT  {resume_token, resume_offset}          <- server: grant verified, not replayed
    DATA*   stream bytes, zstd or raw per frame     (HEARTBEAT when the send is idle)
    END     {stream_bytes, frames}
    RESULT  {snapshot, bytes}                       <- server (HEARTBEATs while it finishes)

Either side may send ERROR {error, message} instead and hang up; the error's class name is one of
protocol.errors, so the other side raises the same class. The server reads the stream's BEGIN
(and the record after it, whose checksum covers BEGIN) and checks it against the grant before
``zfs receive`` sees a byte. Silence longer than the stall timeout is a stall on both sides.
"""

from workers.dataplane.progress import ProgressEvent
from workers.dataplane.sender import SendOptions, push_transfer
from workers.dataplane.server import StreamServer
from workers.dataplane.sinks import LinkOptions
from workers.dataplane.targets import (
    FileTarget,
    Outcome,
    PeerTarget,
    StoreTarget,
    TargetReport,
    TransferReport,
)

__all__ = [
    "FileTarget",
    "LinkOptions",
    "Outcome",
    "PeerTarget",
    "ProgressEvent",
    "SendOptions",
    "StoreTarget",
    "StreamServer",
    "TargetReport",
    "TransferReport",
    "push_transfer",
]
