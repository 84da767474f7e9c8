"""structlog, configured once for every zfleet process.

Call :func:`configure_logging` (or :func:`configure_from_settings`) at start; further calls are
no-ops unless ``force=True``. Modules log with ``structlog.get_logger(__name__)`` and event names
(``log.info("transfer.started", bytes_total=n)``).

- JSON lines when stderr is not a terminal or ``log_format="json"``; a console renderer in a
  terminal. Timestamps are ISO 8601 in UTC.
- Context bound with :func:`bind_context` (job, step, host, dataset, transfer ids) lives in
  contextvars and appears on every line, including lines from standard-library loggers such as
  Celery's, which go through the same renderer at the configured level.
- Keys that name a secret (``password``, ``secret``, ``token_secret``...) are masked, and
  :class:`protocol.settings.Secret` values print masked anyway.

- Python warnings (``warnings.warn``, e.g. Celery's SecurityWarning when run as root) become
  ``python.warning`` lines through the same renderer, so a worker's log is JSON throughout.
- Threads: contextvars do not follow a new thread, so code that starts threads or submits to an
  executor starts them with :func:`context_thread` or wraps the callable with :func:`in_context`;
  the thread then logs with the ids bound where it was started.

Celery: call :func:`take_over_celery_logging` where the Celery app is built, so the worker keeps
this configuration instead of installing its own handlers; bind ids in ``task_prerun`` and
clear them in ``task_postrun``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, Final, ParamSpec, TypeVar

import structlog
from structlog.typing import Processor

from protocol.errors import ConfigError
from protocol.settings import MASK, Settings

LOG_FORMATS: Final = ("auto", "json", "console")
# Keys whose values are masked wherever they appear in an event.
SECRET_KEYS: Final = frozenset(
    {"password", "passwd", "secret", "fleet_secret", "secret_key", "authorization", "api_key"}
)

P = ParamSpec("P")
R = TypeVar("R")

_HANDLER_MARK: Final = "_zfleet_handler"
CELERY_DISPATCH_UID: Final = "zfleet.log.setup_logging"
_configured: bool = False
_json_fd: int | None = None  # the file descriptor JSON lines go to, when they do
_level_before: int | None = None  # the root level to restore in reset_logging


def _mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    for key in event.keys() & SECRET_KEYS:
        if event[key] is not None and not isinstance(event[key], bool):
            event[key] = MASK
    return event


# what logging.captureWarnings logs: "path:line: Category: message\n  source line\n"
_WARNING_TEXT: Final = re.compile(
    r"(?s)^(?P<where>.+?:\d+): (?P<category>\w+): (?P<message>.*?)\s*$"
)
_WARNINGS_LOGGER: Final = "py.warnings"


def _name_warnings(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """A captured Python warning as an event: ``python.warning`` with category and location."""
    record = event.get("_record")
    if record is None or record.name != _WARNINGS_LOGGER:
        return event
    text = str(event.get("event", ""))
    found = _WARNING_TEXT.match(text.split("\n", 1)[0])
    event["event"] = "python.warning"
    if found is None:
        event["message"] = text.strip()
    else:
        event["category"] = found["category"]
        event["message"] = found["message"]
        event["location"] = found["where"]
    return event


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_secrets,
    ]


def configure_logging(
    *,
    level: str | int = "INFO",
    fmt: str = "auto",
    stream: IO[str] | None = None,
    force: bool = False,
) -> None:
    """Configure structlog and standard logging once; ``force`` reconfigures (tests, CLI flags).

    ``fmt`` is ``auto`` (JSON unless ``stream`` is a terminal), ``json`` or ``console``.
    """
    global _configured
    if _configured and not force:
        return
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    out = sys.stderr if stream is None else stream
    is_tty = bool(getattr(out, "isatty", lambda: False)())
    use_json = fmt == "json" or (fmt == "auto" and not is_tty)
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r}")

    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.dict_tracebacks, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
        final = [renderer]

    shared = _shared_processors()
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: modules take loggers at import, possibly before this runs.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _name_warnings],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    _remove_our_handlers(root)
    global _level_before
    if _level_before is None:
        _level_before = root.level
    root.addHandler(handler)
    root.setLevel(numeric)
    global _json_fd
    _json_fd = _fileno(out) if use_json else None
    # warnings.warn -> the py.warnings logger -> this handler: a JSON line, not raw stderr text
    logging.captureWarnings(True)
    _configured = True


def configure_from_settings(settings: Settings, *, force: bool = False) -> None:
    """:func:`configure_logging` with the settings' ``log_level`` and ``log_format``."""
    configure_logging(level=settings.log_level, fmt=settings.log_format, force=force)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): our handler goes, structlog's defaults return."""
    global _configured, _level_before
    root = logging.getLogger()
    _remove_our_handlers(root)
    if _level_before is not None:
        root.setLevel(_level_before)
        _level_before = None
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    if _configured:
        logging.captureWarnings(False)
    global _json_fd
    _json_fd = None
    _configured = False


def _fileno(stream: IO[str]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO and friends
        return None


def _remove_our_handlers(root: logging.Logger) -> None:
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A structlog logger, with ``context`` bound to it (not to the contextvars)."""
    return structlog.get_logger(name).bind(**context) if context else structlog.get_logger(name)


def bind_context(**ids: Any) -> None:
    """Bind ids (job_id, step_id, host, dataset, transfer_id...) to every following line."""
    structlog.contextvars.bind_contextvars(**ids)


def unbind_context(*keys: str) -> None:
    """Remove some bound ids."""
    structlog.contextvars.unbind_contextvars(*keys)


def clear_context() -> None:
    """Remove every bound id (at the end of a task)."""
    structlog.contextvars.clear_contextvars()


@contextmanager
def context(**ids: Any) -> Iterator[None]:
    """Bind ids for the duration of a block, restoring what was bound before."""
    with structlog.contextvars.bound_contextvars(**ids):
        yield


def in_context(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` to run in a copy of the current context (the bound ids), taken now.

    For a callable handed to another thread or an executor: wrap it where the work is handed
    over (once per thread or per submit: one copy cannot run in two threads at once).
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.run(fn, *args, **kwargs)

    return run


def context_thread(
    target: Callable[..., object],
    *,
    args: tuple[Any, ...] = (),
    name: str | None = None,
    daemon: bool | None = None,
) -> threading.Thread:
    """A thread (not started) that runs ``target`` with the ids bound in the creating thread."""
    return threading.Thread(target=in_context(target), args=args, name=name, daemon=daemon)


def take_over_celery_logging() -> None:
    """Stop Celery from installing its own log handlers; its loggers then use ours.

    Connects to ``celery.signals.setup_logging`` (Celery skips its set-up when a receiver
    exists). Imported lazily so the protocol package does not need Celery.
    """
    from celery import signals

    def _keep_ours(**_kwargs: Any) -> None:
        configure_logging()  # a no-op when the process configured logging already

    signals.setup_logging.connect(_keep_ours, weak=False, dispatch_uid=CELERY_DISPATCH_UID)
    _say_in_json()


def _say_in_json() -> None:
    """Celery prints its shutdown notices ("worker: Warm shutdown") raw from its signal handler
    with ``safe_say``; in JSON mode they become JSON lines. Written with ``os.write`` as Celery
    does: a buffered stream must not be re-entered from a signal handler."""
    from celery.apps import worker as celery_worker

    original = getattr(celery_worker.safe_say, "__wrapped__", celery_worker.safe_say)

    @functools.wraps(original)
    def say(msg: str, f: Any = sys.__stderr__) -> None:
        fd = _json_fd
        if fd is None:
            original(msg, f)
            return
        event = {
            **structlog.contextvars.get_contextvars(),
            "event": "celery.notice",
            "message": str(msg).strip(),
            "level": "info",
            "logger": celery_worker.__name__,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        with contextlib.suppress(OSError):  # as Celery's: a lost notice must not stop a shutdown
            os.write(fd, (json.dumps(event, default=str) + "\n").encode())

    celery_worker.safe_say = say
