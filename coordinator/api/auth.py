"""Bearer-token authentication for the API: one shared token, read from a secret file.

The token file holds one line (surrounding whitespace ignored) of at least ``MIN_TOKEN`` characters,
so a typo'd path or an empty file stops the coordinator at start instead of serving an API anyone
can call. Tokens are compared in constant time; the token never appears in a repr or a log.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

from coordinator.api.routes import ApiError
from protocol.errors import ConfigError

MIN_TOKEN: Final = 16
SCHEME: Final = "bearer"


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured token."""

    def __init__(self, token: str) -> None:
        token = token.strip()
        if len(token) < MIN_TOKEN:
            raise ConfigError(f"the API token must be at least {MIN_TOKEN} characters")
        self._token = token.encode()

    @classmethod
    def from_file(cls, path: Path) -> TokenAuth:
        """The token in ``path``, or a ConfigError naming the file and what is wrong."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API token file {path}: {exc}") from None
        try:
            return cls(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        return "TokenAuth(token=**********)"

    def check(self, header: str | None) -> None:
        """Return if ``header`` carries the token; otherwise a 401 ApiError."""
        if not header:
            raise ApiError(401, "missing Authorization: Bearer <token> header")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != SCHEME or not value.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'")
        if not hmac.compare_digest(value.strip().encode(), self._token):
            raise ApiError(401, "invalid API token")
