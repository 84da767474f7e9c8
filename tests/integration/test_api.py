"""The coordinator's HTTP API against a real Redis: what an operator's curl and Prometheus see.

Redis holds what a coordinator and its workers would have written (two jobs, one failed; the
inventories of a source and two targets, one a snapshot behind; one worker's heartbeat). The API
runs in this process (``serve_api``) and, once, inside a real ``zfleet coordinator --http``
process, over plain HTTP and over TLS with a certificate from ``zfleet ca``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import keys
from coordinator.api import ApiHandle, Response, json_response, serve_api
from coordinator.engine import (
    FAILED,
    JOB_FAILED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    RUNNING,
    SUCCEEDED,
    Job,
    Step,
)
from coordinator.jobstore import JobStore
from protocol.errors import ConfigError
from protocol.zfs import InventoryReport
from tests.services.fleet import zfleet_binary
from tests.services.process import stop_process
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.unit.dagfakes import args_of
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration

TOKEN = "api-token-for-tests-0123456789"
FLEET = """
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"
[hosts.beta]
backend = "sim"
sim_root = "{root}/beta"
[hosts.gamma]
backend = "sim"
sim_root = "{root}/gamma"
[jobs.images]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
"""
OK_ID, BAD_ID, RUN_ID = "20261128T080000-aaaaaa", "20261128T090000-bbbbbb", "20261128T100000-cccccc"


XFER = args_of("transfer")


def _receive(src: SimBackend, dst: SimBackend, snap: str, base: str | None) -> None:
    stream = src.send(SendSpec(snapshot=snap, from_snap=base))
    sink = dst.receive(ReceiveSpec(target="bk/img"))
    while chunk := stream.read(1 << 16):
        sink.write(chunk)
    stream.close()
    sink.finish()


def populate(server: RedisServer, root: Path) -> None:
    store = JobStore(server.client())
    ok = Job(id=OK_ID, name="images", status=JOB_SUCCEEDED, created=1.0, finished=5.0, steps={
        "xfer0000": Step(id="xfer0000", kind="transfer", host="alpha", args=XFER, status=SUCCEEDED,
                         result={"bytes": 3_000_000}, started_at=1.0, finished_at=4.0)})
    bad = Job(id=BAD_ID, name="images", status=JOB_FAILED, created=2.0, steps={
        "xfer0000": Step(id="xfer0000", kind="transfer", host="alpha", args=XFER, status=FAILED,
                         attempt=2, error_type="DestinationModified",
                         error="cannot receive incremental stream: destination bk/img has been "
                               "modified since most recent snapshot")})
    run = Job(id=RUN_ID, name="images", status=JOB_RUNNING, created=3.0, steps={
        "xfer0001": Step(id="xfer0001", kind="transfer", host="alpha", args=XFER, status=RUNNING,
                         started_at=time.time() - 4.0),
        "xfer0002": Step(id="xfer0002", kind="transfer", host="alpha", args=XFER, status="pending",
                         attempt=1, error_type="HostUnreachable",
                         error="ssh: connect refused")})  # fmt: skip
    for job in (ok, bad, run):
        store.create(job)
        store.save(job)
    server.client().hset(keys.progress(RUN_ID), "xfer0001|beta:bk/img",
                         json.dumps({"done": 1_000_000, "total": 4_000_000, "at": time.time()}))
    alpha, beta, gamma = (SimBackend(root / h) for h in ("alpha", "beta", "gamma"))
    alpha.create_pool("tank")
    alpha.create("tank/img")
    alpha.set("tank/img", {"zfleet:kind": "base"})
    alpha.snapshot(["tank/img@s1"])
    time.sleep(1.1)  # one-second creation times: make s2 measurably newer
    alpha.snapshot(["tank/img@s2"])
    for target, upto in ((beta, "s2"), (gamma, "s1")):
        target.create_pool("bk")
        _receive(alpha, target, "tank/img@s1", None)
        if upto == "s2":
            _receive(alpha, target, "tank/img@s2", "tank/img@s1")
    for host, backend in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        objects = tuple(backend.list())
        store.put_inventory(InventoryReport(host=host, taken_at=time.time(), objects=objects))
    server.client().hset(keys.worker("alpha"), mapping={
        "instance": "i1", "started": "1.0", "beat": repr(time.time()), "version": "9.9.9"})


@pytest.fixture
def config(redis_server: RedisServer, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(root=tmp_path))
    populate(redis_server, tmp_path)
    return path


@pytest.fixture
def api(redis_server: RedisServer, config: Path) -> Iterator[ApiHandle]:  # noqa: F811
    handle = serve_api(redis_server.client(), config_path=config, token=TOKEN,
                       request_timeout=1.0)  # fmt: skip
    try:
        yield handle
    finally:
        handle.stop()


def call(api: ApiHandle, method: str, path: str, *, token: str | None = TOKEN,
         body: bytes | None = None, headers: dict[str, str] | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    host, port = api.address
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(api: ApiHandle, path: str, status: int = 200, **kw: Any) -> Any:
    code, headers, body = call(api, "GET", path, **kw)
    assert code == status, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def test_every_data_endpoint_wants_the_token(api: ApiHandle) -> None:
    for path in ("/v1", "/v1/jobs", "/v1/status", "/v1/hosts", "/v1/metrics", "/v1/graph.svg"):
        for token in (None, "wrong-token-0123456789"):
            code, headers, body = call(api, "GET", path, token=token)
            assert code == 401, (path, body)
            assert headers["www-authenticate"].startswith("Bearer")
            assert json.loads(body)["error"]["code"] == "unauthorized"
    code, _, body = call(api, "GET", "/v1/jobs", headers={"Authorization": f"Basic {TOKEN}"},
                         token=None)  # fmt: skip
    assert code == 401 and b"Bearer" in body
    # the page carries no data and the health check no secrets: both answer without a token
    code, headers, body = call(api, "GET", "/", token=None)
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert b"<title>zfleet</title>" in body and "default-src 'none'" in headers[
        "content-security-policy"]
    assert get_json(api, "/healthz", token=None) == {"ok": True, "redis": True}


def test_jobs_list_show_and_failures(api: ApiHandle) -> None:
    jobs = get_json(api, "/v1/jobs")["jobs"]
    assert [j["id"] for j in jobs] == [RUN_ID, BAD_ID, OK_ID]
    running, bad, ok = jobs
    assert ok["bytes"] == 3_000_000 and ok["failures"] == []
    (failure,) = bad["failures"]
    assert failure["error_type"] == "DestinationModified"
    assert "has been modified" in failure["error"]
    (retrying,) = running["failures"]  # a failed attempt that waits for its retry
    assert retrying["retrying"] and retrying["error_type"] == "HostUnreachable"
    assert not bad["failures"][0]["retrying"]
    (transfer,) = running["transfers"]
    assert transfer["target"] == "beta:bk/img" and transfer["fraction"] == 0.25
    assert 100_000 < transfer["bytes_per_second"] < 400_000  # 1 MB over about 4 s
    assert [j["id"] for j in get_json(api, "/v1/jobs?status=failed")["jobs"]] == [BAD_ID]
    detail = get_json(api, f"/v1/jobs/{BAD_ID[:17]}")  # a unique prefix is enough
    assert detail["id"] == BAD_ID and detail["step_list"][0]["attempt"] == 2
    missing = get_json(api, "/v1/jobs/nosuchjob", 404)
    assert missing["error"]["code"] == "not_found" and "nosuchjob" in missing["error"]["message"]
    assert "between" in get_json(api, "/v1/jobs?limit=100000", 400)["error"]["message"]
    assert "integer" in get_json(api, "/v1/jobs?limit=many", 400)["error"]["message"]


def test_submit_and_cancel(api: ApiHandle, redis_server: RedisServer) -> None:  # noqa: F811
    store = JobStore(redis_server.client())
    code, _, body = call(api, "POST", "/v1/jobs", body=b'{"job": "images", "dry_run": true}')
    assert code == 202, body
    made = json.loads(body)
    job = store.load(made["id"])
    assert job.name == "images" and job.options["dry_run"] and job.options["trigger"] == "api"
    assert made["id"] in store.active_ids()  # handed to the coordinator
    code, _, body = call(api, "POST", f"/v1/jobs/{made['id']}/cancel")
    assert code == 202 and store.cancel_requested(made["id"])
    code, _, body = call(api, "POST", f"/v1/jobs/{OK_ID}/cancel")
    assert code == 409 and b"already finished" in body

    refused = {
        b'{"job": "nope"}': (404, "no job named 'nope' (jobs: images)"),
        b'{"job": 3}': (400, "'job' must name"),
        b'{"job": "images", "force": true}': (400, "unknown fields ['force']"),
        b'{"job": "images", "dry_run": "yes"}': (400, "'dry_run' must be"),
        b"[1, 2]": (400, "must be a JSON object"),
        b"{not json": (400, "not JSON"),
    }
    for payload, (status, message) in refused.items():
        code, _, body = call(api, "POST", "/v1/jobs", body=payload)
        assert code == status and message in json.loads(body)["error"]["message"], body
    code, _, body = call(api, "POST", "/v1/jobs", body=b"job=images",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415, body
    code, _, body = call(api, "POST", "/v1/jobs", body=b" " * (64 * 1024 + 1))
    assert code == 413 and json.loads(body)["error"]["code"] == "too_large"
    assert len(store.active_ids()) == 2  # the running job and the one submitted: nothing more


def test_status_hosts_graph_and_metrics(api: ApiHandle) -> None:
    status = get_json(api, "/v1/status")
    (row,) = status["datasets"]
    assert (row["host"], row["dataset"], row["newest"]) == ("alpha", "tank/img", "s2")
    assert row["kind"] == "base"
    lag = {t["target"]: t for t in row["targets"]}
    assert lag["beta:bk/img"]["state"] == "up-to-date"
    assert lag["gamma:bk/img"]["state"] == "behind"
    assert lag["gamma:bk/img"]["snapshots_behind"] == 1
    assert lag["gamma:bk/img"]["newest_common"] == "s1"
    assert lag["gamma:bk/img"]["seconds_behind"] >= 1
    assert status["targets"]["gamma:bk/img"]["state"] == "behind"
    assert sorted(status["inventories"]) == ["alpha", "beta", "gamma"]

    hosts = {h["name"]: h for h in get_json(api, "/v1/hosts")["hosts"]}
    assert hosts["alpha"]["alive"] and hosts["alpha"]["version"] == "9.9.9"
    assert hosts["alpha"]["beat_age_seconds"] < 30
    assert not hosts["beta"]["alive"] and hosts["beta"]["version"] is None
    assert {d["name"] for d in hosts["gamma"]["datasets"]} == {"bk", "bk/img"}
    assert {d["name"]: d["kind"] for d in hosts["alpha"]["datasets"]}["tank/img"] == "base"

    code, headers, body = call(api, "GET", "/v1/graph.svg")
    assert code == 200 and headers["content-type"].startswith("image/svg+xml")
    assert body.startswith(b"<svg") and b"tank/img" in body and b"gamma" in body

    code, headers, body = call(api, "GET", "/v1/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "zfleet_up 1.0" in text
    assert 'zfleet_worker_up{host="alpha"} 1.0' in text
    assert 'zfleet_replication_snapshots_behind{dataset="alpha:tank/img",job_name="images",' \
           'target="gamma:bk/img"} 1.0' in text


def test_bad_requests_get_json_errors(api: ApiHandle) -> None:
    assert get_json(api, "/v2/nothing", 404)["error"]["code"] == "not_found"
    code, _, body = call(api, "DELETE", "/v1/jobs")
    assert code == 405 and "allowed: GET, POST" in json.loads(body)["error"]["message"]
    code, headers, body = call(api, "HEAD", "/v1/hosts")
    assert code == 200 and body == b"" and int(headers["content-length"]) > 0
    code, _, body = call(api, "POST", "/v1/jobs", body=b"{}",
                         headers={"Transfer-Encoding": "chunked"})  # fmt: skip
    assert code in (400, 411), body  # http.client refuses to mix the two headers on some versions
    # garbage instead of HTTP: a JSON 400 from the server, not a traceback or a hang
    host, port = api.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"NOT-HTTP\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):  # until the server closes: headers and body may part
            raw += chunk
    assert raw.startswith(b"HTTP/1.0 400") and b'"code": "bad_request"' in raw


def test_a_silent_client_is_dropped_and_blocks_nobody(api: ApiHandle) -> None:
    host, port = api.address
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET /v1/hosts HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        assert get_json(api, "/healthz", token=None)["ok"]  # others are served meanwhile
        started = time.monotonic()
        assert s.recv(100) == b""  # the server hung up on it
        assert time.monotonic() - started < 5


def test_a_handler_bug_is_a_500_without_details(api: ApiHandle) -> None:
    def broken(req: object) -> Response:
        raise RuntimeError("secret internals")

    api.router.add("GET", "/v1/broken", broken)
    code, _, body = call(api, "GET", "/v1/broken")
    assert code == 500 and b"secret internals" not in body and b"Traceback" not in body
    # the route table is the extension point: a new endpoint with a path parameter
    api.router.add("POST", "/v1/alerts/{source}", lambda req: json_response(
        {"source": req.params["source"], "alerts": len(req.json().get("alerts", []))}, 202))
    code, _, body = call(api, "POST", "/v1/alerts/alertmanager", body=b'{"alerts": [{}, {}]}')
    assert code == 202 and json.loads(body) == {"source": "alertmanager", "alerts": 2}
    with pytest.raises(ValueError, match="already served"):
        api.router.add("GET", "/v1/jobs", broken)


def test_refuses_to_start_without_a_good_token(redis_server: RedisServer, config: Path,  # noqa: F811
                                               tmp_path: Path) -> None:  # fmt: skip
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        serve_api(redis_server.client(), config_path=config, token_file=short)
    with pytest.raises(ConfigError, match="cannot read the API token file"):
        serve_api(redis_server.client(), config_path=config, token_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match="needs a token"):
        serve_api(redis_server.client(), config_path=config)
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        serve_api(redis_server.client(), config_path=config, token=TOKEN, tls_cert=short)
    assert "0123" not in repr(serve_api.__globals__["TokenAuth"](TOKEN))


def test_coordinator_serves_the_api_over_tls(redis_server: RedisServer, config: Path,  # noqa: F811
                                             tmp_path: Path) -> None:  # fmt: skip
    ca_dir = tmp_path / "ca"
    zfleet = zfleet_binary()
    for args in (["ca", "init", str(ca_dir)], ["ca", "issue", str(ca_dir), "localhost",
                                               "--ip", "127.0.0.1"]):  # fmt: skip
        done = subprocess.run([zfleet, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    env = {"ZFLEET_REDIS_URL": redis_server.url, "ZFLEET_LOG_FORMAT": "json",
           "PATH": "/usr/bin:/bin", "ZFLEET_DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    base = [zfleet, "coordinator", "--config", str(config), "--http", "127.0.0.1:0"]
    no_token = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
    assert no_token.returncode == 2 and "--api-token-file" in no_token.stderr
    log = (tmp_path / "coordinator.log").open("w+")
    proc = subprocess.Popen([*base, "--api-token-file", str(token_file),
                             "--tls-cert", str(ca_dir / "localhost.crt"),
                             "--tls-key", str(ca_dir / "localhost.key")],
                            env=env, stdout=log, stderr=log)  # fmt: skip
    try:
        url = _announced(tmp_path / "coordinator.log", proc)
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        handle = _Remote(("127.0.0.1", port))
        ctx = ssl.create_default_context(cafile=str(ca_dir / "ca.crt"))
        hosts = get_json(handle, "/v1/hosts", context=ctx)  # type: ignore[arg-type]
        assert {h["name"] for h in hosts["hosts"]} == {"alpha", "beta", "gamma"}
        # plain HTTP to the TLS port gets nowhere, and the server carries on
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            call(handle, "GET", "/v1/hosts")  # type: ignore[arg-type]
        assert get_json(handle, "/healthz", token=None, context=ctx)["ok"]  # type: ignore[arg-type]
    finally:
        stop_process(proc, 15)
        log.close()
    assert proc.returncode == 0, (tmp_path / "coordinator.log").read_text()


class _Remote:
    """An API in another process, addressed like an ApiHandle."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address


def _announced(path: Path, proc: subprocess.Popen[Any]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if '"api.serving"' in line:
                return str(json.loads(line)["url"])
        assert proc.poll() is None, path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the coordinator never said where the API is:\n{path.read_text()}")
