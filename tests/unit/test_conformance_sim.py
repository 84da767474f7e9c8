"""The backend conformance suite (tests/conformance) on the simulated backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import Scenario, scenario_params, sends
from tests.conformance.target import CommandFiles, LocalFiles, Subject
from workers.zfs.sim import SimBackend

# scenario name -> why the simulation fails it today (run as strict xfail, so a fix shows)
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture
def target(tmp_path: Path) -> Subject:
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    return Subject(backend, "tank", LocalFiles(backend, tmp_path / "scratch"))


@pytest.mark.parametrize("scenario", scenario_params(KNOWN_FAILURES))
def test_scenario(scenario: Scenario, target: Subject) -> None:
    scenario(target)


def fake_ssh(bin_dir: Path) -> str:
    """A stand-in `ssh`: skip options and host, join the rest, hand it to a shell (as ssh does)."""
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(
        '#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift 2; done; shift; exec sh -c "$*"\n'
    )
    ssh.chmod(0o755)
    return str(ssh)


@pytest.mark.parametrize("remote", [False, True], ids=["exec-prefix", "ssh-prefix"])
def test_host_files_through_a_command_prefix(tmp_path: Path, remote: bool) -> None:
    # the lab reaches its hosts' files through ssh; the scenarios must work that way too
    backend = SimBackend(tmp_path / "pools")
    backend.create_pool("tank")
    prefix = [fake_ssh(tmp_path / "bin"), "-o", "BatchMode=yes", "root@lab"] if remote else ["env"]
    files = CommandFiles(backend, prefix, scratch_dir=str(tmp_path / "scratch dir"))
    for root, scenario in (("tank/one", sends.full_send), ("tank/two", sends.raw_encrypted_send)):
        backend.create(root)
        scenario(Subject(backend, root, files))  # raw_encrypted_send's key file: scratch()
