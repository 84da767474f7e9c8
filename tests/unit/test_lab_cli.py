"""`zfleet lab` on a machine with no lab running: clear answers, meaningful exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.cli.lab import fleet_config
from coordinator.config import parse_config
from protocol.errors import LabError
from workers.lab.lab import Lab, LabHost
from workers.lab.qemu import VmSpec
from workers.lab.ssh import exec_prefix
from workers.lab.vm import Vm, ready_timeout


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZFLEET_LAB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("ZFLEET_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "state"


def test_status_and_down_without_a_lab(state: Path) -> None:
    runner = CliRunner()
    status = runner.invoke(cli, ["lab", "status"])
    assert status.exit_code == 1
    assert "no lab 'default' is up" in status.output
    assert "image not built" in status.output
    down = runner.invoke(cli, ["lab", "down"])
    assert down.exit_code == 0
    assert "no lab 'default' is up" in down.output


def test_up_refuses_more_hosts_than_a_lab_holds(state: Path) -> None:
    result = CliRunner().invoke(cli, ["lab", "up", "9"])
    assert result.exit_code == 2
    assert "9" in result.output


def test_status_reports_a_host_whose_vm_is_gone(state: Path) -> None:
    # A recorded lab whose QEMU no longer runs (the machine rebooted, say): status says so.
    directory = state / "default"
    spec = VmSpec(
        name="zlab1",
        kernel=directory / "k",
        initrd=directory / "i",
        root_overlay=directory / "r",
        pool_disk=directory / "p",
        ssh_port=40022,
        serial_log=directory / "zlab1" / "serial.log",
        pidfile=directory / "zlab1" / "qemu.pid",
    )
    vm = Vm(spec=spec, key=directory / "id", directory=directory / "zlab1", pid=None)
    directory.mkdir(parents=True)
    Lab(directory, [vm], "tank", ["zfs-2.3.2"], 0).save()
    result = CliRunner().invoke(cli, ["lab", "status", "--json"])
    assert result.exit_code == 1
    (host,) = json.loads(result.output)
    assert host["running"] is False
    assert host["ssh_port"] == 40022
    assert host["exec_prefix"][-1] == "root@127.0.0.1"


def test_printed_fleet_config_gives_the_hosts_exec_prefixes(tmp_path: Path) -> None:
    hosts = [
        LabHost(
            name=f"zlab{i}",
            ssh_port=40020 + i,
            pool="tank",
            zfs_version="zfs-2.3.2",
            exec_prefix=tuple(exec_prefix(tmp_path / "id key", 40020 + i, tmp_path / "s")),
            serial_log=tmp_path / "serial.log",
        )
        for i in (1, 2)
    ]
    config = parse_config(fleet_config(hosts))
    assert sorted(config.hosts) == ["zlab1", "zlab2"]
    for host in hosts:
        parsed = config.hosts[host.name]
        assert parsed.backend == "real"
        assert parsed.exec_prefix == host.exec_prefix


@pytest.mark.parametrize("raw", ["ten", "-5", "0", "nan", "inf", "1e9"])
def test_a_bad_ready_timeout_is_a_clear_error_not_an_import_failure(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZFLEET_LAB_READY_TIMEOUT", raw)
    with pytest.raises(LabError, match="ZFLEET_LAB_READY_TIMEOUT must be a number"):
        ready_timeout()


def test_the_ready_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZFLEET_LAB_READY_TIMEOUT", raising=False)
    assert ready_timeout() == 300.0
    monkeypatch.setenv("ZFLEET_LAB_READY_TIMEOUT", " 900 ")
    assert ready_timeout() == 900.0
