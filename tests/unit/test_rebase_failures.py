"""Bad input gets a clear error and changes nothing; a failure part-way is rolled back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.errors import ImageInUse, RebaseError, RebaseNoSpace
from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount, names
from workers.rebase import Hooks, command_hook, rebase
from workers.rebase.swap import stamp
from workers.zfs.sim import SimBackend

NOW = 1_780_000_000.0


def build(tmp_path: Path, *, size: int = 10 << 30, extra: int = 0) -> SimBackend:
    """tank/base@v1, and tank/app: a full copy of it plus ``extra`` bytes of its own files."""
    sim = SimBackend(tmp_path / "pools")
    sim.create_pool("tank", size=size)
    sim.create("tank/base")
    fill_base(mount(sim, "tank/base"))
    sim.snapshot(["tank/base@v1"])
    sim.create("tank/app")
    app = mount(sim, "tank/app")
    copy_tree(mount(sim, "tank/base"), app)
    for i in range(extra // 250_000):
        (app / f"own-{i:02d}.bin").write_bytes(os.urandom(250_000))
    sim.snapshot(["tank/app@s"])  # settles the sim's space figures
    return sim


class State:
    """Everything a failed rebase must leave as it was."""

    def __init__(self, sim: SimBackend, tmp_path: Path) -> None:
        self.names = names(sim, "tank")
        self.tree = listing(mount(sim, "tank/app"))
        self.props = {
            k: v.value
            for k, v in sim.get("tank/app").items()
            if k
            not in (
                "used",
                "available",
                "written",
                "referenced",
                "logicalused",
                "logicalreferenced",
                "usedbydataset",
            )
        }
        self.dirs = sorted(p.name for p in mount(sim, "tank/app").parent.iterdir())

    def same(self, sim: SimBackend) -> bool:
        return self.__dict__ == State(sim, Path()).__dict__


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return build(tmp_path)


@pytest.mark.parametrize(
    ("image", "onto", "message"),
    [
        ("tank/app", "tank/base", "is not a snapshot"),
        ("tank/app", "tank/base@nope", "does not exist"),
        ("tank/nope", "tank/base@v1", "image 'tank/nope' does not exist"),
        ("tank/app@s", "tank/base@v1", "must be a filesystem"),
        ("tank/app", "tank/app@s", "its own snapshot"),
    ],
)
def test_bad_arguments_are_refused(
    sim: SimBackend, tmp_path: Path, image: str, onto: str, message: str
) -> None:
    state = State(sim, tmp_path)
    with pytest.raises(RebaseError, match=message):
        rebase(sim, image, onto, keep_content=True)
    assert state.same(sim)


def test_an_image_with_child_datasets_is_refused(sim: SimBackend, tmp_path: Path) -> None:
    sim.create("tank/app/data")
    state = State(sim, tmp_path)
    with pytest.raises(RebaseError, match="child datasets"):
        rebase(sim, "tank/app", "tank/base@v1", keep_content=True)
    assert state.same(sim)


def test_an_image_in_use_by_a_process_is_refused(sim: SimBackend, tmp_path: Path) -> None:
    state = State(sim, tmp_path)
    user = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=mount(sim, "tank/app")
    )
    try:
        with pytest.raises(ImageInUse, match=str(user.pid)):
            rebase(sim, "tank/app", "tank/base@v1", keep_content=True)
        assert state.same(sim)
        stopped: list[str] = []

        def stop(image: str, mountpoint: str | None) -> None:
            user.kill()
            user.wait()
            stopped.append(image)

        report = rebase(
            sim, "tank/app", "tank/base@v1", keep_content=True, hooks=Hooks(before=stop)
        )
        assert stopped == ["tank/app"] and report.backup is not None
    finally:
        user.kill()
        user.wait()


def test_a_hook_that_refuses_changes_nothing(sim: SimBackend, tmp_path: Path) -> None:
    state = State(sim, tmp_path)
    script = tmp_path / "refuse.sh"
    script.write_text('#!/bin/sh\necho "app $ZFLEET_IMAGE still serving" >&2\nexit 3\n')
    script.chmod(0o755)
    started: list[str] = []
    hooks = Hooks(before=command_hook([str(script)]), after=lambda i, m: started.append(i))
    with pytest.raises(ImageInUse, match="exited 3: app tank/app still serving"):
        rebase(sim, "tank/app", "tank/base@v1", keep_content=True, hooks=hooks)
    assert state.same(sim)
    assert started == []  # nothing was stopped, so nothing is started


def test_a_full_pool_midway_is_rolled_back(tmp_path: Path) -> None:
    sim = build(tmp_path, size=6_000_000, extra=2_000_000)
    state = State(sim, tmp_path)
    allocated = sim.pools()[0].allocated
    calls: list[str] = []
    hooks = Hooks(
        before=lambda i, m: calls.append("before"), after=lambda i, m: calls.append("after")
    )
    with pytest.raises(RebaseNoSpace, match="out of space") as caught:
        rebase(sim, "tank/app", "tank/base@v1", keep_content=True, hooks=hooks)
    assert "available" in str(caught.value)
    assert state.same(sim)
    assert sim.pools()[0].allocated == allocated
    assert calls == ["before", "after"]  # the users were started again, on the old image


def test_a_failure_in_the_swap_puts_every_name_back(sim: SimBackend, tmp_path: Path) -> None:
    where = tmp_path / "srv-app"
    sim.create("tank/web", props={"mountpoint": str(where), "zfleet:role": "web"})
    (where / "index.html").write_text("hello")
    # the backup's mountpoint is taken: the swap fails after the image was renamed
    blocker = Path(f"{where}.pre-rebase-{stamp(NOW)}")
    blocker.mkdir()
    (blocker / "someone-elses").write_text("x")
    listed = names(sim, "tank")
    before = listing(where)
    with pytest.raises(RebaseError, match=r"rolled back|not empty"):
        rebase(sim, "tank/web", "tank/base@v1", keep_content=True, now=lambda: NOW)
    assert names(sim, "tank") == listed
    assert sim.mountpoint("tank/web") == str(where)
    assert listing(where) == before
    assert sim.get("tank/web", ["zfleet:role"])["zfleet:role"].value == "web"


def test_a_file_that_cannot_be_copied_rolls_back(sim: SimBackend, tmp_path: Path) -> None:
    state = State(sim, tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(mount(sim, "tank/app") / "control.sock"))
    try:
        state = State(sim, tmp_path)
        with pytest.raises(RebaseError, match="socket cannot be recreated"):
            rebase(sim, "tank/app", "tank/base@v1", keep_content=True)
        assert state.same(sim)
    finally:
        sock.close()


def test_drop_old_is_refused_while_clones_depend_on_the_image(
    sim: SimBackend, tmp_path: Path
) -> None:
    sim.clone("tank/app@s", "tank/dependent")
    state = State(sim, tmp_path)
    with pytest.raises(RebaseError, match="tank/dependent"):
        rebase(sim, "tank/app", "tank/base@v1", keep_content=True, drop_old=True)
    assert state.same(sim)


def test_command_hooks_stop_and_start_around_the_swap(sim: SimBackend, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\necho "$1 $ZFLEET_IMAGE $ZFLEET_MOUNTPOINT" >> {log}\n')
    script.chmod(0o755)
    hooks = Hooks(
        before=command_hook([str(script), "stop"]), after=command_hook([str(script), "start"])
    )
    report = rebase(sim, "tank/app", "tank/base@v1", keep_content=True, hooks=hooks)
    where = sim.mountpoint("tank/app")
    assert log.read_text().splitlines() == [f"stop tank/app {where}", f"start tank/app {where}"]
    assert report.warnings == ()
    assert sim.get("tank/app", ["origin"])["origin"].value == "tank/base@v1"


def test_a_quota_above_the_image_is_respected(tmp_path: Path) -> None:
    sim = build(tmp_path, extra=1_000_000)
    sim.create("tank/images")
    sim.rename("tank/app", "tank/images/app")
    sim.rename("tank/base", "tank/images/base")
    taken = int(sim.get("tank/images", ["used"])["used"].value)
    sim.set("tank/images", {"quota": str(taken + 300_000)})
    listed = names(sim, "tank")
    with pytest.raises(RebaseNoSpace):
        rebase(sim, "tank/images/app", "tank/images/base@v1", keep_content=True)
    assert names(sim, "tank") == listed
