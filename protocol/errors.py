"""zfleet's one error tree.

Every error zfleet raises on purpose derives from :class:`ZfleetError`; a dependency's exception
never crosses a public API without being wrapped in one of these.

    ZfleetError
    ├── ConfigError                  bad fleet config, settings or arguments
    │   └── AddressError             a HOST:DATASET[@SNAP] address that cannot be used
    ├── NameError_                   a pool/dataset/snapshot/bookmark name breaks an OpenZFS rule
    ├── Unauthorized                 a request without valid credentials (bearer token, basic auth)
    ├── ProtocolError                bytes or messages that do not follow the protocol
    │   ├── StreamError              a ZFS send stream that cannot be read
    │   │   ├── StreamTruncated      ended early (offset of the cut)
    │   │   ├── StreamChecksumError  fletcher-4 mismatch (record index and offset)
    │   │   └── StreamFormatError    bad magic, bad record type, impossible lengths
    │   ├── TokenError               a resume token that cannot be decoded
    │   ├── FrameError               a data-plane frame that is corrupt or out of place
    │   ├── MessageError             a task/event message with an unknown version or missing field
    │   └── WebhookError             a webhook body (Alertmanager's) that is malformed or too big
    ├── ZfsError                     a ZFS operation failed (real or simulated backend)
    │   ├── DatasetNotFound
    │   ├── DatasetExists
    │   ├── DatasetBusy              busy, or a snapshot has holds
    │   ├── HasDependentClones
    │   ├── DestinationModified      target changed since its most recent snapshot
    │   ├── DestinationHasSnapshots  newer snapshots on the target; rollback needs -r / -F
    │   ├── NoCommonSnapshot         incremental source missing or mismatched on the target
    │   ├── OriginMissing            a clone stream whose origin is not on the target
    │   ├── StreamIncomplete         receive was cut off; carries the resume token if saved
    │   ├── ResumeTokenStale         resume token no longer matches the target's state
    │   ├── KeyNotLoaded             encrypted dataset whose key is not loaded
    │   ├── InvalidOperation         any other refusal with OpenZFS's message
    │   └── HostUnreachable          ssh could not reach the host (also RetryableError)
    ├── TransferError                the data plane failed to move a stream
    │   ├── GrantError               missing, forged, expired, replayed or mismatched grant
    │   └── TransferCancelled
    ├── StoreError                   object store failures
    │   ├── StoreConflict            a conditional write lost the race
    │   └── StoreCorrupt             a pack, index or manifest that fails authentication
    ├── JobError                     job engine / planner refusals
    │   ├── StaleEpoch               a fencing epoch that is not the job's current one
    │   ├── RedisUnavailable         Redis did not answer (also RetryableError)
    │   ├── PlanRefused              e.g. a diverged target without force_rollback
    │   └── LeaseLost                another coordinator holds the leader lease
    ├── RebaseError                  an image could not be rebased; nothing was changed
    │   ├── RebaseConflict           paths changed in the image and in the base (``paths``)
    │   ├── ImageInUse               a process or a hook says the image is in use
    │   ├── RebaseNoSpace            the pool or a quota ran out while the new clone was written
    │   └── RebaseVerifyError        the rebased tree does not equal the original (``paths``)
    ├── HookFailed                   a configured hook command failed or did not run
    ├── ContainerError               a container runtime (podman) refused or failed
    │   ├── RuntimeMissing           no container runtime on this host (podman not installed)
    │   ├── ContainerNotFound        no such container (or container record)
    │   └── CheckpointUnsupported    CRIU cannot checkpoint here (``reason``: CRIU's own words)
    ├── LabError                     a lab VM (real OpenZFS in QEMU) failed to build, boot or answer
    └── RetryableError               mixin-style branch: safe to retry with backoff

``RetryableError`` is also used as a second base (``class X(TransferError, RetryableError)``) so
that callers retry on ``isinstance(e, RetryableError)`` and nothing else.
"""

from __future__ import annotations


class ZfleetError(Exception):
    """Root of every error zfleet raises on purpose."""


class RetryableError(ZfleetError):
    """An error that is safe to retry (with backoff): the step is idempotent and nothing broke."""


class ConfigError(ZfleetError):
    """A config file, setting or argument is invalid."""


class AddressError(ConfigError):
    """A fleet address (``HOST:DATASET[@SNAP]``, ``store:NAME:...``) is malformed or names an
    unknown host or store; the message shows the address and what is wrong with it."""


class NameError_(ZfleetError):
    """A ZFS name breaks an OpenZFS naming rule; the message says which one."""

    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"invalid name {name!r}: {rule}")
        self.name = name
        self.rule = rule


class Unauthorized(ZfleetError):
    """A request whose credentials are missing or wrong; the message never contains them."""


# -- protocol ---------------------------------------------------------------------------------


class ProtocolError(ZfleetError):
    """Bytes or messages that do not follow zfleet's or OpenZFS's formats."""


class StreamError(ProtocolError):
    """A ZFS send stream that cannot be read. ``offset`` is a byte offset into the stream."""

    def __init__(self, message: str, offset: int | None = None, record: int | None = None) -> None:
        where = []
        if record is not None:
            where.append(f"record {record}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} (at {', '.join(where)})" if where else message)
        self.offset = offset
        self.record = record


class StreamTruncated(StreamError):
    """The stream ended before a record (or its payload) was complete."""


class StreamChecksumError(StreamError):
    """A record's fletcher-4 checksum does not match the running checksum."""


class StreamFormatError(StreamError):
    """Bad magic, an unknown record type, or a length that cannot be right."""


class TokenError(ProtocolError):
    """A receive resume token that cannot be decoded."""


class FrameError(ProtocolError):
    """A data-plane frame that is corrupt, unknown, or out of place."""


class MessageError(ProtocolError):
    """A task or event message with an unknown version, a missing field, or a wrong type."""


class WebhookError(ProtocolError):
    """A webhook request body that is too big, not JSON, or not in the sender's format."""


# -- zfs --------------------------------------------------------------------------------------


class ZfsError(ZfleetError):
    """A ZFS operation failed. ``stderr`` keeps OpenZFS's own words when there are any."""

    def __init__(self, message: str, *, stderr: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.exit_code = exit_code


class DatasetNotFound(ZfsError):
    """The dataset, snapshot or bookmark does not exist."""


class DatasetExists(ZfsError):
    """The dataset, snapshot or bookmark already exists."""


class DatasetBusy(ZfsError):
    """The dataset is busy, or a snapshot has user holds."""


class HasDependentClones(ZfsError):
    """A snapshot cannot be destroyed or rolled back past: clones depend on it."""


class DestinationModified(ZfsError):
    """The receive target was modified since its most recent snapshot."""


class DestinationHasSnapshots(ZfsError):
    """The target has snapshots newer than the one to roll back or receive onto."""


class NoCommonSnapshot(ZfsError):
    """The incremental source does not exist on, or does not match, the target."""


class OriginMissing(ZfsError):
    """A clone's origin snapshot is missing on the target."""


class StreamIncomplete(ZfsError, RetryableError):
    """A receive was cut short. ``token`` is the saved resume token when ``-s`` was used."""

    def __init__(
        self,
        message: str,
        *,
        token: str | None = None,
        stderr: str = "",
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, stderr=stderr, exit_code=exit_code)
        self.token = token


class ResumeTokenStale(ZfsError):
    """The resume token does not match the state of the dataset any more."""


class KeyNotLoaded(ZfsError):
    """The dataset is encrypted and its key is not loaded."""


class InvalidOperation(ZfsError):
    """Any other operation OpenZFS refuses; the message is OpenZFS's."""


class HostUnreachable(ZfsError, RetryableError):
    """The exec prefix (``ssh root@host``) could not reach the host; nothing ran there."""


# -- data plane, store, jobs -----------------------------------------------------------------


class TransferError(ZfleetError):
    """The data plane failed to move a stream."""


class TransferInterrupted(TransferError, RetryableError):
    """The connection dropped or a peer stalled; the next attempt resumes from the token."""


class GrantError(TransferError):
    """A transfer grant is missing, forged, expired, replayed, or does not match the stream."""


class TransferCancelled(TransferError):
    """The transfer was cancelled; partial state is kept for resume."""


class StoreError(ZfleetError):
    """An object store operation failed."""


class StoreUnavailable(StoreError, RetryableError):
    """The object store could not be reached or answered with a server error."""


class StoreConflict(StoreError):
    """A conditional write (If-None-Match / If-Match) lost a race with another writer."""


class StoreCorrupt(StoreError):
    """A pack, index or manifest is missing, or fails authentication or its digest."""


class JobError(ZfleetError):
    """The job engine or a planner refused or failed."""


class PlanRefused(JobError):
    """The planner refuses a plan (for example a diverged target without force_rollback)."""


class LeaseLost(JobError):
    """Another coordinator holds the leader lease."""


class StaleEpoch(JobError):
    """A step or a role change carries a fencing epoch other than the job's current one."""

    def __init__(self, message: str, *, seen: int, current: int) -> None:
        super().__init__(message)
        self.seen = seen
        self.current = current


class RedisUnavailable(JobError, RetryableError):
    """Redis could not be reached or timed out; retry the call (they are made idempotent)."""


class HookFailed(ZfleetError):
    """A failover hook (quiesce, promote, demote) exited non-zero, timed out or did not start."""


class ContainerError(ZfleetError):
    """A container runtime refused or failed; ``stderr`` keeps the runtime's own words."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class RuntimeMissing(ContainerError):
    """This host has no container runtime (``podman`` is not installed or cannot run)."""


class ContainerNotFound(ContainerError):
    """No container by that name on the host, or no zfleet record of it."""


class CheckpointUnsupported(ContainerError):
    """CRIU cannot checkpoint on this host; ``reason`` is what ``criu check`` printed."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message, stderr=reason)
        self.reason = reason


class LabError(ZfleetError):
    """The lab failed: its image is missing or did not build, or a VM did not boot or answer."""


class RebaseError(ZfleetError):
    """An image could not be rebased onto a base; the image and its names are as they were."""


class RebaseConflict(RebaseError):
    """Paths changed both in the image and between its old base and the new base.

    ``paths`` lists them (relative to the image's root), so a user can decide which side wins.
    """

    def __init__(self, image: str, paths: list[str]) -> None:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"cannot rebase '{image}': {len(paths)} path(s) changed in the image and in the "
            f"base: {shown} (choose --prefer image or --prefer base)"
        )
        self.image = image
        self.paths = paths


class ImageInUse(RebaseError):
    """A process has files open under the image's mountpoint, or a hook refused to stop it."""


class RebaseNoSpace(RebaseError):
    """The pool (or a quota) has no room for the rebased clone's own blocks."""


class RebaseVerifyError(RebaseError):
    """The rebased tree differs from the one it must equal; ``paths`` names the differences."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths
