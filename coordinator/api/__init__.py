"""The coordinator's HTTP API and live fleet page (docs/api.md).

:func:`serve_api` starts it in a background thread and returns an :class:`ApiHandle`
(``.address``, ``.url``, ``.router``, ``.stop()``). Modules: ``routes`` (the route table and
request/response values), ``auth`` (bearer token), ``server`` (HTTP, TLS, limits), ``views`` (the
endpoints), ``page`` (the HTML page).
"""

from __future__ import annotations

from pathlib import Path

import redis

from coordinator.api.auth import TokenAuth
from coordinator.api.routes import ApiError, Request, Response, Route, Router, json_response
from coordinator.api.server import (
    REQUEST_TIMEOUT,
    ApiHandle,
    parse_address,
    start_server,
    tls_context,
)
from coordinator.api.views import ApiContext, build_router
from protocol.errors import ConfigError

__all__ = ["ApiError", "ApiHandle", "Request", "Response", "Route", "Router", "json_response",
           "serve_api"]  # fmt: skip


def serve_api(
    client: redis.Redis[bytes],
    *,
    config_path: Path | None,
    address: str | tuple[str, int] = ("127.0.0.1", 0),
    token: str | None = None,
    token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
) -> ApiHandle:
    """Serve the API for the fleet in ``config_path`` (Redis ``client``) until ``.stop()``.

    Exactly one of ``token`` and ``token_file`` is required; TLS needs both ``tls_cert`` and
    ``tls_key``. ``request_timeout`` is how long a silent connection is kept. Bad arguments
    raise ConfigError before anything listens.
    """
    if (token is None) == (token_file is None):
        raise ConfigError("the API needs a token: give exactly one of token and token_file")
    if token is not None:
        auth = TokenAuth(token)
    else:
        assert token_file is not None
        auth = TokenAuth.from_file(token_file)
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS for the API needs both a certificate and a key")
    tls = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
    where = parse_address(address) if isinstance(address, str) else address
    router = build_router(ApiContext(client, config_path))
    return start_server(where, router, auth, tls, request_timeout=request_timeout)
