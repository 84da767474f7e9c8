"""The kinds room's step messages (``zfleet kind set|show``; coordinator/kindjob.py).

Imported by one line at the end of protocol/steps.py, so every protocol user knows them::

    set-property  SetPropertyArgs  ``zfs set NAME=VALUE`` (``zfs inherit NAME`` for None) of a
                                   user property, on a dataset checked by guid
    get-property  GetPropertyArgs  user properties of a dataset with where each value comes from
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.messages import message
from protocol.steps import StepArgs, register_step


@message("step.set-property", version=1, strict=True)
@dataclass(frozen=True)
class SetPropertyArgs(StepArgs):
    """Set (or, with ``value`` None, inherit) the user property ``name`` of ``dataset``; ``guid``
    is the dataset's when planned (0: not checked), so a dataset destroyed and made again under
    the same name since is left alone."""

    KIND: ClassVar[str] = "set-property"
    dataset: str
    name: str
    value: str | None
    guid: int = 0


@message("step.get-property", version=1, strict=True)
@dataclass(frozen=True)
class GetPropertyArgs(StepArgs):
    """Read user properties of ``dataset`` with their source (local, inherited from X)."""

    KIND: ClassVar[str] = "get-property"
    dataset: str
    names: tuple[str, ...]


for _cls in (SetPropertyArgs, GetPropertyArgs):
    register_step(_cls)
