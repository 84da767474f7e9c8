"""`zfleet demo`: watch a simulated fleet replicate, back up, restore and verify itself.

Everything runs on this machine under one directory (a temporary one unless --dir): an embedded
Redis, three simulated ZFS hosts with real worker processes, a coordinator process and a local
object store. The processes are stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from app.cli.common import human_bytes, print_json
from app.demo.verify import Check
from coordinator import engine
from coordinator.engine import Job, Step
from coordinator.jobstore import JobStore
from protocol.steps import TransferArgs

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
        # notes name TOML tables ([jobs.demo.failover]): plain text, not rich markup
        self.console.print(f"  {escape(text)}", highlight=False)

    def check(self, check: Check) -> None:
        mark = "[green]✔[/]" if check.ok else "[red]✘[/]"
        detail = f" [red]({check.detail})[/]" if check.detail and not check.ok else ""
        self.console.print(f"  {mark} {check.name}{detail}", highlight=False)

    def follow(
        self, store: JobStore, job_id: str, timeout: float, watch: Callable[[], None]
    ) -> Job:
        """A bar for the job and one per running transfer; then a table of what moved."""
        from coordinator.runner import wait_job

        columns = (TextColumn("  {task.description}"), BarColumn(bar_width=24),
                   DownloadColumn())  # fmt: skip
        with Progress(*columns, console=self.console, transient=True) as progress:
            overall = progress.add_task(f"job {job_id}", total=None)
            bars: dict[str, TaskID] = {}

            def update(job: Job) -> None:
                watch()
                done = sum(1 for st in job.steps.values() if st.status in engine.TERMINAL)
                progress.update(overall, total=len(job.steps), completed=done)
                for key, p in store.progress(job_id).items():
                    step = job.steps.get(key.partition("|")[0])
                    if step is None:
                        continue
                    if key not in bars:
                        bars[key] = progress.add_task(" ".join(transfer_label(step)),
                                                      total=None)  # fmt: skip
                    total = p.get("total")
                    moved = int(p.get("done") or 0)
                    if step.status == engine.SUCCEEDED:
                        total = moved = max(moved, int(total or 0))
                    progress.update(bars[key], completed=moved, total=total)

            job = wait_job(store, job_id, timeout=timeout, poll=0.3, on_poll=update)
        transfers = [st for st in job.steps.values() if st.kind == "transfer"]
        if transfers:
            hosts = sorted({t.host for st in transfers if isinstance(st.args, TransferArgs)
                            for t in st.args.targets})  # fmt: skip
            table = Table(box=None, padding=(0, 1), show_edge=False,
                          title=f"one send each, fanned out to {', '.join(hosts)}",
                          title_justify="left", title_style="dim")  # fmt: skip
            table.add_column("dataset")
            table.add_column("send")
            table.add_column("delivered", justify="right")
            table.add_column("wire", justify="right")
            for st in transfers:
                dataset, send = transfer_label(st)
                if st.status != engine.SUCCEEDED:
                    send += f" [red]{st.status}[/]"
                table.add_row(dataset, send, human_bytes(st.result.get("bytes")),
                              human_bytes(st.result.get("wire_bytes")))  # fmt: skip
            self.console.print(table)
        return job


def transfer_label(step: Step) -> tuple[str, str]:
    """(dataset without its pool, what is sent) for a transfer step, from its planned send."""
    if not isinstance(step.args, TransferArgs):
        return step.id, step.kind
    snapshot = step.args.send.snapshot
    dataset, _, short = snapshot.partition("@")
    shown = dataset.partition("/")[2] or dataset
    base = step.args.send.from_snap
    if not base:
        return shown, f"@{short} full"
    base_ds, _, base_short = str(base).rpartition("@")
    if base_ds not in ("", dataset):
        return shown, f"@{short} as clone of {base_ds.partition('/')[2]}@{base_short}"
    return shown, f"@{base_short} → @{short}"


class QuietNarrator:
    """No narration (--json): the result is printed once at the end."""

    def phase(self, title: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def check(self, check: Check) -> None:
        pass

    def follow(
        self, store: JobStore, job_id: str, timeout: float, watch: Callable[[], None]
    ) -> Job:
        from coordinator.runner import wait_job

        return wait_job(store, job_id, timeout=timeout, poll=0.3, on_poll=lambda _job: watch())


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Work here (new, empty, or an earlier demo's) instead of a temporary "
                   "directory; kept afterwards.")
@click.option("--keep", is_flag=True,
              help="Keep the fleet running at the end (the live page stays up until Ctrl-C) "
                   "and the temporary directory (pools, store, logs) afterwards.")
@click.option("--svg", "svg_out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("fleet.svg"), show_default=True,
              help="Where to write the picture of the fleet.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON only.")
def demo(directory: Path | None, keep: bool, svg_out: Path, as_json: bool) -> None:
    """Run zfleet's main job on a simulated fleet and verify the result.

    Builds an OS image with snapshots, application clones, home and log datasets on host alpha;
    replicates them to beta and gamma (clones stay clones) and backs them up to a deduplicating
    object store; changes data and replicates the increment; restores a snapshot from the store;
    checks guids, origins and every snapshot's files; asks the coordinator for a dry run (nothing
    left to send) and the metrics endpoint (no target behind); clones a snapshot onto another
    host with `zfleet clone`; kills alpha's worker and fails over to beta through Alertmanager's
    webhook (epoch 1, beta writable), writes and syncs from beta, then rejoins alpha (its own
    change kept aside, only the increment sent); draws the fleet (fleet.svg). The live fleet
    page's address is printed at the start. Takes about a minute.

    Exit codes: 0 every check passed, 1 a check failed or the demo broke, 130 interrupted.
    """
    from app.demo.fleet import DemoFleet, TerminationAsInterrupt, claim_directory
    from app.demo.picture import status_tree, write_fleet_svg
    from app.demo.run import Demo, DemoResult
    from protocol.errors import ConfigError
    from protocol.log import configure_logging

    # The demo's own library logs would drown the narration; the processes log to files.
    configure_logging(level="WARNING", fmt="json", stream=sys.stderr)
    console = Console(stderr=as_json)
    if directory is not None:
        root = directory.resolve()
        try:
            if claim_directory(root):
                console.print(f"removed the earlier demo in {root}", highlight=False)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    else:
        root = Path(tempfile.mkdtemp(prefix="zfleet-demo-"))
    narrator = QuietNarrator() if as_json else RichNarrator(console)
    keep_dir = keep or directory is not None
    svg_out = svg_out.resolve()
    code = 0
    summarised = False

    def summary(result: DemoResult) -> None:
        console.print(status_tree(root))
        passed = sum(c.ok for c in result.checks)
        style = "green" if result.ok else "red"
        console.print(f"[{style} bold]{passed}/{len(result.checks)} checks passed[/] "
                      f"in {result.seconds:.0f} s; picture: {svg_out}")  # fmt: skip

    def hold(result: DemoResult, fleet: DemoFleet) -> None:
        nonlocal summarised
        if result.svg is not None and result.svg.exists():
            shutil.copyfile(result.svg, svg_out)  # there to look at while the fleet stays up
        summary(result)
        summarised = True
        console.print(f"the fleet stays up; live page: {fleet.page_url}\n"
                      "press Ctrl-C to stop it", highlight=False, soft_wrap=True)  # fmt: skip
        try:
            while True:
                fleet.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            console.print("stopping the fleet")

    with TerminationAsInterrupt():
        try:
            result = Demo(root, narrator, write_svg=write_fleet_svg,
                          hold=hold if keep and not as_json else None).run()
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
            elif not summarised:
                summary(result)
            code = 0 if result.ok else EXIT_CHECKS_FAILED
        finally:
            if not keep_dir:
                shutil.rmtree(root, ignore_errors=True)
            elif not as_json:
                console.print(
                    f"kept {root}: logs in {root / 'logs'}; look in the store with\n"
                    f"  ZFLEET_PASSPHRASE=$(cat {root / 'store.passphrase'}) "
                    f"zfleet cloud --repo {root / 'store'} ls", highlight=False, soft_wrap=True,
                )
    sys.exit(code)
