"""Log context across the data plane's threads, and warnings as JSON lines.

structlog's bound ids live in contextvars, which a new thread does not inherit: the data plane
starts its threads (openers, sinks, compressors, stream sessions, heartbeats) in a copy of the
starting thread's context, and the stream server binds the grant's ids on its session threads.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.grants import new_grant, sign_grant
from protocol.log import (
    bind_context,
    configure_logging,
    context,
    context_thread,
    get_logger,
    in_context,
    reset_logging,
    take_over_celery_logging,
)
from workers.dataplane.compress import ParallelCompressor
from workers.dataplane.sender import SendOptions, push_transfer
from workers.dataplane.server import StreamServer
from workers.dataplane.sinks import LinkOptions
from workers.dataplane.targets import FileTarget, Outcome, PeerTarget
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

SECRET = b"fleet-secret-for-log-tests-0123456"
IDS = {"job_id": "job-7", "step_id": "step-3", "host": "alpha"}


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=stream, force=True)
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    # every line must be JSON: json.loads fails the test on any other
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_context_thread_and_in_context_carry_the_bound_ids(out: io.StringIO) -> None:
    log = get_logger("zfleet.test")
    bind_context(**IDS)
    thread = context_thread(lambda: log.info("transfer.in_thread"), name="t")
    thread.start()
    thread.join()
    plain = threading.Thread(target=lambda: log.info("transfer.plain_thread"))
    plain.start()
    plain.join()
    with context(dataset="tank/a"):
        wrapped = in_context(lambda: log.info("transfer.wrapped"))
    other = threading.Thread(target=wrapped)
    other.start()
    other.join()
    # the compressor pool: every submit runs in a copy of the caller's context
    compressor = ParallelCompressor(lambda b: log.info("transfer.compress") or b, threads=2)
    assert [c for c, _ in compressor.map([b"a", b"b", b"c"])] == [b"a", b"b", b"c"]
    deadline = time.monotonic() + 5
    while len(_lines(out)) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for line in _lines(out):
        by_event.setdefault(line["event"], []).append(line)
    assert all(by_event["transfer.in_thread"][0][k] == v for k, v in IDS.items())
    assert "job_id" not in by_event["transfer.plain_thread"][0]  # what the helper fixes
    assert by_event["transfer.wrapped"][0]["dataset"] == "tank/a"
    assert len(by_event["transfer.compress"]) == 3
    assert all(line["job_id"] == "job-7" for line in by_event["transfer.compress"])


@pytest.fixture
def alpha(tmp_path: Path) -> SimBackend:
    backend = SimBackend(tmp_path / "alpha")
    backend.create_pool("tank")
    backend.create("tank/src")
    root = Path(backend.mountpoint("tank/src") or "")
    (root / "data.bin").write_bytes(os.urandom(400_000))
    backend.snapshot(["tank/src@s1"])
    return backend


def test_every_transfer_line_from_every_thread_carries_the_ids(
    out: io.StringIO, alpha: SimBackend, tmp_path: Path
) -> None:
    beta = SimBackend(tmp_path / "beta")
    beta.create_pool("tank")
    server = StreamServer(
        beta, host="beta", bind=("127.0.0.1", 0), secret=SECRET, stall_timeout=5.0,
        heartbeat_interval=0.2,
    )  # fmt: skip
    transfer_id = uuid.uuid4().hex
    guid = int(alpha.get("tank/src@s1", ["guid"])["guid"].value)
    grant = new_grant(transfer_id=transfer_id, host="beta", dataset="tank/dst", fromguid=0,
                      toguid=guid, ttl=120)  # fmt: skip
    with server:  # started before the step binds its ids: the server's lines are its own
        signed = sign_grant(SECRET, grant)
        peer = PeerTarget("beta", server.address, ReceiveSpec("tank/dst"), signed)
        bind_context(**IDS)
        report = push_transfer(
            alpha,
            SendSpec("tank/src@s1"),
            [peer, FileTarget(tmp_path / "witness.zstream")],
            options=SendOptions(
                chunk_size=64 * 1024,
                threads=2,  # the compressor pool, not the inline path
                link=LinkOptions(heartbeat_interval=0.2, stall_timeout=5.0),
            ),
        )
        assert report.ok, report
        assert [t.outcome for t in report.targets] == [Outcome.OK, Outcome.OK]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            line["event"] == "stream.applied" for line in _lines(out)
        ):
            time.sleep(0.02)

    lines = _lines(out)
    transfer = [line for line in lines if line["event"].startswith("transfer.")]
    events = {line["event"] for line in transfer}
    # lines from the calling thread, the opener threads and the sink threads
    assert {"transfer.started", "transfer.peer_accepted", "transfer.peer_done"} <= events
    assert {"transfer.finished"} <= events
    for line in transfer:
        assert {k: line.get(k) for k in IDS} == IDS, line
        assert line.get("dataset") == "tank/src", line

    stream = [line for line in lines if line["event"].startswith("stream.")]
    assert "stream.applied" in {line["event"] for line in stream}
    for line in stream:
        assert line["host"] == "beta", line
        assert line["transfer_id"] == transfer_id, line
        assert line["dataset"] == "tank/dst", line
        assert line["peer"].startswith("127.0.0.1:"), line
        assert "job_id" not in line, line  # nothing leaks from the sender's context


def test_a_warning_becomes_a_json_line(out: io.StringIO) -> None:
    bind_context(**IDS)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the suite turns warnings into errors
        warnings.warn_explicit(
            "running as root is discouraged", UserWarning, "celery/platforms.py", 905
        )
    [line] = [line for line in _lines(out) if line["event"] == "python.warning"]
    assert line["level"] == "warning"
    assert line["category"] == "UserWarning"
    assert line["message"] == "running as root is discouraged"
    assert line["location"] == "celery/platforms.py:905"
    assert line["job_id"] == "job-7"


def test_celerys_shutdown_notice_is_a_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.apps import worker as celery_worker

    monkeypatch.setattr(celery_worker, "safe_say", celery_worker.safe_say)  # restored after
    path = tmp_path / "worker.log"
    with path.open("w") as log_file:
        configure_logging(fmt="json", stream=log_file, force=True)
        take_over_celery_logging()
        bind_context(host="alpha")
        celery_worker.safe_say("worker: Warm shutdown (MainProcess)", sys.__stdout__)
    [line] = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["event"] == "celery.notice"
    assert line["message"] == "worker: Warm shutdown (MainProcess)"
    assert line["host"] == "alpha"


def test_a_worker_process_writes_only_json_even_for_celerys_root_warning() -> None:
    # a fresh process (no pytest warning capture): Celery's privilege check as the worker
    # runs it, plus a plain warnings.warn; stderr must hold JSON lines only
    code = (
        "import warnings\n"
        "from protocol.log import configure_logging, get_logger\n"
        "configure_logging(fmt='auto')\n"
        "from celery.platforms import check_privileges\n"
        "check_privileges({'json'})\n"
        "warnings.warn('something odd', RuntimeWarning)\n"
        "get_logger('zfleet.test').info('worker.ready')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "C_FORCE_ROOT": ""},
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert done.stdout == ""
    warned = [line for line in lines if line["event"] == "python.warning"]
    assert {line["category"] for line in warned} >= {"RuntimeWarning"}
    if os.geteuid() == 0:
        assert "SecurityWarning" in {line["category"] for line in warned}
    assert lines[-1]["event"] == "worker.ready"
