"""A real Redis master, one replica and three sentinels on 127.0.0.1, all with a password.

Debian's redis-server and redis-sentinel (scripts/system-deps base). The sentinels watch the
master under the name ``zfleet`` with a quorum of two and a one-second down-after, so killing the
master promotes the replica within seconds. ``url`` is zfleet's ``sentinel://`` URL for the set.
Every process is stopped and reaped when the context ends. Import the ``sentinel_set`` fixture
explicitly in a test module that needs it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import need_binary
from tests.services.process import stop_process
from tests.services.redis import RedisServer, free_port

MASTER_NAME = "zfleet"
PASSWORD = "sentinel-set-password-5e0c2b7a"  # a throwaway credential for loopback-only servers
START_TIMEOUT = 30.0


@dataclass
class SentinelSet:
    """The processes of the set and the ports they listen on."""

    directory: Path
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    master: subprocess.Popen[bytes]
    replica: subprocess.Popen[bytes]
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"sentinel://:{PASSWORD}@{hosts}/0?master={MASTER_NAME}"

    def server(self) -> RedisServer:
        """The set as a RedisServer (for tests/services/fleet.py): its URL is the sentinel URL."""
        return RedisServer(self.url, self.master_port, self.master, self.directory)

    def master_address(self) -> tuple[str, int] | None:
        """Where the sentinels (a majority of those that answer) say the master is."""
        seen: dict[tuple[str, int], int] = {}
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                    addr = s.sentinel_get_master_addr_by_name(MASTER_NAME)  # type: ignore[no-untyped-call]
                if addr:
                    key = (str(addr[0]), int(addr[1]))
                    seen[key] = seen.get(key, 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def kill_master(self) -> None:
        """SIGKILL the master: no shutdown, no last save, its clients' sockets just die."""
        self.master.send_signal(signal.SIGKILL)
        self.master.wait(10)

    def wait_promoted(self, timeout: float = 60) -> None:
        """Until the sentinels name the replica as the master and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_address() == ("127.0.0.1", self.replica_port):
                with contextlib.suppress(redis.RedisError), _client(self.replica_port) as r:
                    if r.info("replication").get("role") == "master":
                        return
            time.sleep(0.2)
        raise RuntimeError(f"the sentinels did not promote the replica within {timeout} s")


def _client(port: int) -> redis.Redis[bytes]:
    return redis.Redis(port=port, password=PASSWORD, socket_timeout=2)


def _redis(binary: str, port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    directory.mkdir()
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _until(check: Callable[[], bool], what: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(redis.RedisError):
            if check():
                return
        dead = [p.args for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen (exited: {dead})")
        time.sleep(0.1)


@contextlib.contextmanager
def running_sentinels(server_bin: str, sentinel_bin: str) -> Iterator[SentinelSet]:
    """Start master, replica and three sentinels; wait until the sentinels know them all."""
    with tempfile.TemporaryDirectory(prefix="zfleet-sentinel-") as tmp:
        root = Path(tmp)
        mport, rport = free_port(), free_port()
        master = _redis(server_bin, mport, root / "master")
        replica = _redis(server_bin, rport, root / "replica", "--replicaof", "127.0.0.1",
                         str(mport))  # fmt: skip
        ports = [free_port() for _ in range(3)]
        found = SentinelSet(root, mport, rport, ports, master, replica)
        try:
            procs = [master, replica]
            def synced() -> bool:
                with _client(rport) as r:
                    return r.info("replication").get("master_link_status") == "up"

            _until(synced, "the replica's first sync", procs)
            for port in ports:
                conf = root / f"sentinel-{port}.conf"  # a sentinel rewrites its own file
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {root}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {mport} 2\n"
                    f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                )
                found.sentinels.append(subprocess.Popen(
                    [sentinel_bin, str(conf)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))  # fmt: skip
            procs += found.sentinels

            def all_known() -> bool:
                for port in ports:
                    with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as s:
                        info = s.sentinel_master(MASTER_NAME)  # type: ignore[no-untyped-call]
                    if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                        return False
                return True

            _until(all_known, "the sentinels finding the replica and each other", procs)
            yield found
        finally:
            for proc in [*found.sentinels, replica, master]:
                if proc.poll() is None:
                    stop_process(proc, 5)


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    """A master, a replica and three sentinels for one test."""
    server_bin = need_binary("redis-server")
    sentinel_bin = need_binary("redis-sentinel")
    with running_sentinels(server_bin, sentinel_bin) as found:
        yield found
