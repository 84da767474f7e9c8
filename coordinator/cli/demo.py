"""`zfleet demo`: watch a simulated fleet replicate, back up, restore and verify itself.

Everything runs on this machine under one directory (a temporary one unless --dir): an embedded
Redis, three simulated ZFS hosts with real worker processes, a coordinator process and a local
object store. The processes are stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from coordinator.cli.common import print_json
from coordinator.demo.verify import Check
from coordinator.engine import Job
from coordinator.jobstore import JobStore

EXIT_CHECKS_FAILED = 1
EXIT_INTERRUPTED = 130


class RichNarrator:
    """Narration for a person: phases, notes, progress bars, and ticks for checks."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.n = 0

    def phase(self, title: str) -> None:
        self.n += 1
        self.console.rule(f"[bold]{self.n}. {title}", align="left")

    def note(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False)

    def check(self, check: Check) -> None:
        mark = "[green]✔[/]" if check.ok else "[red]✘[/]"
        detail = f" [red]({check.detail})[/]" if check.detail and not check.ok else ""
        self.console.print(f"  {mark} {check.name}{detail}", highlight=False)

    def follow(self, store: JobStore, job_id: str, timeout: float) -> Job:
        from coordinator.cli.sync import follow

        return follow(store, job_id, timeout=timeout, console=self.console, bars=True)


class QuietNarrator:
    """No narration (--json): the result is printed once at the end."""

    def phase(self, title: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def check(self, check: Check) -> None:
        pass

    def follow(self, store: JobStore, job_id: str, timeout: float) -> Job:
        from coordinator.runner import wait_job

        return wait_job(store, job_id, timeout=timeout, poll=0.3)


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Work here (created if missing) instead of a temporary directory.")
@click.option("--keep", is_flag=True,
              help="Keep the directory afterwards (pools, store, logs, fleet.svg).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON only.")
def demo(directory: Path | None, keep: bool, as_json: bool) -> None:
    """Run zfleet's main job on a simulated fleet and verify the result.

    Builds an OS image with snapshots, application clones, home and log datasets on host alpha;
    replicates them to beta and gamma (clones stay clones) and backs them up to a deduplicating
    object store; changes data and replicates the increment; restores a snapshot from the store;
    checks guids, origins and every snapshot's files; draws the fleet (fleet.svg).

    Exit codes: 0 every check passed, 1 a check failed or the demo broke, 130 interrupted.
    """
    from coordinator.demo.fleet import TerminationAsInterrupt
    from coordinator.demo.picture import status_tree, write_fleet_svg
    from coordinator.demo.run import Demo
    from protocol.log import configure_logging

    # The demo's own library logs would drown the narration; the processes log to files.
    configure_logging(level="WARNING", fmt="json", stream=sys.stderr)
    console = Console(stderr=as_json)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        root = directory.resolve()
    else:
        root = Path(tempfile.mkdtemp(prefix="zfleet-demo-"))
    narrator = QuietNarrator() if as_json else RichNarrator(console)
    keep_dir = keep or directory is not None
    svg_out = Path.cwd() / "fleet.svg"
    code = 0
    with TerminationAsInterrupt():
        try:
            result = Demo(root, narrator, write_svg=write_fleet_svg).run()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the fleet was stopped[/]")
            code = EXIT_INTERRUPTED
        except Exception as exc:  # the fleet is down already; say what broke, in one line
            message = f"{type(exc).__name__}: {exc}"
            if as_json:
                print_json({"ok": False, "root": str(root), "error": message})
            else:
                console.print(f"[red bold]demo failed:[/] {message}", highlight=False)
            code = EXIT_CHECKS_FAILED
        else:
            if result.svg is not None and result.svg.exists():
                # The picture outlives a temporary directory: it goes where the user is.
                shutil.copyfile(result.svg, svg_out)
                result.svg = svg_out
            if as_json:
                print_json(result.to_dict())
            else:
                console.print(status_tree(root))
                passed = sum(c.ok for c in result.checks)
                style = "green" if result.ok else "red"
                console.print(f"[{style} bold]{passed}/{len(result.checks)} checks passed[/] "
                              f"in {result.seconds:.0f} s; picture: {result.svg}")  # fmt: skip
            code = 0 if result.ok else EXIT_CHECKS_FAILED
        finally:
            if not keep_dir:
                shutil.rmtree(root, ignore_errors=True)
            elif not as_json:
                console.print(f"kept {root} (logs in {root / 'logs'})")
    sys.exit(code)
