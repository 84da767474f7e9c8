"""The container hooks' pure part: a container's spec renamed to the datasets of the host a
switchover or failover moves it to, and refused when the job does not carry all of them."""

from __future__ import annotations

from bus.containers import ContainerRecord
from coordinator.containerhooks import moved_spec, moving, start_steps, stop_steps
from protocol.containersteps import ContainerMount, ContainerSpec, ContainerStartArgs

SPEC = ContainerSpec(
    name="web", image="tank/images/busybox@v1", root="tank/zfleet-containers/web/root",
    checkpoints="tank/zfleet-containers/web/checkpoints",
    mounts=(ContainerMount("home", "tank/home/web", "/home"),), command=("/bin/sh",),
)  # fmt: skip
ALL = ("tank/images/busybox", SPEC.root, SPEC.checkpoints, "tank/home/web")


def test_a_spec_moves_under_the_new_hosts_names_or_not_at_all() -> None:
    where = {d: "bk/" + d for d in ALL}
    moved = moved_spec(SPEC, where)
    assert moved is not None
    assert moved.image == "bk/tank/images/busybox@v1"
    assert (moved.root, moved.checkpoints) == ("bk/" + SPEC.root, "bk/" + SPEC.checkpoints)
    assert [(m.dataset, m.path) for m in moved.mounts] == [("bk/tank/home/web", "/home")]
    assert moved.command == SPEC.command and moved.name == "web"
    del where["tank/home/web"]  # the job does not replicate the home: the container stays
    assert moved_spec(SPEC, where) is None
    specs, left = moving([ContainerRecord(name="web", host="alpha", spec=SPEC)], where)
    assert (specs, left) == ([], ["web"])


def test_one_start_per_container_and_step_ids_name_host_and_container() -> None:
    other = moved_spec(SPEC, {d: "bk/" + d for d in ALL})
    assert other is not None
    (step,) = start_steps([other, SPEC], "beta", deps=("promote-new",))
    assert step.id == "container-start-beta-web" and step.deps == ("promote-new",)
    assert isinstance(step.args, ContainerStartArgs) and step.args.spec == other
    (stop,) = stop_steps([ContainerRecord(name="web", host="alpha", spec=SPEC)], "alpha")
    assert stop.id == "container-stop-alpha-web" and stop.host == "alpha"
