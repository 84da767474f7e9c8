"""The ``keys`` job kind: key groups made, shared, rotated and loaded by the members' workers.

``zfleet keys group create|add-host|remove-host|rotate|load`` each submit a small job: a step on
the group's keeper (the host holding its encrypted datasets) that makes a new key version and
seals it to the members, or opens its copy and seals it to new members; then the coordinator-side
``group-key-commit`` step writes the sealed boxes that step returned into the group's record
(bus/keyring.py). ``load`` runs ``zfs load-key`` on one member. The coordinator sees public keys
and sealed boxes only: it cannot open a group key, and neither can anyone reading Redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog

from bus import keyring
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.syncjob import new_job_id
from protocol.errors import ConfigError, JobError
from protocol.keysteps import (
    GroupKeyCommitArgs,
    GroupKeyLoadArgs,
    GroupKeyNewArgs,
    GroupKeyShareArgs,
)
from protocol.messages import ResultValue
from protocol.names import validate_component, validate_dataset

log = structlog.get_logger(__name__)

KIND: Final = "keys"
ACTIONS: Final = ("create", "add-host", "remove-host", "rotate", "load")


def _job(action: str, group: str, options: Mapping[str, Any], steps: Sequence[StepPlan]) -> Job:
    job = Job(id=new_job_id(), name=f"keys {action} {group}", kind=KIND, created=time.time(),
              options={"trigger": "cli", "action": action, "group": group, **options})  # fmt: skip
    add_steps(job, steps)
    return job


def _recipients(client: Any, hosts: Sequence[str]) -> tuple[tuple[str, str], ...]:
    found = keyring.require_host_keys(client, hosts)
    return tuple((h, found[h].hex()) for h in hosts)


def _commit_after(step: str) -> StepPlan:
    return StepPlan(id="commit", host=None, args=GroupKeyCommitArgs(source_step=step),
                    deps=(step,))  # fmt: skip


def _existing(client: Any, group: str) -> keyring.KeyGroup:
    g = keyring.group(client, group)
    if g is None:
        raise ConfigError(f"no key group {group!r} (zfleet keys group create)")
    return g


def create_job(
    client: Any, group: str, *, members: Sequence[str], keeper: str, datasets: Sequence[str]
) -> Job:
    """A new group: the keeper makes version 1 and creates (or changes) its datasets to it."""
    validate_component(group, what="key group")
    if keyring.group(client, group) is not None:
        raise ConfigError(f"key group {group!r} exists (rotate it, or add hosts to it)")
    if not datasets:
        raise ConfigError("a key group needs at least one dataset on its keeper")
    for ds in datasets:
        validate_dataset(ds)
    hosts = list(dict.fromkeys([keeper, *members]))
    step = StepPlan(id="new-key", host=keeper, args=GroupKeyNewArgs(
        group=group, version=1, datasets=tuple(datasets), recipients=_recipients(client, hosts)))
    return _job("create", group, {"members": hosts, "keeper": keeper, "datasets": list(datasets),
                                  "version": 1}, [step, _commit_after("new-key")])  # fmt: skip


def add_host_job(client: Any, group: str, hosts: Sequence[str]) -> Job:
    """The keeper opens its copies and seals them to ``hosts``."""
    g = _existing(client, group)
    new = [h for h in hosts if h not in g.members]
    if not new:
        raise ConfigError(f"{', '.join(hosts)} already in key group {group!r}")
    mine = tuple(g.boxes_for(g.keeper))
    step = StepPlan(id="share", host=g.keeper, args=GroupKeyShareArgs(
        group=group, sealed=mine, recipients=_recipients(client, new)))  # fmt: skip
    return _job("add-host", group, {"members": [*g.members, *new], "keeper": g.keeper,
                                    "datasets": list(g.datasets), "version": g.version},
                [step, _commit_after("share")])  # fmt: skip


def rotate_job(client: Any, group: str, *, remove: Sequence[str] = ()) -> Job:
    """A new version sealed to the remaining members; the keeper's datasets change to it."""
    g = _existing(client, group)
    unknown = [h for h in remove if h not in g.members]
    if unknown:
        raise ConfigError(f"{', '.join(unknown)} not in key group {group!r}")
    if g.keeper in remove:
        raise ConfigError(f"{g.keeper} keeps group {group!r}'s datasets and cannot be removed")
    members = [h for h in g.members if h not in remove]
    version = g.version + 1
    step = StepPlan(id="new-key", host=g.keeper, args=GroupKeyNewArgs(
        group=group, version=version, datasets=g.datasets,
        recipients=_recipients(client, members)))  # fmt: skip
    action = "remove-host" if remove else "rotate"
    return _job(action, group, {"members": members, "keeper": g.keeper,
                                "datasets": list(g.datasets), "version": version},
                [step, _commit_after("new-key")])  # fmt: skip


def load_job(client: Any, group: str, host: str, datasets: Sequence[str]) -> Job:
    """``zfs load-key`` on ``host``'s ``datasets`` (its replicas of the group's datasets)."""
    g = _existing(client, group)
    if host not in g.members:
        raise ConfigError(f"{host} is not a member of key group {group!r}: it holds no key")
    for ds in datasets:
        validate_dataset(ds)
    boxes = tuple(g.boxes_for(host))
    if not boxes:
        raise ConfigError(f"no sealed copy of group {group!r} for {host}")
    step = StepPlan(id="load", host=host, args=GroupKeyLoadArgs(
        group=group, sealed=boxes, datasets=tuple(datasets or g.datasets)))  # fmt: skip
    return _job("load", group, {}, [step])


def commit(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """Write the boxes the source step returned, and the group's new membership, to Redis."""
    args = step.args
    assert isinstance(args, GroupKeyCommitArgs)
    source = job.steps.get(args.source_step)
    if source is None:
        raise JobError(f"job {job.id}: no step {args.source_step!r} to commit")
    boxes = json.loads(str(source.result.get("sealed") or "{}"))
    o = job.options
    group = str(o["group"])
    old = keyring.group(store.r, group)
    sealed = dict(old.sealed) if old is not None else {}
    for label, box in boxes.items():
        version, _, host = str(label).partition(":")
        sealed[(int(version), host)] = str(box)
    g = keyring.KeyGroup(name=group, keeper=str(o["keeper"]), members=tuple(o["members"]),
                         datasets=tuple(o["datasets"]), version=int(o["version"]),
                         sealed=sealed)  # fmt: skip
    keyring.put_group(store.r, g)
    log.info("keys.committed", job_id=job.id, group=group, version=g.version,
             members=len(g.members), boxes=len(boxes))  # fmt: skip
    return {"version": g.version, "members": len(g.members), "boxes": len(boxes)}


KEYS: Final = register(JobKind(
    name=KIND, local_steps={GroupKeyCommitArgs.KIND: commit},
    description="key groups: new keys, shares, rotations and load-key on member hosts",
))  # fmt: skip
