"""Hostile input against real processes: the coordinator's HTTP API and Alertmanager webhook, and
200 concurrent, trickling connections against a worker's stream server and the API.

Started here, on loopback: one redis-server, ``zfleet coordinator --http`` (with an API token and
a webhook secret), ``zfleet worker --host beta`` (a sim host) with its stream server on a fixed
port. Every HTTP case is a raw request over its own socket; it must get an HTTP answer with a JSON
body (never a 500 or a traceback), and a refused one (4xx) must leave Redis's jobs and epochs as
they were. The floods hold ``n`` connections open (half silent, half sending a byte a second)
while a legitimate request or transfer goes through, then again after.

Run through bench/hostile.py ``--servers``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from bench.hostile import Tally, mutate_bytes, mutate_tree
from bus import keys
from protocol.frames import encode_frame
from protocol.grants import new_grant, sign_grant
from tests.services.fleet import zfleet_binary
from tests.services.redis import RedisServer, free_port, redis_binary, running_redis
from workers.dataplane.sender import push_transfer
from workers.dataplane.targets import Outcome, PeerTarget
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

SECRET: Final = "hostile-bench-fleet-secret-0123456789"
API_TOKEN: Final = "hostile-api-token-0123456789abcdef"
HOOK_SECRET: Final = "hostile-webhook-secret-0123456789"
FLEET: Final = """\
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"

[hosts.beta]
backend = "sim"
sim_root = "{root}/beta"

[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"

[jobs.img.failover]
candidates = ["beta"]
policy = "auto"
min_interval = "1h"
"""


@dataclass
class Servers:
    root: Path
    redis: RedisServer
    coordinator: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    api: tuple[str, int]
    stream: tuple[str, int]
    logs: list[Path]

    def alive(self) -> bool:
        return self.coordinator.poll() is None and self.worker.poll() is None

    def redis_facts(self) -> tuple[Any, ...]:
        """What a refused request must not change: the jobs and the failover epoch."""
        with self.redis.client() as c:
            return (c.zcard(keys.JOBS_ALL), c.get(keys.epoch("img")), c.hgetall(keys.roles("img")))


@contextlib.contextmanager
def servers(root: Path) -> Iterator[Servers]:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("redis-server is missing (scripts/system-deps)")
    root.mkdir(parents=True, exist_ok=True)
    for host in ("alpha", "beta"):
        backend = SimBackend(root / host)
        backend.create_pool("tank")
        if host == "alpha":
            backend.create("tank/img")
            (Path(backend.mountpoint("tank/img") or "") / "f.bin").write_bytes(os.urandom(50_000))
            backend.snapshot(["tank/img@s1"])
        else:
            backend.create("tank/bk")
    config = root / "fleet.toml"
    config.write_text(FLEET.format(root=root))
    (root / "token").write_text(API_TOKEN)
    (root / "hook").write_text(HOOK_SECRET)
    api_port, stream_port = free_port(), free_port()
    with running_redis(binary) as redis_server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
        env.update({"ZFLEET_REDIS_URL": redis_server.url, "ZFLEET_FLEET_SECRET": SECRET,
                    "ZFLEET_LOG_FORMAT": "json", "ZFLEET_DATA_DIR": str(root / "data"),
                    "ZFLEET_METRICS_PORT": "0",
                    "ZFLEET_STREAM_BIND": f"127.0.0.1:{stream_port}"})  # fmt: skip
        logs: list[IO[bytes]] = []
        procs: list[subprocess.Popen[bytes]] = []

        def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
            log = (root / f"{name}.log").open("wb")
            logs.append(log)
            proc = subprocess.Popen([zfleet_binary(), *args], env=env, stdout=log, stderr=log,
                                    cwd=root, start_new_session=True)  # fmt: skip
            procs.append(proc)
            return proc

        try:
            coordinator = spawn("coordinator", [
                "coordinator", "-c", str(config), "--http", f"127.0.0.1:{api_port}",
                "--api-token-file", str(root / "token"),
                "--alertmanager-secret-file", str(root / "hook")])  # fmt: skip
            worker = spawn("worker", ["worker", "--host", "beta", "-c", str(config),
                                      "--concurrency", "2"])  # fmt: skip
            api, stream = ("127.0.0.1", api_port), ("127.0.0.1", stream_port)
            _wait_port(api, coordinator)
            _wait_port(stream, worker)
            yield Servers(root, redis_server, coordinator, worker, api, stream,
                          [root / "coordinator.log", root / "worker.log"])  # fmt: skip
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            for log in logs:
                log.close()


def _wait_port(address: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {address} after 60s")


# -- raw HTTP -------------------------------------------------------------------------------------
@dataclass
class HttpAnswer:
    status: int | None
    body: bytes


def http(address: tuple[str, int], raw: bytes, timeout: float = 20.0) -> HttpAnswer:
    """Send ``raw`` as is, half-close, read the answer to the end."""
    with socket.create_connection(address, timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        data = b""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") \
        and parts[1].isdigit() else None  # fmt: skip
    return HttpAnswer(status, body)


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            *, length: bool = True) -> bytes:  # fmt: skip
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if length and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


PATHS: Final = (
    "/", "/healthz", "/v1", "/v1/jobs", "/v1/jobs/x", "/v1/jobs/../../etc/passwd",
    "/v1/jobs/%00", "/v1/jobs/" + "a" * 5000, "/v1/status", "/v1/hosts", "/v1/graph.svg",
    "/v1/metrics", "/v1/jobs/x/cancel", "/v1/alerts/alertmanager", "//", "/v1/jobs?x=1&" * 300,
    "/v1/jobs?%zz", "/\udcff", "*", "http://evil/v1", "/v1/jobs/%2e%2e",
)  # fmt: skip
METHODS: Final = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE",
                  "CONNECT", "BREW", "get", "")  # fmt: skip


def _auth(rng: random.Random) -> dict[str, str]:
    return rng.choice([{}, {"Authorization": f"Bearer {API_TOKEN}"},
                       {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                       {"Authorization": "Bearer " + "x" * 10000},
                       {"Authorization": f"bearer {API_TOKEN} extra"}])  # fmt: skip


def _json_body(rng: random.Random) -> bytes:
    good: Any = rng.choice([{"job": "img"}, {"job": "img", "dry_run": True}, {"job": "nope"}])
    tree = mutate_tree(rng, good) if rng.random() < 0.8 else good
    try:
        text = json.dumps(tree, default=repr).encode()
    except ValueError:
        text = b"{}"
    return mutate_bytes(rng, text) if rng.random() < 0.3 else text


def family_http(srv: Servers, cases: int, seed: int) -> Tally:
    tally = Tally("http")
    rng = random.Random(seed)
    for n in range(cases):
        tally.cases += 1
        how = rng.random()
        if how < 0.5:
            raw = request(rng.choice(METHODS), rng.choice(PATHS), _json_body(rng), _auth(rng))
        elif how < 0.7:  # POST /v1/jobs with the token and an odd body: the refusal path
            raw = request("POST", "/v1/jobs", _json_body(rng),
                          {"Authorization": f"Bearer {API_TOKEN}",
                           "Content-Type": "application/json"})  # fmt: skip
        elif how < 0.85:
            raw = mutate_bytes(rng, request("GET", "/v1/jobs", b"", _auth(rng)))
        else:  # odd headers
            raw = request("POST", "/v1/jobs", b"{}", rng.choice([
                {"Content-Length": "-1"}, {"Content-Length": "99999999999999999999"},
                {"Content-Length": "abc"}, {"Transfer-Encoding": "chunked"},
                {"X-" + "h" * 70000: "1"}, {f"H{i}": "v" for i in range(200)},
                {"Content-Length": "10"}]), length=False)  # fmt: skip
        _judge_http(srv, tally, n, raw)
    return tally


def _judge_http(srv: Servers, tally: Tally, n: int, raw: bytes) -> None:
    before = srv.redis_facts()
    try:
        answer = http(srv.api, raw)
    except OSError as exc:
        tally.bad("crashes", n, f"API unreachable: {exc}")
        return
    if not srv.alive():
        tally.bad("crashes", n, "a server process died")
        return
    if answer.status is None:
        # a request too broken to answer (the client hung up mid-line): a silent close is fine
        tally.ok("no answer (request too broken)")
        return
    # 501 (a method HTTP does not know) and 503 (busy, Redis away) are answers; 500 is a bug
    if b"Traceback" in answer.body or answer.status == 500 or answer.status > 503:
        tally.bad("tracebacks", n, f"{answer.status}: {answer.body[:200]!r}")
        return
    if answer.status >= 400:
        if srv.redis_facts() != before:
            tally.bad("partial", n, f"refused with {answer.status} but Redis changed")
            return
        if raw.split(b" ", 1)[0] != b"HEAD" and not answer.body.startswith(b"{"):
            tally.bad("tracebacks", n, f"{answer.status} not JSON: {answer.body[:100]!r}")
            return
    tally.ok(str(answer.status))


# -- webhook --------------------------------------------------------------------------------------
def _alert(rng: random.Random) -> dict[str, Any]:
    return {
        "version": "4", "groupKey": "{}:{alertname=\"HostDown\"}", "status": "firing",
        "receiver": "zfleet", "groupLabels": {"alertname": "HostDown"},
        "commonLabels": {"alertname": "HostDown"}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093", "truncatedAlerts": 0,
        "alerts": [{"status": rng.choice(["firing", "resolved"]),
                    "labels": {"alertname": "HostDown",
                               "host": rng.choice(["alpha", "beta", "nohost", ""])},
                    "annotations": {}, "startsAt": "2026-12-04T01:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://x",
                    "fingerprint": f"{rng.getrandbits(64):016x}"}],
    }  # fmt: skip


def family_webhook(srv: Servers, cases: int, seed: int) -> Tally:
    tally = Tally("webhook")
    rng = random.Random(seed)
    auths = ({"Authorization": f"Bearer {HOOK_SECRET}"}, {}, {"Authorization": "Bearer nope"},
             {"Authorization": f"Bearer {API_TOKEN}"})  # fmt: skip
    for n in range(cases):
        tally.cases += 1
        tree: Any = _alert(rng)
        for _ in range(rng.randint(0, 3)):
            tree = mutate_tree(rng, tree)
        try:
            body = json.dumps(tree, default=repr).encode()
        except ValueError:
            body = b"{"
        if rng.random() < 0.3:
            body = mutate_bytes(rng, body)
        auth = auths[0] if rng.random() < 0.7 else rng.choice(auths[1:])
        raw = request("POST", "/v1/alerts/alertmanager", body,
                      {**auth, "Content-Type": "application/json"})  # fmt: skip
        _judge_http(srv, tally, n, raw)
    return tally


# -- step events into the coordinator ----------------------------------------------------------
def family_events(srv: Servers, cases: int, seed: int) -> Tally:
    """Mutated step events (and garbage entries) on the events stream a real coordinator reads,
    aimed at the steps of a real job: it must read or drop each one and keep running."""
    from protocol import messages
    from protocol.messages import StepEvent, StepState

    tally = Tally("events")
    rng = random.Random(seed)
    auth = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    made = http(srv.api, request("POST", "/v1/jobs", b'{"job": "img"}', auth))
    job_id = json.loads(made.body).get("id") if made.status == 202 else None
    steps: list[tuple[str, int, str]] = [("s0", 1, "alpha")]
    if job_id:
        shown = http(srv.api, request("GET", f"/v1/jobs/{job_id}", b"", auth))
        with contextlib.suppress(ValueError, KeyError, TypeError):
            steps = [(st["id"], int(st.get("attempt", 1)), st.get("host") or "alpha")
                     for st in json.loads(shown.body)["step_list"]] or steps  # fmt: skip
    with srv.redis.client() as client:
        for n in range(cases):
            tally.cases += 1
            step_id, attempt, host = rng.choice(steps)
            event = StepEvent(job_id or "nojob", step_id, attempt + rng.choice([0, 0, 1, -1]),
                              host, rng.choice(list(StepState)),
                              error_type=rng.choice([None, "DatasetBusy", "Bogus", ""]),
                              error_message="x" * rng.choice([0, 10, 10000]),
                              retryable=rng.random() < 0.5,
                              result=rng.choice([{}, {"guid": 2**63}, {"bytes": -1}]))  # fmt: skip
            raw = messages.encode(event)
            how = rng.random()
            if how < 0.4:
                raw = mutate_bytes(rng, raw)
            elif how < 0.7:
                import msgpack

                tree = mutate_tree(rng, msgpack.unpackb(raw, raw=False, strict_map_key=False))
                with contextlib.suppress(Exception):
                    raw = msgpack.packb(tree, use_bin_type=True)
            fields = {b"m": raw} if rng.random() < 0.9 else {rng.choice([b"x", b"mm"]): raw}
            client.xadd(keys.EVENTS, fields)  # type: ignore[arg-type]
            if n % 50 == 49:
                time.sleep(0.5)  # let the coordinator read a batch
                if not srv.alive():
                    tally.bad("crashes", n, "the coordinator died")
                    break
            tally.ok("sent")
    time.sleep(2)
    log = (srv.root / "coordinator.log").read_text(errors="replace")
    tally.outcomes.update({"dropped as unreadable": log.count("events.unreadable"),
                           "applied to a step": log.count('"step.event"'),
                           f"job {job_id or 'none'} steps aimed at": len(steps)})  # fmt: skip
    answer = http(srv.api, request("GET", "/v1/jobs", b"", auth))
    if not srv.alive() or answer.status != 200:
        tally.bad("crashes", cases, f"after the events: alive {srv.alive()}, API {answer.status}")
    return tally


# -- floods ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def flood(address: tuple[str, int], count: int, first: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections held open: half silent, half trickling ``first`` a byte a second."""
    socks: list[socket.socket] = []
    stop = threading.Event()
    for _ in range(count):
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError:
            continue  # refused: the server's connection limit at work
        sock.setblocking(False)
        socks.append(sock)

    def trickle() -> None:
        sent = 0
        while not stop.wait(1.0):
            for sock in socks[::2]:
                with contextlib.suppress(OSError):
                    sock.send(first[sent % len(first) : sent % len(first) + 1])
            sent += 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        yield socks
    finally:
        stop.set()
        thread.join(5)
        for sock in socks:
            sock.close()


def _cut_after(address: tuple[str, int], count: int, first: bytes, wait: float) -> int:
    """How many of ``count`` held, trickling connections the server has hung up on after
    ``wait`` seconds."""
    with flood(address, count, first) as socks:
        time.sleep(wait)
        cut = 0
        for sock in socks:
            try:
                while chunk := sock.recv(65536):  # non-blocking: an answer, then the hang-up
                    del chunk
                cut += 1
            except BlockingIOError:
                pass
            except OSError:
                cut += 1
    return cut


def family_flood(srv: Servers, count: int, deadlines: bool = True) -> tuple[Tally, list[str]]:
    """200 held connections against the worker's stream server and the API; a legitimate
    transfer and a legitimate request go through during the flood and after it. With
    ``deadlines``, also how many held connections each server has cut once its deadline for a
    HELLO (10 s) or a request (30 s) has passed."""
    tally = Tally("flood")
    lines: list[str] = []
    if deadlines:
        from coordinator.api.server import REQUEST_DEADLINE
        from workers.dataplane.session import HANDSHAKE_TIMEOUT

        for name, address, first, wait in (
            ("stream server", srv.stream, encode_frame_hello(), HANDSHAKE_TIMEOUT + 3),
            ("HTTP API", srv.api, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n", REQUEST_DEADLINE + 3),
        ):
            tally.cases += 1
            cut = _cut_after(address, count, first, wait)
            lines.append(f"flood {name}: {cut}/{count} held connections cut after {wait:g}s")
            if cut < count:
                tally.bad("crashes", 3, f"{name}: {count - cut} connections outlived the deadline")
            else:
                tally.ok("deadline")
    alpha = SimBackend(srv.root / "alpha")
    hello = encode_frame_hello()
    for phase in ("during", "after"):
        tally.cases += 1
        ctx = flood(srv.stream, count, hello) if phase == "during" else contextlib.nullcontext([])
        with ctx as socks:
            if phase == "during":
                time.sleep(3)  # let the trickle run past a few of the server's recv timeouts
            start = time.monotonic()
            ok, why = legit_transfer(alpha, srv)
            took = time.monotonic() - start
        lines.append(f"flood stream server {phase}: {len(socks)} connections held, legitimate "
                     f"transfer {'ok' if ok else 'FAILED ' + why} in {took:.1f}s")  # fmt: skip
        if not ok:
            tally.bad("crashes", 0, f"stream server, {phase}: {why}")
        else:
            tally.ok(phase)
        tally.cases += 1
        probe = request("GET", "/v1/jobs", b"", {"Authorization": f"Bearer {API_TOKEN}"})
        ctx = flood(srv.api, count, b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n") \
            if phase == "during" else contextlib.nullcontext([])  # fmt: skip
        with ctx as socks:
            if phase == "during":
                time.sleep(3)
            start = time.monotonic()
            answer = http(srv.api, probe, timeout=30)
            took = time.monotonic() - start
        lines.append(f"flood HTTP API {phase}: {len(socks)} connections held, GET /v1/jobs -> "
                     f"{answer.status} in {took:.1f}s")  # fmt: skip
        if answer.status != 200:
            tally.bad("crashes", 1, f"API, {phase}: {answer.status}")
        else:
            tally.ok(phase)
    if not srv.alive():
        tally.bad("crashes", 2, "a server process died")
    return tally, lines


def encode_frame_hello() -> bytes:
    from protocol.frames import Frame, FrameKind

    return encode_frame(Frame(FrameKind.HELLO, 0, {"version": 2, "grant": "x" * 300}))


def legit_transfer(alpha: SimBackend, srv: Servers) -> tuple[bool, str]:
    target = f"tank/bk/t{uuid.uuid4().hex[:8]}"
    guid = int(alpha.get("tank/img@s1", ["guid"])["guid"].value)
    grant = sign_grant(SECRET.encode(), new_grant(transfer_id=uuid.uuid4().hex, host="beta",
                                                  dataset=target, fromguid=0, toguid=guid,
                                                  ttl=120))  # fmt: skip
    report = push_transfer(alpha, SendSpec("tank/img@s1"),
                           [PeerTarget("beta", srv.stream, ReceiveSpec(target), grant)])
    [result] = report.targets
    return result.outcome is Outcome.OK, str(result.error)


def run(cases: int, seed: int, root: Path, flood_count: int,
        deadlines: bool = True) -> tuple[list[Tally], list[str]]:  # fmt: skip
    with servers(root / "servers") as srv:
        tallies = [family_http(srv, cases, seed + 11), family_webhook(srv, cases, seed + 12),
                   family_events(srv, cases, seed + 13)]  # fmt: skip
        tally, lines = family_flood(srv, flood_count, deadlines)
        tallies.append(tally)
        for path in srv.logs:
            text = path.read_text(errors="replace")
            found = text.count("Traceback") + text.count('"exception"')
            if found:
                tallies.append(Tally(f"log:{path.stem}", tracebacks=found,
                                     examples=[_first_traceback(text)]))  # fmt: skip
    return tallies, lines


def _first_traceback(text: str) -> str:
    for line in text.splitlines():
        if "Traceback" in line or '"exception"' in line:
            return line[:600]
    return ""
