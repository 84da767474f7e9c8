"""The ``rebase`` job kind: images made clones of a base across the fleet, then (optionally) a sync.

``zfleet rebase HOST:IMAGE... --onto HOST:BASE@SNAP -c fleet.toml`` (or ``--proposal FILE --on
HOST``) submits one job of this kind:

1. an inventory of every host involved (the images' hosts, the base's, and the hosts of the
   ``--sync`` job);
2. ``plan`` (here): every image must exist; the base is found on each image's host by its guid
   (a host with no copy of BASE@SNAP is refused: send it there first); a proposal's base that is
   a dataset gets a snapshot step, taken after its own rebase when it is a member too. Any
   refusal plans nothing. The rebase steps of one host run one after another, bases before their
   dependents; hosts run in parallel;
3. one ``rebase`` step per image (workers/rebasesteps.py, workers/rebase: checks, hooks, the
   atomic swap, a rollback on any failure); the containers running on a host's images stop
   before its first rebase and start after its last, whatever the outcome
   (coordinator/containerhooks.py);
4. with ``--sync JOB``: ``plan-sync`` reads each rebase's result and sets every replica of a
   rebased image aside (``rebase-replica``, on the job's target hosts) under the name the
   source's backup got, so the job's next run finds the backup's snapshots on both sides and
   sends the rebased image as a clone of the base the target already holds: only the image's
   own blocks move, never the whole image;
5. ``record`` writes the report and, with ``--sync``, starts the sync job (its id in the report).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import structlog

from coordinator import containerhooks
from coordinator.config import FleetConfig, parse_config
from coordinator.engine import Job, Step, StepPlan, add_steps
from coordinator.graph import FleetGraph
from coordinator.jobkinds import JobKind, register
from coordinator.jobstore import JobStore
from coordinator.planner import Refusal
from coordinator.syncjob import host_roots, new_job_id, new_sync_job, plan_row
from protocol.addresses import parse_address
from protocol.errors import ConfigError
from protocol.messages import ResultValue
from protocol.names import pool_of
from protocol.rebasesteps import PREFER, RebaseArgs, RebaseReplicaArgs
from protocol.steps import InventoryArgs, PlanArgs, RecordArgs, SnapshotArgs

log = structlog.get_logger(__name__)

KIND: Final = "rebase"
BASE_SNAPSHOT: Final = "zfleet-base-"  # a proposal's base dataset gets BASE@zfleet-base-<time>


@dataclass(frozen=True)
class Request:
    """One image to rebase: on ``host``, onto ``onto`` (BASE@SNAP as named on ``onto_host``, or a
    proposal's base dataset on ``host`` itself, snapshotted by the job)."""

    host: str
    image: str
    onto: str
    onto_host: str

    def to_data(self) -> dict[str, str]:
        return {"host": self.host, "image": self.image, "onto": self.onto,
                "onto_host": self.onto_host}  # fmt: skip

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Request:
        return cls(str(data["host"]), str(data["image"]), str(data["onto"]),
                   str(data["onto_host"]))  # fmt: skip


def stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def requests_for(config: FleetConfig, images: Sequence[str], onto: str) -> list[Request]:
    """``HOST:IMAGE...`` onto ``HOST:BASE@SNAP``; AddressError/ConfigError for bad input."""
    hosts = set(config.hosts)
    base = parse_address(onto, snapshot=True, hosts=hosts)
    out = []
    for text in images:
        addr = parse_address(text, snapshot=False, hosts=hosts)
        out.append(Request(addr.host, addr.dataset, base.full, base.host))
    return out


def requests_from_pairs(config: FleetConfig, host: str, pairs: Sequence[tuple[str, str]]
                        ) -> list[Request]:  # fmt: skip
    """A proposal's ``(member, base)`` pairs on ``host`` (a base: a dataset or a snapshot)."""
    if host not in config.hosts:
        raise ConfigError(f"--on {host!r}: unknown host (hosts: {', '.join(config.hosts)})")
    out = []
    for member, base in pairs:
        parse_address(f"{host}:{member}", snapshot=False)
        parse_address(f"{host}:{base}")
        out.append(Request(host, member, base, host))
    return out


def new_rebase_job(
    config_text: str,
    config: FleetConfig,
    requests: Sequence[Request],
    *,
    prefer: str | None = None,
    keep_content: bool = False,
    drop_old: bool = False,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    sync: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
    job_id: str | None = None,
) -> Job:
    """The first steps of a rebase job; ConfigError for a request that cannot be right, before
    any job exists."""
    if not requests:
        raise ConfigError("name at least one HOST:IMAGE to rebase")
    if prefer is not None and prefer not in PREFER:
        raise ConfigError(f"--prefer is {' or '.join(PREFER)}, not {prefer!r}")
    seen: set[tuple[str, str]] = set()
    for r in requests:
        if (r.host, r.image) in seen:
            raise ConfigError(f"{r.host}:{r.image} is named twice")
        seen.add((r.host, r.image))
        if r.onto.split("@", 1)[0] == r.image:
            raise ConfigError(f"cannot rebase {r.host}:{r.image} onto its own snapshot")
    roots: dict[str, set[str]] = {}
    for r in requests:
        roots.setdefault(r.host, set()).update({pool_of(r.image), pool_of(r.onto)})
        roots.setdefault(r.onto_host, set()).add(pool_of(r.onto))
    if sync is not None:
        for host, rs in host_roots(config.job(sync)).items():
            roots.setdefault(host, set()).update(pool_of(x) for x in rs)
    when = time.time() if now is None else now
    label = f"rebase {len(requests)} image(s)" + (f", then sync {sync}" if sync else "")
    job = Job(
        id=job_id or new_job_id(), name=label, kind=KIND, created=when,
        options={"config": config_text, "source": config.source, "trigger": "cli",
                 "dry_run": dry_run, "requests": [r.to_data() for r in requests],
                 "prefer": prefer, "keep_content": keep_content, "drop_old": drop_old,
                 "before": list(before), "after": list(after), "sync": sync,
                 "stamp": stamp(when)},
    )  # fmt: skip
    inventories = [StepPlan(id=f"inventory-{h}", host=h, args=InventoryArgs(roots=tuple(sorted(r))))
                   for h, r in sorted(roots.items())]  # fmt: skip
    add_steps(job, [*inventories, StepPlan(id="plan", host=None, args=PlanArgs(),
                                           deps=tuple(s.id for s in inventories))])  # fmt: skip
    return job


def submit_rebase(store: JobStore, config_path: str, requests: Sequence[Request] | None = None,
                  **kw: Any) -> Job:  # fmt: skip
    """Read the fleet config, build the job and hand it to the coordinator."""
    with open(config_path, encoding="utf-8") as fh:
        text = fh.read()
    config = parse_config(text, source=config_path)
    job = new_rebase_job(text, config, list(requests or ()), **kw)
    store.create(job)
    return job


# -- planning (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebasePlan:
    steps: tuple[StepPlan, ...]
    refusals: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()


def _order(requests: Sequence[Request]) -> list[Request]:
    """Bases before their dependents (a base that is itself rebased in the job goes first);
    ConfigError for a cycle."""
    by_key = {(r.host, r.image): r for r in requests}
    out: list[Request] = []
    state: dict[tuple[str, str], str] = {}

    def visit(r: Request, path: tuple[str, ...]) -> None:
        key = (r.host, r.image)
        if state.get(key) == "done":
            return
        if state.get(key) == "visiting":
            raise ConfigError("the bases form a cycle: " + " -> ".join((*path, r.image)))
        state[key] = "visiting"
        up = by_key.get((r.host, r.onto.split("@", 1)[0]))
        if up is not None:
            visit(up, (*path, r.image))
        state[key] = "done"
        out.append(r)

    for r in requests:
        visit(r, ())
    return out


def _base_on(graph: FleetGraph, r: Request) -> tuple[str, int] | str:
    """The base snapshot on the image's host and its guid, or why there is none."""
    dataset, _, short = r.onto.partition("@")
    where = graph.dataset(r.onto_host, dataset)
    i = where.index_of_short(short) if where is not None else -1
    if where is None or i < 0:
        return f"{r.onto_host}:{r.onto} does not exist"
    guid = where.snap_guids[i]
    if r.host == r.onto_host:
        return r.onto, guid
    pool = pool_of(r.image)
    found = sorted(n for h, n in graph.locations(guid) if h == r.host and pool_of(n) == pool)
    if not found:
        return (f"{r.host} holds no copy of {r.onto_host}:{r.onto} in pool {pool} "
                f"(send it there first)")  # fmt: skip
    return found[0], guid


def plan_rebase(graph: FleetGraph, requests: Sequence[Request], options: Mapping[str, Any]
                ) -> RebasePlan:  # fmt: skip
    """The rebase steps, per host in order, or the refusals (then nothing is planned)."""
    refusals: list[Refusal] = []
    steps: list[StepPlan] = []
    last: dict[str, str] = {}  # host -> its previous step (one host's rebases run in turn)
    rebase_id: dict[tuple[str, str], str] = {}
    snap_id: dict[tuple[str, str], tuple[str, str]] = {}  # (host, base ds) -> (step, snapshot)
    ts = str(options.get("stamp") or stamp(time.time()))
    for n, r in enumerate(_order(requests)):
        label = f"{r.host}:{r.image}"
        ds = graph.dataset(r.host, r.image)
        if ds is None:
            refusals.append(Refusal(label, r.onto, f"{label} does not exist"))
            continue
        if ds.type != "filesystem":
            refusals.append(Refusal(label, r.onto, f"{label} is a {ds.type}, not a filesystem"))
            continue
        deps: list[str] = [last[r.host]] if r.host in last else []
        if "@" in r.onto:
            found = _base_on(graph, r)
            if isinstance(found, str):
                refusals.append(Refusal(label, r.onto, found))
                continue
            onto, guid = found
            up = rebase_id.get((r.host, onto.split("@", 1)[0]))
            if up is not None:
                deps.append(up)
        else:  # a proposal's base dataset: snapshot it (after its own rebase, if it has one)
            if graph.dataset(r.host, r.onto) is None and (r.host, r.onto) not in rebase_id:
                refusals.append(Refusal(label, r.onto, f"{r.host}:{r.onto} does not exist"))
                continue
            if (r.host, r.onto) not in snap_id:
                sid = f"base-snapshot-{len(snap_id) + 1}"
                name = f"{r.onto}@{BASE_SNAPSHOT}{ts}"
                up = rebase_id.get((r.host, r.onto))
                sdeps = tuple(d for d in (up or last.get(r.host),) if d)
                steps.append(StepPlan(id=sid, host=r.host, deps=sdeps,
                                      args=SnapshotArgs(names=(name,))))  # fmt: skip
                snap_id[(r.host, r.onto)] = (sid, name)
            sid, onto = snap_id[(r.host, r.onto)]
            guid = 0
            deps.append(sid)
        step_id = f"rebase-{n + 1}"
        steps.append(StepPlan(
            id=step_id, host=r.host, deps=tuple(dict.fromkeys(deps)),
            writes=(label,),
            args=RebaseArgs(image=r.image, onto=onto, onto_guid=guid,
                            prefer=options.get("prefer"),
                            keep_content=bool(options.get("keep_content")),
                            drop_old=bool(options.get("drop_old")),
                            before=tuple(options.get("before") or ()),
                            after=tuple(options.get("after") or ())),
        ))  # fmt: skip
        rebase_id[(r.host, r.image)] = step_id
        last[r.host] = step_id
    if refusals:
        return RebasePlan(steps=(), refusals=tuple(refusals))
    return RebasePlan(steps=tuple(steps))


def job_graph(store: JobStore, job: Job) -> FleetGraph:
    graph = FleetGraph()
    for step in job.steps.values():
        if isinstance(step.args, InventoryArgs) and step.host is not None \
                and not step.id.startswith("inventory-after"):
            report = store.inventory(step.host, job.id)
            if report is not None:
                graph.add_inventory(step.host, list(report.objects), report.taken_at)
    return graph


def _requests(job: Job) -> list[Request]:
    return [Request.from_data(d) for d in job.options.get("requests", [])]


def run_plan(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """``plan`` checks the requests against the inventories and appends the rebase steps;
    ``plan-sync`` sets the replicas aside after them."""
    if step.id == "plan-sync":
        return _plan_sync(store, job, step)
    plan = plan_rebase(job_graph(store, job), _requests(job), job.options)
    job.report = {"refusals": [{"source": r.source, "target": r.target, "reason": r.reason}
                               for r in plan.refusals],
                  "notes": list(plan.notes)}  # fmt: skip
    if plan.refusals:
        job.error = "; ".join(r.reason for r in plan.refusals)
    if job.options.get("dry_run"):
        job.report["plan"] = [plan_row(s) for s in plan.steps]
    if plan.refusals or job.options.get("dry_run") or not plan.steps:
        return {"steps": 0, "refusals": len(plan.refusals)}
    planned = around_containers(store, plan.steps)
    add_steps(job, planned, after=step.id)
    rebases = tuple(s.id for s in planned)
    nxt = StepPlan(id="plan-sync", host=None, args=PlanArgs(), deps=rebases) \
        if job.options.get("sync") else \
        StepPlan(id="record", host=None, args=RecordArgs(), deps=rebases)  # fmt: skip
    hosts = sorted({s.host for s in plan.steps if s.host})
    add_steps(job, [nxt, *(
        StepPlan(id=f"inventory-after-{h}", host=h, deps=rebases, always=True,
                 args=job.steps[f"inventory-{h}"].args) for h in hosts)])  # fmt: skip
    log.info("rebase.planned", job_id=job.id, steps=len(plan.steps))
    return {"steps": len(plan.steps), "refusals": 0}


def around_containers(store: JobStore, steps: Sequence[StepPlan]) -> list[StepPlan]:
    """The rebase steps with, per host, ``container-stop`` for each container running on its
    images before them and ``container-start`` after them (``always``: after a rollback too)."""
    stops: list[StepPlan] = []
    starts: list[StepPlan] = []
    waits: dict[str, tuple[str, ...]] = {}
    for host in sorted({s.host for s in steps if s.host}):
        images = [s.args.image for s in steps if s.host == host and isinstance(s.args, RebaseArgs)]
        recs = containerhooks.running_on(store.r, host, images)
        if not recs:
            continue
        mine = containerhooks.stop_steps(recs, host)
        stops += mine
        waits[host] = tuple(s.id for s in mine)
        after = tuple(s.id for s in steps if s.host == host)
        starts += containerhooks.start_steps([r.spec for r in recs], host, deps=after,
                                            always=True)  # fmt: skip
    gated = [replace(s, deps=(*s.deps, *waits[s.host])) if s.host in waits else s for s in steps]
    return [*stops, *gated, *starts]


def replicas(config: FleetConfig, sync: str, host: str, image: str) -> list[tuple[str, str]]:
    """``(host, dataset)`` of every replica the job ``sync`` keeps of ``host:image``."""
    jc = config.job(sync)
    out = []
    for src in jc.sources:
        under = image == src.dataset or (jc.recursive and image.startswith(src.dataset + "/"))
        if src.host != host or not under:
            continue
        for tgt in jc.targets:
            if tgt.host and tgt.dataset:
                out.append((tgt.host, jc.target_dataset(src, tgt, image)))
    return out


def _origin_guid(graph: FleetGraph, host: str, origin: str | None) -> int:
    if not origin or "@" not in origin:
        return 0
    ds, _, short = origin.partition("@")
    where = graph.dataset(host, ds)
    i = where.index_of_short(short) if where is not None else -1
    return where.snap_guids[i] if where is not None and i >= 0 else 0


def _plan_sync(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    config = parse_config(store.config_text(job), source=str(job.options.get("source", "<job>")))
    sync = str(job.options["sync"])
    graph = job_graph(store, job)
    plans: list[StepPlan] = []
    notes: list[str] = []
    for s in job.steps.values():
        if not isinstance(s.args, RebaseArgs) or s.host is None:
            continue
        # a "none" with a backup: an earlier run rebased it, and its replicas may still wait
        res = s.result
        image, backup, snap = s.args.image, res.get("backup"), res.get("snapshot")
        if backup:
            suffix = str(backup)[len(image):]
        elif snap:
            suffix = ".pre-rebase-" + str(snap).rsplit("@rebase-", 1)[-1]
        else:
            continue
        base = graph.dataset(s.host, s.args.onto.split("@", 1)[0])
        i = base.index_of_short(s.args.onto.split("@", 1)[1]) if base is not None else -1
        guid = s.args.onto_guid or (base.snap_guids[i] if base is not None and i >= 0 else 0)
        for thost, replica in replicas(config, sync, s.host, image):
            held = graph.dataset(thost, replica)
            if held is None or (guid and _origin_guid(graph, thost, held.origin) == guid):
                continue  # nothing there, or a clone of the base already
            if guid and not any(h == thost for h, _ in graph.locations(guid)):
                notes.append(f"{thost} lacks the base {s.args.onto}: the sync sends it first "
                             f"if {sync} covers it, else {replica} arrives whole")  # fmt: skip
            plans.append(StepPlan(
                id=f"replica-{len(plans) + 1}", host=thost, writes=(f"{thost}:{replica}",),
                args=RebaseReplicaArgs(dataset=replica, guid=held.guid, aside=replica + suffix,
                                       drop=bool(res.get("dropped"))),
            ))  # fmt: skip
    add_steps(job, plans, after=step.id)
    add_steps(job, [StepPlan(id="record", host=None, args=RecordArgs(),
                             deps=(step.id, *(p.id for p in plans)))])  # fmt: skip
    job.report.setdefault("notes", []).extend(notes)
    return {"replicas": len(plans)}


def run_record(store: JobStore, job: Job, step: Step) -> dict[str, ResultValue]:
    """The report (per image: method, backup, bytes written, used before/after) and, with
    ``--sync``, the sync job started."""
    images = []
    for s in job.steps.values():
        if isinstance(s.args, RebaseArgs):
            images.append({"host": s.host, **s.result})
    job.report["images"] = images
    job.report["containers"] = containerhooks.settle(store.r, job)
    result: dict[str, ResultValue] = {"images": len(images)}
    sync = job.options.get("sync")
    if sync and not job.report.get("sync_job"):
        text = store.config_text(job)
        config = parse_config(text, source=str(job.options.get("source", "<job>")))
        follow = new_sync_job(text, config, str(sync), trigger=f"rebase {job.id}")
        store.create(follow)
        job.report["sync_job"] = follow.id
        result["sync_job"] = follow.id
        log.info("rebase.sync_started", job_id=job.id, sync=sync, sync_job=follow.id)
    return result


REBASE: Final = register(JobKind(
    name=KIND, local_steps={PlanArgs.KIND: run_plan, RecordArgs.KIND: run_record},
    description="images made clones of a base (keeping their changes), then an optional sync",
))  # fmt: skip
