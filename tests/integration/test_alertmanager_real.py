"""protocol.alertmanager against the real thing: Debian's Alertmanager 0.25 posts its webhook
to a local HTTP server, and the parser, the auth check and the host rule accept what it sends;
then the whole alert path, with Debian's Prometheus 2.42 firing a rule on a target gone down.

Alerts are added with ``amtool alert add`` (as an operator or a test would) and resolved through
Alertmanager's v2 API; a short repeat_interval makes it repeat the notification, which must give
the same idempotency key.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.alertmanager import (
    Notification,
    WebhookAuth,
    host_of,
    parse_host_rule,
    parse_webhook,
)
from tests.conftest import need_binary
from tests.services.alertmanager import WebhookSink, running_alertmanager
from tests.services.prometheus import running_prometheus

pytestmark = pytest.mark.integration

SECRET = "an alertmanager webhook secret"
PATH = "/v1/alerts/alertmanager"


def config(sink: WebhookSink, secret_file: Path) -> str:
    return f"""
route:
  receiver: zfleet-bearer
  group_by: ['alertname', 'instance']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 2s
  routes:
    - receiver: zfleet-basic
      matchers: ['auth="basic"']
receivers:
  - name: zfleet-bearer
    webhook_configs:
      - url: {sink.url(PATH)}
        send_resolved: true
        http_config:
          authorization: {{ type: Bearer, credentials_file: {secret_file} }}
  - name: zfleet-basic
    webhook_configs:
      - url: {sink.url(PATH)}
        send_resolved: true
        http_config:
          basic_auth: {{ username: alertmanager, password_file: {secret_file} }}
"""


def receive(sink: WebhookSink, auth: WebhookAuth, *, status: str) -> Notification:
    """The next notification with ``status``, after checking path and credentials."""
    for _ in range(10):
        req = sink.next(timeout=20)
        assert req.path == PATH
        assert req.headers.get("Content-Type") == "application/json"
        auth.check(req.headers.get("Authorization"))
        note = parse_webhook(req.body)
        if note.status == status:
            return note
    raise AssertionError(f"no {status} notification")


def api_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        data: list[dict[str, Any]] = json.load(resp)
    return data


def test_real_alertmanager_webhooks_parse_authenticate_and_map(tmp_path: Path) -> None:
    amtool = need_binary("amtool")
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    bearer = WebhookAuth.from_file(secret_file)
    rule = parse_host_rule("instance", r"(?P<host>[^:]+):\d+")
    with WebhookSink() as sink, running_alertmanager(config(sink, secret_file)) as am:
        subprocess.run(
            [amtool, f"--alertmanager.url={am.url}", "alert", "add", "alertname=ZfleetWorkerDown",
             "instance=alpha:9478", "--annotation=summary=worker on alpha is down"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        first = receive(sink, bearer, status="firing")
        (alert,) = first.alerts
        assert first.version == "4" and first.receiver == "zfleet-bearer"
        assert alert.ends_at is None
        assert alert.annotations == {"summary": "worker on alpha is down"}
        assert host_of(alert, rule, {"alpha", "beta"}) == "alpha"
        (stored,) = api_alerts(am.url)
        assert stored["fingerprint"] == alert.fingerprint

        repeated = receive(sink, bearer, status="firing")
        assert repeated.alerts[0].idempotency_key == alert.idempotency_key

        # resolve it through the API: same labels, endsAt now
        body = json.dumps([{
            "labels": stored["labels"], "annotations": stored["annotations"],
            "startsAt": stored["startsAt"],
            "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }]).encode()  # fmt: skip
        post = urllib.request.Request(
            f"{am.url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=5) as resp:
            assert resp.status == 200
        resolved = receive(sink, bearer, status="resolved")
        (gone,) = resolved.alerts
        assert gone.status == "resolved" and gone.ends_at is not None
        assert gone.idempotency_key == alert.idempotency_key

        # the same secret as basic auth, routed by a label
        subprocess.run(
            [amtool, f"--alertmanager.url={am.url}", "alert", "add", "alertname=ZfleetWorkerDown",
             "instance=beta:9478", "auth=basic"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        basic = WebhookAuth.from_file(secret_file, username="alertmanager")
        while True:
            req = sink.next(timeout=20)
            note = parse_webhook(req.body)
            if note.receiver == "zfleet-basic":
                break
        assert req.headers["Authorization"].startswith("Basic ")
        basic.check(req.headers["Authorization"])
        assert host_of(note.alerts[0], rule, {"alpha", "beta"}) == "beta"


class MetricsTarget:
    """Something for Prometheus to scrape, standing in for a worker's metrics endpoint; once
    stopped, its ``up`` goes to 0 as a dead worker's would."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = b"zfleet_worker_info 1\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


RULES = """
groups:
  - name: zfleet
    rules:
      - alert: ZfleetWorkerDown
        expr: up{job="zfleet-workers"} == 0
        for: 0s
        labels: { severity: critical }
        annotations: { summary: "zfleet worker on {{ $labels.zfleet_host }} is down" }
"""


def test_prometheus_rule_on_a_dead_target_reaches_the_webhook(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    bearer = WebhookAuth.from_file(secret_file)
    target = MetricsTarget()
    try:
        with WebhookSink() as sink, running_alertmanager(config(sink, secret_file)) as am:
            prom_config = f"""
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
alerting:
  alertmanagers:
    - static_configs: [{{ targets: ['{am.url.removeprefix("http://")}'] }}]
rule_files: [rules.yml]
scrape_configs:
  - job_name: zfleet-workers
    static_configs:
      - targets: ['127.0.0.1:{target.port}']
        labels: {{ zfleet_host: alpha }}
"""
            with running_prometheus(prom_config, RULES) as prom:
                deadline = time.monotonic() + 30
                while not [r for r in prom.query("up") if r["value"][1] == "1"]:
                    assert time.monotonic() < deadline, prom.log()[-2000:]
                    time.sleep(0.2)
                stopped = time.monotonic()
                target.stop()
                note = receive(sink, bearer, status="firing")
                latency = time.monotonic() - stopped
                (alert,) = note.alerts
                assert alert.labels["alertname"] == "ZfleetWorkerDown"
                assert alert.annotations["summary"] == "zfleet worker on alpha is down"
                assert host_of(alert, parse_host_rule("zfleet_host"), {"alpha"}) == "alpha"
                # Prometheus names itself by the machine's host name, so compare the port only
                link = urllib.parse.urlsplit(alert.generator_url)
                assert link.port == urllib.parse.urlsplit(prom.url).port
                assert link.path == "/graph"
                print(f"target down -> webhook received: {latency:.2f} s; endsAt {alert.ends_at}")
    finally:
        if target.thread.is_alive():
            target.stop()
