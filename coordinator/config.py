"""The fleet config: one TOML file naming hosts, object stores and replication jobs.

Validated whole at load time, so a typo fails at start with the file, line and key named, never
half-way through a job. A minimal file::

    [hosts.alpha]
    backend = "sim"
    sim_root = "/var/lib/zfleet/alpha"
    stream_address = "127.0.0.1:7001"

    [jobs.images]
    source = "alpha:tank/images"
    targets = ["beta:backup/images", "store:bucket"]
    schedule = "15m"
    snapshot = "zfleet-%Y%m%dT%H%M%SZ"
    retention = { "zfleet-*" = 24 }

``[kinds.<kind>]`` tables give the policies of dataset kinds (coordinator/kinds.py,
docs/compartments.md); every job carries them.

With one source, a target names the exact dataset the source lands in; with several sources each
lands under the target as ``<target>/<last component of the source>``. Replicas are received
unmounted with ``canmount=noauto`` unless the job says ``mount_targets = true``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from coordinator.kinds import KindPolicies, default_policies, parse_kinds
from coordinator.roles import FailoverRoles, parse_failover
from coordinator.schedule import Schedule, parse_schedule
from protocol.errors import ConfigError
from protocol.steps import StoreRef

BACKENDS: Final = ("sim", "real")
STORE_KINDS: Final = ("s3", "dir")
INCREMENTAL_POLICIES: Final = ("I", "i")
_HOST_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DATASET: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)*$")
STORE_PREFIX: Final = "store:"
_LONG_QUOTED: Final = re.compile(r"(['\"])([^'\"\n]{61,})\1")


@dataclass(frozen=True)
class HostConfig:
    """One host of the fleet and how its worker reaches ZFS."""

    name: str
    backend: Literal["sim", "real"]
    exec_prefix: tuple[str, ...] = ()
    stream_address: str | None = None
    sim_root: Path | None = None


@dataclass(frozen=True)
class StoreConfig:
    """An object store a job can replicate into."""

    name: str
    kind: Literal["s3", "dir"]
    endpoint: str | None = None
    bucket: str | None = None
    prefix: str = ""
    path: Path | None = None


def store_descriptor(store: StoreConfig) -> dict[str, str | None]:
    """How a worker reaches ``store``: a location for workers.cloud's open_blob_store and an
    endpoint for S3-compatible servers (credentials come from the worker's own settings)."""
    if store.kind == "dir":
        return {"name": store.name, "url": str(store.path), "endpoint": None}
    prefix = store.prefix.strip("/")
    return {"name": store.name, "url": f"s3://{store.bucket}/{prefix}".rstrip("/"),
            "endpoint": store.endpoint}  # fmt: skip


def store_ref(desc: Mapping[str, object]) -> StoreRef:
    """A store descriptor from the fleet config (``store_descriptor``) as a step's StoreRef."""
    endpoint = desc.get("endpoint")
    return StoreRef(name=str(desc["name"]), url=str(desc["url"]),
                    endpoint=str(endpoint) if endpoint else None)  # fmt: skip


@dataclass(frozen=True)
class DatasetRef:
    """A dataset on a host (``alpha:tank/images``)."""

    host: str
    dataset: str

    def __str__(self) -> str:
        return f"{self.host}:{self.dataset}"


@dataclass(frozen=True)
class JobTarget:
    """Where a job replicates to: a dataset root on a host, or an object store."""

    host: str | None = None
    dataset: str | None = None
    store: str | None = None

    def __str__(self) -> str:
        return f"{STORE_PREFIX}{self.store}" if self.store else f"{self.host}:{self.dataset}"


@dataclass(frozen=True)
class RetentionRule:
    """Keep the newest ``keep`` snapshots whose short name matches the glob ``pattern``."""

    pattern: str
    keep: int


@dataclass(frozen=True)
class JobConfig:
    """A replication job: what to copy where, how often, and how long to keep it."""

    name: str
    sources: tuple[DatasetRef, ...]
    targets: tuple[JobTarget, ...]
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    schedule: Schedule | None = None
    snapshot_pattern: str | None = None
    retention: tuple[RetentionRule, ...] = ()
    force_rollback: bool = False
    incremental: Literal["I", "i"] = "I"
    # False: replicas are received unmounted (-u) with canmount=noauto. Mounting received children
    # rewrites their mountpoint directories in the parents, which then look modified (zfs#12580).
    mount_targets: bool = False
    # [jobs.NAME.failover]: who is primary, who takes over, when (coordinator/roles.py)
    failover: FailoverRoles | None = None
    # the fleet's [kinds] policies (coordinator/kinds.py); None for a transient job
    # (`zfleet send`), which copies what it is asked to whatever the kind
    kinds: KindPolicies | None = None

    def target_dataset(self, source: DatasetRef, target: JobTarget, dataset: str) -> str:
        """The dataset on ``target`` that ``dataset`` (at or under ``source``) lands in."""
        assert target.dataset is not None
        root = target.dataset
        if len(self.sources) > 1:
            root = f"{root}/{source.dataset.rsplit('/', 1)[-1]}"
        return root + dataset[len(source.dataset) :]


@dataclass(frozen=True)
class FleetConfig:
    """The whole fleet: hosts, stores and jobs by name."""

    hosts: Mapping[str, HostConfig]
    stores: Mapping[str, StoreConfig]
    jobs: Mapping[str, JobConfig]
    source: str = "<string>"
    kinds: KindPolicies = field(default_factory=default_policies)

    def job(self, name: str) -> JobConfig:
        """The job called ``name``, or a ConfigError listing the known ones."""
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(f"{self.source}: no job named {name!r} (jobs: {known})") from None


class _Where:
    """Builds error messages that name the file, the key path and (when found) the line."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line_of(self, path: tuple[str, ...]) -> int | None:
        # tomllib keeps no positions: find the table header, then the key inside it.
        table_at = 0
        for depth in range(len(path), 0, -1):
            header = re.compile(r"^\s*\[+\s*" + r"\s*\.\s*".join(map(re.escape, path[:depth])))
            for i, line in enumerate(self.lines):
                if header.match(line):
                    table_at = i
                    if depth == len(path):
                        return i + 1
                    key = re.compile(r"^\s*\"?" + re.escape(path[depth]) + r"\"?\s*=")
                    for j in range(i + 1, len(self.lines)):
                        if self.lines[j].lstrip().startswith("["):
                            break
                        if key.match(self.lines[j]):
                            return j + 1
                    return i + 1
        return table_at + 1 if table_at else None

    def error(self, path: tuple[str, ...], message: str) -> ConfigError:
        line = self.line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        # a value can be a megabyte on one line: quote the start of a long one, not all of it
        shown = _LONG_QUOTED.sub(lambda m: f"{m.group(1)}{m.group(2)[:57]}...{m.group(1)}", message)
        if len(shown) > 240:  # an unquoted one (a list's repr), cut the same way
            shown = shown[:237] + "..."
        keys = ".".join(k if len(k) <= 60 else k[:57] + "..." for k in path)
        return ConfigError(f"{where}: {keys}: {shown}")


def read_text(path: Path | str) -> str:
    """The config file's text: its bytes, which must be UTF-8 (TOML's rule), else ConfigError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the fleet config: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(f"{str(p)!r}: not a usable path: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a binary file, or Latin-1 text: say where, in words, without echoing the bytes
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); TOML files are "
            "UTF-8: convert it (iconv -f latin1 -t utf-8) or fix the file"
        ) from None


def parse_toml(text: str, *, source: str = "<string>") -> dict[str, Any]:
    """``text`` as TOML, or ConfigError (bad syntax, or nesting too deep for the parser)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    except RecursionError:
        # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None


def read_toml(path: Path | str) -> dict[str, Any]:
    """The file at ``path`` parsed as TOML, every failure a ConfigError naming the file."""
    return parse_toml(read_text(path), source=str(path))


def load_config(path: Path | str) -> FleetConfig:
    """Read and validate the fleet config at ``path``; any problem is a ConfigError."""
    return parse_config(read_text(path), source=str(Path(path)))


def parse_config(text: str, *, source: str = "<string>") -> FleetConfig:
    """Validate fleet config TOML ``text``; ``source`` names it in error messages."""
    data = parse_toml(text, source=source)
    w = _Where(text, source)
    # [settings] belongs to protocol/settings.py when both live in one file.
    _only(w, (), data, {"hosts", "stores", "jobs", "settings", "kinds"})
    hosts = {n: _host(w, n, v) for n, v in _table(w, ("hosts",), data.get("hosts", {})).items()}
    stores = {n: _store(w, n, v) for n, v in _table(w, ("stores",), data.get("stores", {})).items()}
    kinds = parse_kinds(data.get("kinds", {}), hosts=hosts, error=w.error,
                        retention=lambda path, raw: _retention(w, path, raw))  # fmt: skip
    jobs = {
        n: _job(w, n, v, hosts, stores, kinds=kinds)
        for n, v in _table(w, ("jobs",), data.get("jobs", {})).items()
    }
    return FleetConfig(hosts=hosts, stores=stores, jobs=jobs, source=source, kinds=kinds)


# -- sections -------------------------------------------------------------------------------


def _host(w: _Where, name: str, raw: Any) -> HostConfig:
    path = ("hosts", name)
    t = _table(w, path, raw)
    _only(w, path, t, {"backend", "exec_prefix", "stream_address", "sim_root"})
    if not _HOST_NAME.match(name):
        raise w.error(path, "a host name is letters, digits, '_', '.', '-' (up to 63)")
    backend = _str(w, (*path, "backend"), t.get("backend", "real"))
    if backend not in BACKENDS:
        raise w.error((*path, "backend"), f"must be one of {', '.join(BACKENDS)}, not {backend!r}")
    prefix_raw = t.get("exec_prefix", [])
    if isinstance(prefix_raw, str):
        try:
            prefix = tuple(shlex.split(prefix_raw))
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise w.error((*path, "exec_prefix"), f"cannot split {prefix_raw!r}: {exc}") from None
    else:
        prefix = tuple(_str_list(w, (*path, "exec_prefix"), prefix_raw))
    address = t.get("stream_address")
    if address is not None:
        address = _address(w, (*path, "stream_address"), address)
    sim_root = t.get("sim_root")
    if backend == "sim" and sim_root is None:
        raise w.error(path, "a sim host needs sim_root (the directory its pools live in)")
    return HostConfig(
        name=name,
        backend="sim" if backend == "sim" else "real",
        exec_prefix=prefix,
        stream_address=address,
        sim_root=Path(_str(w, (*path, "sim_root"), sim_root)) if sim_root is not None else None,
    )


def _store(w: _Where, name: str, raw: Any) -> StoreConfig:
    path = ("stores", name)
    t = _table(w, path, raw)
    _only(w, path, t, {"kind", "endpoint", "bucket", "prefix", "path"})
    kind = _str(w, (*path, "kind"), t.get("kind", "s3"))
    if kind not in STORE_KINDS:
        raise w.error((*path, "kind"), f"must be one of {', '.join(STORE_KINDS)}, not {kind!r}")
    if kind == "s3" and "bucket" not in t:
        raise w.error(path, "an s3 store needs a bucket")
    if kind == "dir" and "path" not in t:
        raise w.error(path, "a dir store needs a path")
    return StoreConfig(
        name=name,
        kind="s3" if kind == "s3" else "dir",
        endpoint=_opt_str(w, (*path, "endpoint"), t.get("endpoint")),
        bucket=_opt_str(w, (*path, "bucket"), t.get("bucket")),
        prefix=_str(w, (*path, "prefix"), t.get("prefix", "")),
        path=Path(_str(w, (*path, "path"), t["path"])) if "path" in t else None,
    )


_JOB_KEYS: Final = {
    "source", "sources", "targets", "recursive", "include", "exclude", "schedule", "snapshot",
    "retention", "force_rollback", "incremental", "mount_targets", "failover",
}  # fmt: skip


def _job(
    w: _Where,
    name: str,
    raw: Any,
    hosts: Mapping[str, HostConfig],
    stores: Mapping[str, StoreConfig],
    *,
    kinds: KindPolicies,
) -> JobConfig:
    path = ("jobs", name)
    t = _table(w, path, raw)
    _only(w, path, t, _JOB_KEYS)
    if "source" in t and "sources" in t:
        raise w.error(path, "give either source or sources, not both")
    if "source" in t:
        src_raw = [_str(w, (*path, "source"), t["source"])]
        src_key = "source"
    else:
        src_raw = _str_list(w, (*path, "sources"), t.get("sources", []))
        src_key = "sources"
    if not src_raw:
        raise w.error(path, "a job needs a source (\"host:dataset\")")
    sources = tuple(_ref(w, (*path, src_key), s, hosts) for s in src_raw)
    tgt_raw = _str_list(w, (*path, "targets"), t.get("targets", []))
    if not tgt_raw:
        raise w.error(path, "a job needs at least one target (\"host:dataset\" or \"store:NAME\")")
    targets = tuple(_target(w, (*path, "targets"), s, hosts, stores) for s in tgt_raw)
    for tgt in targets:
        for src in sources:
            if tgt.host == src.host and tgt.dataset is not None and (
                tgt.dataset == src.dataset or tgt.dataset.startswith(src.dataset + "/")
            ):
                raise w.error((*path, "targets"), f"target {tgt} lies inside source {src}")
    schedule = None
    if "schedule" in t:
        try:
            schedule = parse_schedule(_str(w, (*path, "schedule"), t["schedule"]))
        except ConfigError as exc:
            raise w.error((*path, "schedule"), str(exc)) from None
    pattern = _opt_str(w, (*path, "snapshot"), t.get("snapshot"))
    if pattern is not None:
        _check_pattern(w, (*path, "snapshot"), pattern)
    retention = _retention(w, (*path, "retention"), t.get("retention", {}))
    failover = None
    if "failover" in t:
        if len(sources) != 1:
            raise w.error((*path, "failover"), "failover needs a job with exactly one source "
                          "(the primary's datasets); split the job per source")  # fmt: skip
        failover = parse_failover(name, t["failover"], hosts=hosts, source_host=sources[0].host,
                                  replica_hosts={x.host for x in targets if x.host},
                                  where=w.source, error=w.error)  # fmt: skip
        if failover.primary not in {sources[0].host, *(x.host for x in targets if x.host)}:
            raise w.error((*path, "failover", "primary"),
                          f"{failover.primary!r} holds none of the job's datasets (the source "
                          f"{sources[0].host!r} or a target host)")  # fmt: skip
    incremental = _str(w, (*path, "incremental"), t.get("incremental", "I"))
    if incremental not in INCREMENTAL_POLICIES:
        raise w.error((*path, "incremental"), "must be \"I\" (one -I send) or \"i\" (chain of -i)")
    return JobConfig(
        name=name,
        sources=sources,
        targets=targets,
        recursive=_bool(w, (*path, "recursive"), t.get("recursive", True)),
        include=tuple(_str_list(w, (*path, "include"), t.get("include", []))),
        exclude=tuple(_str_list(w, (*path, "exclude"), t.get("exclude", []))),
        schedule=schedule,
        snapshot_pattern=pattern,
        retention=retention,
        force_rollback=_bool(w, (*path, "force_rollback"), t.get("force_rollback", False)),
        incremental="I" if incremental == "I" else "i",
        mount_targets=_bool(w, (*path, "mount_targets"), t.get("mount_targets", False)),
        failover=failover,
        kinds=kinds,
    )


def _retention(w: _Where, path: tuple[str, ...], raw: Any) -> tuple[RetentionRule, ...]:
    """A retention table (``{ "glob" = keep, ... }``), a job's or a kind's."""
    rules = []
    for pat, keep in _table(w, path, raw).items():
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise w.error((*path, pat), f"keep must be an integer >= 1: {keep!r}")
        rules.append(RetentionRule(pattern=pat, keep=keep))
    return tuple(rules)


# -- value checks ---------------------------------------------------------------------------


def _check_pattern(w: _Where, path: tuple[str, ...], pattern: str) -> None:
    import time

    try:
        sample = time.strftime(pattern, time.gmtime(0))
    except ValueError as exc:
        raise w.error(path, f"bad strftime pattern: {exc}") from None
    if not sample or not re.fullmatch(r"[A-Za-z0-9_.:-]+", sample) or sample == pattern:
        raise w.error(
            path,
            f"pattern must give a snapshot name of letters, digits, '_.:-' and contain a time "
            f"field such as %Y%m%dT%H%M%SZ (gives {sample!r})",
        )


def _ref(
    w: _Where, path: tuple[str, ...], text: str, hosts: Mapping[str, HostConfig]
) -> DatasetRef:
    host, sep, dataset = text.partition(":")
    if not sep or not dataset:
        raise w.error(path, f"{text!r} is not \"host:dataset\"")
    if host not in hosts:
        raise w.error(path, f"unknown host {host!r} in {text!r} (hosts: {', '.join(hosts)})")
    if not _DATASET.match(dataset) or "@" in dataset:
        raise w.error(path, f"{dataset!r} is not a dataset name")
    return DatasetRef(host=host, dataset=dataset)


def _target(
    w: _Where,
    path: tuple[str, ...],
    text: str,
    hosts: Mapping[str, HostConfig],
    stores: Mapping[str, StoreConfig],
) -> JobTarget:
    if text.startswith(STORE_PREFIX):
        name = text[len(STORE_PREFIX) :]
        if name not in stores:
            raise w.error(path, f"unknown store {name!r} (stores: {', '.join(stores) or 'none'})")
        return JobTarget(store=name)
    ref = _ref(w, path, text, hosts)
    return JobTarget(host=ref.host, dataset=ref.dataset)


def _address(w: _Where, path: tuple[str, ...], raw: Any) -> str:
    text = _str(w, path, raw)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise w.error(path, f"{text!r} is not \"host:port\"")
    return text


def _table(w: _Where, path: tuple[str, ...], raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise w.error(path, f"must be a table, not {type(raw).__name__}")
    return raw


def _only(w: _Where, path: tuple[str, ...], t: Mapping[str, Any], allowed: set[str]) -> None:
    for key in t:
        if key not in allowed:
            raise w.error((*path, key), f"unknown key (known: {', '.join(sorted(allowed))})")


def _str(w: _Where, path: tuple[str, ...], raw: Any) -> str:
    if not isinstance(raw, str):
        raise w.error(path, f"must be a string, not {type(raw).__name__}")
    return raw


def _opt_str(w: _Where, path: tuple[str, ...], raw: Any) -> str | None:
    return None if raw is None else _str(w, path, raw)


def _bool(w: _Where, path: tuple[str, ...], raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise w.error(path, f"must be true or false, not {raw!r}")
    return raw


def _str_list(w: _Where, path: tuple[str, ...], raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise w.error(path, "must be a list of strings")
    return raw
