"""The demo from start to end: build, replicate, back up, change, replicate again, restore, verify,
clone by a short verb, fail over on an alert, rejoin.

Thin orchestration over the fleet (fleet.py), the data (scenario.py), the store (store.py), the
later acts (failover.py) and the checks (verify.py). A :class:`Narrator` shows what happens (rich
in a terminal, nothing for --json); every claim the demo makes at the end is a :class:`Check` that
ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.demo import scenario, verify
from app.demo.failover import LaterActs
from app.demo.fleet import (
    HOSTS,
    SOURCE_POOL,
    TARGET_POOL,
    DemoFleet,
    prepare_hosts,
    start_fleet,
)
from app.demo.store import (
    StoreStats,
    open_repo,
    pack_bytes,
    restore,
    stats_since,
    stored_streams,
)
from app.demo.verify import Check, Replica
from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.syncjob import submit_sync
from workers.cloud.repo import Repository
from workers.zfs.base import ObjType

JOB_NAME = "demo"
JOB_TIMEOUT = 300.0
REPLICA_ROOT = f"{TARGET_POOL}/alpha"
RESTORE_TARGET = f"{TARGET_POOL}/restored-home"


class Narrator(Protocol):
    """What the demo tells its user while it runs."""

    def phase(self, title: str) -> None: ...

    def note(self, text: str) -> None: ...

    def check(self, check: Check) -> None: ...

    def follow(
        self, store: JobStore, job_id: str, timeout: float, watch: Callable[[], None]
    ) -> Job:
        """Wait for the job with live progress; ``watch`` raises if the fleet broke meanwhile."""
        ...


@dataclass
class JobRun:
    """One sync job as the demo saw it."""

    id: str
    status: str
    seconds: float
    transfers: int
    stream_bytes: int
    wire_bytes: int

    @property
    def throughput(self) -> float:
        return self.stream_bytes / self.seconds if self.seconds > 0 else 0.0


@dataclass
class DemoResult:
    """Everything the demo did and found."""

    root: Path
    checks: list[Check] = field(default_factory=list)
    jobs: list[JobRun] = field(default_factory=list)
    store: list[StoreStats] = field(default_factory=list)
    svg: Path | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and self.error is None and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "root": str(self.root), "seconds": round(self.seconds, 2),
            "error": self.error, "svg": str(self.svg) if self.svg else None,
            "checks": [asdict(c) for c in self.checks],
            "jobs": [asdict(j) | {"throughput": j.throughput} for j in self.jobs],
            "store": [asdict(s) | {"saved": s.saved} for s in self.store],
        }  # fmt: skip


def scrape_metrics(url: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text endpoint, as (name, labels, value)."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the demo only scrapes its own endpoint, not {url}")
    with urlopen(url, timeout=10) as resp:  # noqa: S310 (a local http URL, checked above)
        text = resp.read().decode()
    return [(s.name, dict(s.labels), float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]  # fmt: skip


def job_run(job: Job) -> JobRun:
    transfers = [s for s in job.steps.values() if s.kind == "transfer"]
    started = [s.started_at for s in transfers if s.started_at]
    finished = [s.finished_at for s in transfers if s.finished_at]
    seconds = (max(finished) - min(started)) if started and finished else 0.0
    return JobRun(
        id=job.id, status=job.status, seconds=seconds, transfers=len(transfers),
        stream_bytes=sum(int(s.result.get("bytes") or 0) for s in transfers),
        wire_bytes=sum(int(s.result.get("wire_bytes") or 0) for s in transfers),
    )  # fmt: skip


class Demo:
    """One run of the demo under ``root``; ``run`` never leaves a process behind."""

    def __init__(
        self, root: Path, narrator: Narrator, *, write_svg: Callable[[DemoFleet, Path], None],
        hold: Callable[[DemoResult, DemoFleet], None] | None = None,
    ) -> None:  # fmt: skip
        """``hold`` runs at the end while the fleet is still up (``--keep``: the page stays)."""
        self.root = root
        self.say = narrator
        self.result = DemoResult(root=root)
        self.write_svg = write_svg
        self.hold = hold

    def add(self, check: Check) -> None:
        self.result.checks.append(check)
        self.say.check(check)

    def run(self) -> DemoResult:
        started = time.monotonic()
        self.say.phase("Building a hierarchy on alpha")
        backends = prepare_hosts(self.root)
        alpha = backends["alpha"]
        hierarchy = scenario.build(alpha, SOURCE_POOL, self.say.note)
        self.say.phase("Starting the fleet")
        fleet = start_fleet(self.root, with_store_target=True, on_step=self.say.note)
        try:
            self.say.note(f"Redis {fleet.redis_url}, workers {', '.join(HOSTS)}, a coordinator "
                          f"(pids {' '.join(map(str, fleet.pids()))})")  # fmt: skip
            self.say.note(f"live fleet page: {fleet.api_url}/ (token in "
                          f"{self.root / 'api.token'})")  # fmt: skip
            repo = open_repo(fleet.store_path, fleet.store_passphrase)
            self.say.phase("Full sync: alpha:tank -> beta, gamma and the store")
            full = self.sync(fleet, repo)
            self.say.phase("Changing data on alpha")
            scenario.change(alpha, hierarchy, self.say.note)
            self.say.phase("Incremental sync")
            incr = self.sync(fleet, repo)
            if full.status == incr.status == engine.JOB_SUCCEEDED:
                self.add(Check(
                    f"the incremental moved {incr.stream_bytes:,} bytes, the full "
                    f"{full.stream_bytes:,}", 0 < incr.stream_bytes < full.stream_bytes / 2,
                ))  # fmt: skip
            self.say.phase("Restoring from the object store onto gamma")
            self.restore(fleet, repo)
            self.check_store(repo)
            self.say.phase("Verifying every target against alpha")
            replicas = [Replica(h, backends[h], REPLICA_ROOT) for h in ("beta", "gamma")]
            for check in verify.verify_replicas(alpha, SOURCE_POOL, replicas,
                                                progress=lambda _m: None):  # fmt: skip
                self.add(check)
            self.say.phase("Asking the fleet itself: a dry run and the metrics")
            self.dry_run(fleet)
            self.scrape(fleet)
            acts = LaterActs(fleet, self.say, self.add, lambda: self.sync(fleet, repo), JOB_NAME)
            self.say.phase("A short verb: zfleet clone across hosts")
            acts.clone()
            self.say.phase("alpha dies: Alertmanager's webhook fails the job over to beta")
            if acts.failover() is not None:
                self.say.phase("beta is the primary: write there and sync")
                acts.after_failover()
                self.say.phase("alpha returns and rejoins as a replica")
                acts.rejoin(full.stream_bytes)
            self.say.phase("Picturing the fleet")
            svg = self.root / "fleet.svg"
            self.write_svg(fleet, svg)
            self.result.svg = svg
            self.say.note(f"wrote {svg}")
            self.result.seconds = time.monotonic() - started
            if self.hold is not None:
                self.hold(self.result, fleet)
        finally:
            fleet.stop()
            self.result.seconds = self.result.seconds or time.monotonic() - started
        return self.result

    def sync(self, fleet: DemoFleet, repo: Repository) -> JobRun:
        """Run the demo job once; check it succeeded and what the store gained from it."""
        streams, packs = stored_streams(repo), pack_bytes(repo)
        store = JobStore(fleet.client())
        job = submit_sync(store, str(fleet.config), JOB_NAME, trigger="demo")
        done = self.say.follow(store, job.id, JOB_TIMEOUT, fleet.check_alive)
        run = job_run(done)
        self.result.jobs.append(run)
        detail = done.error or "; ".join(
            f"{s.id}: {s.error}" for s in done.steps.values() if s.error
        )  # fmt: skip
        self.add(Check(f"job {done.id} {done.status}: {run.transfers} transfers, "
                       f"{run.stream_bytes:,} bytes", done.status == engine.JOB_SUCCEEDED,
                       detail))  # fmt: skip
        stats = stats_since(repo, streams, packs)
        self.result.store.append(stats)
        self.add(Check(
            f"store: {stats.streams} new streams, {stats.stream_bytes:,} bytes, "
            f"{stats.new_bytes:,} bytes of packs written ({stats.saved:.0%} saved)",
            stats.streams > 0 and 0 < stats.new_bytes < stats.stream_bytes,
        ))  # fmt: skip
        return run

    def dry_run(self, fleet: DemoFleet) -> None:
        """The coordinator's own view: a fresh inventory and a plan that has nothing to send."""
        store = JobStore(fleet.client())
        job = submit_sync(store, str(fleet.config), JOB_NAME, dry_run=True, trigger="demo")
        done = self.say.follow(store, job.id, JOB_TIMEOUT, fleet.check_alive)
        plan = [row for row in done.report.get("plan", []) if row.get("kind") == "transfer"]
        current = done.report.get("up_to_date", [])
        self.add(Check(f"dry run {done.id}: {len(current)} targets up to date, "
                       f"{len(plan)} transfers planned",
                       done.status == engine.JOB_SUCCEEDED and not plan and bool(current),
                       done.error or ""))  # fmt: skip

    def scrape(self, fleet: DemoFleet) -> None:
        """Read the metrics endpoint as Prometheus would: no target may lag."""
        url = f"http://127.0.0.1:{fleet.metrics_port}/metrics"
        self.say.note(f"scraping {url}")
        try:
            samples = scrape_metrics(url)
        except OSError as exc:
            self.add(Check("metrics endpoint answers", False, str(exc)))
            return
        behind = [v for name, _, v in samples if name == "zfleet_replication_snapshots_behind"]
        lagging = sum(1 for v in behind if v > 0)
        self.add(Check(f"metrics: {len(behind)} dataset targets, {lagging} behind",
                       bool(behind) and lagging == 0))  # fmt: skip

    def check_store(self, repo: Repository) -> None:
        """`zfleet cloud verify`'s check: every pack every manifest needs is there and intact."""
        from workers.cloud.verify import verify as verify_store

        report = verify_store(repo)
        damaged = ", ".join(report.damaged_snapshots()[:5])
        name = f"store verify: {report.manifests} streams, {report.packs_checked} packs intact"
        self.add(Check(name, report.ok and report.manifests > 0, damaged))

    def restore(self, fleet: DemoFleet, repo: Repository) -> None:
        alpha, gamma = fleet.backend("alpha"), fleet.backend("gamma")
        home = f"{SOURCE_POOL}/home"
        snaps = [o for o in alpha.list(home, types=[ObjType.SNAPSHOT]) if o.dataset == home]
        latest = max(snaps, key=lambda o: o.createtxg).name
        restored = restore(repo, latest, gamma, RESTORE_TARGET)
        self.say.note(f"{latest} -> gamma:{restored}")
        self.add(verify.verify_restore(alpha, latest, gamma, restored))
