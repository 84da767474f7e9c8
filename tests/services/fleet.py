"""A simulated fleet of real processes: `zfleet worker --host NAME` per host, `zfleet coordinator`.

Each host has its own sim root under a temporary directory; all share one real redis-server
(tests/services/redis.py). Processes log JSON to ``<root>/logs/<name>.log`` (printed when a test
fails, by the caller). Everything started is stopped and reaped by ``close``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

from bus import keys
from tests.services.redis import RedisServer
from workers.zfs.sim import SimBackend

SECRET = "fleet-secret-for-tests-0123456789"
PASSPHRASE = "store-passphrase-for-tests"


def zfleet_binary() -> str:
    return str(Path(sys.executable).parent / "zfleet")


@dataclass
class Fleet:
    """Hosts (sim roots), their worker processes, a coordinator process, one Redis."""

    root: Path
    config: Path
    server: RedisServer
    hosts: Sequence[str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    coordinator: subprocess.Popen[bytes] | None = None
    worker_env: dict[str, dict[str, str]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
        env.update({
            "ZFLEET_REDIS_URL": self.server.url, "ZFLEET_FLEET_SECRET": SECRET,
            "ZFLEET_STREAM_BIND": "127.0.0.1:0", "ZFLEET_LOG_FORMAT": "json",
            "ZFLEET_DATA_DIR": str(self.root / "data"), "ZFLEET_METRICS_PORT": "0",
            "ZFLEET_PASSPHRASE": PASSPHRASE,
        })  # fmt: skip
        return env

    def client(self) -> redis.Redis[bytes]:
        return self.server.client()

    def backend(self, host: str) -> SimBackend:
        return SimBackend(self.root / host)

    def _spawn(self, name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.root / "logs" / f"{name}.log").open("ab")
        self._logs.append(log)
        return subprocess.Popen(
            [zfleet_binary(), *args], env={**self.env, **extra}, stdout=log, stderr=log,
            cwd=self.root, start_new_session=True,
        )  # fmt: skip

    # -- workers --------------------------------------------------------------------------
    def start_worker(self, host: str, **env: str) -> None:
        """Start HOST's worker and wait until it heartbeats with a new instance."""
        if env:
            self.worker_env[host] = env
        before = self._instance(host)
        self.workers[host] = self._spawn(
            f"worker-{host}",
            ["worker", "--host", host, "--config", str(self.config), "--concurrency", "4"],
            self.worker_env.get(host, {}),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self._instance(host)
            if now is not None and now != before:
                return
            if self.workers[host].poll() is not None:
                raise RuntimeError(f"worker {host} exited: see {self.root}/logs/worker-{host}.log")
            time.sleep(0.1)
        raise RuntimeError(f"worker {host} did not start")

    def _instance(self, host: str) -> str | None:
        with self.client() as c:
            raw = c.hget(keys.worker(host), "instance")
        return raw.decode() if raw else None

    def kill_worker(self, host: str) -> None:
        """SIGKILL: no shutdown, no acknowledgement, the heartbeat just stops."""
        _kill(self.workers.pop(host), signal.SIGKILL)
        with self.client() as c:
            c.delete(keys.worker(host))  # the key would expire on its own, a few seconds later

    # -- coordinator ----------------------------------------------------------------------
    def start_coordinator(self) -> None:
        self.coordinator = self._spawn(
            "coordinator", ["coordinator", "--config", str(self.config), "--lease-ttl", "2"], {}
        )

    def kill_coordinator(self) -> None:
        if self.coordinator is not None:
            _kill(self.coordinator, signal.SIGKILL)
            self.coordinator = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a zfleet command against this fleet."""
        return subprocess.run(
            [zfleet_binary(), *args], env=self.env, capture_output=True, text=True,
            timeout=timeout, cwd=self.root, check=False,
        )  # fmt: skip

    def logs(self) -> str:
        out = []
        for path in sorted((self.root / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()
            out.append(f"== {path.name} (last 40 lines)\n" + "\n".join(lines[-40:]))
        return "\n".join(out)

    def close(self) -> None:
        for host in list(self.workers):
            _kill(self.workers.pop(host), signal.SIGTERM)
        self.kill_coordinator()
        for log in self._logs:
            log.close()


def _kill(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def fleet_config(root: Path, hosts: Sequence[str], jobs: str) -> str:
    lines = []
    for h in hosts:
        lines += [f"[hosts.{h}]", 'backend = "sim"', f'sim_root = "{root / h}"', ""]
    return "\n".join(lines) + "\n" + jobs


@contextlib.contextmanager
def running_fleet(
    root: Path, server: RedisServer, hosts: Sequence[str], jobs: str
) -> Iterator[Fleet]:
    """A fleet whose hosts have sim roots; workers and coordinator are started by the test."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    config = root / "fleet.toml"
    config.write_text(fleet_config(root, hosts, jobs))
    fleet = Fleet(root=root, config=config, server=server, hosts=hosts)
    try:
        yield fleet
    finally:
        fleet.close()
