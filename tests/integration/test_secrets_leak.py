"""Secrets never leave the places they are given to: a whole run is searched for them afterwards.

A real fleet runs with a known value for every secret zfleet handles: the Redis password (in the
URL), the fleet secret (grants), the store's S3 secret key, the repository passphrase and the
master key it wraps, the API token, the Alertmanager secret and a ZFS encryption passphrase. It
syncs to a peer and to an S3 store (`weed`), answers the API and a webhook, and is asked the CLI's
questions (``--json`` and tables) and a few that fail. Then everything the run produced is read:
every log, every CLI output, every API response, every file under the fleet's directories and
the store's, the Redis AOF (which keeps every Celery message ever sent, acknowledged or not) and
every key and value left in Redis. Base64 runs are decoded (Celery bodies are base64) and each
secret is looked for raw, in hex and in base64 at any alignment. The number of hits must be 0.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.conftest import need
from tests.services.fleet import PASSPHRASE, SECRET, Fleet, running_fleet
from tests.services.redis import RedisServer, free_port, redis_binary, running_redis
from tests.services.s3 import S3Server, s3_server  # noqa: F401  (fixture)
from workers.cloud import crypto
from workers.cloud.blobstore import open_blob_store

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]  # ~40 s idle

REDIS_PASSWORD = "redis-pass-for-leak-test-4f1c9a7e"
API_TOKEN = "api-token-for-leak-test-5b8e1d2c77"
AM_SECRET = "alertmanager-secret-leak-test-9d4f03"
ZFS_PASSPHRASE = "zfs-key-passphrase-leak-test-61ab"
CANARY = "canary-not-a-secret-31f7a0c2de"
HOSTS = ("alpha", "beta")
JOB = """
[stores.vault]
kind = "s3"
endpoint = "{endpoint}"
bucket = "{bucket}"
prefix = "vault"

[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "store:vault"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
retention = {{ "zfleet-*" = 2 }}
"""
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    """A redis-server that wants a password and keeps every write in its AOF."""
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    assert binary is not None
    with running_redis(binary, args=["--requirepass", REDIS_PASSWORD], password=REDIS_PASSWORD,
                       appendonly=True) as server:  # fmt: skip
        yield server


def variants(secret: bytes) -> set[bytes]:
    """How ``secret`` can look in a file: itself, hex, and base64 at each of three alignments."""
    out = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for pad in range(3):
        whole = len(secret) + pad
        start, end = (4 if pad else 0), whole // 3 * 4
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            core = enc(b"\0" * pad + secret)[start:end]
            if len(core) >= 16:
                out.add(core)
    return out


def expand(blob: bytes, depth: int = 3) -> Iterator[bytes]:
    """``blob`` and whatever its base64 runs decode to, a few layers deep."""
    yield blob
    if depth == 0:
        return
    for run in _B64_RUN.findall(blob):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                inner = decode(run + b"=" * (-len(run) % 4))
            except (binascii.Error, ValueError):
                continue
            yield from expand(inner, depth - 1)


def redis_contents(server: RedisServer) -> Iterator[tuple[str, bytes]]:
    """Every key and value in Redis, as (label, bytes)."""
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    with client:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            label = f"redis {key.decode(errors='replace')} ({kind})"
            parts: list[bytes] = [key]
            if kind == "string":
                parts.append(client.get(key) or b"")
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    parts += [k, v]
            elif kind == "list":
                parts += client.lrange(key, 0, -1)
            elif kind == "set":
                parts += list(client.smembers(key))
            elif kind == "zset":
                parts += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _id, fields in client.xrange(key):
                    for k, v in fields.items():
                        parts += [k, v]
            yield label, b"\n".join(parts)


def files_under(root: Path, *, skip: set[Path]) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path not in skip:
            yield str(path), path.read_bytes()


def api_call(port: int, method: str, path: str, *, auth: str | None, body: bytes | None = None
             ) -> tuple[int, bytes, bytes]:  # fmt: skip
    """The status, the headers and the body of one request."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if auth is not None:
        req.add_header("Authorization", auth)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, str(resp.headers).encode(), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, str(e.headers).encode(), e.read()


def webhook(status: str, host: str) -> bytes:
    alert = {"status": status, "labels": {"alertname": "ZfleetWorkerDown", "host": host},
             "annotations": {}, "startsAt": "2026-12-02T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
             "fingerprint": "0f1e2d3c4b5a6978"}  # fmt: skip
    return json.dumps({
        "version": "4", "groupKey": "{}:{alertname=\"ZfleetWorkerDown\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "zfleet", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://am", "alerts": [alert],
    }).encode()  # fmt: skip


def wait_api(log: Path, fleet: Fleet) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and b'"api.serving"' in log.read_bytes():
            return
        assert fleet.coordinator is not None and fleet.coordinator.poll() is None, fleet.logs()
        time.sleep(0.1)
    raise AssertionError(f"the API never came up\n{fleet.logs()}")


def test_no_secret_appears_anywhere_a_run_wrote(
    tmp_path: Path, locked_redis: RedisServer, s3_server: S3Server  # noqa: F811
) -> None:
    secrets_dir = tmp_path / "secrets"  # what the operator hands over, the only place allowed
    secrets_dir.mkdir()
    (secrets_dir / "api.token").write_text(API_TOKEN + "\n")
    (secrets_dir / "am.secret").write_text(AM_SECRET + "\n")
    (secrets_dir / "zfs.key").write_text(ZFS_PASSPHRASE + "\n")
    s3_env = {"ZFLEET_STORE_ACCESS_KEY": s3_server.access_key,
              "ZFLEET_STORE_SECRET_KEY": s3_server.secret_key}  # fmt: skip
    debug = {"ZFLEET_LOG_LEVEL": "DEBUG", **s3_env}
    outputs: list[tuple[str, bytes]] = []
    job = JOB.format(endpoint=s3_server.endpoint, bucket=s3_server.bucket)

    with running_fleet(tmp_path / "fleet", locked_redis, HOSTS, job) as fleet:
        env = {**fleet.env, **debug, "ZFLEET_FLEET_CONFIG": str(fleet.config)}

        def cli(*args: str, expect: int | None = 0, extra: dict[str, str] | None = None) -> str:
            import subprocess

            done = subprocess.run([fleet_bin(), *args], env={**env, **(extra or {})},
                                  capture_output=True, timeout=120, cwd=fleet.root, check=False)
            outputs.append((f"zfleet {' '.join(args)}", done.stdout + done.stderr))
            if expect is not None:
                assert done.returncode == expect, (args, done.stdout, done.stderr)
            return done.stdout.decode()

        repo = f"s3://{s3_server.bucket}/vault"
        cli("cloud", "--repo", repo, "--endpoint", s3_server.endpoint, "init")
        slot = next(iter(open_blob_store(repo, endpoint_url=s3_server.endpoint,
                                         **_s3_keys(s3_server)).list("keys/")))  # fmt: skip
        master = crypto.unwrap(
            open_blob_store(repo, endpoint_url=s3_server.endpoint, **_s3_keys(s3_server))
            .get(slot.key), passphrase=PASSPHRASE)  # fmt: skip

        alpha = fleet.backend("alpha")
        alpha.create_pool("tank")
        alpha.create("tank/img")
        alpha.create("tank/img/base")
        Path(alpha.mountpoint("tank/img/base") or "", "f").write_bytes(os.urandom(96 * 1024))
        alpha.create("tank/img/locked", props={
            "encryption": "on", "keyformat": "passphrase",
            "keylocation": f"file://{secrets_dir / 'zfs.key'}"})  # fmt: skip
        Path(alpha.mountpoint("tank/img/locked") or "", "g").write_bytes(b"private\n" * 500)
        fleet.backend("beta").create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host, **debug)
        port = free_port()
        fleet.coordinator = fleet._spawn("coordinator", [
            "coordinator", "--config", str(fleet.config), "--lease-ttl", "2",
            "--http", f"127.0.0.1:{port}", "--api-token-file", str(secrets_dir / "api.token"),
            "--alertmanager-secret-file", str(secrets_dir / "am.secret")], debug)  # fmt: skip
        wait_api(fleet.root / "logs" / "coordinator.log", fleet)

        store = JobStore(fleet.client())
        first = json.loads(cli("sync", "img", "--json"))["id"]
        done = wait_job(store, first, timeout=120)
        assert done.status == engine.JOB_SUCCEEDED, f"{done.error}\n{fleet.logs()}"
        cli("sync", "img", "--wait", "--json")
        cli("sync", "img", "--dry-run")
        for args in (("jobs",), ("jobs", "--json"), ("job", "show", first), ("status",),
                     ("status", "--json"), ("ls",), ("ls", "--json", "-t", "all"),
                     ("graph", "-o", str(fleet.root / "fleet.svg"))):  # fmt: skip
            cli(*args)
        cli("cloud", "--repo", repo, "--endpoint", s3_server.endpoint, "ls", "--json")
        cli("cloud", "--repo", repo, "--endpoint", s3_server.endpoint, "verify", "--json")

        bearer = f"Bearer {API_TOKEN}"
        for path in ("/", "/healthz", "/v1", "/v1/jobs", f"/v1/jobs/{first}", "/v1/status",
                     "/v1/hosts", "/v1/graph.svg", "/v1/metrics"):  # fmt: skip
            code, head, body = api_call(port, "GET", path, auth=bearer)
            assert code == 200, (path, body[-300:])
            outputs.append((f"GET {path}", head + body))
        code, head, body = api_call(port, "POST", "/v1/jobs", auth=bearer,
                                    body=json.dumps({"job": "img"}).encode())
        outputs.append(("POST /v1/jobs", head + body))
        assert code == 202, body
        api_job = json.loads(body)["id"]
        code, head, body = api_call(port, "GET", "/v1/jobs", auth=None)
        assert code == 401
        outputs.append(("GET (no token)", head + body))
        basic = "Basic " + base64.b64encode(f"am:{AM_SECRET}".encode()).decode()
        for auth in (f"Bearer {AM_SECRET}", basic):
            code, head, body = api_call(port, "POST", "/v1/alerts/alertmanager", auth=auth,
                                        body=webhook("resolved", "alpha"))
            assert code == 200, body
            outputs.append(("POST /v1/alerts/alertmanager", head + body))

        # failures print where they failed, never with what
        dead = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
        cli("status", expect=4, extra={"ZFLEET_REDIS_URL": dead})
        assert b"cannot reach Redis at redis://:**********@" in outputs[-1][1]
        cli("status", expect=2,
            extra={"ZFLEET_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:notaport/0"})
        assert b"bad URL 'redis://:**********@" in outputs[-1][1]
        cli("cloud", "--repo", repo, "--endpoint", s3_server.endpoint, "ls", expect=1,
            extra={"ZFLEET_PASSPHRASE": PASSPHRASE + "-wrong"})
        cli("worker", "--host", "alpha", expect=2,
            extra={"ZFLEET_FLEET_SECRET": "short"})

        done = wait_job(store, api_job, timeout=120)  # it finishes before anything stops
        assert done.status == engine.JOB_SUCCEEDED, f"{done.error}\n{fleet.logs()}"
        # a canary, hidden as a Celery body hides a value, proves the search would see a leak
        body = base64.b64encode(json.dumps([[CANARY], {}, {}]).encode()).decode()
        fleet.client().lpush("canary", json.dumps({"body": body, "content-encoding": "utf-8"}))
    # fleet closed: every process stopped, every log flushed

    with (tmp_path / "fleet" / "logs" / "canary.log").open("w") as log:
        log.write(json.dumps({"event": "x", "hint": CANARY.encode().hex()}) + "\n")
    needles = {
        "canary": CANARY.encode(),
        "redis password": REDIS_PASSWORD.encode(), "fleet secret": SECRET.encode(),
        "store secret key": s3_server.secret_key.encode(), "passphrase": PASSPHRASE.encode(),
        "api token": API_TOKEN.encode(), "alertmanager secret": AM_SECRET.encode(),
        "zfs passphrase": ZFS_PASSPHRASE.encode(), "master key": master.secret,
        "content id key": master.id_key, "encryption key": master.enc_key,
    }  # fmt: skip
    weed_dir = s3_server.log.parent
    haystack = [
        *outputs,
        *files_under(tmp_path, skip=set(secrets_dir.iterdir())),
        *files_under(locked_redis.directory, skip=set()),
        *files_under(weed_dir, skip={weed_dir / "s3.json"}),  # its own identity file
        *redis_contents(locked_redis),
    ]
    searched = sum(len(blob) for _, blob in haystack)
    hits = []
    forms = {name: variants(value) for name, value in needles.items()}
    for label, blob in haystack:
        for piece in expand(blob):
            for name, patterns in forms.items():
                if any(p in piece for p in patterns):
                    hits.append(f"{name} in {label}")
    assert searched > 1_000_000, searched  # the run did produce something to search
    aof = b"".join(blob for label, blob in haystack if label.endswith(".aof"))
    assert b"zfleet.step" in aof  # every Celery message sent is in the AOF
    canaries = {hit for hit in hits if hit.startswith("canary in ")}
    assert any(c.endswith("canary.log") for c in canaries), canaries  # hex in a log
    assert "canary in redis canary (list)" in canaries  # base64 in a Celery-like body
    assert any(c.endswith(".aof") for c in canaries), canaries  # and in the AOF
    assert sorted(set(hits) - canaries) == []


def _s3_keys(server: S3Server) -> dict[str, Any]:
    return {"access_key": server.access_key, "secret_key": server.secret_key}


def fleet_bin() -> str:
    from tests.services.fleet import zfleet_binary

    return zfleet_binary()
