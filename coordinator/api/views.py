"""The API's endpoints: what each answers, read from Redis (jobs, heartbeats, inventories).

Like ``zfleet metrics``, the API keeps no state of its own: every request reads the job store, the
workers' heartbeat hashes and the hosts' latest inventories, so it tells the same story as the CLI
and survives restarts. :func:`build_router` returns the route table; add routes to it (see
``routes.py``) to extend the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bus import keys
from coordinator import engine
from coordinator.api.page import page_html
from coordinator.api.routes import ApiError, Request, Response, Router, json_response
from coordinator.config import FleetConfig
from coordinator.engine import Job
from coordinator.graph import FleetGraph
from coordinator.graphsvg import render_svg
from coordinator.jobstore import JobStore
from coordinator.lag import BEHIND, MISSING, UP_TO_DATE, fleet_lag
from coordinator.metrics import ConfigWatcher, FleetCollector, fleet_graph
from coordinator.planner import store_host
from coordinator.syncjob import submit_sync
from protocol.errors import ConfigError, JobError
from protocol.version import zfleet_version

MAX_JOBS: Final = 200
_STATE_RANK: Final = {UP_TO_DATE: 0, BEHIND: 1, MISSING: 2}


@dataclass
class ApiContext:
    """What the endpoints read: Redis, the fleet config (re-read when the file changes), a clock."""

    client: redis.Redis[bytes]
    config_path: Path | None
    clock: Callable[[], float] = time.time
    store: JobStore = field(init=False)
    config: ConfigWatcher = field(init=False)

    def __post_init__(self) -> None:
        self.store = JobStore(self.client)
        self.config = ConfigWatcher(self.config_path)

    def fleet(self) -> FleetConfig:
        config = self.config()
        if config is None:
            where = f" ({self.config_path} is unreadable)" if self.config_path else ""
            raise ApiError(503, f"the coordinator has no fleet config{where}")
        return config


# -- jobs -------------------------------------------------------------------------------------
def job_summary(ctx: ApiContext, job: Job, *, with_progress: bool) -> dict[str, Any]:
    """A job as JSON: its counts, bytes moved, failed steps and (when asked) live transfers.

    ``failures`` holds the steps that failed and those whose last attempt failed and that wait
    for a retry (``retrying``: the engine clears a step's error only when it succeeds).
    """
    failures = [
        {"step": s.id, "kind": s.kind, "host": s.host, "attempt": s.attempt,
         "error": s.error, "error_type": s.error_type, "at": s.finished_at or s.reported_at,
         "retrying": s.status != engine.FAILED}
        for s in job.steps.values()
        if s.status == engine.FAILED or (s.error and s.status not in engine.TERMINAL)
    ]  # fmt: skip
    out: dict[str, Any] = {
        "id": job.id, "job": job.name, "kind": job.kind, "status": job.status,
        "created": job.created, "finished": job.finished, "error": job.error,
        "cancel_requested": job.cancel_requested, "steps": engine.counts(job),
        "bytes": sum(int(s.result.get("bytes") or 0) for s in job.steps.values()),
        "trigger": job.options.get("trigger"), "dry_run": bool(job.options.get("dry_run")),
        "refusals": job.report.get("refusals", []), "failures": failures,
    }  # fmt: skip
    if with_progress:
        out["transfers"] = transfers(job, ctx.store.progress(job.id))
    return out


def transfers(job: Job, progress: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each transfer target's progress: bytes done of the estimate, and average throughput."""
    out = []
    for key, p in sorted(progress.items()):
        step_id, _, target = key.partition("|")
        step = job.steps.get(step_id)
        done, total = int(p.get("done") or 0), p.get("total")
        status = step.status if step is not None else "unknown"
        if status == engine.SUCCEEDED:
            done = total = max(done, int(total or 0))
        rate = None
        at, started = p.get("at"), step.started_at if step is not None else None
        if isinstance(at, int | float) and started and at > started:
            rate = done / (at - started)
        fraction = min(1.0, done / total) if total else None
        out.append({"step": step_id, "target": target, "status": status, "done": done,
                    "total": total, "fraction": fraction, "bytes_per_second": rate,
                    "at": at})  # fmt: skip
    return out


def list_jobs(ctx: ApiContext, req: Request) -> Response:
    limit = req.int_arg("limit", 20, low=1, high=MAX_JOBS)
    want = req.arg("status")
    found = ctx.store.recent(limit)
    if want:
        found = [j for j in found if j.status == want]
    return json_response({"jobs": [job_summary(ctx, j, with_progress=not j.done) for j in found]})


def _load(ctx: ApiContext, job_id: str) -> Job:
    try:
        return ctx.store.load(ctx.store.resolve(job_id))
    except JobError as exc:
        raise ApiError(404, str(exc)) from None


def show_job(ctx: ApiContext, req: Request) -> Response:
    job = _load(ctx, req.params["id"])
    out = job_summary(ctx, job, with_progress=True)
    out["report"] = job.report
    out["step_list"] = [s.to_dict() for s in job.steps.values()]
    return json_response(out)


def submit_job(ctx: ApiContext, req: Request) -> Response:
    """``{"job": NAME, "dry_run": false}``: run a [jobs.NAME] of the fleet config now."""
    body = req.json()
    unknown = sorted(set(body) - {"job", "dry_run"})
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}; send {{\"job\": NAME, \"dry_run\": bool}}")
    name, dry_run = body.get("job"), body.get("dry_run", False)
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'job' must name a job of the fleet config")
    if not isinstance(dry_run, bool):
        raise ApiError(400, "'dry_run' must be true or false")
    config = ctx.fleet()  # refuses a fleet file that does not load before reading it again
    if name not in config.jobs:
        known = ", ".join(sorted(config.jobs)) or "none"
        raise ApiError(404, f"no job named {name!r} (jobs: {known})")
    assert ctx.config_path is not None
    try:
        job = submit_sync(ctx.store, str(ctx.config_path), name, dry_run=dry_run, trigger="api")
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response({"id": job.id, "job": job.name, "status": job.status,
                          "dry_run": dry_run, "href": f"/v1/jobs/{job.id}"}, 202)  # fmt: skip


def cancel_job(ctx: ApiContext, req: Request) -> Response:
    job = _load(ctx, req.params["id"])
    if job.done:
        raise ApiError(409, f"job {job.id} has already finished ({job.status})")
    ctx.store.request_cancel(job.id)
    return json_response({"id": job.id, "cancel_requested": True}, 202)


# -- status, hosts, graph, metrics --------------------------------------------------------------
def status(ctx: ApiContext, req: Request) -> Response:
    """Per dataset its targets' lag; per target the worst state; per host its inventory's age."""
    config = ctx.fleet()
    now = ctx.clock()
    graph = fleet_graph(ctx.store, config)
    datasets: dict[tuple[str, str, str], dict[str, Any]] = {}
    targets: dict[str, dict[str, Any]] = {}
    for lag in fleet_lag(graph, config, now):
        src = graph.dataset(lag.source_host, lag.dataset)
        row = datasets.setdefault((lag.job, lag.source_host, lag.dataset), {
            "job": lag.job, "host": lag.source_host, "dataset": lag.dataset,
            "origin": src.origin if src is not None else None,
            "kind": src.kind if src is not None else None,
            "newest": lag.newest.short if lag.newest else None, "targets": [],
        })  # fmt: skip
        where = f"{lag.target_host}:{lag.target_dataset}" if lag.target_dataset else lag.target
        row["targets"].append({"target": where, "state": lag.state, "snapshots_behind": lag.behind,
                               "seconds_behind": lag.seconds,
                               "newest_common": lag.held.short if lag.held else None})  # fmt: skip
        agg = targets.setdefault(lag.target, {"state": UP_TO_DATE, "datasets": 0,
                                              "max_seconds_behind": 0.0})  # fmt: skip
        agg["datasets"] += 1
        agg["max_seconds_behind"] = max(agg["max_seconds_behind"], lag.seconds)
        if _STATE_RANK[lag.state] > _STATE_RANK[agg["state"]]:
            agg["state"] = lag.state
    reported = {h: {"reported_at": inv.reported_at, "age_seconds": max(0.0, now - inv.reported_at)}
                for h, inv in sorted(graph.hosts.items())}  # fmt: skip
    missing = sorted(h for h in config.hosts if h not in graph.hosts)
    return json_response({"inventories": reported, "no_inventory": missing,
                          "datasets": list(datasets.values()), "targets": targets})  # fmt: skip


def _heartbeat(client: redis.Redis[bytes], host: str) -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(keys.worker(host))
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items()}


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _datasets(graph: FleetGraph, key: str) -> list[dict[str, Any]]:
    inv = graph.hosts.get(key)
    if inv is None:
        return []
    return [{"name": d.name, "origin": d.origin, "kind": d.kind, "snapshots": len(d.snap_guids)}
            for d in sorted(inv.datasets.values(), key=lambda d: d.name)]  # fmt: skip


def hosts(ctx: ApiContext, req: Request) -> Response:
    """Every configured host (and any other that heartbeats) and store, with their datasets."""
    config = ctx.fleet()
    now = ctx.clock()
    graph = fleet_graph(ctx.store, config)
    prefix = keys.worker("")
    found = ctx.client.scan_iter(match=prefix + "*", count=100)
    beating = {k.decode()[len(prefix):] for k in found}
    out = []
    for name in sorted(set(config.hosts) | beating):
        beat = _heartbeat(ctx.client, name)
        last = _float(beat.get("beat"))
        inv = graph.hosts.get(name)
        cfg = config.hosts.get(name)
        out.append({
            "name": name, "configured": cfg is not None,
            "backend": cfg.backend if cfg is not None else None,
            "alive": bool(beat), "instance": beat.get("instance"),
            "version": beat.get("version"), "started": _float(beat.get("started")),
            "last_beat": last, "beat_age_seconds": max(0.0, now - last) if last else None,
            "stream": beat.get("stream"),
            "inventory_at": inv.reported_at if inv is not None else None,
            "datasets": _datasets(graph, name),
        })  # fmt: skip
    stores = []
    for name, st in sorted(config.stores.items()):
        inv = graph.hosts.get(store_host(name))
        stores.append({"name": name, "kind": st.kind,
                       "inventory_at": inv.reported_at if inv is not None else None,
                       "datasets": _datasets(graph, store_host(name))})  # fmt: skip
    leader = ctx.client.get(keys.LEADER)
    return json_response({
        "coordinator": {"version": zfleet_version(),
                        "leader": leader.decode(errors="replace") if leader else None},
        "hosts": out, "stores": stores,
    })  # fmt: skip


def graph_svg(ctx: ApiContext, req: Request) -> Response:
    config = ctx.fleet()
    now = ctx.clock()
    graph = fleet_graph(ctx.store, config)
    svg = render_svg(graph, fleet_lag(graph, config, now), title="zfleet", now=now)
    return Response(200, svg.encode(), "image/svg+xml; charset=utf-8")


def metrics(ctx: ApiContext, req: Request) -> Response:
    registry = CollectorRegistry()
    registry.register(FleetCollector(ctx.client, ctx.config, clock=ctx.clock))
    return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)


def index(ctx: ApiContext, router: Router) -> Response:
    routes = [f"{r.method} {r.pattern}" for r in router.routes]
    return json_response({"version": zfleet_version(), "endpoints": routes})


def health(ctx: ApiContext) -> Response:
    try:
        ok = bool(ctx.client.ping())
    except redis.RedisError:
        ok = False
    return json_response({"ok": ok, "redis": ok}, 200 if ok else 503)


def build_router(ctx: ApiContext) -> Router:
    """The API's route table (public: the page, which holds no data, and the health check)."""
    router = Router()

    def bind(fn: Callable[[ApiContext, Request], Response]) -> Callable[[Request], Response]:
        return lambda req: fn(ctx, req)

    page = page_html().encode()
    router.add("GET", "/", lambda req: Response(200, page, "text/html; charset=utf-8",
                                                {"Content-Security-Policy": _CSP}), public=True)
    router.add("GET", "/healthz", lambda req: health(ctx), public=True)
    router.add("GET", "/v1", lambda req: index(ctx, router))
    router.add("GET", "/v1/jobs", bind(list_jobs))
    router.add("POST", "/v1/jobs", bind(submit_job))
    router.add("GET", "/v1/jobs/{id}", bind(show_job))
    router.add("POST", "/v1/jobs/{id}/cancel", bind(cancel_job))
    router.add("GET", "/v1/status", bind(status))
    router.add("GET", "/v1/hosts", bind(hosts))
    router.add("GET", "/v1/graph.svg", bind(graph_svg))
    router.add("GET", "/v1/metrics", bind(metrics))
    return router


# the page is one inline document: it may run its own script and talk to this origin only
_CSP: Final = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
               "frame-ancestors 'none'")  # fmt: skip
