"""`zfleet man DIR`: write a man page per command (roff), generated from the CLI itself.

One page per command and subcommand (``zfleet.1``, ``zfleet-sync.1``, ``zfleet-job-show.1``...),
made from the same help texts, arguments and options `--help` prints, so the pages never drift
from the code. No date in them: the same tree gives the same bytes (packagers can rebuild them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from protocol.version import zfleet_version


def _roff(text: str) -> str:
    """Text safe in roff: backslashes escaped, no line starting a request, hyphens as such."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.splitlines())  # fmt: skip


def _paragraphs(help_text: str) -> Iterator[str]:
    """click's help paragraphs as roff: ``\\b`` blocks keep their lines, others reflow."""
    for block in re.split(r"\n\s*\n", help_text.strip()):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            yield ".nf\n" + _roff("\n".join(line.strip() for line in lines[1:])) + "\n.fi"
        else:
            yield _roff(" ".join(line.strip() for line in lines))


Entry = tuple[tuple[str, ...], click.Command, click.Context]


def commands(group: click.Command, ctx: click.Context,
             path: tuple[str, ...] = ("zfleet",)) -> Iterator[Entry]:  # fmt: skip
    """Every command under ``group`` (itself first) with its name path and a context for it."""
    yield path, group, ctx
    if isinstance(group, click.Group):
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from commands(sub, click.Context(sub, info_name=name, parent=ctx), (*path, name))


def page(path: tuple[str, ...], command: click.Command, ctx: click.Context) -> str:
    """The man page of one command."""
    title = "-".join(path)
    short = command.get_short_help_str(limit=200)
    out = [f'.TH "{title.upper()}" 1 "" "zfleet {zfleet_version()}" "zfleet manual"',
           ".SH NAME", f"{_roff(title)} \\- {_roff(short)}",
           ".SH SYNOPSIS", f".B {_roff(' '.join(path))}"]  # fmt: skip
    usage = " ".join(command.collect_usage_pieces(ctx))
    if usage:
        out.append(_roff(usage))
    if command.help:
        out.append(".SH DESCRIPTION")
        out.append("\n.PP\n".join(_paragraphs(command.help)))
    args = [p for p in command.get_params(ctx) if isinstance(p, click.Argument)]
    if args:
        out.append(".SH ARGUMENTS")
        for a in args:
            out += [".TP", f"\\fI{_roff(a.human_readable_name)}\\fR",
                    "required" if a.required else "optional"]
    opts = [p.get_help_record(ctx) for p in command.get_params(ctx) if isinstance(p, click.Option)]
    if any(opts):
        out.append(".SH OPTIONS")
        for record in opts:
            if record is None:
                continue
            names, help_text = record
            out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(help_text) or "\\&"]
    if isinstance(command, click.Group):
        subs = [(n, command.get_command(ctx, n)) for n in command.list_commands(ctx)]
        out.append(".SH COMMANDS")
        for name, sub in subs:
            if sub is None or sub.hidden:
                continue
            out += [".TP", f"\\fB{_roff(name)}\\fR",
                    _roff(sub.get_short_help_str(limit=120)),
                    f"See \\fB{_roff(title)}\\-{_roff(name)}\\fR(1)."]  # fmt: skip
    if len(path) > 1:
        out += [".SH SEE ALSO", f"\\fB{_roff('-'.join(path[:-1]))}\\fR(1)"]
    return "\n".join(out) + "\n"


def write_pages(directory: Path) -> list[Path]:
    """Write every page into ``directory`` (made if missing); returns the files written."""
    from app.cli import cli

    directory.mkdir(parents=True, exist_ok=True)
    root = click.Context(cli, info_name="zfleet")
    written = []
    for path, command, ctx in commands(cli, root):
        target = directory / f"{'-'.join(path)}.1"
        target.write_text(page(path, command, ctx), encoding="utf-8")
        written.append(target)
    return written


@click.command("man")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def man(directory: Path) -> None:
    """Write zfleet's man pages (one per command) into DIRECTORY.

    Read one with `man -l DIRECTORY/zfleet-sync.1`, or install them under
    /usr/local/share/man/man1 and run `mandb`.
    """
    written = write_pages(directory)
    click.echo(f"wrote {len(written)} man pages to {directory}")
