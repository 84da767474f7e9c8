"""The container room without a running container: messages, the podman adapter's edges, and
a host without a runtime (the step fails before any dataset changes)."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from protocol.containersteps import (
    ContainerCheckpointArgs,
    ContainerCreateArgs,
    ContainerMount,
    ContainerPrepareArgs,
    ContainerRestoreArgs,
    ContainerSpec,
    ContainerStartArgs,
    ContainerStopArgs,
)
from protocol.errors import (
    CheckpointUnsupported,
    ContainerError,
    ContainerNotFound,
    MessageError,
    RuntimeMissing,
    ZfleetError,
)
from protocol.steps import STEP_KINDS, args_from_data, args_to_data
from workers import containersteps
from workers.containers.podman import NPROC_CAP, PodmanRuntime, criu_reason
from workers.containers.runtime import RunSpec
from workers.steps import HANDLERS, StepContext, run_step
from workers.zfs.sim import SimBackend

SPEC = ContainerSpec(
    name="web", image="tank/img@v1", root="tank/zfleet-containers/web/root",
    checkpoints="tank/zfleet-containers/web/checkpoints",
    mounts=(ContainerMount("home", "tank/home/web", "/home"),
            ContainerMount("log", "tank/log/web", "/var/log/app", readonly=True)),
    command=("/bin/sh", "-c", "sleep 1"),
)  # fmt: skip
MESSAGES = (
    ContainerPrepareArgs(datasets=("tank/a",)), ContainerCreateArgs(spec=SPEC),
    ContainerStartArgs(spec=SPEC), ContainerStopArgs(name="web", timeout=3, remove=True),
    ContainerCheckpointArgs(spec=SPEC, snapshot="c1", leave_running=False, cold_fallback=True),
    ContainerRestoreArgs(spec=SPEC, snapshot="c1", rollback=False),
)  # fmt: skip


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.KIND)
def test_every_kind_round_trips_and_has_a_handler(msg: object) -> None:
    data = args_to_data(msg)  # type: ignore[arg-type]
    assert args_from_data(data) == msg
    assert STEP_KINDS[type(msg).KIND] is type(msg)  # type: ignore[attr-defined]
    assert type(msg) in HANDLERS


def test_an_unknown_field_is_refused_not_dropped() -> None:
    data = args_to_data(ContainerCheckpointArgs(spec=SPEC, snapshot="c1"))
    with pytest.raises(MessageError):
        args_from_data({**data, "pre_dump": True})
    spec = dict(data["spec"])  # type: ignore[call-overload]
    with pytest.raises(MessageError):
        args_from_data({**data, "spec": {**spec, "privileged": True}})


def test_spec_names_its_datasets_and_refuses_bad_mounts() -> None:
    assert SPEC.datasets == (SPEC.root, SPEC.checkpoints, "tank/home/web", "tank/log/web")
    assert SPEC.image_dataset == "tank/img"
    with pytest.raises(ValueError, match="kind"):
        ContainerMount("cache", "tank/c", "/c")
    with pytest.raises(ValueError, match="absolute"):
        ContainerMount("home", "tank/h", "home")
    with pytest.raises(ContainerError, match="command"):
        RunSpec(name="x", rootfs="/r", command=())


def test_errors_sit_in_the_one_tree() -> None:
    for cls in (RuntimeMissing, ContainerNotFound, CheckpointUnsupported):
        assert issubclass(cls, ContainerError) and issubclass(cls, ZfleetError)
    err = CheckpointUnsupported("no", reason="vdso: Unexpected rt vDSO area bounds")
    assert err.reason in err.stderr


def test_podman_missing_is_runtime_missing(tmp_path: Path) -> None:
    rt = PodmanRuntime(tmp_path, binary="podman-not-installed-here")
    with pytest.raises(RuntimeMissing, match="not installed"):
        rt.check()
    with pytest.raises(RuntimeMissing):
        rt.inspect("web")


def test_criu_missing_is_a_reason() -> None:
    assert criu_reason("criu-not-installed-here") == "criu-not-installed-here is not installed"


def test_container_conf_follows_own_limits(tmp_path: Path) -> None:
    """podman's defaults (1,048,576) break runc where the hard limit is lower."""
    rt = PodmanRuntime(tmp_path)
    text = rt._conf().read_text()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    hard_nofile = int(text.split('"nofile=')[1].split('"')[0].split(":")[1])
    hard_nproc = int(text.split('"nproc=')[1].split('"')[0].split(":")[1])
    assert hard_nofile <= (nofile if nofile >= 0 else hard_nofile)
    assert hard_nproc <= min(nproc if nproc >= 0 else NPROC_CAP, NPROC_CAP)


def test_podman_errors_are_typed(tmp_path: Path) -> None:
    rt = PodmanRuntime(tmp_path)
    gone = subprocess.CompletedProcess(["podman"], 125, "",
                                       "Error: no such container web\n")  # fmt: skip
    assert isinstance(rt._error(["start", "web"], gone), ContainerNotFound)
    other = subprocess.CompletedProcess(["podman"], 126, "", "Error: OCI permission denied\n")
    err = rt._error(["start", "web"], other)
    assert type(err) is ContainerError and "OCI permission denied" in str(err)


def test_a_host_without_podman_changes_no_dataset(tmp_path: Path) -> None:
    be = SimBackend(tmp_path / "alpha")
    be.create_pool("tank")
    be.create("tank/img")
    be.create("tank/home/web", parents=True)
    be.create("tank/log/web", parents=True)
    be.snapshot(["tank/img@v1"])
    containersteps.configure(lambda host: PodmanRuntime(tmp_path / host, binary="no-podman"))
    try:
        with pytest.raises(RuntimeMissing, match="no-podman is not installed"):
            run_step(StepContext(host="alpha", backend=be), ContainerCreateArgs(spec=SPEC))
    finally:
        containersteps.configure(None)
    assert not be.exists(SPEC.root) and not be.exists(SPEC.checkpoints)


def test_files_through_an_exec_prefix(tmp_path: Path) -> None:
    """Behind a prefix (ssh on real hosts; ``env`` here) the manifests are read and written on
    that host with sh and cat."""
    rt = PodmanRuntime(tmp_path, exec_prefix=("env",))
    target = tmp_path / "c1 it's.json"
    assert rt.read_text(target) is None and rt.file_size(target) is None
    rt.write_text(target, '{"mode": "cold"}')
    assert target.read_text() == '{"mode": "cold"}'
    assert rt.read_text(target) == '{"mode": "cold"}' and rt.file_size(target) == 16
    missing = PodmanRuntime(tmp_path, exec_prefix=("env",), binary="no-podman-here")
    with pytest.raises(RuntimeMissing, match="no-podman-here is not installed"):
        missing.check()
