"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on 127.0.0.1, and a webhook sink.

``running_alertmanager(config)`` starts it with clustering off and its own storage directory,
waits for ``/-/ready`` and stops it afterwards; ``WebhookSink`` is a tiny HTTP server that keeps
every POST (path, headers, body) for the test to read. The webhook config that posts to a URL::

    receivers:
      - name: zfleet
        webhook_configs:
          - url: http://127.0.0.1:PORT/v1/alerts/alertmanager
            send_resolved: true
            http_config:
              authorization: { type: Bearer, credentials_file: /path/to/secret }
              # or: basic_auth: { username: alertmanager, password_file: /path/to/secret }
"""

from __future__ import annotations

import contextlib
import http.server
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need
from tests.services.process import stop_process
from tests.services.redis import free_port

BINARIES: tuple[str, ...] = ("prometheus-alertmanager", "alertmanager")


def alertmanager_binary() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookSink:
    """An HTTP server on 127.0.0.1 that answers every POST with 200 and queues it."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                sink.requests.put(Request(self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return  # keep test output clean

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def next(self, timeout: float) -> Request:
        """The next POST, or AssertionError after ``timeout`` seconds."""
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook request within {timeout} s") from None


@dataclass(frozen=True)
class Alertmanager:
    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def log(self) -> str:
        return (self.directory / "alertmanager.log").read_text(errors="replace")


@contextlib.contextmanager
def running_alertmanager(config: str) -> Iterator[Alertmanager]:
    """Start Alertmanager with ``config`` (YAML text); skip (locally) when it is not installed."""
    binary = alertmanager_binary()
    need(binary is not None, "prometheus-alertmanager (Debian package)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="zfleet-am-") as tmp:
        directory = Path(tmp)
        (directory / "alertmanager.yml").write_text(config)
        port = free_port()
        with open(directory / "alertmanager.log", "wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={directory / 'alertmanager.yml'}",
                 f"--storage.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                 "--cluster.listen-address=", "--log.level=debug"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = Alertmanager(f"http://127.0.0.1:{port}", proc, directory)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"alertmanager did not start:\n{server.log()[-2000:]}")
                time.sleep(0.1)
            yield server
        finally:
            stop_process(proc, 5)
