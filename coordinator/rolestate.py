"""Who is a replication job's primary now, and which way its data flows.

The fleet config names a job's first primary (its source, or ``[jobs.NAME.failover] primary``);
every failover or switchover after that is recorded in Redis: the job's epoch counter and its
meta hash (``coordinator/epochs.py``: the epoch names the primary it was bumped for), and the
roles hash (``bus.keys.roles``) listing former primaries that have not rejoined yet. A sync of the
job is then *oriented* (:func:`oriented`): the current primary's replica is the source, the old
primary and every other replica are the targets, and a former primary still out of the fleet is
left out until ``zfleet rejoin`` brings it back (it may hold diverged writes).

Only single-source jobs change direction (config.py refuses a failover table on others).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import redis

from bus import keys
from coordinator.config import DatasetRef, JobConfig, JobTarget
from coordinator.epochs import Bump, EpochStore
from coordinator.graph import FleetGraph
from protocol.errors import ConfigError, RedisUnavailable


@dataclass(frozen=True)
class JobRoles:
    """A replication job's role state: ``primary`` holds epoch ``epoch`` since ``changed_at``
    (None: never handed over); ``out`` are former primaries awaiting a rejoin."""

    job: str
    primary: str
    epoch: int
    changed_at: float | None = None
    out: tuple[str, ...] = ()


def first_primary(jc: JobConfig) -> str:
    """The primary the config names (the failover table's, else the source host)."""
    return jc.failover.primary if jc.failover is not None else jc.sources[0].host


class RoleStore:
    """Reads and changes role state in Redis; the epoch bump is the only compare-and-set."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.r = client
        self.epochs = EpochStore(client)

    def read(self, jc: JobConfig) -> JobRoles:
        epoch = self.epochs.read(jc.name)
        try:
            raw: dict[bytes, bytes] = self.r.hgetall(keys.roles(jc.name))
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot read the roles of job {jc.name}: {exc}") from exc
        out = tuple(sorted(k.decode()[4:] for k in raw if k.startswith(b"out:")))
        return JobRoles(jc.name, epoch.primary or first_primary(jc), epoch.value, epoch.at, out)

    def hand_over(
        self, jc: JobConfig, *, seen: int, to: str, request: str, old_out: str | None
    ) -> Bump:
        """Make ``to`` the primary under epoch ``seen + 1`` (compare-and-set); when the bump is
        won and ``old_out`` is given (an unplanned failover), that former primary is out of the
        fleet until it rejoins."""
        bump = self.epochs.bump(jc.name, seen=seen, primary=to, request=request)
        try:
            if bump.won and old_out is not None:
                self.r.hset(keys.roles(jc.name), f"out:{old_out}", repr(time.time()))
            if bump.won:
                # the new primary is never "out", whatever happened to it before
                self.r.hdel(keys.roles(jc.name), f"out:{to}")
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot record the roles of job {jc.name}: {exc}") from exc
        return bump

    def rejoined(self, job: str, host: str) -> None:
        """``host`` receives the job's increments again."""
        try:
            self.r.hdel(keys.roles(job), f"out:{host}")
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot record that {host} rejoined {job}: {exc}") from exc


# -- direction ---------------------------------------------------------------------------------


def replica_root(jc: JobConfig, host: str) -> str | None:
    """The dataset root ``host`` holds of a single-source job (source or target), if any."""
    src = jc.sources[0]
    if host == src.host:
        return src.dataset
    for tgt in jc.targets:
        if tgt.host == host and tgt.dataset is not None:
            return tgt.dataset
    return None


def oriented(jc: JobConfig, primary: str, *, skip: Collection[str] = ()) -> JobConfig:
    """The job as it runs while ``primary`` is primary: ``primary``'s root is the source, every
    other host root (the config's source included) and store a target; hosts in ``skip`` (out
    of the fleet) are no target. The config's own job when nothing changes."""
    src = jc.sources[0]
    if primary == src.host and not skip:
        return jc
    if len(jc.sources) != 1:
        raise ConfigError(f"job {jc.name}: only a single-source job changes direction")
    root = replica_root(jc, primary)
    if root is None:
        raise ConfigError(f"job {jc.name}: {primary} holds none of its datasets")
    hosts = [JobTarget(host=src.host, dataset=src.dataset)] + [t for t in jc.targets if t.host]
    targets = [t for t in hosts if t.host != primary and t.host not in skip]
    # the store keeps filing under the original source's names: its chains go on incrementally
    targets += [dataclasses.replace(t, dataset=t.dataset or src.dataset)
                for t in jc.targets if t.store]  # fmt: skip
    return dataclasses.replace(jc, sources=(DatasetRef(primary, root),), targets=tuple(targets))


def placements(jc: JobConfig, primary: str, names: Collection[str]) -> dict[str, dict[str, str]]:
    """For each of ``primary``'s dataset ``names`` (under its root), where each other host of the
    job keeps it: ``{primary dataset: {host: dataset there}}`` (choose_candidate's form)."""
    root = replica_root(jc, primary)
    if root is None:
        raise ConfigError(f"job {jc.name}: {primary} holds none of its datasets")
    hosts = {jc.sources[0].host, *(t.host for t in jc.targets if t.host)} - {primary}
    out: dict[str, dict[str, str]] = {}
    for name in names:
        rel = name[len(root) :]
        out[name] = {}
        for host in sorted(hosts):
            other = replica_root(jc, host)
            if other is not None:
                out[name][host] = other + rel
    return out


def primary_names(
    graph: FleetGraph, jc: JobConfig, primary: str, hosts: Collection[str]
) -> list[str]:
    """The primary's dataset names under its root, as the graph knows them: from its own (last)
    inventory and mapped back from every replica's, so a dataset is counted even when the
    primary's inventory is old or missing. Aside datasets (diverged, replaced) are left out."""
    root = replica_root(jc, primary)
    assert root is not None
    names: set[str] = set()
    for host in {primary, *hosts}:
        other = replica_root(jc, host)
        if other is None:
            continue
        for ds in graph.subtree(host, other, recursive=jc.recursive):
            if ".diverged-" in ds.name or ".replaced-" in ds.name:
                continue
            names.add(root + ds.name[len(other) :])
    return sorted(names)


def roles_of(config_jobs: Mapping[str, JobConfig], store: RoleStore) -> dict[str, str]:
    """Each failover-configured job's current primary (the alert triage's ``primaries``)."""
    return {n: store.read(j).primary for n, j in sorted(config_jobs.items()) if j.failover}
