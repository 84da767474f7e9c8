"""Celery task and queue names: the coordinator sends to them, the workers consume them."""

from __future__ import annotations

from typing import Final

STEP_TASK: Final = "zfleet.step"
NOOP_TASK: Final = "zfleet.noop"
QUEUE_PREFIX: Final = "zfleet.host."


def queue_for(host: str) -> str:
    """The queue a host's worker consumes."""
    return QUEUE_PREFIX + host
