"""The coordinator's CLI at its edges: bad config and a missing Redis give clear exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("ZFLEET_CONFIG", raising=False)
    monkeypatch.delenv("ZFLEET_FLEET_CONFIG", raising=False)
    # port 1 on loopback: nothing listens there
    monkeypatch.setenv("ZFLEET_REDIS_URL", "redis://127.0.0.1:1/0")
    return CliRunner()


def test_bad_fleet_config_exits_2_naming_line_and_key(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[hosts.a]\nbackend = "zfs"\n')
    result = runner.invoke(cli, ["status", "--config", str(cfg)])
    assert result.exit_code == EXIT_CONFIG
    assert f"{cfg}:2: hosts.a.backend" in result.output


def test_unknown_job_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[hosts.a]\n[jobs.j]\nsource = "a:p/x"\ntargets = ["a:q/x"]\n')
    result = runner.invoke(cli, ["worker", "--host", "zz", "--config", str(cfg)])
    assert result.exit_code == EXIT_CONFIG
    assert "no host 'zz'" in result.output


def test_unreachable_redis_exits_4(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[hosts.a]\n[jobs.j]\nsource = "a:p/x"\ntargets = ["a:q/x"]\n')
    result = runner.invoke(cli, ["sync", "j", "--config", str(cfg)])
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in result.output
    assert runner.invoke(cli, ["jobs"]).exit_code == EXIT_UNAVAILABLE
