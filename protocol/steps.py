"""One typed, versioned message per step kind: what the coordinator asks a host's worker to do.

The planner builds these, the job engine stores them (as plain data, ``to_dict``), the runner
wraps one in a :class:`StepCall` per attempt, and the worker dispatches on the message's type. All
of them are *strict* (:func:`protocol.messages.message`): a field this side does not know is an
error when decoded, never dropped, so a send flag or a receive option cannot be lost on the way.

Adding a step kind: define a frozen dataclass subclassing :class:`StepArgs` here (or in a module
of its own that protocol users import), register it with ``@message("step.<kind>", strict=True)``,
give it a ``KIND`` and register a handler for its type on the worker (``workers/steps.py``).

The kinds known today::

    snapshot   SnapshotArgs   atomic ``zfs snapshot`` of names (existing ones are left alone)
    inventory  InventoryArgs  ``zfs list -t all`` of roots, and what object stores hold
    hold       HoldArgs       user holds on snapshots a transfer depends on (checked by guid)
    release    ReleaseArgs    the job's holds released
    transfer   TransferArgs   one ``zfs send`` fanned out to peers and stores (resumable)
    prune      PruneArgs      old snapshots destroyed, unless held, replaced or an origin
    rollback   RollbackArgs   a diverged target rolled back to its newest common snapshot
    plan       PlanArgs       runs in the coordinator: the job kind's planner appends steps

Role changes (failover, switchover, rejoin; workers/roles.py does the work), each carrying the
fencing ``epoch`` it was planned under (the StepCall's epoch is what the worker checks)::

    promote              PromoteArgs    replicas made the writable primary (rolled back, mounted)
    demote               DemoteArgs     datasets made read-only replicas (optionally unmounted)
    fence                FenceArgs      readonly=on on a returning old primary, first thing
    preserve-divergence  PreserveArgs   diverged changes kept aside as a clone, main line rewound
    keep-diverged        KeepDivergedArgs  the diverged side made the main line again
    hook                 HookArgs       a configured command (quiesce, promote, demote hooks)

and the coordinator-side steps of those job kinds: ``orient`` (a sync reads who is primary),
``choose`` (failover: pick the successor, bump the epoch), ``handover`` (switchover: bump the
epoch), ``rejoin-plan`` (find the common snapshots) and ``record`` (write the report).
    diff       DiffArgs       ``zfs diff`` of a snapshot against a later one or the dataset
    clone      CloneArgs      ``zfs clone`` of a snapshot (checked by guid when known)
    destroy    DestroyArgs    snapshots destroyed on request (``zfleet destroy``), by guid
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from protocol.errors import MessageError
from protocol.messages import decode, encode, from_dict, kind_of, message, strict, to_dict
from protocol.zfs import SendSpec

NamedGuid = tuple[str, int]  # a snapshot's full name and the guid it must still have


@dataclass(frozen=True)
class StepArgs:
    """The base of every step message; ``KIND`` is the step kind the engine and worker see."""

    KIND: ClassVar[str] = ""

    @property
    def kind(self) -> str:
        return self.KIND


@strict
@dataclass(frozen=True)
class StoreRef:
    """Where an object store lives, as the fleet config names it (no credentials: those are the
    worker's own settings)."""

    name: str
    url: str
    endpoint: str | None = None


@message("step.snapshot", version=1, strict=True)
@dataclass(frozen=True)
class SnapshotArgs(StepArgs):
    KIND: ClassVar[str] = "snapshot"
    names: tuple[str, ...]
    recursive: bool = False


@message("step.inventory", version=1, strict=True)
@dataclass(frozen=True)
class InventoryArgs(StepArgs):
    KIND: ClassVar[str] = "inventory"
    roots: tuple[str, ...]
    stores: tuple[StoreRef, ...] = ()


@message("step.hold", version=1, strict=True)
@dataclass(frozen=True)
class HoldArgs(StepArgs):
    KIND: ClassVar[str] = "hold"
    tag: str
    snapshots: tuple[NamedGuid, ...]


@message("step.release", version=1, strict=True)
@dataclass(frozen=True)
class ReleaseArgs(StepArgs):
    KIND: ClassVar[str] = "release"
    tag: str
    snapshots: tuple[NamedGuid, ...]


@message("step.prune", version=1, strict=True)
@dataclass(frozen=True)
class PruneArgs(StepArgs):
    KIND: ClassVar[str] = "prune"
    destroy: tuple[NamedGuid, ...]


@message("step.rollback", version=1, strict=True)
@dataclass(frozen=True)
class RollbackArgs(StepArgs):
    KIND: ClassVar[str] = "rollback"
    snapshot: str
    guid: int


@strict
@dataclass(frozen=True)
class TransferTarget:
    """One receiver of a transfer: a peer's dataset, or an object store (``store`` set)."""

    host: str
    dataset: str
    force: bool = False
    origin: str | None = None  # receive as a clone of this snapshot (-o origin=)
    grant: str = ""  # signed by the coordinator per attempt; empty in stored plans
    address: tuple[str, int] | None = None  # the peer's stream server, when known up front
    store: StoreRef | None = None
    no_mount: bool = False  # zfs receive -u, canmount=noauto

    @property
    def label(self) -> str:
        return f"{self.host}:{self.dataset}"

    @property
    def is_store(self) -> bool:
        return self.host.startswith("store:")


@message("step.transfer", version=1, strict=True)
@dataclass(frozen=True)
class TransferArgs(StepArgs):
    KIND: ClassVar[str] = "transfer"
    source: str
    send: SendSpec
    to_guid: int
    from_guid: int
    targets: tuple[TransferTarget, ...]

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a transfer needs at least one target")


@message("step.plan", version=1, strict=True)
@dataclass(frozen=True)
class PlanArgs(StepArgs):
    KIND: ClassVar[str] = "plan"


# kind -> class, for every step message registered through this module
_BY_KIND: dict[str, type[StepArgs]] = {}


def register_step(cls: type[StepArgs]) -> type[StepArgs]:
    """Make ``cls`` known by its KIND (done below for the built-in kinds)."""
    if not cls.KIND:
        raise TypeError(f"{cls.__name__} has no KIND")
    kind_of(cls)  # a TypeError-like MessageError unless it is a registered message
    known = _BY_KIND.get(cls.KIND)
    if known is not None and known is not cls:
        raise TypeError(f"step kind {cls.KIND!r} is already {known.__name__}")
    _BY_KIND[cls.KIND] = cls
    return cls


for _cls in (SnapshotArgs, InventoryArgs, HoldArgs, ReleaseArgs, PruneArgs, RollbackArgs,
             TransferArgs, PlanArgs):  # fmt: skip
    register_step(_cls)

STEP_KINDS: Final = _BY_KIND  # read-only by convention: register through register_step


def args_to_data(args: StepArgs) -> dict[str, object]:
    """A step message as JSON-safe plain data (with its ``kind`` and ``v``)."""
    return to_dict(args)


def args_from_data(data: Mapping[str, object]) -> StepArgs:
    """The step message in plain data; MessageError when it is not a known step message."""
    msg = from_dict(data)
    if not isinstance(msg, StepArgs):
        raise MessageError(f"message {data.get('kind')!r} is not a step's arguments")
    return msg


def args_to_bytes(args: StepArgs) -> bytes:
    return encode(args)


def args_from_bytes(raw: bytes) -> StepArgs:
    msg = decode(raw)
    if not isinstance(msg, StepArgs):
        raise MessageError(f"{type(msg).__name__} is not a step's arguments")
    return msg


# -- role changes (failover, switchover, rejoin) ----------------------------------------------


@message("step.promote", version=1, strict=True)
@dataclass(frozen=True)
class PromoteArgs(StepArgs):
    KIND: ClassVar[str] = "promote"
    datasets: tuple[str, ...]
    epoch: int = 0


@message("step.demote", version=1, strict=True)
@dataclass(frozen=True)
class DemoteArgs(StepArgs):
    KIND: ClassVar[str] = "demote"
    datasets: tuple[str, ...]
    unmount: bool = False
    epoch: int = 0


@message("step.fence", version=1, strict=True)
@dataclass(frozen=True)
class FenceArgs(StepArgs):
    KIND: ClassVar[str] = "fence"
    datasets: tuple[str, ...]
    epoch: int = 0


DatasetCommon = tuple[str, str]  # a dataset and the short name of its newest common snapshot


@message("step.preserve-divergence", version=1, strict=True)
@dataclass(frozen=True)
class PreserveArgs(StepArgs):
    KIND: ClassVar[str] = "preserve-divergence"
    datasets: tuple[DatasetCommon, ...]
    tag: str
    epoch: int = 0


@message("step.keep-diverged", version=1, strict=True)
@dataclass(frozen=True)
class KeepDivergedArgs(StepArgs):
    KIND: ClassVar[str] = "keep-diverged"
    datasets: tuple[str, ...]
    tag: str
    epoch: int = 0


@message("step.hook", version=1, strict=True)
@dataclass(frozen=True)
class HookArgs(StepArgs):
    KIND: ClassVar[str] = "hook"
    argv: tuple[str, ...]
    timeout: float = 300.0
    epoch: int = 0

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0]:
            raise ValueError("a hook needs a command")


@message("step.orient", version=1, strict=True)
@dataclass(frozen=True)
class OrientArgs(StepArgs):
    KIND: ClassVar[str] = "orient"


@message("step.choose", version=1, strict=True)
@dataclass(frozen=True)
class ChooseArgs(StepArgs):
    KIND: ClassVar[str] = "choose"


@message("step.handover", version=1, strict=True)
@dataclass(frozen=True)
class HandoverArgs(StepArgs):
    KIND: ClassVar[str] = "handover"


@message("step.rejoin-plan", version=1, strict=True)
@dataclass(frozen=True)
class RejoinPlanArgs(StepArgs):
    KIND: ClassVar[str] = "rejoin-plan"


@message("step.record", version=1, strict=True)
@dataclass(frozen=True)
class RecordArgs(StepArgs):
    KIND: ClassVar[str] = "record"


for _role_cls in (PromoteArgs, DemoteArgs, FenceArgs, PreserveArgs, KeepDivergedArgs, HookArgs,
                  OrientArgs, ChooseArgs, HandoverArgs, RejoinPlanArgs, RecordArgs):  # fmt: skip
    register_step(_role_cls)
# -- the short fleet verbs' own steps (zfleet diff|clone|destroy; coordinator/adhoc.py) ---------


@message("step.diff", version=1, strict=True)
@dataclass(frozen=True)
class DiffArgs(StepArgs):
    """``zfs diff SNAPSHOT [OTHER]``: OTHER is a later snapshot, or None for the live dataset."""

    KIND: ClassVar[str] = "diff"
    snapshot: str
    other: str | None = None


@message("step.clone", version=1, strict=True)
@dataclass(frozen=True)
class CloneArgs(StepArgs):
    """``zfs clone SNAPSHOT TARGET``; ``guid`` 0 means the snapshot arrives earlier in the job
    (a transfer before this step), so it is not known when the step is planned."""

    KIND: ClassVar[str] = "clone"
    snapshot: str
    target: str
    guid: int = 0


@message("step.destroy", version=1, strict=True)
@dataclass(frozen=True)
class DestroyArgs(StepArgs):
    """``zfs destroy [-r] NAME@SNAP`` for snapshots checked by guid (a replaced one is kept)."""

    KIND: ClassVar[str] = "destroy"
    snapshots: tuple[NamedGuid, ...]
    recursive: bool = False


for _verb_cls in (DiffArgs, CloneArgs, DestroyArgs):
    register_step(_verb_cls)

# Step kinds of other rooms register themselves: the kinds' set/get-property, containers,
# group keys.
from protocol import containersteps as _containersteps  # noqa: E402,F401
from protocol import keysteps as _keysteps  # noqa: E402,F401
from protocol import kindsteps as _kindsteps  # noqa: E402,F401
from protocol import rebasesteps as _rebasesteps  # noqa: E402,F401
