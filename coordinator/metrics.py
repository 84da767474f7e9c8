"""The fleet's Prometheus metrics, read from Redis at scrape time (``zfleet metrics``).

Nothing is counted in memory: every scrape reads the job store, the workers' heartbeats and the
hosts' latest inventories, so any number of these endpoints can run, restart, or stand beside a
coordinator that is down. Series:

- ``zfleet_up``: 1 when Redis answered this scrape.
- ``zfleet_jobs{status}``, ``zfleet_jobs_active``: the newest jobs by status.
- ``zfleet_steps{kind,state}``: their steps by state.
- ``zfleet_step_errors{kind,error_type}``: failed attempts by error class (protocol.errors).
- ``zfleet_transfer_bytes{job_id,step,source}`` (stream bytes), ``..._wire_bytes``, ``..._seconds``
  and ``zfleet_transfer_throughput_bytes_per_second`` for the transfers of the newest jobs.
- ``zfleet_transfer_progress_bytes{job_id,step,target}``: transfers running now.
- ``zfleet_replication_lag_seconds{job_name,dataset,target}`` and
  ``zfleet_replication_snapshots_behind``.
- ``zfleet_worker_up{host}``, ``zfleet_inventory_age_seconds{host}``.
- ``zfleet_failovers{job_name,kind,outcome}``: role changes (failover, switchover, rejoin) among
  the newest jobs by outcome (the job's status); ``zfleet_failover_time_to_writable_seconds`` and
  ``zfleet_failover_data_loss_window_seconds{job_name,kind}`` of each job's newest one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final
from wsgiref.simple_server import WSGIServer

import redis
import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bus import keys
from coordinator.config import FleetConfig, load_config
from coordinator.engine import JOB_SUCCEEDED, Job
from coordinator.graph import FleetGraph
from coordinator.jobstore import JobStore
from coordinator.lag import fleet_lag
from coordinator.planner import store_host
from coordinator.syncjob import report_objects
from protocol.errors import ZfleetError

log = structlog.get_logger(__name__)

RECENT_JOBS: Final = 200  # jobs counted by status
TRANSFER_JOBS: Final = 5  # jobs whose transfers get their own series (bounded cardinality)
ROLE_KINDS: Final = ("failover", "switchover", "rejoin")


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def job_metrics(jobs: list[Job], transfer_jobs: int = TRANSFER_JOBS) -> list[GaugeMetricFamily]:
    """Jobs, steps, errors and transfers as metric families (pure: jobs newest first)."""
    by_status = Counter(j.status for j in jobs)
    steps = Counter((s.kind, s.status) for j in jobs for s in j.steps.values())
    errors = Counter((s.kind, s.error_type) for j in jobs for s in j.steps.values()
                     if s.error_type)  # fmt: skip
    fam_jobs = _gauge("zfleet_jobs", f"The newest {RECENT_JOBS} jobs by status.", ["status"])
    for status, n in sorted(by_status.items()):
        fam_jobs.add_metric([status], n)
    fam_steps = _gauge("zfleet_steps", "Steps of those jobs by kind and state.", ["kind", "state"])
    for (kind, state), n in sorted(steps.items()):
        fam_steps.add_metric([kind, state], n)
    fam_err = _gauge("zfleet_step_errors", "Steps whose last attempt failed, by error class.",
                     ["kind", "error_type"])  # fmt: skip
    for (kind, etype), n in sorted(errors.items()):
        fam_err.add_metric([kind, str(etype)], n)
    # "job" is Prometheus's own target label: ours are job_id (a run) and job_name (config)
    labels = ["job_id", "step", "source"]
    t_bytes = _gauge("zfleet_transfer_bytes", "Send-stream bytes a transfer delivered.", labels)
    t_wire = _gauge("zfleet_transfer_wire_bytes", "Bytes on the wire (compressed).", labels)
    t_secs = _gauge("zfleet_transfer_seconds", "How long a transfer ran.", labels)
    t_rate = _gauge("zfleet_transfer_throughput_bytes_per_second",
                    "Stream bytes per second of a finished transfer.", labels)  # fmt: skip
    for job in jobs[:transfer_jobs]:
        for s in job.steps.values():
            if s.kind != "transfer" or not s.result:
                continue
            values = [job.id, s.id, s.host or ""]
            moved = float(s.result.get("bytes") or 0)
            t_bytes.add_metric(values, moved)
            t_wire.add_metric(values, float(s.result.get("wire_bytes") or 0))
            if s.started_at and s.finished_at and s.finished_at > s.started_at:
                secs = s.finished_at - s.started_at
                t_secs.add_metric(values, secs)
                t_rate.add_metric(values, moved / secs)
    return [fam_jobs, fam_steps, fam_err, t_bytes, t_wire, t_secs, t_rate, *role_metrics(jobs)]


def role_metrics(jobs: list[Job]) -> list[GaugeMetricFamily]:
    """Failovers, switchovers and rejoins by job and outcome; the newest one's figures."""
    changes = Counter((j.name, j.kind, j.status) for j in jobs if j.kind in ROLE_KINDS)
    fam = _gauge("zfleet_failovers",
                 "Failovers, switchovers and rejoins among the newest jobs, by outcome "
                 "(the job's status).", ["job_name", "kind", "outcome"])  # fmt: skip
    for (name, kind, status), n in sorted(changes.items()):
        fam.add_metric([name, kind, status], n)
    figures = ["job_name", "kind"]
    ttw = _gauge("zfleet_failover_time_to_writable_seconds",
                 "The newest successful failover or switchover of the job: request or alert "
                 "received to the new primary writable.", figures)  # fmt: skip
    window = _gauge("zfleet_failover_data_loss_window_seconds",
                    "The newest successful failover or switchover of the job: age of the newest "
                    "replicated snapshot when the old primary failed (0: nothing lost).",
                    figures)  # fmt: skip
    seen: set[tuple[str, str]] = set()
    for j in jobs:  # newest first
        if j.kind not in ("failover", "switchover") or j.status != JOB_SUCCEEDED:
            continue
        if (j.name, j.kind) in seen:
            continue
        seen.add((j.name, j.kind))
        took, lost = j.report.get("time_to_writable"), j.report.get("data_loss_window")
        if isinstance(took, int | float):
            ttw.add_metric([j.name, j.kind], float(took))
        if isinstance(lost, int | float):
            window.add_metric([j.name, j.kind], float(lost))
    return [fam, ttw, window]


class FleetCollector(Collector):
    """Collects the fleet's state from Redis on every scrape."""

    def __init__(
        self,
        client: redis.Redis[bytes],
        config: Callable[[], FleetConfig | None] = lambda: None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = JobStore(client)
        self.r = client
        self.config = config
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = _gauge("zfleet_up", "1 when Redis answered this scrape.", [])
        try:
            families = self._collect()
        except redis.RedisError as exc:
            log.warning("metrics.redis_failed", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> list[GaugeMetricFamily]:
        jobs = self.store.recent(RECENT_JOBS)
        families = job_metrics(jobs)
        active = _gauge("zfleet_jobs_active", "Jobs the coordinator is driving.", [])
        active.add_metric([], len(self.store.active_ids()))
        families.append(active)
        progress = _gauge("zfleet_transfer_progress_bytes",
                          "Stream bytes sent so far by running transfers.",
                          ["job_id", "step", "target"])  # fmt: skip
        for job_id in self.store.active_ids():
            for key, p in self.store.progress(job_id).items():
                step, _, target = key.partition("|")
                progress.add_metric([job_id, step, target], float(p.get("done") or 0))
        families.append(progress)
        config = self.config()
        if config is not None:
            families.extend(self._fleet(config))
        return families

    def _fleet(self, config: FleetConfig) -> list[GaugeMetricFamily]:
        now = self.clock()
        worker_up = _gauge("zfleet_worker_up", "1 while the host's worker heartbeats.", ["host"])
        age = _gauge("zfleet_inventory_age_seconds", "Age of the host's latest inventory.",
                     ["host"])  # fmt: skip
        graph = fleet_graph(self.store, config)
        for host in sorted(config.hosts):
            worker_up.add_metric([host], 1 if self.r.exists(keys.worker(host)) else 0)
            inv = graph.hosts.get(host)
            if inv is not None:
                age.add_metric([host], max(0.0, now - inv.reported_at))
        labels = ["job_name", "dataset", "target"]
        lag_s = _gauge("zfleet_replication_lag_seconds",
                       "How far a target is behind its source's newest snapshot.", labels)
        lag_n = _gauge("zfleet_replication_snapshots_behind",
                       "Source snapshots newer than the newest one the target holds.", labels)
        for lg in fleet_lag(graph, config, now):
            values = [lg.job, f"{lg.source_host}:{lg.dataset}", lg.target]
            if lg.target_dataset:
                values[2] = f"{lg.target_host}:{lg.target_dataset}"
            lag_s.add_metric(values, lg.seconds)
            lag_n.add_metric(values, lg.behind)
        return [worker_up, age, lag_s, lag_n]


def fleet_graph(store: JobStore, config: FleetConfig) -> FleetGraph:
    """The fleet graph from the latest inventories in Redis: every host's and every store's."""
    from coordinator.fleetstatus import load_graph

    graph = load_graph(store, config)
    for name in sorted(config.stores):
        report = store.inventory(store_host(name))
        if report is not None:
            graph.add_inventory(store_host(name), report_objects(report), report.taken_at)
    return graph


class ConfigWatcher:
    """The fleet config, read again when the file changes; the last good one survives a bad edit."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._config: FleetConfig | None = None

    def __call__(self) -> FleetConfig | None:
        if self.path is None:
            return None
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self._config
        if mtime != self._mtime:
            try:
                self._config = load_config(self.path)
                self._mtime = mtime
            except ZfleetError as exc:  # a bad edit must not take the endpoint down
                log.warning("metrics.config_unreadable", path=str(self.path), error=str(exc))
        return self._config


def serve(
    client: redis.Redis[bytes], *, port: int, addr: str = "127.0.0.1", config: Path | None = None
) -> tuple[WSGIServer, int]:
    """Serve the fleet metrics on ``addr:port`` (0 picks a port) in a background thread.

    Returns the server (call ``shutdown()`` to stop) and the port it listens on.
    """
    registry = CollectorRegistry()
    registry.register(FleetCollector(client, ConfigWatcher(config)))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    bound = int(server.server_address[1])
    log.info("metrics.serving", addr=addr, port=bound)
    return server, bound
