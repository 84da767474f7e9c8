"""The live fleet page served at ``/``: one self-contained HTML document (``fleet.html``).

It carries no data: its inline script polls ``/v1/hosts``, ``/v1/jobs``, ``/v1/status`` and
``/v1/graph.svg`` with the API token, so the page itself can be served without one.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page_html() -> str:
    """The page's HTML (read once from the package)."""
    return files("coordinator.api").joinpath("fleet.html").read_text(encoding="utf-8")
