"""`zfs send` and `zfs receive` for the front end: streams on stdout and stdin.

The stream passes through in 1 MiB pieces, never whole. ``receive`` looks at the stream's first
record (the BEGIN) before it touches the target: garbage is refused the way OpenZFS refuses it
("invalid stream (bad magic number)"), and ``-d``/``-e`` need the sent snapshot's name.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from protocol import names as rules
from protocol.errors import StreamFormatError, ZfleetError
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.front_errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, render
from workers.zfs.front_table import nicenum

if TYPE_CHECKING:
    from workers.zfs.front import Front

CHUNK: Final = 1 << 20
# OpenZFS's stream magic (protocol.stream has it too, but importing that package loads numpy,
# which would add a third of a second to every `zfs` call the front end serves)
DMU_BACKUP_MAGIC: Final = 0x2F5BACBAC
BEGIN_SIZE: Final = 312  # one dmu_replay_record
RESUMING: Final = 1 << 20
RAW: Final = 1 << 24
_BEGIN: Final = struct.Struct("<II Q Q Q I I Q Q 256s")


@dataclass(frozen=True)
class Begin:
    """The parts of a stream's BEGIN record the front end needs."""

    toname: str
    incremental: bool
    resuming: bool = False  # made by `zfs send -t` (DMU_BACKUP_FEATURE_RESUMING)
    raw: bool = False  # made by `zfs send -w` (DMU_BACKUP_FEATURE_RAW)


def peek_begin(head: bytes) -> Begin:
    """Read the BEGIN record at the start of a stream; refuse anything else."""
    if len(head) < BEGIN_SIZE:
        raise StreamFormatError("stream too short for a BEGIN record", offset=len(head))
    for order in ("<", ">"):
        fields = struct.unpack_from(order + _BEGIN.format[1:], head)
        drr_type, _, magic, versioninfo, _, _, _, _, fromguid, toname = fields
        if drr_type == 0 and magic == DMU_BACKUP_MAGIC:
            name = toname.split(b"\0", 1)[0].decode(errors="replace")
            resuming = bool((versioninfo >> 2) & RESUMING)  # the feature flags are bits 2..31
            raw = bool((versioninfo >> 2) & RAW)
            return Begin(toname=name, incremental=fromguid != 0, resuming=resuming, raw=raw)
    raise StreamFormatError("invalid stream (bad magic number)", offset=0)


def commands(front: Front) -> dict[str, Callable[[Sequence[str]], int]]:
    """The stream commands of ``zfs``, bound to one front-end invocation."""
    return {
        "send": lambda args: send(front, args),
        "receive": lambda args: receive(front, args),
    }


def send(front: Front, args: Sequence[str]) -> int:
    """``zfs send``: the stream to stdout, or with ``-n`` only the estimate."""
    from workers.zfs.front import Usage, opts

    found, operands = opts("send", args, "i:I:RwcLepnPvDbhVst:")
    token = found.get("-t", [None])[-1]
    if token is None and len(operands) != 1:
        raise Usage("missing snapshot argument" if not operands else "too many arguments")
    if token is not None and operands:
        raise Usage("too many arguments")
    if "-i" in found and "-I" in found:
        raise Usage("-i and -I are mutually exclusive")
    from_snaps = found.get("-i") or found.get("-I")
    from_snap = from_snaps[-1] if from_snaps else None
    snapshot = operands[0] if operands else ""
    if "-I" in found and from_snap is not None and "#" in from_snap:
        front.err("Error: multiple snapshots cannot be sent from a bookmark.")  # zfs_main.c
        return EXIT_FAILURE
    if token is None:
        front.doing("send", snapshot)
        rules.validate_snapshot(snapshot, existing=True)
        if from_snap is not None and not from_snap.startswith(("@", "#")):
            rules.validate_any(from_snap, existing=True)
    if token is not None:
        snapshot = _token_snapshot(front, token)
    spec = SendSpec(
        snapshot=snapshot,
        from_snap=from_snap,
        intermediates="-I" in found,
        replicate="-R" in found,
        raw="-w" in found,
        compressed="-c" in found,
        large_blocks="-L" in found,
        embedded="-e" in found,
        props="-p" in found,
        resume_token=token,
    )
    if token is not None:
        front.doing("resume send", snapshot)
    if "-n" in found or "-P" in found or "-v" in found:
        size = front.backend.estimate(spec)
        report = _estimate_report(spec, size, parsable="-P" in found)
        if "-n" in found:
            if "-P" in found or "-v" in found:
                front.out(report)
            return 0
        front.err(report)
    if front.stdout_is_tty:
        front.err(
            "Error: Stream can not be written to a terminal.\nYou must redirect standard output."
        )
        return EXIT_FAILURE
    stream = front.backend.send(spec)
    try:
        while chunk := stream.read(CHUNK):
            front.stdout.write(chunk)
        front.stdout.flush()
    except BrokenPipeError:
        stream.cancel()
        front.err(f"warning: cannot send '{snapshot}': Broken pipe")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM, see main): a zfs send killed by it says nothing; the receiver
        # on the other end of the pipe is the one that reports the stream as cut
        stream.cancel()
        return EXIT_INTERRUPTED
    except BaseException:
        stream.cancel()
        raise
    stream.close()
    return 0


def _token_snapshot(front: Front, token: str) -> str:
    """The snapshot a resume token names; a corrupt token is refused before anything runs.

    A backend may need the name to find the pool. Imported here: protocol.stream loads numpy.
    """
    from protocol.stream import decode_resume_token

    front.doing("resume send", "")
    return decode_resume_token(token).toname


def _estimate_report(spec: SendSpec, size: int, *, parsable: bool) -> str:
    """What ``zfs send -nP`` / ``-nv`` prints about a stream's size."""
    if spec.from_snap is not None:
        source = spec.from_snap
        if source.startswith(("@", "#")):
            source = spec.snapshot.split("@", 1)[0] + source
        if parsable:
            return f"incremental\t{source}\t{spec.snapshot}\t{size}\nsize\t{size}\n"
        return (
            f"send from {source} to {spec.snapshot} estimated size is {nicenum(size)}\n"
            f"total estimated size is {nicenum(size)}\n"
        )
    if parsable:
        return f"full\t{spec.snapshot}\t{size}\nsize\t{size}\n"
    return (
        f"full send of {spec.snapshot} estimated size is {nicenum(size)}\n"
        f"total estimated size is {nicenum(size)}\n"
    )


def _target_for(target: str, begin: Begin, found: dict[str, list[str]]) -> str:
    """``-d`` appends the sent path below its pool; ``-e`` only its last component."""
    sent = begin.toname.split("@", 1)[0]
    if "-d" in found and "/" in sent:
        return f"{target}/{sent.split('/', 1)[1]}"
    if "-e" in found:
        return f"{target}/{sent.rsplit('/', 1)[-1]}"
    return target


def _key_unavailable(front: Front, dataset: str) -> bool:
    if not front.backend.exists(dataset):
        return False
    status = front.backend.get(dataset, ["keystatus"]).get("keystatus")
    return status is not None and status.value == "unavailable"


def receive(front: Front, args: Sequence[str]) -> int:
    """``zfs receive``: the stream from stdin into the target."""
    from workers.zfs.front import Usage, opts, prop_pairs

    found, operands = opts("receive", args, "sFuvnAdehMco:x:")
    if len(operands) != 1:
        raise Usage("missing snapshot argument" if not operands else "too many arguments")
    target = operands[0]
    front.doing("receive", target)
    rules.validate_any(target, existing=True)
    if "-A" in found:
        if not front.opened(target, "receive"):
            return EXIT_USAGE  # zfs_main.c: zfs_open fails, then usage(B_FALSE)
        front.doing("abort", target)
        front.backend.abort_receive(target)
        return 0
    props = prop_pairs(found.get("-o", []), "receive")
    origin = props.pop("origin", None)
    if origin is not None:
        rules.validate_snapshot(origin, existing=True)
    head = front.stdin.read(BEGIN_SIZE)
    if len(head) < BEGIN_SIZE:
        # recv_read wants a whole BEGIN record; anything shorter is a failed read, not bad magic
        front.err("cannot receive: failed to read from stream")
        return EXIT_FAILURE
    begin = peek_begin(head)
    target = _target_for(target, begin, found)
    front.doing("receive", target, new_stream=not begin.incremental, resume=begin.resuming)
    if begin.incremental and not begin.raw and _key_unavailable(front, target.split("@", 1)[0]):
        # the data must be decrypted to be written: dmu_recv_begin wants the key (EACCES)
        front.err("cannot receive incremental stream: inherited key must be loaded")
        return EXIT_FAILURE
    if "-n" in found:
        while front.stdin.read(CHUNK):
            pass
        return 0
    spec = ReceiveSpec(
        target=target,
        resumable="-s" in found,
        force="-F" in found,
        no_mount="-u" in found,
        set_props=props,
        exclude_props=tuple(found.get("-x", [])),
        origin=origin,
    )
    started = time.monotonic()
    sink = front.backend.receive(spec)
    try:
        sink.write(head)
        while chunk := front.stdin.read(CHUNK):
            sink.write(chunk)
    except KeyboardInterrupt:
        # interrupted mid-stream: end the receive with what arrived, as the kernel does, so
        # that -s keeps it; the message (the resume token with -s) is the receiver's, as libzfs
        # prints it for a cut stream (recv_ecksum_set_aux)
        try:
            sink.finish()
        except ZfleetError as exc:
            message, _ = render(exc, front.ctx, front.backend)
            front.err(message)
        return EXIT_FAILURE
    except BaseException:
        # the receive failed (or we were interrupted): stop it; with -s its partial state stays
        with contextlib.suppress(ZfleetError):
            sink.abort()
        raise
    result = sink.finish()
    if "-v" in found:
        kind = "incremental" if begin.incremental else "full"
        into = result.snapshot or f"{target}@{begin.toname.split('@', 1)[-1]}"
        took = max(time.monotonic() - started, 1e-3)
        front.out(
            f"receiving {kind} stream of {begin.toname} into {into}\n"
            f"received {nicenum(result.bytes_received)} stream in {took:.2f} seconds"
            f" ({nicenum(int(result.bytes_received / took))}/sec)\n"
        )
    return 0
