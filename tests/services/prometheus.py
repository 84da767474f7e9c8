"""A real Prometheus (Debian's ``prometheus`` 2.42) on 127.0.0.1 with its own TSDB directory.

``running_prometheus(config, rules)`` writes ``prometheus.yml`` (which may name ``rules.yml``
under ``rule_files``) and the rules, starts the server, waits for ``/-/ready`` and stops it
afterwards. ``query`` runs an instant PromQL query through the HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import need
from tests.services.process import stop_process
from tests.services.redis import free_port


@dataclass(frozen=True)
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
        result: list[dict[str, Any]] = data["data"]["result"]
        return result


@contextlib.contextmanager
def running_prometheus(config: str, rules: str = "") -> Iterator[Prometheus]:
    """Start Prometheus with ``config`` (and ``rules.yml``); skip locally when not installed."""
    binary = shutil.which("prometheus")
    need(binary is not None, "prometheus (Debian package)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="zfleet-prom-") as tmp:
        directory = Path(tmp)
        (directory / "prometheus.yml").write_text(config)
        (directory / "rules.yml").write_text(rules)
        port = free_port()
        with open(directory / "prometheus.log", "wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            )  # fmt: skip
        server = Prometheus(f"http://127.0.0.1:{port}", proc, directory)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prometheus did not start:\n{server.log()[-2000:]}")
                time.sleep(0.1)
            yield server
        finally:
            stop_process(proc, 10)
