"""The container step kinds on a host: datasets by the ZFS backend, processes by the runtime.

Each handler is idempotent like every step (workers/steps.py): a root clone or container that
exists already is kept when it is the one the spec describes, a checkpoint whose snapshots all
exist is not taken again, a stopped container is not stopped again. The runtime is the host's
:class:`ContainerRuntime` (podman unless the worker's assembly configured another one through
:func:`configure`); a host without it fails the step with RuntimeMissing before any dataset
changes.

A checkpoint writes two files into the checkpoint dataset, then snapshots every dataset of the
container in one atomic snapshot: ``<snapshot>.tar.gz`` (the CRIU image, when CRIU works) and
``<snapshot>.json`` (mode ``criu`` or ``cold``, why, and when). A restore reads the manifest of
the checkpoint it brings back: a CRIU image is restored, a cold checkpoint starts the command
afresh on datasets exactly as they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from protocol.containersteps import (
    ContainerCheckpointArgs,
    ContainerCreateArgs,
    ContainerPrepareArgs,
    ContainerRestoreArgs,
    ContainerSpec,
    ContainerStartArgs,
    ContainerStopArgs,
)
from protocol.errors import CheckpointUnsupported, ContainerError, DatasetNotFound
from workers.containers.runtime import ContainerRuntime, Mount, RunSpec, State
from workers.steps import Result, StepContext, handles
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

LABEL_ROOT: Final = "zfleet.root"
_factory: Callable[[str], ContainerRuntime] | None = None
_cache: dict[str, ContainerRuntime] = {}


def configure(factory: Callable[[str], ContainerRuntime] | None) -> None:
    """Set how a host's runtime is made (the worker's assembly does; None: the default)."""
    global _factory
    _factory = factory
    _cache.clear()


def default_runtime(host: str) -> ContainerRuntime:
    """Podman with its store under ``<data_dir>/containers/<host>``."""
    from protocol.settings import load_settings
    from workers.containers.podman import PodmanRuntime

    return PodmanRuntime(load_settings(None).data_dir / "containers" / host)


def runtime_for(ctx: StepContext) -> ContainerRuntime:
    given = ctx.extra.get("containers")
    if isinstance(given, ContainerRuntime):
        return given
    rt = _cache.get(ctx.host)
    if rt is None:
        rt = (_factory or default_runtime)(ctx.host)
        rt.check()
        _cache[ctx.host] = rt
    return rt


def mountpoint(backend: ZfsBackend, dataset: str) -> Path:
    """Where ``dataset`` is mounted, mounting it first (received replicas come unmounted)."""
    where = dict(backend.mounted()).get(dataset)
    if where is None:
        backend.mount(dataset)
        where = dict(backend.mounted()).get(dataset)
    if where is None:
        raise ContainerError(f"{dataset} has no mountpoint to give a container")
    return Path(where)


def run_spec(backend: ZfsBackend, spec: ContainerSpec) -> RunSpec:
    mounts = tuple(Mount(source=str(mountpoint(backend, m.dataset)), target=m.path,
                         readonly=m.readonly) for m in spec.mounts)  # fmt: skip
    return RunSpec(name=spec.name, rootfs=str(mountpoint(backend, spec.root)),
                   command=spec.command, mounts=mounts, network=spec.network,
                   labels=((LABEL_ROOT, spec.root),))  # fmt: skip


def _ensure(backend: ZfsBackend, datasets: tuple[str, ...] | list[str]) -> int:
    made = 0
    for ds in datasets:
        if not backend.exists(ds):
            backend.create(ds, parents=True)
            made += 1
    return made


def _parent(name: str) -> str | None:
    return name.rsplit("/", 1)[0] if "/" in name else None


def _ensure_container(ctx: StepContext, rt: ContainerRuntime, spec: ContainerSpec) -> bool:
    """The container exists as the spec describes it; True when it had to be created."""
    want = run_spec(ctx.backend, spec)
    info = rt.inspect(spec.name)
    if info.exists:
        if info.rootfs and Path(info.rootfs).resolve() != Path(want.rootfs).resolve():
            raise ContainerError(f"a container named {spec.name!r} exists with another root "
                                 f"({info.rootfs}); remove it or choose another name")  # fmt: skip
        return False
    rt.create(want)
    return True


# -- the steps --------------------------------------------------------------------------------


@handles(ContainerPrepareArgs)
def prepare(ctx: StepContext, args: ContainerPrepareArgs) -> Result:
    """Create the (empty) parents that received datasets need."""
    return {"created": _ensure(ctx.backend, list(args.datasets))}


@handles(ContainerCreateArgs)
def create(ctx: StepContext, args: ContainerCreateArgs) -> Result:
    """Clone the root from the image (unless there), create the checkpoint dataset and the
    container, start it."""
    rt = runtime_for(ctx)
    spec = args.spec
    be = ctx.backend
    for m in spec.mounts:
        if not be.exists(m.dataset):
            raise DatasetNotFound(f"{ctx.host}:{m.dataset} ({m.kind}) does not exist")
    cloned = False
    if not be.exists(spec.root):
        if not be.exists(spec.image):
            raise DatasetNotFound(f"{ctx.host}:{spec.image} does not exist")
        above = _parent(spec.root)
        if above:
            _ensure(be, [above])
        be.clone(spec.image, spec.root)
        cloned = True
    _ensure(be, [spec.checkpoints])
    created = _ensure_container(ctx, rt, spec)
    started = False
    if args.start and rt.inspect(spec.name).state is not State.RUNNING:
        rt.start(spec.name)
        started = True
    log.info("container.ready", container=spec.name, cloned=cloned, created=created)
    return {"cloned": cloned, "created": created, "started": started}


@handles(ContainerStartArgs)
def start(ctx: StepContext, args: ContainerStartArgs) -> Result:
    rt = runtime_for(ctx)
    created = _ensure_container(ctx, rt, args.spec)
    state = rt.inspect(args.spec.name).state
    if state is State.RUNNING:
        return {"started": False, "created": created, "at_ms": _ms()}
    if state is State.PAUSED:
        raise ContainerError(f"{args.spec.name} is paused; unpause it with podman")
    rt.start(args.spec.name)
    return {"started": True, "created": created, "at_ms": _ms()}


@handles(ContainerStopArgs)
def stop(ctx: StepContext, args: ContainerStopArgs) -> Result:
    rt = runtime_for(ctx)
    info = rt.inspect(args.name)
    stopped = False
    if info.state in (State.RUNNING, State.PAUSED):
        rt.stop(args.name, timeout=args.timeout)
        stopped = True
    if args.remove and info.exists:
        rt.remove(args.name)
    return {"stopped": stopped, "removed": args.remove and info.exists, "at_ms": _ms()}


def _ms(at: float | None = None) -> int:
    """Wall-clock milliseconds (results carry ints): when the freeze began, when it ended."""
    return int((time.time() if at is None else at) * 1000)


def manifest_path(ckdir: Path, snapshot: str) -> Path:
    return ckdir / f"{snapshot}.json"


def image_path(ckdir: Path, snapshot: str) -> Path:
    return ckdir / f"{snapshot}.tar.gz"


@handles(ContainerCheckpointArgs)
def checkpoint(ctx: StepContext, args: ContainerCheckpointArgs) -> Result:
    """A CRIU image (or, cold, a stop) and one atomic snapshot of every dataset."""
    rt = runtime_for(ctx)
    spec, be = args.spec, ctx.backend
    names = [f"{ds}@{args.snapshot}" for ds in spec.datasets]
    ckdir = mountpoint(be, spec.checkpoints)
    if all(be.exists(n) for n in names):
        # an earlier attempt got this far; it may have died before starting the container again
        done = _read_manifest(rt, ckdir, args.snapshot)
        resumed = False
        if (args.leave_running and done.get("was_running")
                and rt.inspect(spec.name).state is State.STOPPED):  # fmt: skip
            if done.get("mode") == "criu":
                rt.restore(spec.name)
            else:
                rt.start(spec.name)
            resumed = True
        return {"existed": True, "mode": str(done.get("mode", "cold")),
                "reason": str(done.get("reason", "")), "resumed": resumed,
                "frozen_at_ms": int(done.get("at", 0) * 1000), "was_running": bool(
                    done.get("was_running"))}  # fmt: skip
    info = rt.inspect(spec.name)
    if not info.exists:
        raise ContainerError(f"{ctx.host} has no container {spec.name!r}")
    running = info.state is State.RUNNING
    reason = None if args.cold else rt.checkpoint_support()
    if reason is not None and not args.cold_fallback:
        raise CheckpointUnsupported(f"CRIU cannot checkpoint {spec.name} on {ctx.host}: {reason}",
                                    reason=reason)  # fmt: skip
    frozen = time.time()
    mode, size = "cold", 0
    if running and not args.cold and reason is None:
        img = rt.checkpoint(spec.name, image_path(ckdir, args.snapshot), leave_running=False)
        mode, size = "criu", img.size
    elif running:
        rt.stop(spec.name)
    manifest = {"mode": mode, "reason": reason or "", "container": spec.name, "host": ctx.host,
                "at": frozen, "was_running": running, "image_bytes": size}  # fmt: skip
    rt.write_text(manifest_path(ckdir, args.snapshot), json.dumps(manifest, sort_keys=True))
    be.snapshot([n for n in names if not be.exists(n)])
    snapped = time.time()
    resumed = False
    if args.leave_running and running:
        if mode == "criu":
            rt.restore(spec.name)
        else:
            rt.start(spec.name)
        resumed = True
    log.info("container.checkpointed", container=spec.name, mode=mode, reason=reason or "",
             snapshot=args.snapshot, frozen_s=round(time.time() - frozen, 3))  # fmt: skip
    return {"existed": False, "mode": mode, "reason": reason or "", "image_bytes": size,
            "was_running": running, "resumed": resumed, "frozen_at_ms": _ms(frozen),
            "snapshot_at_ms": _ms(snapped), "frozen_ms": _ms() - _ms(frozen)}  # fmt: skip


def _read_manifest(rt: ContainerRuntime, ckdir: Path, snapshot: str) -> dict[str, Any]:
    path = manifest_path(ckdir, snapshot)
    text = rt.read_text(path)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ContainerError(f"checkpoint manifest {path} is not JSON: {exc}") from exc
    return dict(data) if isinstance(data, dict) else {}


@handles(ContainerRestoreArgs)
def restore(ctx: StepContext, args: ContainerRestoreArgs) -> Result:
    """The datasets at the checkpoint, then the CRIU image restored, or the command started on
    them (a cold checkpoint, or a host where CRIU cannot work: ``reason`` says so)."""
    rt = runtime_for(ctx)
    began = time.monotonic()
    spec, be = args.spec, ctx.backend
    snaps = [f"{ds}@{args.snapshot}" for ds in spec.datasets]
    missing = [s for s in snaps if not be.exists(s)]
    if missing:
        raise DatasetNotFound(f"checkpoint {spec.name}@{args.snapshot} is incomplete on "
                              f"{ctx.host}: {', '.join(missing)} missing")  # fmt: skip
    info = rt.inspect(spec.name)
    if info.exists:
        rt.remove(spec.name)
    if args.rollback:
        for snap in snaps:
            be.rollback(snap, destroy_newer=True)
    ckdir = mountpoint(be, spec.checkpoints)
    manifest = _read_manifest(rt, ckdir, args.snapshot)
    reason = ""
    mode = "cold"
    if manifest.get("mode") == "criu" and rt.file_size(image_path(ckdir, args.snapshot)):
        why = rt.checkpoint_support()
        if why is None:
            rt.restore_image(run_spec(be, spec), image_path(ckdir, args.snapshot))
            mode = "criu"
        else:
            reason = f"CRIU cannot restore on {ctx.host}: {why}; started cold instead"
    if mode == "cold":
        _ensure_container(ctx, rt, spec)
        rt.start(spec.name)
    log.info("container.restored", container=spec.name, snapshot=args.snapshot, mode=mode)
    return {"mode": mode, "reason": reason or str(manifest.get("reason", "")),
            "at_ms": _ms(), "restore_ms": round((time.monotonic() - began) * 1000)}  # fmt: skip
