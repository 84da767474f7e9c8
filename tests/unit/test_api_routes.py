"""The API's pure parts: route matching, request parsing, the token check, address parsing."""

from __future__ import annotations

import pytest

from coordinator.api.auth import TokenAuth
from coordinator.api.routes import ApiError, Request, Response, Router, json_response
from coordinator.api.server import parse_address
from protocol.errors import ConfigError

TOKEN = "x" * 16


def ok(req: Request) -> Response:
    return json_response(dict(req.params))


def test_routes_match_segments_and_placeholders() -> None:
    router = Router()
    router.add("GET", "/v1/jobs", ok)
    router.add("GET", "/v1/jobs/{id}", ok)
    router.add("post", "/v1/jobs/{id}/cancel", ok)
    route, params = router.resolve("GET", "/v1/jobs/abc")
    assert route.pattern == "/v1/jobs/{id}" and params == {"id": "abc"}
    assert router.resolve("POST", "/v1/jobs/abc/cancel")[1] == {"id": "abc"}
    assert router.resolve("HEAD", "/v1/jobs")[0].method == "GET"  # HEAD is GET without a body
    assert router.resolve("GET", "/v1/jobs/")[0].pattern == "/v1/jobs"  # a trailing slash
    with pytest.raises(ApiError) as err:
        router.resolve("GET", "/v1/jobs/abc/cancel")
    assert err.value.status == 405 and "allowed: POST" in err.value.message
    with pytest.raises(ApiError) as err:
        router.resolve("GET", "/v1/jobs/a/b/c")
    assert err.value.status == 404 and err.value.code == "not_found"
    with pytest.raises(ValueError, match="already served"):
        router.add("GET", "/v1/jobs/{id}", ok)


def test_request_arguments_and_json_body() -> None:
    req = Request("GET", "/", query={"limit": ["5", "7"], "bad": ["x"]})
    assert req.int_arg("limit", 1, low=1, high=10) == 7  # the last value wins
    assert req.int_arg("missing", 3, low=1, high=10) == 3
    for name, high in (("bad", 10), ("limit", 6)):
        with pytest.raises(ApiError) as err:
            req.int_arg(name, 1, low=1, high=high)
        assert err.value.status == 400
    assert Request("POST", "/", body=b"").json() == {}
    assert Request("POST", "/", body=b'{"a": 1}').json() == {"a": 1}  # JSON unless told otherwise
    cases = {(b'{"a": 1}', "text/plain"): 415, (b"[1]", "application/json"): 400,
             (b"\xff", "application/json; charset=utf-8"): 400}  # fmt: skip
    for (body, ctype), status in cases.items():
        with pytest.raises(ApiError) as err:
            Request("POST", "/", headers={"content-type": ctype}, body=body).json()
        assert err.value.status == status


def test_token_check() -> None:
    auth = TokenAuth(f"  {TOKEN}\n")  # a file's trailing newline is not part of the token
    auth.check(f"Bearer {TOKEN}")
    auth.check(f"bearer  {TOKEN} ")
    for header in (None, "", TOKEN, f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN}y"):
        with pytest.raises(ApiError) as err:
            auth.check(header)
        assert err.value.status == 401
    assert TOKEN not in repr(auth)
    with pytest.raises(ConfigError, match="at least 16"):
        TokenAuth("short")


def test_addresses() -> None:
    assert parse_address("0.0.0.0:8478") == ("0.0.0.0", 8478)
    assert parse_address(":8478") == ("127.0.0.1", 8478)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("8478", "host:", "host:port", "h:70000"):
        with pytest.raises(ConfigError, match="ADDR:PORT"):
            parse_address(bad)
