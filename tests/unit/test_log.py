"""Logging: JSON lines carrying the bound ids, from structlog and from standard loggers alike."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from protocol.errors import ConfigError
from protocol.log import (
    CELERY_DISPATCH_UID,
    bind_context,
    clear_context,
    configure_from_settings,
    configure_logging,
    context,
    get_logger,
    reset_logging,
    take_over_celery_logging,
    unbind_context,
)
from protocol.settings import MASK, Secret, Settings


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_bound_context_and_iso_utc_time() -> None:
    out = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=out, force=True)
    bind_context(job_id="j-1", step_id="s-2", host="alpha", dataset="tank/a")
    get_logger("zfleet.test").info("transfer.started", bytes_total=1234)
    [line] = _lines(out)
    assert line["event"] == "transfer.started"
    assert line["bytes_total"] == 1234
    assert line["level"] == "info"
    assert line["logger"] == "zfleet.test"
    assert (line["job_id"], line["step_id"], line["host"], line["dataset"]) == (
        "j-1",
        "s-2",
        "alpha",
        "tank/a",
    )
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_standard_library_and_celery_loggers_get_the_same_context() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    bind_context(job_id="j-9", transfer_id="t-3")
    logging.getLogger("celery.worker").warning("Task %s received", "zfleet.sync")
    logging.getLogger("kombu").debug("not shown at INFO")
    [line] = _lines(out)
    assert line["event"] == "Task zfleet.sync received"
    assert line["logger"] == "celery.worker"
    assert line["level"] == "warning"
    assert line["job_id"] == "j-9"
    assert line["transfer_id"] == "t-3"


def test_clear_and_unbind_remove_context() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    log = structlog.get_logger("zfleet.test")
    bind_context(job_id="j", host="alpha")
    unbind_context("host")
    log.info("one")
    clear_context()
    log.info("two")
    with context(step_id="s-1"):
        log.info("three")
    log.info("four")
    one, two, three, four = _lines(out)
    assert one["job_id"] == "j" and "host" not in one
    assert "job_id" not in two
    assert three["step_id"] == "s-1"
    assert "step_id" not in four


def test_context_stays_with_its_thread() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    bind_context(job_id="main-job")

    def other() -> None:
        bind_context(job_id="thread-job")
        structlog.get_logger("zfleet.test").info("in.thread")

    worker = threading.Thread(target=other)
    worker.start()
    worker.join(timeout=10)
    structlog.get_logger("zfleet.test").info("in.main")
    by_event = {line["event"]: line for line in _lines(out)}
    assert by_event["in.thread"]["job_id"] == "thread-job"
    assert by_event["in.main"]["job_id"] == "main-job"


def test_level_filters_both_kinds_of_logger() -> None:
    out = io.StringIO()
    configure_logging(level="WARNING", fmt="json", stream=out, force=True)
    structlog.get_logger("a").info("quiet")
    logging.getLogger("b").info("quiet")
    structlog.get_logger("a").error("loud")
    assert [line["event"] for line in _lines(out)] == ["loud"]


def test_configuring_twice_keeps_one_handler() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    configure_logging(fmt="console", stream=io.StringIO())  # ignored: already configured
    configure_logging(fmt="json", stream=out, force=True)
    structlog.get_logger("x").info("once")
    assert len(_lines(out)) == 1


def test_auto_format_is_json_off_a_terminal_and_console_on_one() -> None:
    piped = io.StringIO()
    configure_logging(fmt="auto", stream=piped, force=True)
    structlog.get_logger("x").info("plan.step_ready", step="s1")
    assert _lines(piped)[0]["event"] == "plan.step_ready"

    tty = _Tty()
    configure_logging(fmt="auto", stream=tty, force=True)
    structlog.get_logger("x").info("plan.step_ready", step="s1")
    text = tty.getvalue()
    assert "plan.step_ready" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_exceptions_are_structured_in_json() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        structlog.get_logger("x").exception("transfer.failed")
    [line] = _lines(out)
    assert line["event"] == "transfer.failed"
    assert "disk on fire" in json.dumps(line["exception"])


def test_secrets_are_masked_in_log_lines(tmp_path: Any) -> None:
    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    settings = Settings(data_dir=tmp_path, fleet_secret=Secret("x" * 20 + "topsecret"))
    structlog.get_logger("x").info(
        "settings.loaded", settings=settings, password="hunter2", secret=Secret("s" * 30)
    )
    logging.getLogger("y").info("settings %r", settings)
    text = out.getvalue()
    assert "topsecret" not in text
    assert "hunter2" not in text
    assert "s" * 30 not in text
    assert _lines(out)[0]["password"] == MASK


def test_configure_from_settings_uses_level_and_format(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, log_level="error", log_format="json")
    configure_from_settings(settings, force=True)
    structlog.get_logger("x").warning("hidden")
    structlog.get_logger("x").error("shown")
    err = capsys.readouterr().err
    assert [json.loads(line)["event"] for line in err.splitlines()] == ["shown"]


def test_bad_format_or_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="log format"):
        configure_logging(fmt="xml", force=True)
    with pytest.raises(ConfigError, match="unknown log level"):
        configure_logging(level="LOUD", force=True)


def test_celery_keeps_our_handler_when_it_sets_up_logging() -> None:
    from celery import Celery, signals

    out = io.StringIO()
    configure_logging(fmt="json", stream=out, force=True)
    take_over_celery_logging()
    take_over_celery_logging()  # idempotent: one receiver
    try:
        assert len(signals.setup_logging.receivers) == 1
        # What a starting worker does; without the take-over it replaces the root handlers.
        Celery("zfleet-test").log.setup(loglevel="INFO")
        bind_context(host="alpha")
        logging.getLogger("celery.worker.strategy").info("Task received")
        [line] = _lines(out)
        assert line["host"] == "alpha"
        assert line["event"] == "Task received"
    finally:
        signals.setup_logging.disconnect(dispatch_uid=CELERY_DISPATCH_UID)
