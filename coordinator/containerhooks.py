"""Containers stopped before their datasets are swapped and started after (docs/containers.md).

The job kinds that change datasets under a running container plan container steps around their
own, from the records of ``bus/containers.py``:

- switchover: before the old primary is demoted (made read-only), ``container-stop`` on it for
  every container running there on the job's datasets; after the new primary is promoted,
  ``container-start`` there for each of them whose datasets the job all replicates (its spec
  with the new primary's dataset names: :func:`moved_spec`), and for every container recorded on
  the new primary (running or holding a copy) that uses the promoted datasets;
- failover: the dead primary cannot be asked to stop anything; after the promote, the
  containers recorded running on it start on the successor as in a switchover, and the
  successor's own ones start;
- rebase: on each host, the containers running on a rebased image (their root's image or a
  mounted dataset) stop before the host's first rebase step and start after its last one,
  whatever the rebase's outcome (a failed rebase rolls back; the container comes back on the
  datasets as they were).

:func:`settle` then writes what the steps did into the records (run by each kind's ``record``
step): a stopped container is recorded stopped, a container started on another host is recorded
running there, its old host holding a copy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Final

import redis

from bus import containers as records
from bus.containers import ContainerRecord
from coordinator import engine
from coordinator.engine import Job, StepPlan
from protocol.containersteps import ContainerSpec, ContainerStartArgs, ContainerStopArgs

STOP: Final = "container-stop-"
START: Final = "container-start-"


def _uses_any(rec: ContainerRecord, datasets: Iterable[str]) -> bool:
    """True when one of ``datasets`` is a dataset of the container, or is inside one or holds
    one (a swap of either reaches it)."""
    mine = (rec.spec.image_dataset, *rec.spec.datasets)
    return any(rec.uses(d) or any(d.startswith(m + "/") for m in mine) for d in datasets)


def running_on(client: redis.Redis[bytes], host: str, datasets: Collection[str]
               ) -> list[ContainerRecord]:  # fmt: skip
    """The containers recorded running on ``host`` that use any of ``datasets``."""
    if not datasets:
        return []
    return [r for r in records.all_records(client)
            if r.host == host and r.state == "running" and _uses_any(r, datasets)]  # fmt: skip


def held_on(client: redis.Redis[bytes], host: str, datasets: Collection[str]
            ) -> list[ContainerRecord]:  # fmt: skip
    """The containers recorded on ``host`` (where they run or as a copy) using ``datasets``."""
    if not datasets:
        return []
    return [r for r in records.all_records(client)
            if (r.host == host or host in r.copies) and _uses_any(r, datasets)]  # fmt: skip


def stop_steps(recs: Sequence[ContainerRecord], host: str, *, deps: tuple[str, ...] = ()
               ) -> list[StepPlan]:  # fmt: skip
    return [StepPlan(id=f"{STOP}{host}-{r.name}", host=host, deps=deps,
                     args=ContainerStopArgs(name=r.name)) for r in recs]  # fmt: skip


def start_steps(specs: Sequence[ContainerSpec], host: str, *, deps: tuple[str, ...],
                always: bool = False) -> list[StepPlan]:  # fmt: skip
    """One ``container-start`` per spec (a name once: the first spec given for it wins)."""
    seen: dict[str, ContainerSpec] = {}
    for spec in specs:
        seen.setdefault(spec.name, spec)
    return [StepPlan(id=f"{START}{host}-{name}", host=host, deps=deps, always=always,
                     args=ContainerStartArgs(spec=spec))
            for name, spec in seen.items()]  # fmt: skip


def moved_spec(spec: ContainerSpec, where: Mapping[str, str]) -> ContainerSpec | None:
    """The spec with every dataset renamed by ``where`` (old name -> name on the new host);
    None when one of them is not there (the job does not replicate it: it cannot move)."""
    image_ds, _, snap = spec.image.partition("@")
    needed = (image_ds, spec.root, spec.checkpoints, *(m.dataset for m in spec.mounts))
    if any(d not in where for d in needed):
        return None
    return dataclasses.replace(
        spec, image=f"{where[image_ds]}@{snap}", root=where[spec.root],
        checkpoints=where[spec.checkpoints],
        mounts=tuple(dataclasses.replace(m, dataset=where[m.dataset]) for m in spec.mounts))


def moving(recs: Sequence[ContainerRecord], where: Mapping[str, str]
           ) -> tuple[list[ContainerSpec], list[str]]:  # fmt: skip
    """The specs of ``recs`` on the new host, and the names of those that cannot move."""
    specs: list[ContainerSpec] = []
    left: list[str] = []
    for rec in recs:
        spec = moved_spec(rec.spec, where)
        if spec is None:
            left.append(rec.name)
        else:
            specs.append(spec)
    return specs, left


def step_ids(job: Job, prefix: str) -> list[str]:
    return [s for s in job.steps if s.startswith(prefix)]


def settle(client: redis.Redis[bytes], job: Job) -> dict[str, list[str]]:
    """The records brought in line with the job's container steps; what changed, by name."""
    stopped: list[str] = []
    started: list[str] = []
    for step in job.steps.values():
        if step.status != engine.SUCCEEDED or step.host is None:
            continue
        if isinstance(step.args, ContainerStopArgs):
            rec = records.get(client, step.args.name)
            if rec is not None and rec.host == step.host and not step_ids(
                    job, f"{START}{step.host}-{rec.name}"):  # fmt: skip
                records.put(client, dataclasses.replace(rec, state="stopped",
                                                        updated=time.time()))  # fmt: skip
                stopped.append(rec.name)
        elif isinstance(step.args, ContainerStartArgs):
            rec = records.get(client, step.args.spec.name)
            if rec is None:
                continue
            copies = tuple(h for h in (*rec.copies, rec.host) if h != step.host)
            records.put(client, dataclasses.replace(
                rec, host=step.host, spec=step.args.spec, state="running",
                copies=tuple(dict.fromkeys(copies)), updated=time.time()))  # fmt: skip
            started.append(rec.name)
    return {"stopped": stopped, "started": started}
