"""Roles of a replication job: who is primary, who takes over when it fails, and when.

Pure (no Redis, no ZFS): the ``[jobs.NAME.failover]`` table of the fleet config is read by
:func:`parse_failover`, a failed primary's successor is picked from the fleet graph by
:func:`choose_candidate`, and :func:`gate` says whether the policy and the flap protection let a
failover happen now. A config example::

    [jobs.images.failover]
    primary = "alpha"                 # default: the job's source host
    candidates = ["beta", "auto"]     # tried in order; "auto" = the freshest remaining replica
    policy = "auto"                   # or "manual": record and notify, never act on an alert
    min_interval = "30m"              # no second failover of this job sooner (flapping hosts)
    hooks = { promote = "systemctl start app", demote = ["systemctl", "stop", "app"] }

The promote hook runs on the new primary after its datasets are writable, the demote hook on the
old primary before they are made read-only. coordinator/config.py reads it with, in ``_job``
(after adding "failover" to its known keys)::

    roles = parse_failover(name, t["failover"], hosts=hosts, source_host=sources[0].host,
                           replica_hosts={x.host for x in targets if x.host}, error=w.error)
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from coordinator.graph import Dataset, FleetGraph
from coordinator.schedule import parse_schedule
from protocol.errors import ConfigError

AUTO: Final = "auto"
POLICIES: Final = ("auto", "manual")
DEFAULT_MIN_INTERVAL: Final = (
    1800  # seconds; a host that flaps must not drag the job back and forth
)
_KEYS: Final = frozenset({"primary", "candidates", "policy", "min_interval", "hooks"})
_HOOKS: Final = frozenset({"promote", "demote"})


@dataclass(frozen=True)
class FailoverRoles:
    """A job's failover settings. ``candidates`` holds host names and at most one ``"auto"``."""

    job: str
    primary: str
    candidates: tuple[str, ...] = (AUTO,)
    policy: Literal["auto", "manual"] = "manual"
    min_interval: int = DEFAULT_MIN_INTERVAL
    promote_hook: tuple[str, ...] = ()
    demote_hook: tuple[str, ...] = ()


# -- parsing -----------------------------------------------------------------------------------


def parse_failover(
    job: str,
    table: Any,
    *,
    hosts: Collection[str],
    source_host: str,
    replica_hosts: Collection[str],
    where: str = "<string>",
    error: Callable[[tuple[str, ...], str], ConfigError] | None = None,
) -> FailoverRoles:
    """Validate the ``[jobs.JOB.failover]`` table (as ``tomllib`` gives it).

    ``hosts`` are the fleet's hosts, ``source_host`` the job's source (the default primary) and
    ``replica_hosts`` the hosts the job replicates to: a candidate must be one of them, since only
    a replica has the data. Errors name the file (``where``) and the key; config.py passes its
    own ``error(path, message)`` builder instead, which adds the line.
    """
    base = ("jobs", job, "failover")

    def bad(key: str | None, message: str) -> ConfigError:
        path = (*base, *key.split(".")) if key else base
        if error is not None:
            return error(path, message)
        return ConfigError(f"{where}: {'.'.join(path)}: {message}")

    if not isinstance(table, dict):
        raise bad(None, f"must be a table, not {type(table).__name__}")
    for key in table:
        if key not in _KEYS:
            raise bad(key, f"unknown key (known: {', '.join(sorted(_KEYS))})")
    primary = table.get("primary", source_host)
    if not isinstance(primary, str):
        raise bad("primary", f"must be a host name, not {type(primary).__name__}")
    if primary not in hosts:
        raise bad("primary", f"unknown host {primary!r} (hosts: {', '.join(sorted(hosts))})")
    candidates = _candidates(bad, table.get("candidates", [AUTO]), primary, hosts, replica_hosts)
    policy = table.get("policy", "manual")
    if policy not in POLICIES:
        raise bad("policy", f'must be "auto" (act on alerts) or "manual", not {policy!r}')
    hooks = table.get("hooks", {})
    if not isinstance(hooks, dict):
        raise bad("hooks", 'must be a table: { promote = "command", demote = "command" }')
    for key in hooks:
        if key not in _HOOKS:
            raise bad(f"hooks.{key}", "unknown hook (known: demote, promote)")
    return FailoverRoles(
        job=job,
        primary=primary,
        candidates=candidates,
        policy="auto" if policy == "auto" else "manual",
        min_interval=_interval(bad, table.get("min_interval", DEFAULT_MIN_INTERVAL)),
        promote_hook=_command(bad, "hooks.promote", hooks.get("promote")),
        demote_hook=_command(bad, "hooks.demote", hooks.get("demote")),
    )


def _candidates(
    bad: Any,
    raw: Any,
    primary: str,
    hosts: Collection[str],
    replica_hosts: Collection[str],
) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise bad("candidates", 'must be a non-empty list of host names or "auto"')
    seen: set[str] = set()
    for c in raw:
        if c in seen:
            raise bad("candidates", f"{c!r} is listed twice")
        seen.add(c)
        if c == AUTO:
            continue
        if c == primary:
            raise bad("candidates", f"{c!r} is the primary; it cannot take over from itself")
        if c not in hosts:
            raise bad("candidates", f"unknown host {c!r} (hosts: {', '.join(sorted(hosts))})")
        if c not in replica_hosts:
            raise bad("candidates", f"{c!r} is not a target of the job, so it has no replica")
    return tuple(raw)


def _interval(bad: Any, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise bad("min_interval", f'must be seconds or a duration like "30m", not {raw!r}')
    if isinstance(raw, int):
        if raw < 0:
            raise bad("min_interval", f"must be >= 0 seconds, not {raw}")
        return raw
    try:
        sched = parse_schedule(raw)
    except ConfigError as exc:
        raise bad("min_interval", str(exc)) from None
    if sched.interval is None:
        raise bad("min_interval", f'must be a duration like "30m", not a cron expression {raw!r}')
    return sched.interval


def _command(bad: Any, key: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise bad(key, f"cannot split the command {raw!r}: {exc}") from None
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        argv = list(raw)
    else:
        raise bad(key, "must be a command: a string or a list of strings")
    if not argv or not argv[0]:
        raise bad(key, "is empty; leave the hook out instead")
    return tuple(argv)


# -- choosing a successor ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaState:
    """One dataset of the failed primary as one candidate has it."""

    primary_dataset: str
    replica_dataset: str
    snapshot: str | None  # short name of the newest snapshot it shares with the primary
    created: int  # that snapshot's creation time (unix seconds), 0 when none
    behind: int  # the primary's snapshots newer than it (as last reported)


@dataclass(frozen=True)
class Candidate:
    """How one host fares: eligible only when it has a common snapshot for every dataset."""

    host: str
    eligible: bool
    reason: str
    datasets: tuple[ReplicaState, ...] = ()

    @property
    def oldest(self) -> int:
        """Creation time of its most out-of-date dataset's common snapshot."""
        return min((d.created for d in self.datasets), default=0)

    @property
    def behind(self) -> int:
        return sum(d.behind for d in self.datasets)

    @property
    def newest_total(self) -> int:
        """Sum of the common snapshots' creation times: the tie-break, newer data overall."""
        return sum(d.created for d in self.datasets)


@dataclass(frozen=True)
class Decision:
    """The successor of ``failed_host`` for ``job``; ``chosen`` None when none can take over.

    ``data_loss_window`` is the age, at ``failed_at``, of the oldest of the chosen replica's
    newest common snapshots: what was written on the primary after it may be lost.
    """

    job: str
    failed_host: str
    failed_at: float
    chosen: str | None
    reason: str
    data_loss_window: float | None
    considered: tuple[Candidate, ...]

    @property
    def replicas(self) -> tuple[ReplicaState, ...]:
        for c in self.considered:
            if c.host == self.chosen:
                return c.datasets
        return ()


def _state(primary: Dataset | None, replica: Dataset, name: str) -> ReplicaState:
    """The newest snapshot of ``replica`` whose guid the primary has (or had, when last seen)."""
    if primary is None:
        # The primary never reported this dataset: its newest snapshot here is all we know.
        if not len(replica):
            return ReplicaState(name, replica.name, None, 0, 0)
        newest = replica.snap(-1)
        return ReplicaState(name, replica.name, newest.short, newest.creation, 0)
    for i in range(len(replica) - 1, -1, -1):
        at = primary.index_of_guid(replica.snap_guids[i])
        if at >= 0:
            snap = replica.snap(i)
            return ReplicaState(
                name, replica.name, snap.short, snap.creation, len(primary) - at - 1
            )
    return ReplicaState(name, replica.name, None, 0, len(primary))


def _consider(
    graph: FleetGraph, host: str, failed_host: str, datasets: Mapping[str, Mapping[str, str]]
) -> Candidate:
    if host not in graph.hosts:
        return Candidate(host, False, "no inventory from this host")
    states = []
    for name, placement in sorted(datasets.items()):
        replica_name = placement.get(host)
        if replica_name is None:
            return Candidate(host, False, f"no replica of {name} is placed here")
        replica = graph.dataset(host, replica_name)
        if replica is None:
            return Candidate(host, False, f"{replica_name} is missing")
        state = _state(graph.dataset(failed_host, name), replica, name)
        if state.snapshot is None:
            return Candidate(host, False, f"{replica_name} has no snapshot in common with {name}")
        states.append(state)
    return Candidate(host, True, "up to date" if not any(s.behind for s in states) else "behind",
                     tuple(states))  # fmt: skip


def choose_candidate(
    graph: FleetGraph,
    roles: FailoverRoles,
    failed_host: str,
    datasets: Mapping[str, Mapping[str, str]],
    *,
    failed_at: float,
    down: Collection[str] = (),
) -> Decision:
    """Pick the host that takes over ``datasets`` from ``failed_host``.

    ``datasets`` maps each of the primary's dataset names to ``{host: dataset on that host}``
    for every replica (the job's target placement). Hosts are tried in the order of
    ``roles.candidates``; ``"auto"`` stands for the remaining eligible hosts, freshest first
    (newest oldest-common-snapshot, then fewest snapshots behind, then newest overall, then
    name). Hosts in ``down``
    (no heartbeat) are never chosen.
    """
    everyone = sorted({h for placement in datasets.values() for h in placement} - {failed_host})
    considered = {h: _consider(graph, h, failed_host, datasets) for h in everyone}
    for h in down:
        if h in considered:
            considered[h] = Candidate(h, False, "down (no worker heartbeat)")
    order: list[str] = []
    for c in roles.candidates:
        if c == AUTO:
            rest = [considered[h] for h in everyone if h not in order and considered[h].eligible]
            rest.sort(key=lambda k: (-k.oldest, k.behind, -k.newest_total, k.host))
            order.extend(k.host for k in rest)
        elif c not in order and c != failed_host:
            order.append(c)
    for h in order:
        cand = considered.get(h) or Candidate(h, False, "holds none of these datasets")
        considered[h] = cand
        if cand.eligible:
            window = max(0.0, failed_at - cand.oldest)
            how = "auto: freshest replica" if h not in roles.candidates else "listed candidate"
            return Decision(roles.job, failed_host, failed_at, h, f"{how} ({cand.reason})",
                            window, tuple(considered.values()))  # fmt: skip
    why = "; ".join(f"{c.host}: {c.reason}" for c in considered.values()) or "no replica hosts"
    return Decision(roles.job, failed_host, failed_at, None, f"no eligible candidate ({why})",
                    None, tuple(considered.values()))  # fmt: skip


# -- when ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """Whether a failover may run now, and if not, why (and for how long still)."""

    allowed: bool
    reason: str
    wait: float = 0.0


def flap_wait(last_failover_at: float | None, now: float, min_interval: int) -> float:
    """Seconds still to wait before the next failover (0 when it may run now)."""
    if last_failover_at is None:
        return 0.0
    # A clock that went backwards counts as "just failed over", never as long ago.
    elapsed = max(0.0, now - last_failover_at)
    return max(0.0, min_interval - elapsed)


def gate(
    roles: FailoverRoles,
    *,
    last_failover_at: float | None,
    now: float,
    from_alert: bool,
) -> Gate:
    """The policy and the flap protection: manual jobs never act on an alert; no job fails
    over again within ``min_interval`` of its last failover (an operator's command included)."""
    if from_alert and roles.policy == "manual":
        return Gate(False, f"job {roles.job} has policy manual: recorded, not acted on")
    wait = flap_wait(last_failover_at, now, roles.min_interval)
    if wait > 0:
        ago = max(0.0, now - (last_failover_at or now))
        return Gate(False, f"job {roles.job} failed over {ago:.0f}s ago "
                    f"(min_interval {roles.min_interval}s)", wait)  # fmt: skip
    return Gate(True, "allowed")


def placements(
    primary_datasets: Sequence[str], replicas: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Turn ``{host: {primary dataset: replica dataset}}`` into the per-dataset form
    :func:`choose_candidate` takes; datasets a host lacks are simply left out for it."""
    out: dict[str, dict[str, str]] = {name: {} for name in primary_datasets}
    for host, mapping in replicas.items():
        for name, replica in mapping.items():
            if name in out:
                out[name][host] = replica
    return out
