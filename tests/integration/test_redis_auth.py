"""Redis with a password and an ACL user, as docs/operations.md tells operators to run it.

A real redis-server wants a password for its default user and has a ``zfleet`` ACL user with the
rules the docs give (``~* &* +@all -@dangerous``) and a ``nobody`` user allowed nothing. A fleet
(worker processes and a coordinator) runs a sync job as ``zfleet`` and Redis denies it nothing
(``ACL LOG`` stays empty); every way of getting Redis wrong (down, no password, a wrong one, an
unknown user, a user without the rights) makes the CLI, the worker and the coordinator say so in
one line with exit code 4, never with a traceback or the password.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.cli.common import EXIT_UNAVAILABLE
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.conftest import need
from tests.services.fleet import Fleet, fleet_config, running_fleet, zfleet_binary
from tests.services.redis import RedisServer, free_port, redis_binary, running_redis

pytestmark = [pytest.mark.integration]

ADMIN_PASSWORD = "redis-admin-pass-0c4e9b51"
ZFLEET_PASSWORD = "zfleet-acl-pass-7d21aa90"
NOBODY_PASSWORD = "nobody-acl-pass-33e1f0c8"
STRICT_PASSWORD = "strict-acl-pass-51d0b7e2"
# The ACL docs/operations.md gives for zfleet's user, the same without INFO (an operator who
# left out +info), and a user allowed nothing at all.
ACL = [
    "--requirepass", ADMIN_PASSWORD,
    "--user", "zfleet", "on", f">{ZFLEET_PASSWORD}", "~*", "&*", "+@all", "-@dangerous", "+info",
    "--user", "strict", "on", f">{STRICT_PASSWORD}", "~*", "&*", "+@all", "-@dangerous",
    "--user", "nobody", "on", f">{NOBODY_PASSWORD}", "~*", "-@all",
]  # fmt: skip
JOB = """
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    """A redis-server with a password, ACL users and an AOF; its URL is the ``zfleet`` user's."""
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    assert binary is not None
    with running_redis(binary, args=ACL, user="zfleet", password=ZFLEET_PASSWORD,
                       appendonly=True) as server:  # fmt: skip
        yield server


def admin(server: RedisServer) -> redis.Redis[bytes]:
    return redis.Redis(host="127.0.0.1", port=server.port, password=ADMIN_PASSWORD)


def sync_once(fleet: Fleet) -> None:
    """alpha's tank/img (64 KiB of data) synced to beta by real workers and coordinator."""
    alpha = fleet.backend("alpha")
    alpha.create_pool("tank")
    alpha.create("tank/img")
    Path(alpha.mountpoint("tank/img") or "", "f").write_bytes(os.urandom(64 * 1024))
    fleet.backend("beta").create_pool("bk")
    for host in ("alpha", "beta"):
        fleet.start_worker(host)
    fleet.start_coordinator()
    out = fleet.cli("sync", "img", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job = wait_job(JobStore(fleet.client()), json.loads(out.stdout)["id"], timeout=90)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}\n{fleet.logs()}"


def test_a_fleet_runs_as_the_acl_user_and_is_denied_nothing(
    tmp_path: Path, acl_redis: RedisServer
) -> None:
    with admin(acl_redis) as root:
        root.execute_command("ACL", "LOG", "RESET")
    with running_fleet(tmp_path, acl_redis, ("alpha", "beta"), JOB) as fleet:
        sync_once(fleet)
        status = fleet.cli("status", "--config", str(fleet.config))
        assert status.returncode == 0, status.stderr
    # the fleet's processes are stopped: whatever they tried is in the log by now
    with admin(acl_redis) as root:
        denied = root.execute_command("ACL", "LOG")
    assert denied == [], denied
    beta = {o.name for o in fleet.backend("beta").list("bk/img")}
    assert any("@zfleet-" in name for name in beta), beta


def test_a_user_without_info_still_runs_the_fleet_and_is_told_what_it_misses(
    tmp_path: Path, acl_redis: RedisServer
) -> None:
    url = f"redis://strict:{STRICT_PASSWORD}@127.0.0.1:{acl_redis.port}/0"
    strict = dataclasses.replace(acl_redis, url=url)
    with running_fleet(tmp_path, strict, ("alpha", "beta"), JOB) as fleet:
        sync_once(fleet)
        said = (fleet.root / "logs" / "coordinator.log").read_text(errors="replace")
    # said once, not on every tick
    assert said.count("coordinator.redis_restart_watch_off") == 1, said[-4000:]


def _url(server: RedisServer, auth: str) -> str:
    return f"redis://{auth}127.0.0.1:{server.port}/0"


CASES = {
    "down": (None, "cannot reach Redis at redis://:**********@127.0.0.1:"),
    "no password": ("", "wants a password: give it in ZFLEET_REDIS_URL"),
    "wrong password": (":not-the-password-0000@", "refused the credentials of user 'default'"),
    "unknown user": ("ghost:whatever-0000@", "refused the credentials of user 'ghost'"),
    "wrong user password": ("zfleet:not-it-0000@", "refused the credentials of user 'zfleet'"),
    "no rights": (f"nobody:{NOBODY_PASSWORD}@", "user 'nobody' is not allowed this"),
}


# every case through one command; the long-running ones (and --json) through the usual few
RUNS = [
    *((case, ["status"]) for case in CASES),
    *((case, command) for case in ("down", "no password", "wrong password")
      for command in (["worker", "--host", "alpha"], ["coordinator"])),
    ("no rights", ["jobs", "--json"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "command"), RUNS)
def test_every_way_redis_can_be_wrong_is_one_clear_line(
    tmp_path: Path, acl_redis: RedisServer, case: str, command: list[str]
) -> None:
    auth, expected = CASES[case]
    url = (f"redis://:{ZFLEET_PASSWORD}@127.0.0.1:{free_port()}/0" if auth is None
           else _url(acl_redis, auth))  # fmt: skip
    config = tmp_path / "fleet.toml"
    config.write_text(fleet_config(tmp_path, ["alpha"], JOB.replace('"beta:bk/img"', '"alpha:bk"')))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env.update({"ZFLEET_REDIS_URL": url, "ZFLEET_FLEET_SECRET": "fleet-secret-0123456789abcdef",
                "ZFLEET_DATA_DIR": str(tmp_path / "data"), "ZFLEET_METRICS_PORT": "0",
                "ZFLEET_STREAM_BIND": "127.0.0.1:0"})  # fmt: skip
    done = subprocess.run([zfleet_binary(), *command, "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == EXIT_UNAVAILABLE, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("zfleet: ") and expected in lines[-1], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for password in (ZFLEET_PASSWORD, NOBODY_PASSWORD, "not-the-password", "not-it", "whatever"):
        assert password not in done.stderr + done.stdout
