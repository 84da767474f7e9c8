"""The sync planner: the least data to move, in the right order, as a DAG of steps.

Pure: it reads a :class:`FleetGraph` and a :class:`JobConfig` and returns a :class:`Plan`.

Per dataset and target the newest snapshot both sides hold (same guid; a source bookmark counts)
is the incremental base; without one the dataset goes over whole, oldest snapshot first, so the
target gets the history. A clone whose origin is replicated by the same job goes as an incremental
from its origin snapshot and so arrives as a clone. Parents come before children and origins before
clones. A target that changed since its newest common snapshot (``written`` > 0, or snapshots the
source lacks) is refused and named in the report, unless the job allows ``force_rollback``.
Transfers with the same stream to several targets become one fan-out step. Bases are held on both
sides while transfers depend on them, and released afterwards whatever happened.

A job from a parsed fleet config carries the ``[kinds]`` policies: each dataset goes only to the
targets its kind allows, is pruned by its kind's rules, and its host replicas are given the
source's ``zfleet:kind`` and ``zfleet:keygroup`` (``set-property`` after the transfer) so that a
failover keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from coordinator.config import DatasetRef, JobConfig, JobTarget, RetentionRule
from coordinator.engine import StepPlan
from coordinator.graph import Dataset, FleetGraph, Snap
from coordinator.kinds import retention_for, route
from coordinator.retention import select_prune
from coordinator.selection import order_datasets, select_datasets
from protocol.errors import PlanRefused
from protocol.kinds import KEY_GROUP_PROPERTY, KIND_PROPERTY
from protocol.kindsteps import SetPropertyArgs
from protocol.steps import (
    HoldArgs,
    InventoryArgs,
    PlanArgs,
    PruneArgs,
    ReleaseArgs,
    RollbackArgs,
    SnapshotArgs,
    TransferArgs,
    TransferTarget,
)
from protocol.zfs import SendSpec

__all__ = [
    "HOLD", "INVENTORY", "PLAN", "PRUNE", "RELEASE", "ROLLBACK", "SNAPSHOT", "TRANSFER", "Plan",
    "Refusal", "StepPlan", "hold_tag", "is_store", "order_datasets", "plan_sync",
    "select_datasets", "store_host",
]  # fmt: skip  (selection's two are re-exported: callers pick datasets as the planner does)

# Step kinds, as their messages name them (protocol/steps.py is the one definition).
INVENTORY: Final = InventoryArgs.KIND
SNAPSHOT: Final = SnapshotArgs.KIND
HOLD: Final = HoldArgs.KIND
TRANSFER: Final = TransferArgs.KIND
RELEASE: Final = ReleaseArgs.KIND
PRUNE: Final = PruneArgs.KIND
ROLLBACK: Final = RollbackArgs.KIND
PLAN: Final = PlanArgs.KIND  # runs inside the coordinator, not on a host


def hold_tag(job_id: str) -> str:
    """The user-hold tag a job puts on the snapshots its transfers depend on."""
    return f"zfleet-{job_id}"


def store_host(store: str) -> str:
    """The graph key under which an object store's inventory is kept."""
    return f"store:{store}"


def is_store(host: str) -> bool:
    return host.startswith("store:")


@dataclass(frozen=True)
class Refusal:
    """A dataset the plan will not touch on a target, and why."""

    source: str
    target: str
    reason: str
    snapshots: tuple[str, ...] = ()

    def __str__(self) -> str:
        snaps = f" ({', '.join(self.snapshots)})" if self.snapshots else ""
        return f"{self.source} -> {self.target}: {self.reason}{snaps}"


@dataclass(frozen=True)
class Plan:
    """Steps in dependency order, plus what was refused, what is already in sync, and notes."""

    job: str
    steps: tuple[StepPlan, ...]
    refusals: tuple[Refusal, ...] = ()
    up_to_date: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def estimate(self) -> int:
        return sum(s.estimate for s in self.steps)

    def transfers(self) -> list[StepPlan]:
        return [s for s in self.steps if s.kind == TRANSFER]


@dataclass
class _Leg:
    host: str
    source: str
    send: SendSpec
    to_guid: int
    from_guid: int
    estimate: int
    targets: list[TransferTarget] = field(default_factory=list)
    deps: set[tuple[Any, ...]] = field(default_factory=set)
    holds: set[str] = field(default_factory=set)  # hosts whose hold step must come first


@dataclass
class _PairState:
    legs: list[tuple[Any, ...]]  # leg keys delivering this dataset to this target, in order
    refused: bool = False


@dataclass(frozen=True)
class _Pair:
    """One source dataset and the dataset it lands in on one target."""

    src: DatasetRef
    ds: Dataset
    tkey: str
    tname: str
    state: _PairState


class _Builder:
    def __init__(self, graph: FleetGraph, job: JobConfig, job_id: str) -> None:
        self.graph = graph
        self.job = job
        self.job_id = job_id
        self.legs: dict[tuple[Any, ...], _Leg] = {}
        self.pairs: dict[tuple[str, str], _PairState] = {}  # (target key, source dataset)
        self.holds: dict[str, dict[str, int]] = {}  # host -> snapshot name -> guid
        self.refusals: list[Refusal] = []
        self.up_to_date: list[str] = []
        self.notes: list[str] = []
        self.rollbacks: list[StepPlan] = []
        # guids each (host, dataset) must keep for retention: bases now and after the transfers
        self.protect: dict[tuple[str, str], set[int]] = {}
        self.arriving: dict[tuple[str, str], list[Snap]] = {}
        self.no_prune: set[tuple[str, str]] = set()  # refused targets: leave them as they are
        # the retention rules of each (host, dataset): its kind's, else the job's (kinds.py)
        self.rules: dict[tuple[str, str], tuple[RetentionRule, ...]] = {}
        # replicas to give their source's kind: (host, dataset, kind, the pair delivering it)
        self.labels: list[tuple[str, str, str, str, _PairState]] = []

    # -- per dataset and target ----------------------------------------------------------------
    def pair(
        self, src: DatasetRef, selected: Mapping[str, Dataset], ds: Dataset, tgt: JobTarget
    ) -> None:
        tkey = tgt.host if tgt.host else store_host(tgt.store or "")
        # a store keeps the source's names, or the names under its own root when it has one
        # (after a failover: the original primary's, so the store's chain goes on)
        tname = self.job.target_dataset(src, tgt, ds.name) if tgt.dataset else ds.name
        where = f"{tkey}:{tname}"
        state = _PairState(legs=[])
        self.pairs[(tkey, ds.name)] = state
        pr = _Pair(src, ds, tkey, tname, state)
        rules = retention_for(ds, self.job.retention, self.job.kinds)
        self.rules[(src.host, ds.name)] = self.rules[(tkey, tname)] = rules
        if len(ds) == 0:
            self.notes.append(f"{src.host}:{ds.name} has no snapshots yet: nothing to send")
            return
        tds = self.graph.dataset(tkey, tname)
        if tds is not None and len(tds) == 0 and tds.resume_token:
            tds = None  # a first receive that was cut off: it resumes as a full send
        newest = ds.snap(-1)
        protect = self.protect.setdefault((src.host, ds.name), set())
        protect.add(newest.guid)
        if tds is None:
            self._new_on_target(pr, selected)
        else:
            self._existing_on_target(pr, tds)
        if not state.refused:
            tprotect = self.protect.setdefault((tkey, tname), set())
            tprotect.add(newest.guid)
            if state.legs and rules:
                self.arriving[(tkey, tname)] = [
                    s for s in ds.snapshots() if tds is None or tds.index_of_guid(s.guid) < 0
                ]
        else:
            self.notes.append(f"{where} skipped: refused")

    def _new_on_target(self, pr: _Pair, selected: Mapping[str, Dataset]) -> None:
        src, ds, tkey, state = pr.src, pr.ds, pr.tkey, pr.state
        deps: set[tuple[Any, ...]] = set()
        parent = ds.name.rsplit("/", 1)[0] if "/" in ds.name else None
        parent_state = self.pairs.get((tkey, parent)) if parent else None
        if parent_state is not None:
            if parent_state.refused:
                return self._refuse(pr, "parent dataset was refused")
            if parent_state.legs:
                # after the parent's last leg: mounting the child creates its mountpoint in the
                # parent, which a later incremental into the parent would refuse as "modified"
                deps.add(parent_state.legs[-1])
        origin_ds = ds.origin_dataset
        origin_src = selected.get(origin_ds) if origin_ds else None
        first = ds.snap(0)
        if origin_src is not None and ds.origin_short is not None:
            ostate = self.pairs.get((tkey, origin_src.name))
            if ostate is None or ostate.refused:
                return self._refuse(pr, "its origin was refused")
            deps.update(ostate.legs)
            oi = origin_src.index_of_short(ds.origin_short)
            if oi < 0:
                return self._refuse(
                    pr, "origin snapshot missing on the source",
                    (ds.origin or "",),
                )  # fmt: skip
            otgt = self._target(tkey)
            otarget = (self.job.target_dataset(src, otgt, origin_src.name) if otgt.dataset
                       else origin_src.name)  # fmt: skip
            send = _spec(ds, first.name, ds.origin)
            key = self._leg(
                pr, send, guids=(first.guid, origin_src.snap_guids[oi]), estimate=first.written,
                origin=f"{otarget}@{ds.origin_short}", deps=deps,
            )  # fmt: skip
            self._hold(src.host, ds.origin or "", origin_src.snap_guids[oi], key)
            self.protect.setdefault((src.host, origin_src.name), set()).add(
                origin_src.snap_guids[oi]
            )
        else:
            if ds.origin:
                self.notes.append(
                    f"{src.host}:{ds.name} is a clone of {ds.origin}, which this job does not "
                    "replicate: it is sent as a full copy"
                )
            send = _spec(ds, first.name, None)
            key = self._leg(
                pr, send, guids=(first.guid, 0), estimate=first.referenced, deps=deps
            )
        state.legs.append(key)
        self._hold(src.host, first.name, first.guid, key)
        self._chain(pr, 0, force=False)

    def _existing_on_target(self, pr: _Pair, tds: Dataset) -> None:
        src, ds, tkey, tname = pr.src, pr.ds, pr.tkey, pr.tname
        si = ti = -1
        bookmark: Snap | None = None
        for t in range(len(tds) - 1, -1, -1):
            si = ds.index_of_guid(tds.snap_guids[t])
            if si >= 0:
                ti = t
                break
            bookmark = ds.bookmark_with_guid(tds.snap_guids[t])
            if bookmark is not None:
                ti = t
                break
        if ti < 0:
            tsnaps = tuple(s.name for s in tds.snapshots()[-5:])
            if len(tds) == 0 and self.job.force_rollback:
                self.notes.append(f"{tkey}:{tname} has no snapshots: overwritten (force_rollback)")
                return self._full_over(pr)
            reason = (
                "target exists without snapshots (force_rollback overwrites it)"
                if len(tds) == 0
                else "no common snapshot with the source: resolve by hand"
            )
            return self._refuse(pr, reason, tsnaps)
        if ds.encrypted and not tds.encrypted and not is_store(tkey):
            # a raw incremental cannot land on a plain copy (the key could not be swapped in)
            return self._refuse(
                pr, "the source is encrypted but the target holds an unencrypted copy: "
                "raw sends cannot apply to it; replace it with a raw full copy",
                (tds.snap(ti).name,),
            )  # fmt: skip
        extra = tuple(tds.snap(i).name for i in range(ti + 1, len(tds)))
        modified = tds.written > 0
        diverged = bool(extra) or modified
        common = tds.snap(ti)
        self.protect.setdefault((tkey, tname), set()).add(common.guid)
        if bookmark is None:
            self.protect.setdefault((src.host, ds.name), set()).add(ds.snap_guids[si])
        why = []
        if extra:
            why.append("has snapshots the source lacks")
        if modified:
            why.append(f"was modified since {common.name} ({tds.written} bytes written)")
        if diverged and not self.job.force_rollback:
            return self._refuse(
                pr,
                "target diverged: " + " and ".join(why) + "; force_rollback allows a rollback",
                (common.name, *extra),
            )  # fmt: skip
        at_newest = bookmark is None and si == len(ds) - 1
        if at_newest:
            if diverged and not is_store(tkey):
                self.rollbacks.append(
                    StepPlan(
                        id=f"rollback{len(self.rollbacks):04d}", host=tkey,
                        args=RollbackArgs(snapshot=common.name, guid=common.guid),
                        writes=(f"{tkey}:{tname}",),
                    )
                )  # fmt: skip
                self.notes.append(f"{tkey}:{tname} rolled back to {common.name} (force_rollback)")
            else:
                self.up_to_date.append(f"{tkey}:{tname}")
            return None
        self._hold(tkey, common.name, common.guid, None)
        if bookmark is not None:
            # A bookmark can only be an -i base: go to the first snapshot after it, then chain.
            nxt = next((i for i in range(len(ds)) if ds.snap_txgs[i] > bookmark.createtxg), -1)
            if nxt < 0:
                self.up_to_date.append(f"{tkey}:{tname}")
                return None
            snap = ds.snap(nxt)
            send = _spec(ds, snap.name, bookmark.name)
            key = self._leg(
                pr, send, guids=(snap.guid, bookmark.guid), estimate=snap.written,
                force=diverged, deps=self._parent_deps(pr),
            )  # fmt: skip
            self._hold(tkey, common.name, common.guid, key)
            pr.state.legs.append(key)
            self._chain(pr, nxt, force=False)
            return None
        self._hold(src.host, ds.snap(si).name, ds.snap_guids[si], None)
        self._chain(pr, si, force=diverged, hold_target=common)
        return None

    def _full_over(self, pr: _Pair) -> None:
        first = pr.ds.snap(0)
        send = _spec(pr.ds, first.name, None)
        key = self._leg(pr, send, guids=(first.guid, 0), estimate=first.referenced, force=True)
        pr.state.legs.append(key)
        self._chain(pr, 0, force=False)

    def _chain(
        self, pr: _Pair, start: int, *, force: bool, hold_target: Snap | None = None
    ) -> None:
        src, ds, tkey, state = pr.src, pr.ds, pr.tkey, pr.state
        end = len(ds) - 1
        if start >= end:
            return
        if self.job.incremental == "I":
            hops = [(start, end)]
        else:
            hops = [(k, k + 1) for k in range(start, end)]
        for a, b in hops:
            base, top = ds.snap(a), ds.snap(b)
            send = _spec(ds, top.name, base.name, intermediates=b - a > 1)
            estimate = sum(ds.snap_written[a + 1 : b + 1])
            deps = {state.legs[-1]} if state.legs else self._parent_deps(pr)
            key = self._leg(
                pr, send, guids=(top.guid, base.guid), estimate=estimate, force=force, deps=deps
            )
            self._hold(src.host, base.name, base.guid, key)
            self._hold(src.host, top.name, top.guid, key)
            if hold_target is not None:
                self._hold(tkey, hold_target.name, hold_target.guid, key)
                hold_target = None
            force = False
            state.legs.append(key)

    # -- helpers --------------------------------------------------------------------------------
    def _parent_deps(self, pr: _Pair) -> set[tuple[Any, ...]]:
        """A dataset's first leg waits for its parent's last leg on the same target: receiving
        into a parent while a child below it is received races on the child's mountpoint."""
        parent = pr.ds.name.rsplit("/", 1)[0] if "/" in pr.ds.name else None
        state = self.pairs.get((pr.tkey, parent)) if parent else None
        return {state.legs[-1]} if state is not None and state.legs else set()

    def _target(self, tkey: str) -> JobTarget:
        for t in self.job.targets:
            if t.host == tkey or (t.store and store_host(t.store) == tkey):
                return t
        raise AssertionError(tkey)

    def label(self, src: DatasetRef, ds: Dataset, tgt: JobTarget) -> None:
        """Give ``ds``'s replica on a host target the source's kind and key group: a plain send
        carries no properties, and after a failover the replica is the source its policies are
        read on (a kind with ``key_group`` refuses a dataset without ``zfleet:keygroup``).
        Only where the replica's value differs and it would not inherit it from its parent."""
        if tgt.host is None or (ds.kind is None and ds.key_group is None):
            return
        state = self.pairs.get((tgt.host, ds.name))
        if state is None or state.refused:
            return
        tname = self.job.target_dataset(src, tgt, ds.name)
        tds = self.graph.dataset(tgt.host, tname)
        if tds is None and not state.legs:
            return
        above = ds.name.rsplit("/", 1)[0] if "/" in ds.name else None
        up = self.graph.dataset(src.host, above) if above else None
        pstate = self.pairs.get((tgt.host, above)) if above else None
        parent_arrives = up is not None and pstate is not None and not pstate.refused
        for prop, read in _LABELS:
            want = read(ds)
            if want is None or (tds is not None and read(tds) == want):
                continue
            if tds is None and parent_arrives and up is not None and read(up) == want:
                continue  # arrives below its parent's replica, which carries it: inherited
            self.labels.append((tgt.host, tname, prop, want, state))

    def stays_home(self, src: DatasetRef, ds: Dataset) -> None:
        """A dataset no target gets (its kind's policy) is still snapshotted by the job: prune
        it on its host by its kind's (or the job's) rules, its newest snapshot kept."""
        rules = retention_for(ds, self.job.retention, self.job.kinds)
        if rules and len(ds):
            self.rules[(src.host, ds.name)] = rules
            self.protect.setdefault((src.host, ds.name), set()).add(ds.snap(-1).guid)

    def refuse_pair(self, src: DatasetRef, ds: Dataset, tgt: JobTarget, reason: str) -> None:
        """Refuse ``ds`` on ``tgt`` before planning anything for it (a kind's policy)."""
        tkey = tgt.host if tgt.host else store_host(tgt.store or "")
        tname = self.job.target_dataset(src, tgt, ds.name) if tgt.dataset else ds.name
        state = _PairState(legs=[])
        self.pairs[(tkey, ds.name)] = state
        self._refuse(_Pair(src, ds, tkey, tname, state), reason)

    def _refuse(self, pr: _Pair, reason: str, snapshots: Sequence[str] = ()) -> None:
        pr.state.refused = True
        self.no_prune.add((pr.tkey, pr.tname))
        self.refusals.append(
            Refusal(f"{pr.src.host}:{pr.ds.name}", f"{pr.tkey}:{pr.tname}", reason,
                    tuple(snapshots))
        )  # fmt: skip

    def _leg(
        self,
        pr: _Pair,
        send: SendSpec,
        *,
        guids: tuple[int, int],
        estimate: int,
        force: bool = False,
        origin: str | None = None,
        deps: set[tuple[Any, ...]] | None = None,
    ) -> tuple[Any, ...]:
        """The (possibly shared) send ``send`` from the source, with ``pr``'s target added."""
        key = (pr.src.host, send)
        leg = self.legs.get(key)
        if leg is None:
            leg = _Leg(pr.src.host, pr.ds.name, send, guids[0], guids[1], estimate)
            self.legs[key] = leg
        # no_mount (a missing one means mount: what a worker did before the option existed)
        no_mount = not self.job.mount_targets and pr.ds.type == "filesystem"
        leg.targets.append(TransferTarget(host=pr.tkey, dataset=pr.tname, force=force,
                                          origin=origin, no_mount=no_mount))  # fmt: skip
        deps = deps or set()
        leg.deps.update(deps)
        return key

    def _hold(self, host: str, snapshot: str, guid: int, leg: tuple[Any, ...] | None) -> None:
        if is_store(host):
            return  # a store's streams are immutable: nothing to hold there
        self.holds.setdefault(host, {})[snapshot] = guid
        if leg is not None:
            self.legs[leg].holds.add(host)

    # -- assembling the DAG --------------------------------------------------------------------
    def build(self) -> Plan:
        tag = hold_tag(self.job_id)
        steps: list[StepPlan] = []
        hold_ids: dict[str, str] = {}
        # Only hold what exists now: snapshots still to arrive cannot be held yet.
        for host, snaps in sorted(self.holds.items()):
            existing = {n: g for n, g in snaps.items() if self._exists(host, n, g)}
            if not existing:
                continue
            sid = f"hold-{host}"
            hold_ids[host] = sid
            steps.append(
                StepPlan(
                    id=sid, host=host,
                    args=HoldArgs(tag=tag, snapshots=tuple(sorted(existing.items()))),
                )
            )  # fmt: skip
        steps.extend(self.rollbacks)
        ids = {key: f"xfer{i:04d}" for i, key in enumerate(self._leg_order())}
        touching: dict[str, list[str]] = {}
        for key, sid in ids.items():
            leg = self.legs[key]
            deps = sorted({ids[d] for d in leg.deps if d != key})
            deps += sorted(hold_ids[h] for h in leg.holds if h in hold_ids)
            hosts = {leg.host, *(t.host for t in leg.targets)}
            for h in hosts:
                touching.setdefault(h, []).append(sid)
            steps.append(
                StepPlan(
                    id=sid, host=leg.host,
                    args=TransferArgs(source=leg.source, send=leg.send, to_guid=leg.to_guid,
                                      from_guid=leg.from_guid, targets=tuple(leg.targets)),
                    deps=tuple(dict.fromkeys(deps)), estimate=leg.estimate,
                    writes=tuple(t.label for t in leg.targets),
                )
            )  # fmt: skip
        release_ids: dict[str, str] = {}
        for host, sid in hold_ids.items():
            rid = f"release-{host}"
            release_ids[host] = rid
            steps.append(
                StepPlan(
                    id=rid, host=host,
                    args=ReleaseArgs(tag=tag, snapshots=tuple(sorted(self.holds[host].items()))),
                    deps=(sid, *touching.get(host, [])), always=True,
                )
            )  # fmt: skip
        for i, (host, name, prop, value, state) in enumerate(self.labels):
            steps.append(StepPlan(
                id=f"label{i:04d}", host=host, writes=(f"{host}:{name}",),
                args=SetPropertyArgs(dataset=name, name=prop, value=value),
                deps=(ids[state.legs[-1]],) if state.legs else (),
            ))  # fmt: skip
        steps.extend(self._prunes(touching, release_ids))
        return Plan(
            job=self.job.name,
            steps=tuple(steps),
            refusals=tuple(self.refusals),
            up_to_date=tuple(self.up_to_date),
            notes=tuple(dict.fromkeys(self.notes)),  # once, not once per target
        )

    def _leg_order(self) -> list[tuple[Any, ...]]:
        """Legs in creation order, moved after their dependencies: a shared (fan-out) leg can
        pick up a dependency created after it, when another target joined it later."""
        placed: dict[tuple[Any, ...], None] = {}
        visiting: set[tuple[Any, ...]] = set()
        rank = {key: i for i, key in enumerate(self.legs)}

        def place(key: tuple[Any, ...]) -> None:
            if key in placed:
                return
            if key in visiting:
                raise PlanRefused(f"plan for {self.job.name} has a dependency cycle at {key}")
            visiting.add(key)
            for dep in sorted(self.legs[key].deps, key=rank.__getitem__):
                if dep != key:
                    place(dep)
            visiting.discard(key)
            placed[key] = None

        for key in self.legs:
            place(key)
        return list(placed)

    def _exists(self, host: str, name: str, guid: int) -> bool:
        ds = self.graph.dataset(host, name.split("@", 1)[0])
        return ds is not None and ds.index_of_guid(guid) >= 0

    def _prunes(
        self, touching: Mapping[str, list[str]], release_ids: Mapping[str, str]
    ) -> list[StepPlan]:
        if not any(self.rules.values()):
            return []
        origins: set[str] = {d.origin for d in self.graph if d.origin}
        per_host: dict[str, list[tuple[str, int]]] = {}
        for (host, name), protected in sorted(self.protect.items()):
            if (host, name) in self.no_prune or is_store(host):
                continue  # refused targets stay as they are; stores prune with `zfleet cloud`
            ds = self.graph.dataset(host, name)
            snaps = (ds.snapshots() if ds else []) + self.arriving.get((host, name), [])
            keep = set(protected) | {s.guid for s in snaps if s.name in origins}
            doomed = select_prune(snaps, self.rules.get((host, name), self.job.retention), keep)
            # names on the target are the target's, with the source's short names
            per_host.setdefault(host, []).extend((f"{name}@{s.short}", s.guid) for s in doomed)
        out = []
        for host, destroy in sorted(per_host.items()):
            if not destroy:
                continue
            deps = [release_ids[host]] if host in release_ids else list(touching.get(host, []))
            out.append(
                StepPlan(
                    id=f"prune-{host}", host=host, args=PruneArgs(destroy=tuple(destroy)),
                    deps=tuple(deps), writes=tuple(sorted({f"{host}:{d[0].split('@')[0]}"
                                                           for d in destroy})),
                )
            )  # fmt: skip
        return out


# the user properties a replica gets from its source after the transfer (Builder.label)
_LABELS: Final[tuple[tuple[str, Callable[[Dataset], str | None]], ...]] = (
    (KIND_PROPERTY, lambda d: d.kind),
    (KEY_GROUP_PROPERTY, lambda d: d.key_group),
)


def _spec(
    ds: Dataset, snapshot: str, from_snap: str | None, *, intermediates: bool = False
) -> SendSpec:
    """The send for one leg. An encrypted dataset always goes raw (``-w``): its blocks travel
    and land as ciphertext, so a target or store without the key holds nothing readable, and
    no send needs the source's key loaded."""
    return SendSpec(
        snapshot=snapshot, from_snap=from_snap, intermediates=intermediates, raw=ds.encrypted
    )


def plan_sync(graph: FleetGraph, job: JobConfig, *, job_id: str) -> Plan:
    """Plan one run of ``job`` against the fleet as ``graph`` shows it."""
    b = _Builder(graph, job, job_id)
    for src in job.sources:
        if src.host not in graph.hosts:
            b.notes.append(f"no inventory from {src.host}: nothing planned for {src}")
            continue
        selected = order_datasets(select_datasets(graph, src, job))
        if not selected:
            b.notes.append(f"{src} matched no dataset")
        by_name = {d.name: d for d in selected}
        stays = {d.name for d in selected}  # datasets no target gets (kind temp, say)
        for tgt in job.targets:
            if job.kinds is None:
                for ds in selected:
                    b.pair(src, by_name, ds, tgt)
                continue
            # the kinds' policies (coordinator/kinds.py): what this target gets of the selection
            routing = route(graph, job, src.host, selected, target=tgt, policies=job.kinds)
            here = {d.name: d for d in routing.kept}  # an origin left out: its clone goes whole
            stays &= set(routing.skipped)
            for ds in selected:
                if ds.name in routing.skipped:
                    b.notes.append(f"{src.host}:{ds.name} not sent to {tgt}: "
                                   f"{routing.skipped[ds.name]}")  # fmt: skip
                elif ds.name in routing.refused:
                    b.refuse_pair(src, ds, tgt, routing.refused[ds.name])
                else:
                    b.pair(src, here, ds, tgt)
                    b.label(src, ds, tgt)
        for ds in selected:
            if job.kinds is not None and ds.name in stays:
                b.stays_home(src, ds)
    return b.build()
