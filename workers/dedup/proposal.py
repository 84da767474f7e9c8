"""The analysis's answer for the optimizer: per cluster a base, its members and the bytes.

``zfleet rebase --optimize`` consumes a :class:`Proposal`: for each :class:`ClusterPlan` it makes
every member a clone of the base (a snapshot of it: ``base_snapshot``, or a new one when the base
was read live) carrying the member's own content. The figures are what the analysis expects:
exact when ``method`` is ``"exact"``, estimates from sketches when it is ``"sketch"``, exact but
the lower bound when it is ``"sketch+reread"`` (clusters from sketches, then a second read).
``to_dict``/``from_dict`` give the JSON form a job message or a file carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import ConfigError

from .records import RECORD


@dataclass(frozen=True)
class MemberPlan:
    """One dataset to become a clone of its cluster's base."""

    dataset: str
    snapshot: str | None  # what was read: a snapshot, or None for the live data
    bytes_now: int  # its unique bytes
    shared_with_base: int  # bytes it shares with the base: what the rebase saves
    bytes_after: int  # bytes_now - shared_with_base: its own records once a clone

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "snapshot": self.snapshot,
            "bytes_now": self.bytes_now,
            "shared_with_base": self.shared_with_base,
            "bytes_after": self.bytes_after,
        }


@dataclass(frozen=True)
class ClusterPlan:
    """A base (the cluster's medoid image) and the members to re-base onto it."""

    base: str
    base_snapshot: str | None
    base_bytes: int
    members: tuple[MemberPlan, ...]

    @property
    def bytes_now(self) -> int:
        return self.base_bytes + sum(m.bytes_now for m in self.members)

    @property
    def bytes_after(self) -> int:
        return self.base_bytes + sum(m.bytes_after for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "base_snapshot": self.base_snapshot,
            "base_bytes": self.base_bytes,
            "members": [m.to_dict() for m in self.members],
            "bytes_now": self.bytes_now,
            "bytes_after": self.bytes_after,
        }


@dataclass(frozen=True)
class Proposal:
    """Clusters (largest saving first), the collection's figures and how they were obtained."""

    clusters: tuple[ClusterPlan, ...]
    bytes_now: int  # sum of each dataset's unique bytes
    bytes_after: int  # each member stored as a clone of its base
    lower_bound: int  # distinct records of the whole collection: no layout stores less
    method: str  # "exact", "sketch" or "sketch+reread"
    threshold: float
    record_size: int = RECORD

    @property
    def saved(self) -> int:
        return self.bytes_now - self.bytes_after

    def rebases(self) -> list[tuple[str, str]]:
        """(member, base) pairs: what the optimizer is asked to do."""
        return [(m.dataset, c.base) for c in self.clusters for m in c.members]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": [c.to_dict() for c in self.clusters],
            "bytes_now": self.bytes_now,
            "bytes_after": self.bytes_after,
            "lower_bound": self.lower_bound,
            "saved": self.saved,
            "method": self.method,
            "threshold": self.threshold,
            "record_size": self.record_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """The inverse of :meth:`to_dict`; a missing or mistyped field is a ConfigError."""
        try:
            clusters = tuple(
                ClusterPlan(
                    str(c["base"]),
                    None if c["base_snapshot"] is None else str(c["base_snapshot"]),
                    int(c["base_bytes"]),
                    tuple(
                        MemberPlan(
                            str(m["dataset"]),
                            None if m["snapshot"] is None else str(m["snapshot"]),
                            int(m["bytes_now"]),
                            int(m["shared_with_base"]),
                            int(m["bytes_after"]),
                        )
                        for m in c["members"]
                    ),
                )
                for c in data["clusters"]
            )
            return cls(
                clusters,
                int(data["bytes_now"]),
                int(data["bytes_after"]),
                int(data["lower_bound"]),
                str(data["method"]),
                float(data["threshold"]),
                int(data.get("record_size", RECORD)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a dedup proposal: {exc!r}") from exc
