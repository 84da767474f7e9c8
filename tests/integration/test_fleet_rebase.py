"""Rebase as a fleet job: real redis-server, `zfleet worker` processes for alpha and beta, a
coordinator, `zfleet rebase HOST:IMAGE --onto HOST:BASE@SNAP -c fleet.toml`.

The story: alpha holds a base and an image imported as a full copy of it (plus a few files of
its own); the sync job `img` replicates both to beta. The image is rebased onto the base
(keep-content) with `--sync img`: beta's old replica is set aside, and the sync sends the image
as a clone of the base beta already holds, so the bytes sent are the image's own delta, not the
image. Both copies have exactly the image's files. The bad cases go through the same path: a
base that is not a snapshot (exit 2, no job), an image in use (ImageInUse), a conflict (exit 3),
a pool that fills up midway (RebaseNoSpace); each leaves every name and file as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.demo.verify import snapshot_files
from coordinator import engine
from coordinator.jobstore import JobStore
from protocol.steps import TransferArgs
from tests.services.fleet import Fleet, running_fleet
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount, names
from workers.zfs.base import ObjType
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTS = ("alpha", "beta")
CONFIG = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""
OWN = 64 * 1024  # the image's own file: what a replica must receive after the rebase


def build(alpha: SimBackend) -> None:
    """tank/img/base@v1 (about 3 MiB) and tank/img/app, a full copy of it plus its own file."""
    alpha.create_pool("tank")
    alpha.create("tank/img")
    alpha.create("tank/img/base")
    base = mount(alpha, "tank/img/base")
    fill_base(base)
    (base / "usr" / "share").mkdir()
    (base / "usr" / "share" / "data.bin").write_bytes(os.urandom(2 << 20))
    alpha.snapshot(["tank/img/base@v1"])
    alpha.create("tank/img/app")
    app = mount(alpha, "tank/img/app")
    copy_tree(base, app)
    # copy_tree makes new inodes; keep the base's hard link, so the image's own data is app.conf
    alias = app / "usr" / "bin" / "tool-alias"
    alias.unlink()
    os.link(app / "usr" / "bin" / "tool", alias)
    (app / "etc" / "app.conf").write_bytes(os.urandom(OWN))
    alpha.snapshot(["tank/img/app@import"])
    # for the conflict: an image that is a clone of v1 with its own hosts file, and a v2 of the
    # base that changed the same file
    alpha.clone("tank/img/base@v1", "tank/img/web")
    (mount(alpha, "tank/img/web") / "etc" / "hosts").write_text("10.0.0.1 web\n")
    (base / "etc" / "hosts").write_text("127.0.0.1 localhost base-v2\n")
    alpha.snapshot(["tank/img/base@v2"])
    # for the full pool: a small pool with a base and a full copy carrying 2 MB of its own
    alpha.create_pool("small", size=6_000_000)
    alpha.create("small/base")
    fill_base(mount(alpha, "small/base"))
    alpha.snapshot(["small/base@v1"])
    alpha.create("small/app")
    sapp = mount(alpha, "small/app")
    copy_tree(mount(alpha, "small/base"), sapp)
    for i in range(8):
        (sapp / f"own-{i}.bin").write_bytes(os.urandom(250_000))
    alpha.snapshot(["small/app@s"])


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path, redis_server, HOSTS, CONFIG) as f:
        build(f.backend("alpha"))
        f.backend("beta").create_pool("bk")
        for host in HOSTS:
            f.start_worker(host)
        f.start_coordinator()
        yield f


def run(fleet: Fleet, *args: str, code: int = 0) -> dict[str, Any]:
    out = fleet.cli(*args, "--config", str(fleet.config), "--json", timeout=240)
    assert out.returncode == code, (
        f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}\n" + fleet.logs()
    )
    return dict(json.loads(out.stdout)) if out.stdout.strip() else {}


def sent(job: dict[str, Any]) -> int:
    return sum(int(s["result"].get("bytes") or 0) for s in job["step_list"]
               if s["kind"] == "transfer")  # fmt: skip


def sent_for(fleet: Fleet, job_id: str, dataset: str) -> list[tuple[str | None, int]]:
    """``(from_snap, bytes)`` of each of the job's transfers of ``dataset``'s snapshots."""
    job = JobStore(fleet.client()).load(job_id)
    assert job is not None
    out = []
    for s in job.steps.values():
        if isinstance(s.args, TransferArgs) and s.args.send.snapshot.split("@")[0] == dataset:
            out.append((s.args.send.from_snap, int(s.result.get("bytes") or 0)))
    return out


def replica_listing(backend: SimBackend, dataset: str) -> dict[str, tuple[object, ...]]:
    """What a user would see in the replica's newest snapshot (through a temporary clone)."""
    snaps = [o for o in backend.list(dataset) if o.type is ObjType.SNAPSHOT]
    newest = max((o for o in snaps if o.dataset == dataset), key=lambda o: o.createtxg)
    with snapshot_files(backend, newest.name, "bk/scratch") as mp:
        seen = listing(Path(mp))
    seen.pop(".", None)  # the temporary clone's root directory is its own
    return seen


def test_a_rebased_image_reaches_the_replica_as_its_delta_only(fleet: Fleet) -> None:
    alpha, beta = fleet.backend("alpha"), fleet.backend("beta")
    first = run(fleet, "sync", "img", "--wait")
    assert first["status"] == engine.JOB_SUCCEEDED
    image_bytes = int(alpha.get("tank/img/app", ["used"])["used"].value)
    first_sent = sent(first)
    assert first_sent > 2 * image_bytes * 0.9  # base and image, each whole
    before = listing(mount(alpha, "tank/img/app"))
    before.pop(".", None)

    time.sleep(1.1)  # the sync's snapshot names have a resolution of one second
    out = run(fleet, "rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base@v1",
              "--keep-content", "--sync", "img")  # fmt: skip
    assert out["status"] == engine.JOB_SUCCEEDED
    (img,) = out["report"]["images"]
    assert img["method"] == "keep-content" and img["backup"].startswith("tank/img/app.pre-rebase-")
    assert alpha.get("tank/img/app", ["origin"])["origin"].value == "tank/img/base@v1"
    assert out["sync"]["status"] == engine.JOB_SUCCEEDED
    after_sent = out["sync"]["sent_bytes"]
    # only the image's own blocks (and metadata) moved, never the image
    moved = sent_for(fleet, out["sync"]["id"], "tank/img/app")
    # the first of them an incremental from the base the replica host holds, none of them whole
    assert moved and all(frm for frm, _ in moved), moved
    assert str(moved[0][0]).endswith("tank/img/base@v1"), moved
    app_sent = sum(n for _, n in moved)
    assert OWN <= app_sent < OWN + 64 * 1024, app_sent
    assert after_sent < image_bytes / 10, (after_sent, image_bytes)
    assert beta.get("bk/img/app", ["origin"])["origin"].value == "bk/img/base@v1"
    aside = "bk/img/app" + img["backup"][len("tank/img/app"):]
    assert beta.exists(aside)  # the old replica, kept like the source's backup
    now = listing(mount(alpha, "tank/img/app"))
    now.pop(".", None)
    assert now == before
    assert replica_listing(beta, "bk/img/app") == before

    # run again: the image is a clone of the base already, nothing is rebased or sent whole
    again = run(fleet, "rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base@v1",
                "--keep-content")  # fmt: skip
    assert again["report"]["images"][0]["method"] == "none"
    print(f"\nfirst sync {first_sent} B; after rebase+sync {after_sent} B; "
          f"image {image_bytes} B")  # fmt: skip


def test_bad_rebases_through_the_fleet_change_nothing(fleet: Fleet) -> None:
    alpha = fleet.backend("alpha")
    store = JobStore(fleet.client())
    jobs = [j.id for j in store.recent(100)]
    state = {pool: names(alpha, pool) for pool in ("tank", "small")}
    trees = {ds: listing(mount(alpha, ds)) for ds in ("tank/img/app", "tank/img/web", "small/app")}

    def unchanged() -> None:
        assert {pool: names(alpha, pool) for pool in ("tank", "small")} == state
        assert {ds: listing(mount(alpha, ds)) for ds in trees} == trees

    # a base that is not a snapshot: bad input, no job at all
    out = fleet.cli("rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base",
                    "--config", str(fleet.config))  # fmt: skip
    assert out.returncode == 2 and "a snapshot is needed" in out.stderr, out.stderr
    out = fleet.cli("rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base@v1",
                    "--sync", "nope", "--config", str(fleet.config))  # fmt: skip
    assert out.returncode == 2 and "no job named 'nope'" in out.stderr, out.stderr
    assert [j.id for j in store.recent(100)] == jobs
    # a base snapshot that does not exist: refused at planning (exit 3)
    missing = run(fleet, "rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base@v9",
                  code=3)  # fmt: skip
    assert "alpha:tank/img/base@v9 does not exist" in json.dumps(missing["report"]["refusals"])
    unchanged()

    # a dry run of a proposal: the plan (base snapshot first, then the members), nothing done
    proposal = fleet.root / "proposal.json"
    proposal.write_text(json.dumps({"clusters": [
        {"base": "tank/img/app", "base_snapshot": "import", "base_bytes": 1,
         "members": [{"dataset": "tank/img/web"}]},
        {"base": "tank/img/web", "members": ["tank/img/db"]}]}))  # fmt: skip
    dry = run(fleet, "rebase", "--proposal", str(proposal), "--on", "alpha", "--dry-run",
              code=3)  # fmt: skip
    assert dry["report"]["refusals"] == [
        {"source": "alpha:tank/img/db", "target": "tank/img/web",
         "reason": "alpha:tank/img/db does not exist"}]  # fmt: skip
    proposal.write_text(json.dumps({"clusters": [
        {"base": "tank/img/base", "members": ["tank/img/app"]},
        {"base": "tank/img/app", "members": ["tank/img/web"]}]}))  # fmt: skip
    dry = run(fleet, "rebase", "--proposal", str(proposal), "--on", "alpha", "--dry-run",
              "--keep-content")  # fmt: skip
    plan = [(row["kind"], row["deps"]) for row in dry["report"]["plan"]]
    assert plan == [("snapshot", []), ("rebase", ["base-snapshot-1"]),
                    ("snapshot", ["rebase-1"]), ("rebase", ["rebase-1", "base-snapshot-2"])]
    # --optimize on alpha: the analysis there, then the members planned onto the medoid
    opt = run(fleet, "rebase", "--optimize", "tank/img/app", "tank/img/base", "tank/img/web",
              "--on", "alpha", "--keep-content", "--dry-run")  # fmt: skip
    (cluster,) = [c for c in opt["analysis"]["clusters"] if c["members"]]
    rebased = sorted(row["args"]["image"] for row in opt["report"]["plan"]
                     if row["kind"] == "rebase")  # fmt: skip
    assert rebased == sorted(m["dataset"] for m in cluster["members"]) and len(rebased) == 2
    unchanged()

    # an image in use: a process has its working directory in it
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            cwd=mount(alpha, "tank/img/app"))  # fmt: skip
    try:
        busy = run(fleet, "rebase", "alpha:tank/img/app", "--onto", "alpha:tank/img/base@v1",
                   "--keep-content", code=1)  # fmt: skip
    finally:
        user.kill()
        user.wait()
    step = next(s for s in busy["step_list"] if s["kind"] == "rebase")
    assert step["error_type"] == "ImageInUse" and str(user.pid) in step["error"]
    unchanged()

    # a conflict: etc/hosts changed in the image and between v1 and v2 of the base
    conflict = run(fleet, "rebase", "alpha:tank/img/web", "--onto", "alpha:tank/img/base@v2",
                   code=3)  # fmt: skip
    step = next(s for s in conflict["step_list"] if s["kind"] == "rebase")
    assert step["error_type"] == "RebaseConflict" and "etc/hosts" in step["error"]
    unchanged()

    # a pool that fills up while the new clone is written: rolled back
    allocated = alpha.pools()
    full = run(fleet, "rebase", "alpha:small/app", "--onto", "alpha:small/base@v1",
               "--keep-content", code=1)  # fmt: skip
    step = next(s for s in full["step_list"] if s["kind"] == "rebase")
    assert step["error_type"] == "RebaseNoSpace", step
    unchanged()
    assert [p.allocated for p in alpha.pools()] == [p.allocated for p in allocated]

    # the conflict resolved by a policy: the image's hosts file wins, the rest is v2
    won = run(fleet, "rebase", "alpha:tank/img/web", "--onto", "alpha:tank/img/base@v2",
              "--prefer", "image")  # fmt: skip
    assert won["status"] == engine.JOB_SUCCEEDED
    web = mount(alpha, "tank/img/web")
    assert (web / "etc" / "hosts").read_text() == "10.0.0.1 web\n"
    assert alpha.get("tank/img/web", ["origin"])["origin"].value == "tank/img/base@v2"
