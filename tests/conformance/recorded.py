"""Real OpenZFS 2.3.2 failures recorded in tests/fixtures/zfs-streams/cli-errors.txt.

The file holds cases as ``## title``, the lines zfs printed, then ``exit=N``. Both the error map
(which reads these words) and the front end (which must print them) are tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import ZFS_STREAMS

# lines the recording script itself produced (its own broken pipe), not zfs
_RECORDER_NOISE = ("Traceback", "  File", "BrokenPipeError")


@dataclass(frozen=True)
class Case:
    title: str
    stderr: str
    exit_code: int


def recorded_failures() -> dict[str, Case]:
    """The recorded cases that printed a message, by title."""
    cases: dict[str, Case] = {}
    title, lines = "", list[str]()
    for line in (ZFS_STREAMS / "cli-errors.txt").read_text().splitlines():
        if line.startswith("## "):
            title, lines = line[3:], []
        elif line.startswith("exit="):
            message = "\n".join(x for x in lines if not x.startswith(_RECORDER_NOISE))
            if message.strip():
                cases[title] = Case(title, message + "\n", int(line[5:]))
        else:
            lines.append(line)
    return cases


def recorded_samples() -> dict[str, str]:
    """The two destroy refusals recorded in cli-samples.txt, keyed by their reason."""
    text = (ZFS_STREAMS / "cli-samples.txt").read_text()
    start = text.index("cannot destroy 'fx/base@s2'")
    held = text.index("cannot destroy snapshot fx/base@s1")
    return {"dependent clones": text[start:held], "held": text[held:]}
