"""Policies per dataset kind: ``[kinds.<kind>]`` in the fleet config, and what they decide.

A dataset's kind is its ``zfleet:kind`` user property (protocol/kinds.py), inherited like every
user property. A policy says, for every dataset of its kind that a job replicates::

    [kinds.home]
    hosts = ["alpha", "beta"]   # hosts it may live on: the job's host targets among them get it
    store = true                # whether it goes to the job's object-store targets
    retention = { "zfleet-*" = 48 }   # replaces the job's retention for this kind
    encryption = "required"     # "required" refuses an unencrypted dataset; default "optional"
    key_group = "team"          # the group key it must be encrypted under (needs "required")
    mounts = ["editor", "browser"]    # containers that mount each dataset of this kind
    mount_path = "/home"        # where: <mount_path>/<the dataset's last component>

Containers mount home, shared and log datasets (default paths /home, /shared, /var/log/zfleet).

``temp`` never replicates and never goes to a store, whatever the config says (a config that
asks for it is an error). Pure: the sync planner asks :func:`route` which targets a dataset goes
to, and :func:`retention_for` which rules prune it; the container runtime asks :func:`mounts_for`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from coordinator.graph import Dataset, FleetGraph
from protocol.errors import ConfigError
from protocol.kinds import DESCRIPTIONS, IMAGE_KINDS, PRIVATE_KINDS, Kind, parse_kind

if TYPE_CHECKING:
    from coordinator.config import JobConfig, JobTarget, RetentionRule

ENCRYPTION: Final = ("required", "optional")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KEYS: Final = frozenset({"hosts", "store", "retention", "encryption", "key_group", "mounts",
                          "mount_path"})  # fmt: skip
# the kinds a container mounts, and where by default (as protocol/containersteps.py's
# DEFAULT_PATHS: a policy's mounts become the container's ContainerMounts)
MOUNT_PATHS: Final[Mapping[Kind, str]] = {
    Kind.HOME: "/home", Kind.SHARED: "/shared", Kind.LOG: "/var/log/zfleet",
}  # fmt: skip


@dataclass(frozen=True)
class KindPolicy:
    """What the fleet does with every dataset of one kind."""

    kind: Kind
    hosts: tuple[str, ...] | None = None  # None: every host target of the job
    store: bool = True
    retention: tuple[RetentionRule, ...] | None = None  # None: the job's own rules
    encryption: Literal["required", "optional"] = "optional"
    key_group: str | None = None
    mounts: tuple[str, ...] = ()
    mount_path: str | None = None

    @property
    def replicates(self) -> bool:
        return self.kind is not Kind.TEMP and (self.hosts is None or bool(self.hosts) or
                                               self.store)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The policy as plain data (``zfleet kind show``, ``zfleet status --json``)."""
        return {
            "kind": self.kind.value, "description": DESCRIPTIONS[self.kind],
            "hosts": list(self.hosts) if self.hosts is not None else None, "store": self.store,
            "retention": ({r.pattern: r.keep for r in self.retention}
                          if self.retention is not None else None),
            "encryption": self.encryption, "key_group": self.key_group,
            "mounts": list(self.mounts), "mount_path": self.mount_path,
        }  # fmt: skip


def default_policies() -> dict[Kind, KindPolicy]:
    """The policies a fleet has without a ``[kinds]`` section: temp stays where it is, every
    other kind follows its job."""
    out = {k: KindPolicy(kind=k) for k in Kind}
    out[Kind.TEMP] = KindPolicy(kind=Kind.TEMP, hosts=(), store=False)
    return out


KindPolicies = Mapping[Kind, KindPolicy]
ErrorAt = Callable[[tuple[str, ...], str], ConfigError]
RetentionParser = Callable[[tuple[str, ...], Any], tuple["RetentionRule", ...]]


def parse_kinds(
    raw: Any, *, hosts: Iterable[str], error: ErrorAt, retention: RetentionParser
) -> dict[Kind, KindPolicy]:
    """Validate the ``[kinds]`` table (as ``tomllib`` gives it) over the defaults. ``error``
    builds a ConfigError naming the file, key and line; ``retention`` parses a retention table
    as a job's (both come from config.py)."""
    out = default_policies()
    if not isinstance(raw, dict):
        raise error(("kinds",), f"must be a table, not {type(raw).__name__}")
    known_hosts = set(hosts)
    for name, table in raw.items():
        path = ("kinds", name)
        try:
            kind = parse_kind(name)
        except ConfigError as exc:
            raise error(path, str(exc)) from None
        if not isinstance(table, dict):
            raise error(path, f"must be a table, not {type(table).__name__}")
        for key in table:
            if key not in _KEYS:
                raise error((*path, key), f"unknown key (known: {', '.join(sorted(_KEYS))})")
        out[kind] = _policy(kind, table, path, known_hosts=known_hosts, error=error,
                            retention=retention)  # fmt: skip
    return out


def _policy(
    kind: Kind, t: Mapping[str, Any], path: tuple[str, ...], *, known_hosts: set[str],
    error: ErrorAt, retention: RetentionParser,
) -> KindPolicy:  # fmt: skip
    hosts: tuple[str, ...] | None = None
    if "hosts" in t:
        hosts = tuple(_names(t["hosts"], (*path, "hosts"), error))
        unknown = [h for h in hosts if h not in known_hosts]
        if unknown:
            raise error((*path, "hosts"), f"unknown host {unknown[0]!r} (hosts: "
                        f"{', '.join(sorted(known_hosts)) or 'none'})")  # fmt: skip
    store = t.get("store", kind is not Kind.TEMP)
    if not isinstance(store, bool):
        raise error((*path, "store"), f"must be true or false, not {store!r}")
    if kind is Kind.TEMP and (hosts or store):
        raise error(path, "temp never replicates: leave out hosts and store (or pick a kind "
                    "that replicates)")  # fmt: skip
    rules = retention((*path, "retention"), t["retention"]) if "retention" in t else None
    encryption = t.get("encryption", "optional")
    if encryption not in ENCRYPTION:
        raise error((*path, "encryption"), f"must be one of {', '.join(ENCRYPTION)}, not "
                    f"{encryption!r}")  # fmt: skip
    key_group = t.get("key_group")
    if key_group is not None:
        if not isinstance(key_group, str) or not _NAME.match(key_group):
            raise error((*path, "key_group"), "a key group name is letters, digits, '_', '.', "
                        "'-' (up to 63)")  # fmt: skip
        if encryption != "required":
            raise error((*path, "key_group"), "a key group needs encryption = \"required\"")
    mounts = tuple(_names(t.get("mounts", []), (*path, "mounts"), error))
    if mounts and kind in IMAGE_KINDS:
        raise error((*path, "mounts"), f"a {kind} is cloned into a container's root, never "
                    "mounted into one: mounts are for home, shared and log")
    if mounts and kind not in MOUNT_PATHS:
        raise error((*path, "mounts"), f"a container mounts home, shared and log datasets, not "
                    f"{kind} (an ephemeral layer is mounted by its own command)")
    if len(set(mounts)) != len(mounts):
        raise error((*path, "mounts"), "names a container twice")
    mount_path = t.get("mount_path")
    if mount_path is not None:
        if not isinstance(mount_path, str) or not mount_path.startswith("/") or \
                ".." in mount_path.split("/") or "\0" in mount_path:  # fmt: skip
            raise error((*path, "mount_path"), "must be an absolute path without '..'")
        if not mounts:
            raise error((*path, "mount_path"), "needs mounts (the containers that mount it)")
    elif mounts:
        mount_path = MOUNT_PATHS[kind]
    return KindPolicy(kind=kind, hosts=hosts, store=store, retention=rules,
                      encryption="required" if encryption == "required" else "optional",
                      key_group=key_group, mounts=mounts, mount_path=mount_path)  # fmt: skip


def _names(raw: Any, path: tuple[str, ...], error: ErrorAt) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise error(path, "must be a list of names")
    for x in raw:
        if not _NAME.match(x):
            raise error(path, f"{x[:40]!r} is not a name (letters, digits, '_', '.', '-')")
    return raw


# -- what a dataset's kind decides ------------------------------------------------------------


def dataset_kind(ds: Dataset) -> Kind | None:
    """``ds``'s kind, or None without one; ConfigError for a value that is no kind."""
    if ds.kind is None or ds.kind in ("", "-"):
        return None
    try:
        return parse_kind(ds.kind)
    except ConfigError as exc:
        raise ConfigError(f"{ds.host}:{ds.name}: zfleet:kind: {exc}") from None


@dataclass
class Routing:
    """For one job target: the datasets it gets, the ones left out (with the reason, a note) and
    the ones refused (a policy that cannot be met, named in the job's report)."""

    kept: list[Dataset] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def route(
    graph: FleetGraph, job: JobConfig, src_host: str, selected: Sequence[Dataset], *,
    target: JobTarget, policies: KindPolicies,
) -> Routing:  # fmt: skip
    """Which of ``selected`` (parents first) go to ``target`` under ``policies``."""
    out = Routing()
    left_out: set[str] = set()
    for ds in selected:
        try:
            kind = dataset_kind(ds)
        except ConfigError as exc:
            out.refused[ds.name] = f"{exc}; fix it with `zfleet kind set`"
            left_out.add(ds.name)
            continue
        policy = policies.get(kind) if kind is not None else None
        why = _left_out(policy, target) if policy is not None else None
        if why is not None:
            out.skipped[ds.name] = why
            left_out.add(ds.name)
            continue
        parent = ds.name.rsplit("/", 1)[0] if "/" in ds.name else None
        if parent in left_out and target.host is not None:
            # received under a parent that is not there: zfs receive would fail
            tparent = job.target_dataset(_ref(job, src_host, ds.name), target, parent or "")
            if graph.dataset(target.host, tparent) is None:
                out.refused[ds.name] = (f"its parent {parent} does not go to {target} (its "
                                        "kind's policy), so it has nowhere to land")  # fmt: skip
                left_out.add(ds.name)
                continue
        if policy is not None and policy.encryption == "required" and not ds.encrypted:
            out.refused[ds.name] = (f"kind {policy.kind} requires encryption "
                                    f"(kinds.{policy.kind}.encryption) and it is not encrypted")
            left_out.add(ds.name)
            continue
        if policy is not None and policy.key_group and ds.key_group != policy.key_group:
            held = f"zfleet:keygroup={ds.key_group}" if ds.key_group else "no zfleet:keygroup"
            out.refused[ds.name] = (f"kind {policy.kind} requires the key of group "
                                    f"{policy.key_group} (kinds.{policy.kind}.key_group) and "
                                    f"the dataset has {held}")  # fmt: skip
            left_out.add(ds.name)
            continue
        out.kept.append(ds)
    return out


def _left_out(policy: KindPolicy, target: JobTarget) -> str | None:
    if policy.kind is Kind.TEMP:
        return "kind temp never replicates"
    if target.store is not None:
        return None if policy.store else f"kind {policy.kind} does not go to stores"
    if policy.hosts is not None and target.host not in policy.hosts:
        only = ", ".join(policy.hosts) or "no host"
        return f"kind {policy.kind} replicates to {only} only"
    return None


def _ref(job: JobConfig, host: str, dataset: str) -> Any:
    """The job source ``dataset`` lies under (target names are made from it)."""
    for src in job.sources:
        if src.host == host and (dataset == src.dataset or dataset.startswith(src.dataset + "/")):
            return src
    raise AssertionError(f"{host}:{dataset} is under no source of {job.name}")


def retention_for(
    ds: Dataset, job_rules: tuple[RetentionRule, ...], policies: KindPolicies | None
) -> tuple[RetentionRule, ...]:
    """The rules that prune ``ds`` (a source dataset) and its replicas: its kind's, when the
    kind's policy has its own, else the job's."""
    if policies is None:
        return job_rules
    try:
        policy = policy_of(ds, policies)
    except ConfigError:
        return ()  # refused by route: nothing is pruned either
    if policy is None or policy.retention is None:
        return job_rules
    return policy.retention


def policy_of(ds: Dataset, policies: KindPolicies) -> KindPolicy | None:
    """The policy of ``ds``'s kind (its encryption and key group, say), or None without a kind;
    ConfigError for a value that is no kind."""
    kind = dataset_kind(ds)
    return policies.get(kind) if kind is not None else None


# -- shared homes: which containers mount what ------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """One dataset a container mounts: where it lives and where it appears in the container."""

    host: str
    dataset: str
    kind: Kind
    target: str  # the path inside the container

    def to_dict(self) -> dict[str, str]:
        return {"host": self.host, "dataset": self.dataset, "kind": self.kind.value,
                "target": self.target}  # fmt: skip


def mounts_for(
    graph: FleetGraph, policies: KindPolicies, container: str, *, host: str | None = None,
    replicas: Collection[tuple[str, str]] = (),
) -> list[Mount]:  # fmt: skip
    """Every dataset (on ``host``, or on any host) whose kind's policy mounts it into
    ``container``, each at ``<mount_path>/<last component>``. A dataset with children of its
    own kind only groups them (``tank/homes`` above ``tank/homes/alice``): its children are
    listed, not it. Datasets at or under a ``(host, root)`` of ``replicas`` (the jobs' replicas,
    ``kindjob.replica_roots``) are never listed: a container writing into a replica would
    make it diverge from its primary."""
    out: list[Mount] = []
    for inv in sorted(graph.hosts.values(), key=lambda i: i.host):
        if host is not None and inv.host != host:
            continue
        roots = [r for h, r in replicas if h == inv.host]
        kinds = {name: _safe_kind(ds) for name, ds in inv.datasets.items()
                 if not any(name == r or name.startswith(r + "/") for r in roots)}
        groups = {name.rsplit("/", 1)[0] for name, k in kinds.items()
                  if "/" in name and k is not None and kinds.get(name.rsplit("/", 1)[0]) == k}
        for name in sorted(kinds):
            kind = kinds[name]
            policy = policies.get(kind) if kind is not None else None
            if policy is None or container not in policy.mounts or name in groups:
                continue
            leaf = name.rsplit("/", 1)[-1]
            out.append(Mount(inv.host, name, policy.kind, f"{policy.mount_path}/{leaf}"))
    return out


def containers(policies: KindPolicies) -> list[str]:
    """Every container some kind's policy mounts datasets into."""
    return sorted({c for p in policies.values() for c in p.mounts})


def layout_problems(graph: FleetGraph) -> list[str]:
    """Datasets whose place breaks the compartments: a home (or other private kind) inside an
    image's tree, where the image's recursive snapshots and sends would carry it along, or an
    image made from a clone of a private dataset, a copy of it in an image."""
    out: list[str] = []
    for ds in graph:
        try:
            kind = dataset_kind(ds)
        except ConfigError as exc:
            out.append(str(exc))
            continue
        if kind is None:
            continue
        if kind in PRIVATE_KINDS:
            above = image_ancestor(graph, ds)
            if above is not None:
                out.append(f"{ds.host}:{ds.name} ({kind}) lies inside {above} (an image's tree): "
                           "move it out and mount it by policy")  # fmt: skip
        if kind in IMAGE_KINDS and ds.origin_dataset:
            origin = graph.dataset(ds.host, ds.origin_dataset)
            okind = _safe_kind(origin) if origin is not None else None
            if okind in PRIVATE_KINDS:
                out.append(f"{ds.host}:{ds.name} ({kind}) is a clone of {ds.origin} "
                           f"({okind}): an image would carry that data")  # fmt: skip
    return out


def image_ancestor(graph: FleetGraph, ds: Dataset) -> str | None:
    """The nearest ancestor of ``ds`` on its host whose kind is an image kind, if any."""
    name = ds.name
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        up = graph.dataset(ds.host, name)
        if up is not None and _safe_kind(up) in IMAGE_KINDS:
            return f"{ds.host}:{name}"
    return None


def _safe_kind(ds: Dataset) -> Kind | None:
    try:
        return dataset_kind(ds)
    except ConfigError:
        return None
