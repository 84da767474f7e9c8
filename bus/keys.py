"""Every Redis key zfleet uses, in one place (``redis-cli --scan`` reads like a map).

Job state is written by the active coordinator only; workers write events, inventories, progress,
heartbeats and their idempotency records; the CLI writes new jobs and cancel requests.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "zfleet"
EVENTS: Final = f"{PREFIX}:events"  # stream of StepEvent (msgpack), read by a consumer group
EVENTS_GROUP: Final = "coordinator"
LEADER: Final = f"{PREFIX}:leader"
JOBS_ALL: Final = f"{PREFIX}:jobs"  # sorted set: job id by creation time
JOBS_ACTIVE: Final = f"{PREFIX}:jobs:active"  # set of job ids the coordinator drives
CONFIG_PREFIX: Final = f"{PREFIX}:config"  # a fleet config text by its SHA-256, shared by jobs
CONTAINERS: Final = f"{PREFIX}:containers"  # hash: container name -> JSON record (bus/containers)


def job(job_id: str) -> str:
    """Hash: ``meta`` (JSON) and ``step:<id>`` (JSON) fields."""
    return f"{PREFIX}:job:{job_id}"


def cancel(job_id: str) -> str:
    """Present when someone asked the job to stop (workers poll it)."""
    return f"{PREFIX}:job:{job_id}:cancel"


def progress(job_id: str) -> str:
    """Hash: ``<step>|<target>`` -> JSON {done, total} for running transfers."""
    return f"{PREFIX}:job:{job_id}:progress"


def inventory(host: str, job_id: str | None = None) -> str:
    """An InventoryReport (msgpack): the latest of a host, or the one taken for a job."""
    return f"{PREFIX}:inventory:{host}" + (f":{job_id}" if job_id else "")


def worker(host: str) -> str:
    """Hash with the host's worker instance id and start time; expires without heartbeats."""
    return f"{PREFIX}:worker:{host}"


def done(job_id: str, step_id: str) -> str:
    """A worker's record that a step succeeded (its result), so a rerun only re-reports it."""
    return f"{PREFIX}:done:{job_id}:{step_id}"


def running(job_id: str, step_id: str) -> str:
    """Held while a worker runs a step, so two copies of one step never run at once."""
    return f"{PREFIX}:running:{job_id}:{step_id}"


def dataset_lock(resource: str) -> str:
    """Owned by the job id writing ``host:dataset``."""
    return f"{PREFIX}:lock:{resource}"


def schedule_last(job_name: str) -> str:
    return f"{PREFIX}:schedule:{job_name}:last"


def config(digest: str) -> str:
    """A fleet config's text, stored once per content (every run of a job shares it)."""
    return f"{CONFIG_PREFIX}:{digest}"


def epoch(job_name: str) -> str:
    """A replication job's fencing epoch (an integer, raised by every failover)."""
    return f"{PREFIX}:epoch:{job_name}"


def epoch_meta(job_name: str) -> str:
    """Hash beside a job's epoch: ``primary`` (the host the epoch names), ``at_ms``, ``request``."""
    return f"{PREFIX}:epoch:{job_name}:meta"


def roles(job_name: str) -> str:
    """Hash of a replication job's role state beside its epoch: ``out:<host>`` -> unix time, for
    each former primary that has not rejoined yet (no sync sends to it meanwhile)."""
    return f"{PREFIX}:roles:{job_name}"
def step_record(job_id: str, step_id: str) -> str:
    """A step's result too large for its event (a ``zfleet diff``'s entries, JSON)."""
    return f"{PREFIX}:record:{job_id}:{step_id}"


def host_key(host: str) -> str:
    """A host's X25519 public key (hex) and when it was registered (bus/keyring.py)."""
    return f"{PREFIX}:hostkey:{host}"


def key_group(group: str) -> str:
    """Hash of a key group: ``meta`` (JSON) and ``sealed:<version>:<host>`` boxes (base64)."""
    return f"{PREFIX}:keygroup:{group}"


KEY_GROUPS: Final = f"{PREFIX}:keygroups"  # set of every key group's name
