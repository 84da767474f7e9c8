"""`zfleet lab status` on the session's running lab: what it prints reaches real ZFS."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from app.cli import cli
from workers.lab.lab import Lab

pytestmark = pytest.mark.lab


def test_status_shows_running_hosts_and_a_working_exec_prefix(
    lab_session: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZFLEET_LAB_STATE", str(lab_session.directory.parent))
    result = CliRunner().invoke(
        cli, ["lab", "status", "--json", "--name", lab_session.directory.name]
    )
    assert result.exit_code == 0, result.output
    hosts = json.loads(result.output)
    assert [h["name"] for h in hosts] == ["zlab1", "zlab2"]
    assert all(h["running"] for h in hosts)
    for host in hosts:
        done = subprocess.run(
            [*host["exec_prefix"], "zpool", "list", "-H", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.split() == [host["pool"]]
