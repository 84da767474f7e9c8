"""`zfleet rebase IMAGE... --onto BASE@SNAP`: rebase images onto a base on this host.

It acts on the local backend: the simulated pools under $ZFLEET_SIM_ROOT (as `zfleet sim zfs`),
or OpenZFS itself with --real (the files are read and written here, so the pools must be local).
The work is workers.rebase's; this module only reads arguments and prints reports.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from app.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    config_option,
    human_bytes,
    json_option,
    print_json,
)
from protocol.errors import ConfigError, DatasetNotFound, RebaseConflict, ZfleetError
from protocol.log import configure_logging
from workers.zfs.base import ZfsBackend


def _backend(real: bool) -> ZfsBackend:
    if real:
        from workers.zfs.real import RealBackend

        return RealBackend()
    from workers.zfs.front import open_sim, sim_root

    return open_sim(sim_root())


def _hook(command: str | None) -> Any:
    if not command:
        return None
    from workers.rebase import command_hook

    try:
        return command_hook(shlex.split(command))
    except ValueError as exc:
        raise ConfigError(f"cannot read the hook command {command!r}: {exc}") from exc


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("images", nargs=-1)
@click.option("--onto", metavar="BASE@SNAP", help="The base snapshot the images become clones of.")
@click.option(
    "--old-base",
    metavar="DATASET@SNAP",
    help="What the images were based on (default: their origin).",
)
@click.option(
    "--prefer",
    type=click.Choice(["image", "base"]),
    help="Who wins a path both changed (default: stop, changing nothing).",
)
@click.option(
    "--keep-content",
    is_flag=True,
    help="Representation only: the files stay exactly as they are, verified.",
)
@click.option("--drop-old", is_flag=True, help="Destroy the old image after the swap.")
@click.option(
    "--before",
    "before_cmd",
    metavar="CMD",
    help="Run before the swap to stop what uses the image (non-zero: refuse).",
)
@click.option("--after", "after_cmd", metavar="CMD", help="Run afterwards to start it again.")
@click.option("--undo", is_flag=True, help="Swap each IMAGE back for its pre-rebase backup.")
@click.option(
    "--proposal",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Rebase a collection: JSON {"clusters": [{"base", "members"}]}.',
)
@click.option(
    "--optimize",
    is_flag=True,
    help="IMAGES are a collection (datasets or a pool): cluster them, rebase onto medoids.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="--optimize: least similarity to join a base (zfleet dedup analyze's).",
)
@click.option("--real", is_flag=True, help="OpenZFS on this host instead of the simulation.")
@config_option(required=False)
@click.option("--on", "on_host", metavar="HOST", help="Fleet: the host a --proposal is rebased on.")
@click.option("--sync", metavar="JOB", help="Fleet: run this sync job afterwards (deltas only).")
@click.option("--dry-run", is_flag=True, help="Fleet: plan and print, change nothing.")
@click.option("--timeout", default=3600.0, show_default=True, help="Fleet: seconds to wait.")
@json_option
def rebase(  # noqa: PLR0917
    images: tuple[str, ...],
    onto: str | None,
    old_base: str | None,
    prefer: str | None,
    keep_content: bool,
    drop_old: bool,
    before_cmd: str | None,
    after_cmd: str | None,
    undo: bool,
    proposal: Path | None,
    optimize: bool,
    threshold: float | None,
    real: bool,
    config_path: Path | None,
    on_host: str | None,
    sync: str | None,
    dry_run: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Make each IMAGE a clone of BASE@SNAP, keeping its own changes (like git rebase).

    \b
    The image's changes since its old base come from `zfs diff` (or a tree compare) and are
    replayed onto the new base; with --keep-content the image's files stay byte for byte and
    only the blocks it shares with the base are shared from now on. The old image stays as
    IMAGE.pre-rebase-<time> until --drop-old; `--undo IMAGE` swaps it back.

    \b
    Examples:
      zfleet rebase tank/img/web --onto tank/base@2025-06 --prefer image
      zfleet rebase tank/img/a tank/img/b --onto tank/img/web@s1 --keep-content --drop-old
      zfleet rebase --proposal clusters.json --drop-old --json
      zfleet rebase --optimize tank/img --drop-old     # analyse, then rebase onto medoids

    \b
    Across the fleet (a job run by each host's worker; the coordinator must run):
      zfleet rebase alpha:tank/img/web beta:tank/img/db --onto alpha:tank/base@v2 -c fleet.toml
      zfleet rebase alpha:tank/img/app --onto alpha:tank/base@v1 --keep-content --sync nightly
      zfleet rebase --proposal proposal.json --on alpha --sync nightly -c fleet.toml
      zfleet rebase --optimize tank/img --on alpha --sync nightly -c fleet.toml
    The base is found on each image's host by its guid. --sync JOB sets the replicas aside and
    runs JOB, so they receive only each image's delta from the base they hold.

    \b
    Exit codes: 0 done; 1 a rebase (or the --sync job) failed, rolled back; 2 bad arguments;
    3 a conflict stopped a rebase, or the fleet plan refused (nothing changed); 4 Redis
    unreachable; 5 timed out waiting.
    """
    configure_logging(level=os.environ.get("ZFLEET_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    if optimize and (proposal is not None or onto or undo):
        click.echo("zfleet: --optimize takes a collection, no --onto, --proposal or --undo",
                   err=True)  # fmt: skip
        sys.exit(EXIT_CONFIG)
    fleet = on_host is not None or any(":" in x for x in (*images, onto or ""))
    if fleet or sync is not None or dry_run:
        if config_path is None:
            click.echo("zfleet: HOST: addresses, --on, --sync and --dry-run need the fleet "
                       "config (-c fleet.toml)", err=True)  # fmt: skip
            sys.exit(EXIT_CONFIG)
        if undo or real or old_base:
            click.echo("zfleet: --undo, --real and --old-base act on this host only", err=True)
            sys.exit(EXIT_CONFIG)
        from app.cli.rebasefleet import run

        run(config_path, images, onto, proposal=proposal, on=on_host, sync=sync,
            optimize=optimize, threshold=threshold,
            dry_run=dry_run, timeout=timeout, as_json=as_json, prefer=prefer,
            keep_content=keep_content, drop_old=drop_old,
            before=tuple(shlex.split(before_cmd or "")), after=tuple(shlex.split(after_cmd or "")))
        return
    try:
        if optimize:
            if not images:
                raise ConfigError("--optimize needs the collection: datasets or a pool")
            sys.exit(_optimize(_backend(real), images, threshold, drop_old=drop_old,
                               hooks=_hooks(before_cmd, after_cmd), as_json=as_json))  # fmt: skip
        if proposal is not None:
            if images or onto or undo:
                raise ConfigError("--proposal takes no IMAGE, --onto or --undo")
            sys.exit(
                _collection(
                    _backend(real), proposal, drop_old, _hooks(before_cmd, after_cmd), as_json
                )
            )
        if not images:
            raise ConfigError("name at least one IMAGE (or --proposal FILE)")
        if not undo and not onto:
            raise ConfigError("--onto BASE@SNAP is required")
        hooks = _hooks(before_cmd, after_cmd)
        backend = _backend(real)
    except (ConfigError, DatasetNotFound) as exc:
        click.echo(f"zfleet: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except ZfleetError as exc:  # reading the collection failed (no ZFS here, ...): nothing changed
        click.echo(f"zfleet: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    from workers.rebase import rebase as do_rebase
    from workers.rebase import undo as do_undo
    from workers.rebase.apply import report_lines

    code = EXIT_OK
    out: list[dict[str, Any]] = []
    for image in images:
        try:
            if undo:
                done = do_undo(backend, image, hooks=hooks)
                out.append({"image": image, "undone": done})
                if not as_json:
                    click.echo(
                        f"{image}: back to {done['restored_from']}; the rebased one is "
                        f"{done['rebased']}"
                    )
                continue
            assert onto is not None
            report = do_rebase(
                backend,
                image,
                onto,
                old_base=old_base,
                prefer="image" if prefer == "image" else "base" if prefer == "base" else None,
                keep_content=keep_content,
                drop_old=drop_old,
                hooks=hooks,
            )
            out.append(report.to_json())
            if not as_json:
                click.echo("\n".join(report_lines(report, human_bytes)))
        except ZfleetError as exc:
            code = max(code, EXIT_REFUSED if isinstance(exc, RebaseConflict) else EXIT_FAILED)
            entry: dict[str, Any] = {"image": image, "error": str(exc), "kind": type(exc).__name__}
            if isinstance(exc, RebaseConflict):
                entry["conflicts"] = exc.paths
            out.append(entry)
            if not as_json:
                click.echo(f"zfleet: {type(exc).__name__}: {exc}", err=True)
    if as_json:
        print_json(out)
    sys.exit(code)


def _hooks(before_cmd: str | None, after_cmd: str | None) -> Any:
    from workers.rebase import Hooks

    return Hooks(before=_hook(before_cmd), after=_hook(after_cmd))


def _optimize(backend: ZfsBackend, names: tuple[str, ...], threshold: float | None, *,
              drop_old: bool, hooks: Any, as_json: bool) -> int:  # fmt: skip
    """Analyse the collection, then rebase each cluster's members onto its medoid."""
    from app.cli.dedup import analyze_names
    from app.cli.rebasefleet import analysis_lines, proposal_pairs
    from workers.rebase.collection import Cluster, Proposal

    kw = {} if threshold is None else {"threshold": threshold}
    estimate = analyze_names(backend, names, **kw).proposal
    if not estimate.rebases():
        click.echo("nothing to rebase: no images alike enough (see zfleet dedup analyze)")
        return EXIT_OK
    if not as_json:
        click.echo("\n".join(analysis_lines(estimate.to_dict())))
    by_base: dict[str, list[str]] = {}
    for member, base in proposal_pairs(estimate.to_dict()):
        by_base.setdefault(base, []).append(member)
    plan = Proposal(tuple(Cluster(b, tuple(m)) for b, m in by_base.items()))
    return _run_collection(backend, plan, drop_old, hooks, as_json, estimate=estimate.to_dict())


def _collection(backend: ZfsBackend, path: Path, drop_old: bool, hooks: Any, as_json: bool) -> int:
    from workers.rebase.collection import Proposal

    try:
        plan = Proposal.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return _run_collection(backend, plan, drop_old, hooks, as_json)


def _run_collection(backend: ZfsBackend, plan: Any, drop_old: bool, hooks: Any, as_json: bool,
                    *, estimate: dict[str, Any] | None = None) -> int:  # fmt: skip
    from workers.rebase.collection import rebase_collection

    try:
        report = rebase_collection(backend, plan, drop_old=drop_old, hooks=hooks)
    except ConfigError:
        raise
    except ZfleetError as exc:
        click.echo(f"zfleet: {type(exc).__name__}: {exc}", err=True)
        return EXIT_FAILED
    if as_json:
        out = report.to_json()
        if estimate is not None:
            out["analysis"] = estimate
        print_json(out)
    else:
        for r in report.rebased:
            click.echo(
                f"{r.image}: onto {r.onto}, wrote {human_bytes(r.bytes_written)}, "
                f"used {human_bytes(r.used_before)} -> {human_bytes(r.used_after)}"
            )
        for member, why in report.failed.items():
            click.echo(f"{member}: not rebased: {why}", err=True)
        click.echo(
            f"pool allocated: {human_bytes(report.allocated_before)} -> "
            f"{human_bytes(report.allocated_after)}"
        )
    return EXIT_FAILED if report.failed else EXIT_OK
