"""`zfleet completion bash|zsh|fish`: the shell script that completes zfleet's commands and options.

click generates it; the shell calls `zfleet` back with ``_ZFLEET_COMPLETE`` set to ask what fits
at the cursor, so subcommands loaded lazily and options added later complete without regenerating.
"""

from __future__ import annotations

from typing import Final

import click
from click.shell_completion import get_completion_class

COMPLETE_VAR: Final = "_ZFLEET_COMPLETE"
SHELLS: Final = ("bash", "fish", "zsh")


def completion_script(shell: str) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    from app.cli import cli

    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell!r}", param_hint="SHELL")
    return cls(cli, {}, "zfleet", COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(zfleet completion bash)"   in ~/.bashrc
    zsh:  eval "$(zfleet completion zsh)"    in ~/.zshrc, after compinit
    fish: zfleet completion fish > ~/.config/fish/completions/zfleet.fish
    """
    click.echo(completion_script(shell), nl=False)
