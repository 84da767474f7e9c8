"""Job kinds: what turns a request into a DAG, registered by name, run by one engine and runner.

A job kind (sync today; failover, switchover, rejoin, rebase, dedup next) is a :class:`JobKind`:
its name, the coordinator-side steps it runs itself (``local_steps``: step kind -> handler, such
as sync's ``plan``, which reads fresh inventories and appends the planner's steps), and how a
scheduled run of a configured job starts (``scheduled``, for kinds the scheduler may start). The
job engine (``engine.py``) and the loop (``runner.py``) never name a kind: they look it up here.

Adding a kind: write its module (the planner and a ``register(JobKind(...))`` at import) and add
one line to :data:`BUILTIN` so it is loaded on first use; nothing else changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from protocol.errors import JobError
from protocol.messages import ResultValue

if TYPE_CHECKING:
    from coordinator.config import FleetConfig
    from coordinator.engine import Job, Step
    from coordinator.jobstore import JobStore

# A coordinator-side step: reads what it needs from the store, may add steps to the job, and
# returns its small result; raises a ZfleetError to fail the step.
LocalStep = Callable[["JobStore", "Job", "Step"], Mapping[str, ResultValue]]
# Starts one scheduled run of the configured job ``name``: (config text, parsed config, name, now).
Scheduled = Callable[[str, "FleetConfig", str, float], "Job"]

# kind name -> the module that registers it (imported on first use)
BUILTIN: Final[dict[str, str]] = {
    "failover": "coordinator.failover",
    "rejoin": "coordinator.rejoin",
    "switchover": "coordinator.switchover",
    "adhoc": "coordinator.adhoc",
    "keys": "coordinator.keyjob",
    "kind": "coordinator.kindjob",
    "container": "coordinator.containerjob",
    "rebase": "coordinator.rebasejob",
    "sync": "coordinator.syncjob",
}


@dataclass(frozen=True)
class JobKind:
    name: str
    local_steps: Mapping[str, LocalStep] = field(default_factory=dict)
    scheduled: Scheduled | None = None
    description: str = ""


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    """Make ``kind`` runnable; registering another kind under a taken name is a bug."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise TypeError(f"job kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> JobKind:
    """The registered kind ``name`` (its module loaded if it is a built-in); JobError if none."""
    kind = _KINDS.get(name)
    if kind is None and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
        kind = _KINDS.get(name)
    if kind is None:
        raise JobError(f"unknown job kind {name!r} (known: {', '.join(sorted(known_names()))})")
    return kind


def known_names() -> set[str]:
    return {*BUILTIN, *_KINDS}
