"""`zfleet completion SHELL` and `zfleet man DIR`: completion that answers, pages that render.

Completion is exercised as the shells use it: bash sources the script and registers the function,
and `zfleet` itself answers the completion requests (``_ZFLEET_COMPLETE``) each shell's script
sends. The man pages cover every command and render through groff without a warning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import SUBCOMMANDS
from tests.conftest import need

ZFLEET = str(Path(sys.executable).parent / "zfleet")


def zfleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ZFLEET, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)  # fmt: skip


def complete(shell: str, line: str) -> str:
    """What `zfleet` answers when ``shell``'s script asks for completions of ``line``."""
    words = line.split(" ")
    # bash and zsh send the index of the word under the cursor, fish sends the word itself
    cword = words[-1] if shell == "fish" else str(len(words) - 1)
    done = zfleet(env={"_ZFLEET_COMPLETE": f"{shell}_complete", "COMP_WORDS": line,
                       "COMP_CWORD": cword})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_sources_the_script_and_completes_commands_and_options() -> None:
    bash = shutil.which("bash")
    need(bash is not None, "bash")
    assert bash is not None
    script = zfleet("completion", "bash")
    assert script.returncode == 0, script.stderr
    registered = subprocess.run([bash, "--norc", "-c", 'eval "$1"; complete -p zfleet', "_",
                                 script.stdout], capture_output=True, text=True, check=False)
    assert registered.returncode == 0, registered.stderr
    assert "-F _zfleet_completion" in registered.stdout
    assert "plain,sync" in complete("bash", "zfleet sy").splitlines()
    assert "plain,--dry-run" in complete("bash", "zfleet sync --dr").splitlines()
    assert "plain,--api-token-file" in complete("bash", "zfleet coordinator --api").splitlines()
    shells = complete("bash", "zfleet completion ").splitlines()
    assert shells == ["plain,bash", "plain,fish", "plain,zsh"]


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "compdef _zfleet_completion zfleet"),
                                               ("fish", "complete --no-files --command zfleet")])
def test_zsh_and_fish_scripts_and_answers(shell: str, marker: str) -> None:
    script = zfleet("completion", shell)
    assert script.returncode == 0 and marker in script.stdout, script.stdout
    answer = complete(shell, "zfleet job ")
    assert "show" in answer and "cancel" in answer, answer


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = zfleet("completion", "tcsh")
    assert done.returncode == 2 and "'tcsh' is not one of" in done.stderr


def test_man_pages_cover_every_command_and_render(tmp_path: Path) -> None:
    done = zfleet("man", str(tmp_path / "man"))
    assert done.returncode == 0, done.stderr
    pages = {p.name: p for p in (tmp_path / "man").iterdir()}
    assert "zfleet.1" in pages and "zfleet-job-show.1" in pages and "zfleet-ca-issue.1" in pages
    for name in SUBCOMMANDS:
        assert f"zfleet-{name}.1" in pages, name
    coordinator = pages["zfleet-coordinator.1"].read_text()
    assert "\\-\\-api\\-token\\-file" in coordinator and ".SH OPTIONS" in coordinator
    groff = shutil.which("groff")
    need(groff is not None, "groff (Debian groff-base)")
    assert groff is not None
    for page in pages.values():
        out = subprocess.run([groff, "-man", "-ww", "-Tutf8", "-P-cbou", str(page)],
                             capture_output=True, text=True, check=False,
                             env={**os.environ, "LC_ALL": "C.UTF-8"})  # fmt: skip
        assert out.returncode == 0 and not out.stderr, (page.name, out.stderr)
        assert "NAME" in out.stdout and "SYNOPSIS" in out.stdout, page.name
    rendered = subprocess.run([groff, "-man", "-Tutf8", "-P-cbou", str(pages["zfleet-sync.1"])],
                              capture_output=True, text=True, check=False).stdout
    plain = rendered.replace("\u2010", "-").replace("\u2212", "-")
    assert "zfleet sync [OPTIONS] JOB_NAME" in plain and "--dry-run" in plain
    again = tmp_path / "again"
    assert zfleet("man", str(again)).returncode == 0
    assert all((again / n).read_bytes() == p.read_bytes() for n, p in pages.items())  # reproducible
