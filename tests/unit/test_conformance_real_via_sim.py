"""The conformance suite through the real backend, with the front end standing in for ZFS.

RealBackend runs `zfs` and `zpool` as child processes; here those names resolve, through PATH,
to two shell scripts that exec the front end (workers.zfs.front) over a simulated pool. Every
call therefore crosses a real process boundary: argv building, -Hp parsing, OpenZFS's failure
messages mapped back to typed errors, send and receive streamed through pipes, cancellation of
process groups. The lab proves the same suite on real OpenZFS.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance import Scenario, admin, scenario_params
from tests.conformance.target import LocalFiles, Subject
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# scenario name -> why this path fails it today (strict xfail: a fix is noticed)
KNOWN_FAILURES: dict[str, str] = {}


def make_shims(bin_dir: Path, sim_root: Path) -> dict[str, str]:
    """`zfs` and `zpool` scripts that run the front end; the environment that finds them."""
    bin_dir.mkdir(parents=True)
    for program in ("zfs", "zpool"):
        shim = bin_dir / program
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m workers.zfs.front {program} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "ZFLEET_SIM_ROOT": str(sim_root),
    }


# The user properties the scenarios use, fetched in the same `zfs list` call: one process per
# listing instead of two, which matters at ~0.5 s per Python start. The default (discover every
# user property with a `zfs get`) is run by test_user_properties_found_without_naming_them.
USER_PROPS = ("zfleet:role", "zfleet:note", "zfleet:kind")


def make_target(tmp_path: Path, user_props: tuple[str, ...]) -> Subject:
    env = make_shims(tmp_path / "bin", tmp_path / "pools")
    subprocess.run(["zpool", "create", "tank"], env=env, check=True, timeout=60)
    backend = RealBackend(env=env, timeout=60, user_props=user_props)
    return Subject(backend, "tank", LocalFiles(backend, tmp_path / "scratch"))


@pytest.fixture
def target(tmp_path: Path) -> Subject:
    return make_target(tmp_path, USER_PROPS)


@pytest.mark.parametrize("scenario", scenario_params(KNOWN_FAILURES))
def test_scenario(scenario: Scenario, target: Subject) -> None:
    scenario(target)


def test_user_properties_found_without_naming_them(tmp_path: Path) -> None:
    admin.properties_set_get_inherit(make_target(tmp_path, ()))


def test_the_shims_are_what_runs(target: Subject) -> None:
    # guard against a real `zfs` earlier on PATH making this file test something else
    (pool,) = target.backend.pools()
    assert pool.name == "tank"
    mountpoint = target.backend.mountpoint("tank")
    assert mountpoint is not None
    assert Path(mountpoint).is_relative_to(Path(target.files.scratch("probe", b"")).parents[1])
