"""The API's route table: method and path pattern -> handler, and the request/response values.

A route is data (:class:`Route`), so the whole API reads as one list (``coordinator/api/views.py``
builds it) and another part adds its own endpoints by appending to it, for example::

    router.add("POST", "/v1/alerts/alertmanager", on_alert)

Patterns are literal segments and ``{name}`` placeholders, each matching one non-empty segment.
Handlers take a :class:`Request` and return a :class:`Response`, or raise :class:`ApiError` (a
4xx with a JSON body). Pure: no sockets; the server (``server.py``) does the HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs

from protocol.errors import ZfleetError

JSON_TYPE: Final = "application/json"
_SEGMENT: Final = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


class ApiError(ZfleetError):
    """A request the API refuses: an HTTP status and a message for the JSON body."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, "error")


_CODES: Final = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 411: "length_required",
                 413: "too_large", 415: "unsupported_media_type", 503: "unavailable"}  # fmt: skip


@dataclass(frozen=True)
class Request:
    """One HTTP request as a handler sees it."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)  # from the route's placeholders

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter ``name``."""
        values = self.query.get(name)
        return values[-1] if values else default

    def int_arg(self, name: str, default: int, *, low: int, high: int) -> int:
        """An integer query parameter within [low, high], or a 400."""
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"query parameter {name!r} must be an integer") from None
        if not low <= value <= high:
            raise ApiError(400, f"query parameter {name!r} must be between {low} and {high}")
        return value

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty), or a 400/415."""
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower()
        if ctype != JSON_TYPE:
            raise ApiError(415, f"send {JSON_TYPE}, not {ctype}")
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data


@dataclass(frozen=True)
class Response:
    """What a handler answers: status, body bytes, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, sort_keys=True, default=str).encode() + b"\n"
    return Response(status, body)


def error_response(exc: ApiError) -> Response:
    return json_response({"error": {"code": exc.code, "message": exc.message}}, exc.status)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """``method`` + ``pattern`` served by ``handler``; ``public`` routes need no token."""

    method: str
    pattern: str
    handler: Handler
    public: bool = False

    def match(self, path: str) -> dict[str, str] | None:
        want = self.pattern.strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for w, g in zip(want, got, strict=True):
            placeholder = _SEGMENT.match(w)
            if placeholder:
                if not g:
                    return None
                params[placeholder[1]] = g
            elif w != g:
                return None
        return params


class Router:
    """An ordered list of routes; the first whose method and pattern match wins."""

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.routes: list[Route] = list(routes or [])

    def add(self, method: str, pattern: str, handler: Handler, *, public: bool = False) -> None:
        """Serve ``method pattern`` with ``handler`` (the extension point for new endpoints)."""
        for r in self.routes:
            if r.method == method.upper() and r.pattern == pattern:
                raise ValueError(f"route {method} {pattern} is already served")
        self.routes.append(Route(method.upper(), pattern, handler, public))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method path`` and its parameters, or a 404/405 ApiError."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, f"{method} is not allowed on {path} (allowed: "
                                f"{', '.join(sorted(set(allowed)))})")  # fmt: skip
        raise ApiError(404, f"no such endpoint: {path}")


def parse_query(raw: str) -> dict[str, list[str]]:
    return parse_qs(raw, keep_blank_values=True, max_num_fields=50)
