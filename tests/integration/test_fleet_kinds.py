"""Kinds against a real fleet: real redis-server, `zfleet worker` processes for alpha, beta and
gamma, a coordinator, and a fleet config with [kinds] policies.

The story: mark homes, scratch and an image with `zfleet kind set` (a job through alpha's worker);
`show` says where a kind comes from; a home inside the image is refused and changes nothing; a
sync sends homes to beta only, scratch nowhere, the rest everywhere; `status` groups datasets by
kind; `kind mounts` lists the homes two containers mount. Bad requests fail with exit code 2
before any job exists. Two containers created by name get the homes their kind's policy mounts
(real podman): both see the same files, and neither root (a clone of the image) holds them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import containers as records
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.kinds import KIND_PROPERTY
from tests.conftest import need
from tests.integration.test_containers_fleet import IMAGE, busybox_image
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.containers.podman import PodmanRuntime
from workers.zfs.sim import SimBackend

# a dozen CLI runs and three jobs through real processes: ~1 min idle, much more on a busy machine
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(480)]

HOSTS = ("alpha", "beta", "gamma")
CONFIG = """
[kinds.home]
hosts = ["beta"]
retention = { "zfleet-*" = 5 }
mounts = ["editor", "browser"]

[jobs.t]
source = "alpha:tank/t"
targets = ["beta:bk/t", "gamma:bk/t"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""
DATASETS = ("tank/t", "tank/t/homes", "tank/t/homes/alice", "tank/t/homes/bob", "tank/t/scratch",
            "tank/t/img", "tank/t/img/data")  # fmt: skip


def kind_of(backend: SimBackend, dataset: str) -> str | None:
    found = backend.get(dataset, [KIND_PROPERTY]).get(KIND_PROPERTY)
    return found.value if found is not None else None


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, CONFIG) as f:
        alpha = f.backend("alpha")
        alpha.create_pool("tank")
        for name in DATASETS:
            alpha.create(name)
            mp = alpha.mountpoint(name)
            assert mp is not None
            Path(mp, "file").write_bytes(name.encode() * 100)
        for host in ("beta", "gamma"):
            f.backend(host).create_pool("bk")
        for host in HOSTS:
            f.start_worker(host)
        f.start_coordinator()
        yield f


def run(fleet: Fleet, *args: str, code: int = 0) -> dict[str, Any]:
    out = fleet.cli(*args, "--config", str(fleet.config), "--json", timeout=240)
    assert out.returncode == code, f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n" \
        + fleet.logs()
    return dict(json.loads(out.stdout)) if out.stdout.strip() else {}


def test_kinds_are_set_through_workers_and_the_sync_follows_them(fleet: Fleet) -> None:
    alpha = fleet.backend("alpha")
    homes = run(fleet, "kind", "set", "alpha:tank/t/homes", "home")
    assert homes["status"] == engine.JOB_SUCCEEDED
    assert homes["kind"]["kind"] == "home" and homes["kind"]["source"] == "local"
    assert homes["kind"]["policy"]["hosts"] == ["beta"]
    run(fleet, "kind", "set", "alpha:tank/t/scratch", "temp")
    run(fleet, "kind", "set", "alpha:tank/t/img", "image")
    alice = run(fleet, "kind", "show", "alpha:tank/t/homes/alice")
    assert alice["kind"]["kind"] == "home"
    assert alice["kind"]["source"] == "inherited from tank/t/homes"
    assert alice["kind"]["mounted_in"] == ["browser", "editor"]
    shown = fleet.cli("kind", "show", "alpha:tank/t/homes/alice", "--config", str(fleet.config))
    assert shown.returncode == 0, shown.stderr
    assert "alpha:tank/t/homes/alice: home (inherited from tank/t/homes)" in shown.stdout
    assert "replicates to: beta; store: yes" in shown.stdout
    # a home inside the image's tree: refused, nothing set
    refused = run(fleet, "kind", "set", "alpha:tank/t/img/data", "home", code=3)
    assert "lies inside alpha:tank/t/img" in json.dumps(refused["report"]["refusals"])
    assert kind_of(alpha, "tank/t/img/data") == "image"  # still inherited from tank/t/img

    out = fleet.cli("sync", "t", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    store = JobStore(fleet.client())
    job = wait_job(store, json.loads(out.stdout)["id"], timeout=120)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}\n{fleet.logs()}"
    beta, gamma = fleet.backend("beta"), fleet.backend("gamma")
    assert beta.exists("bk/t/homes/alice") and beta.exists("bk/t/homes/bob")
    assert not gamma.exists("bk/t/homes") and gamma.exists("bk/t/img/data")
    assert not beta.exists("bk/t/scratch") and not gamma.exists("bk/t/scratch")
    assert any("kind temp never replicates" in n for n in job.report["notes"])
    # the replicas carry their kind (a plain send does not): after a failover it still holds
    assert kind_of(beta, "bk/t/homes") == "home" and kind_of(beta, "bk/t/homes/alice") == "home"
    assert kind_of(gamma, "bk/t/img") == "image" and kind_of(gamma, "bk/t") is None
    alpha.snapshot(["tank/t/homes/alice@extra"])
    out = fleet.cli("sync", "t", "--config", str(fleet.config), "--json")
    again = wait_job(store, json.loads(out.stdout)["id"], timeout=120)
    assert again.status == engine.JOB_SUCCEEDED, f"{again.error}\n{fleet.logs()}"
    assert again.report["refusals"] == []  # a labelled replica still takes increments
    assert not [s for s in again.steps.values() if s.kind == "set-property"]  # labelled once
    assert "extra" in {o.short for o in beta.list("bk/t/homes/alice")}

    status = run(fleet, "status")
    kinds = status["kinds"]
    assert kinds["home"]["datasets"] == ["alpha:tank/t/homes", "alpha:tank/t/homes/alice",
                                         "alpha:tank/t/homes/bob"]  # fmt: skip
    assert kinds["temp"]["datasets"] == ["alpha:tank/t/scratch"]
    assert kinds["image"]["datasets"] == ["alpha:tank/t/img", "alpha:tank/t/img/data"]
    assert kinds["no kind"]["datasets"] == ["alpha:tank/t"]
    assert status["layout_problems"] == []
    text = fleet.cli("status", "--config", str(fleet.config))
    assert text.returncode == 0, text.stderr
    assert "home (3): to beta; and stores; keep 5 zfleet-*" in text.stdout
    assert "temp (1): never replicated" in text.stdout
    mounts = run(fleet, "kind", "mounts", "editor")["mounts"]  # beta's replicas are not listed
    assert [(m["host"], m["dataset"], m["target"]) for m in mounts] == [
        ("alpha", "tank/t/homes/alice", "/home/alice"), ("alpha", "tank/t/homes/bob", "/home/bob")]

    # --inherit drops the dataset's own kind: scratch follows its job again
    cleared = run(fleet, "kind", "set", "alpha:tank/t/scratch", "--inherit")
    assert cleared["kind"]["kind"] is None and kind_of(alpha, "tank/t/scratch") is None


def test_bad_kind_requests_fail_before_any_job_exists(fleet: Fleet) -> None:
    store = JobStore(fleet.client())
    before = [j.id for j in store.recent(100)]
    for args, message in [
        (("kind", "set", "alpha:tank/t/homes", "hom"), "did you mean 'home'"),
        (("kind", "set", "delta:tank/t", "home"), "unknown host 'delta'"),
        (("kind", "set", "alpha:tank/t/homes"), "give a KIND"),
        (("kind", "show", "alpha:tank/t@s1"), "snapshot"),
    ]:
        out = fleet.cli(*args, "--config", str(fleet.config))
        assert out.returncode == 2, f"{args}: {out.stdout}{out.stderr}"
        assert message in out.stderr, out.stderr
    assert [j.id for j in store.recent(100)] == before
    assert kind_of(fleet.backend("alpha"), "tank/t/homes") is None
    missing = run(fleet, "kind", "set", "alpha:tank/t/nope", "home", code=1)
    assert "alpha:tank/t/nope does not exist" in json.dumps(missing)


def test_two_containers_mount_the_same_homes_by_policy_and_no_image_holds_them(
    fleet: Fleet,
) -> None:
    need(shutil.which("podman") is not None, "podman (scripts/system-deps containers)")
    alpha = fleet.backend("alpha")
    busybox_image(alpha)
    run(fleet, "kind", "set", "alpha:tank/t/homes", "home")
    names = ("editor", "browser")
    try:
        for name in names:  # no --home: [kinds.home] mounts = ["editor", "browser"]
            out = fleet.cli("container", "create", name, "--config", str(fleet.config), "--json",
                            "--image", f"alpha:{IMAGE}@v1", "--on", "alpha", "--",
                            "/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done",
                            timeout=300)  # fmt: skip
            assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{fleet.logs()}"
        podman = PodmanRuntime(fleet.root / "data" / "containers" / "alpha")
        for name in names:
            seen = podman.execute(name, ("/bin/busybox", "cat", "/home/alice/file"))
            assert seen == "tank/t/homes/alice" * 100
        # one dataset, two containers: a write in one is read in the other and on the host
        podman.execute("editor", ("/bin/sh", "-c", "echo from-editor > /home/bob/note"))
        assert podman.execute("browser", ("/bin/busybox", "cat", "/home/bob/note")) == \
            "from-editor\n"  # fmt: skip
        assert Path(alpha.mountpoint("tank/t/homes/bob") or "", "note").read_text() == \
            "from-editor\n"  # fmt: skip
        with fleet.client() as c:
            rec = records.get(c, "editor")
            assert rec is not None
            assert {(m.kind, m.dataset, m.path) for m in rec.spec.mounts} == {
                ("home", "tank/t/homes/alice", "/home/alice"),
                ("home", "tank/t/homes/bob", "/home/bob")}
        # the containers' roots are clones of the image: on the host their /home holds the
        # empty mountpoints and none of the homes' files
        for name in names:
            root = Path(alpha.mountpoint(f"tank/zfleet-containers/{name}/root") or "")
            assert sorted(p.name for p in (root / "home").iterdir()) == ["alice", "bob"]
            assert [p for p in (root / "home").rglob("*") if not p.is_dir()] == []
    finally:
        podman = PodmanRuntime(fleet.root / "data" / "containers" / "alpha")
        for name in names:
            podman.remove(name)
