"""The HTTP server under the API: standard library only, threads, TLS optional, hard limits.

``http.server.ThreadingHTTPServer`` is enough for an operator API and a page that polls every few
seconds, and adds no dependency to the coordinator. What the standard library leaves open is
closed here: every connection has a socket timeout (a stalled client cannot hold a thread) and
each request a deadline for its head and body (nor can one trickling a byte at a time), at most
``MAX_CONNECTIONS`` are open (the one waiting longest for its request is cut to admit another),
bodies are capped and need a Content-Length, at most ``MAX_INFLIGHT`` requests run at once
(503 beyond), TLS handshakes happen in the connection's thread (a slow handshake cannot block
``accept``), and every refusal or failure is a JSON body: a bad request never gets a traceback, a
broken handler a 500 whose details go to the log only.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import redis
import structlog

from coordinator.api.auth import TokenAuth
from coordinator.api.routes import (
    ApiError,
    Request,
    Response,
    Router,
    error_response,
    json_response,
    parse_query,
)
from protocol.errors import ConfigError

log = structlog.get_logger(__name__)

MAX_BODY: Final = 64 * 1024  # job submissions and alert webhooks are a few hundred bytes
REQUEST_TIMEOUT: Final = 15.0  # seconds of socket silence before a connection is dropped
MAX_INFLIGHT: Final = 32
MAX_CONNECTIONS: Final = 256  # open connections (each a thread); the oldest idle one makes room
REQUEST_DEADLINE: Final = 30.0  # seconds a request's head and body may take to arrive in all


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (1.2 or newer) from PEM files, or a ConfigError naming the problem."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the API's TLS certificate {cert} / key {key}: {exc}") \
            from None
    return ctx


class ApiServer(ThreadingHTTPServer):
    """Holds the router, the token check, the TLS context and the in-flight limit."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], router: Router, auth: TokenAuth,
                 tls: ssl.SSLContext | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT,
                 request_deadline: float = REQUEST_DEADLINE,
                 max_connections: int = MAX_CONNECTIONS) -> None:  # fmt: skip
        self.router = router
        self.request_timeout = request_timeout
        self.auth = auth
        self.tls = tls
        self.inflight = threading.BoundedSemaphore(MAX_INFLIGHT)
        self.watch = _Watch(request_deadline, max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback to stderr: a dropped client is one log line
        log.info("api.connection_failed", client=str(client_address[0]))

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.watch.admit(request):
            log.warning("api.too_many_connections", client=str(client_address[0]))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.watch.forget(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        self.watch.expire()  # serve_forever calls this every poll interval


class _Watch:
    """Open connections and the deadline of the request each one is reading.

    A socket timeout alone lets a client hold a thread for ever by sending a byte just inside
    it (slowloris); here a request's head and body must arrive within the deadline in all, and
    a connection over the limit makes room by cutting the one that has waited longest
    for its request to arrive (a connection whose request is being answered is never cut)."""

    def __init__(self, deadline: float, limit: int) -> None:
        self._deadline = deadline
        self._limit = limit
        self._lock = threading.Lock()
        self._open: dict[Any, float | None] = {}  # socket -> deadline while reading a request

    def admit(self, sock: Any) -> bool:
        with self._lock:
            if len(self._open) >= self._limit:
                reading = [(d, s) for s, d in self._open.items() if d is not None]
                if not reading:
                    return False
                _, oldest = min(reading, key=lambda pair: pair[0])
                self._cut(oldest)
            self._open[sock] = time.monotonic() + self._deadline
        return True

    def reading(self, sock: Any, reading: bool) -> None:
        with self._lock:
            if sock in self._open:
                self._open[sock] = time.monotonic() + self._deadline if reading else None

    def forget(self, sock: Any) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            for sock, deadline in list(self._open.items()):
                if deadline is not None and deadline <= now:
                    self._cut(sock)

    def _cut(self, sock: Any) -> None:
        # the handler's blocked read ends at once; its thread then closes and forgets the socket
        self._open.pop(sock, None)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def version_string(self) -> str:
        return "zfleet"  # not the Python version: nothing a scanner can use

    def setup(self) -> None:
        # the server's timeout, not a class-wide one; a TLS socket inherits it from the raw one
        self._raw = self.request
        self.request.settimeout(self.server.request_timeout)
        if self.server.tls is not None:
            self.request = self.server.tls.wrap_socket(self.request, server_side=True)
        super().setup()

    # every method goes through one dispatcher, so an unknown one is a JSON 405, not a 501 page
    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def handle_one_request(self) -> None:
        # the deadline runs from here (waiting for the next request on a kept-alive connection
        # counts too) until the request's body has arrived
        self.server.watch.reading(self._raw, True)
        super().handle_one_request()

    def _dispatch(self) -> None:
        if not self.server.inflight.acquire(blocking=False):
            self._send(error_response(ApiError(503, "too many requests at once; retry")))
            return
        try:
            self._send(self._answer())
        except (TimeoutError, ConnectionError, ssl.SSLError):
            self.close_connection = True
        finally:
            self.server.inflight.release()

    def _answer(self) -> Response:
        try:
            url = urlsplit(self.path)
            try:
                query = parse_query(url.query)
            except ValueError:
                raise ApiError(400, "too many query parameters") from None
            route, params = self.server.router.resolve(self.command, url.path or "/")
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not route.public:
                self.server.auth.check(headers.get("authorization"))
            body = self._body()
            self.server.watch.reading(self._raw, False)
            req = Request(self.command, url.path, query, headers, body, params)
            return route.handler(req)
        except ApiError as exc:
            if exc.status == 401:  # worth an audit line: who knocked without the token
                log.info("api.unauthorized", client=self.client_address[0], path=self.path)
            return error_response(exc)
        except redis.RedisError as exc:
            log.warning("api.redis_failed", path=self.path, error=str(exc))
            return error_response(ApiError(503, "Redis is unreachable; retry"))
        except (TimeoutError, ConnectionError):
            raise
        except Exception:  # a bug in a handler: the log gets the traceback, the client a 500
            log.exception("api.handler_failed", method=self.command, path=self.path)
            return json_response({"error": {"code": "internal",
                                            "message": "internal error (see the coordinator log)"}},
                                 500)  # fmt: skip

    def _body(self) -> bytes:
        if "transfer-encoding" in {k.lower() for k in self.headers}:
            self.close_connection = True
            raise ApiError(411, "send a Content-Length body (chunked bodies are not accepted)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number") from None
        if length < 0:
            self.close_connection = True
            raise ApiError(400, "Content-Length is negative")
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be taken for a request
            raise ApiError(413, f"the body is larger than {MAX_BODY} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            raise ConnectionError("the client sent less than its Content-Length")
        return body

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if resp.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="zfleet"')
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, huge headers, unknown method): JSON too
        self.close_connection = True
        # a garbled request line reads as HTTP/0.9, which has no status line: answer with one
        self.request_version = "HTTP/1.0"
        with contextlib.suppress(OSError):
            self._send(error_response(ApiError(code, message or "bad request")))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api.request", client=self.client_address[0], line=format % args)


@dataclass
class ApiHandle:
    """A running API server: where it listens, its routes, and how to stop it."""

    server: ApiServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        scheme = "https" if self.server.tls is not None else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{port}"

    @property
    def router(self) -> Router:
        return self.server.router

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight, close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def start_server(address: tuple[str, int], router: Router, auth: TokenAuth,
                 tls: ssl.SSLContext | None = None, *,
                 request_timeout: float = REQUEST_TIMEOUT,
                 request_deadline: float = REQUEST_DEADLINE,
                 max_connections: int = MAX_CONNECTIONS) -> ApiHandle:  # fmt: skip
    """Bind ``address`` (port 0 picks one) and serve ``router`` in a background thread."""
    try:
        server = ApiServer(address, router, auth, tls, request_timeout=request_timeout,
                           request_deadline=request_deadline,
                           max_connections=max_connections)  # fmt: skip
    except OSError as exc:
        where = f"{address[0]}:{address[1]}"
        raise ConfigError(f"cannot listen on {where} for the API: {exc}") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="zfleet-api", daemon=True)  # fmt: skip
    thread.start()
    handle = ApiHandle(server, thread)
    log.info("api.serving", url=handle.url)
    return handle


def parse_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[v6]:PORT`` or ``:PORT`` (loopback) as a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http wants ADDR:PORT (e.g. 127.0.0.1:8478), not {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)
