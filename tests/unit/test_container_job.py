"""The container job kind without services: requests refused before a job exists, the shapes of
the jobs, and clone-aware planning over simulated hosts' real inventories."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.containers import CheckpointRecord, ContainerRecord, spec_from_data, spec_to_data
from coordinator.config import parse_config
from coordinator.containerjob import (
    _parents_to_create,
    make_spec,
    new_container_job,
    transfer_steps,
)
from coordinator.graph import FleetGraph
from protocol.containersteps import ContainerCheckpointArgs
from protocol.errors import AddressError, ConfigError, PlanRefused
from protocol.steps import SnapshotArgs, TransferArgs
from protocol.zfs import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

CONFIG = """
[hosts.alpha]
backend = "sim"
sim_root = "/x/alpha"

[hosts.beta]
backend = "sim"
sim_root = "/x/beta"
"""
FLEET = parse_config(CONFIG)
SPEC = make_spec("web", "tank/images/busybox@v1", home="tank/home/web", log_ds="tank/log/web",
                 command=("/bin/sh",))  # fmt: skip
RECORD = ContainerRecord(name="web", host="alpha", spec=SPEC,
                         checkpoints=(CheckpointRecord("c1", "cold"),))  # fmt: skip


def job(op: str, record: ContainerRecord | None = RECORD, **params: object) -> list[str]:
    j = new_container_job(CONFIG, FLEET, op, {"name": "web", **params}, record, now=0.0)
    return list(j.steps)


@pytest.mark.parametrize(("op", "params", "record", "error", "words"), [
    ("create", {"name": "bad name"}, None, ConfigError, "not a container name"),
    ("create", {"image": "alpha:tank/images/busybox@v1", "host": "zeta"}, None, AddressError,
     "unknown host"),
    ("create", {"image": "beta:tank/images/busybox@v1", "host": "alpha"}, None, AddressError,
     "must be on alpha"),
    ("create", {"image": "alpha:tank/images/busybox", "host": "alpha"}, None, AddressError,
     "a snapshot is needed"),
    ("create", {"image": "alpha:tank/images/busybox@v1", "host": "alpha", "home": "tank/h@x"},
     None, ConfigError, "--home"),
    ("create", {"image": "alpha:tank/images/busybox@v1", "host": "alpha"}, RECORD, ConfigError,
     "exists already"),
    ("checkpoint", {}, None, ConfigError, "no container 'web'"),
    ("checkpoint", {"checkpoint": "a@b"}, RECORD, ConfigError, "invalid character"),
    ("restore", {"checkpoint": "c9"}, RECORD, ConfigError, "known: c1"),
    ("send", {"to": "alpha"}, RECORD, AddressError, "runs on alpha already"),
    ("send", {"to": "zeta"}, RECORD, AddressError, "unknown host"),
])  # fmt: skip
def test_bad_requests_are_refused_before_a_job_exists(
    op: str, params: dict[str, object], record: ContainerRecord | None,
    error: type[Exception], words: str,
) -> None:  # fmt: skip
    with pytest.raises(error, match=words):
        new_container_job(CONFIG, FLEET, op, {"name": "web", **params}, record)


def test_job_shapes() -> None:
    assert job("create", None, image="alpha:tank/images/busybox@v1", host="alpha") == [
        "inventory-alpha", "plan"]
    assert job("checkpoint") == ["checkpoint", "record"]
    assert job("restore", checkpoint="c1") == ["restore", "record"]
    assert job("send", to="beta") == ["freeze", "inventory-alpha", "inventory-beta", "plan"]
    assert job("send", to="beta", live=True) == [
        "precopy", "inventory-alpha", "inventory-beta", "plan"]
    cold = new_container_job(CONFIG, FLEET, "send", {"name": "web", "to": "beta"}, RECORD)
    freeze = cold.steps["freeze"].args
    assert isinstance(freeze, ContainerCheckpointArgs) and freeze.cold and freeze.leave_running
    moved = new_container_job(CONFIG, FLEET, "send", {"name": "web", "to": "beta",
                                                      "stop_source": True}, RECORD)  # fmt: skip
    assert not moved.steps["freeze"].args.leave_running  # type: ignore[attr-defined]
    live = new_container_job(CONFIG, FLEET, "send", {"name": "web", "to": "beta", "live": True},
                             RECORD)  # fmt: skip
    pre = live.steps["precopy"].args
    assert isinstance(pre, SnapshotArgs) and len(pre.names) == len(SPEC.datasets)


def test_spec_round_trips_and_the_record_knows_its_datasets() -> None:
    assert spec_from_data(spec_to_data(SPEC)) == SPEC
    assert SPEC.root == "tank/zfleet-containers/web/root"
    assert RECORD.uses("tank/home/web") and RECORD.uses("tank/home") and RECORD.uses("tank")
    assert RECORD.uses("tank/images/busybox")  # the shared image counts: a rebase swaps it
    assert not RECORD.uses("tank/home/ana") and not RECORD.uses("tank/hom")
    assert make_spec("db", "tank/i@v1").command == ("/sbin/init",)


def _hosts(tmp_path: Path) -> tuple[SimBackend, SimBackend]:
    alpha, beta = SimBackend(tmp_path / "alpha"), SimBackend(tmp_path / "beta")
    for be in (alpha, beta):
        be.create_pool("tank")
    alpha.create("tank/images/busybox", parents=True)
    Path(alpha.mountpoint("tank/images/busybox") or "", "big").write_bytes(b"x" * 300_000)
    alpha.snapshot(["tank/images/busybox@v1"])
    alpha.create("tank/zfleet-containers/web", parents=True)
    alpha.clone("tank/images/busybox@v1", SPEC.root)
    for ds in (SPEC.checkpoints, "tank/home/web", "tank/log/web"):
        alpha.create(ds, parents=True)
    alpha.snapshot([f"{d}@send-1" for d in SPEC.datasets])
    return alpha, beta


def _graph(**hosts: SimBackend) -> FleetGraph:
    g = FleetGraph()
    for name, be in hosts.items():
        g.add_inventory(name, be.list())
    return g


def _sends(steps: list) -> dict[str, tuple[str | None, str | None]]:  # type: ignore[type-arg]
    out = {}
    for s in steps:
        if isinstance(s.args, TransferArgs):
            (t,) = s.args.targets
            out[s.args.source] = (s.args.send.from_snap, t.origin)
    return out


def test_the_root_goes_as_a_clone_and_only_what_the_target_lacks(tmp_path: Path) -> None:
    alpha, beta = _hosts(tmp_path)
    steps, _ = transfer_steps(_graph(alpha=alpha, beta=beta), SPEC, "alpha", "beta",
                              job_id="j1", prefix="final-")  # fmt: skip
    sent = _sends(steps)
    assert sent["tank/images/busybox"] == (None, None)  # full: beta lacks it
    assert sent[SPEC.root] == ("tank/images/busybox@v1", "tank/images/busybox@v1")
    assert set(sent) == {"tank/images/busybox", *SPEC.datasets}
    assert all(s.id.startswith("final-tank-") for s in steps)
    assert _parents_to_create(_graph(beta=beta), SPEC, "beta") == (
        "tank/home", "tank/images", "tank/log", "tank/zfleet-containers",
        "tank/zfleet-containers/web")

    # beta holds the image already (same guid): it does not move again, the root still clones
    beta.create("tank/images")
    stream = alpha.send(SendSpec(snapshot="tank/images/busybox@v1"))
    sink = beta.receive(ReceiveSpec(target="tank/images/busybox"))
    while chunk := stream.read(1 << 20):
        sink.write(chunk)
    sink.finish()
    steps, _ = transfer_steps(_graph(alpha=alpha, beta=beta), SPEC, "alpha", "beta",
                              job_id="j1", prefix="final-")  # fmt: skip
    sent = _sends(steps)
    assert "tank/images/busybox" not in sent
    assert sent[SPEC.root] == ("tank/images/busybox@v1", "tank/images/busybox@v1")


def test_a_target_without_the_pool_is_refused(tmp_path: Path) -> None:
    alpha, _ = _hosts(tmp_path)
    other = SimBackend(tmp_path / "gamma")
    other.create_pool("data")
    with pytest.raises(PlanRefused, match="has no pool 'tank'"):
        transfer_steps(_graph(alpha=alpha, gamma=other), SPEC, "alpha", "gamma", job_id="j",
                       prefix="")  # fmt: skip


