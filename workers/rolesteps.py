"""The worker's side of failover, switchover and rejoin: one handler per role-change step kind.

Thin: each handler passes its message to the idempotent function in :mod:`workers.roles` and
returns what it did as a small result. The fencing epoch was already checked by the task (a call
of an older epoch never gets here); the message carries its epoch as well, so the result and the
logs say under which epoch a dataset changed role. Hooks run the configured command without a
shell, with a time limit; a failing hook fails its step (before a demote, that stops the
switchover with nothing changed).
"""

from __future__ import annotations

import subprocess

import structlog

from protocol.errors import HookFailed
from protocol.steps import (
    DemoteArgs,
    FenceArgs,
    HookArgs,
    KeepDivergedArgs,
    PreserveArgs,
    PromoteArgs,
)
from workers import roles
from workers.steps import Result, StepContext, handles

log = structlog.get_logger(__name__)


@handles(PromoteArgs)
def promote(ctx: StepContext, args: PromoteArgs) -> Result:
    reports = roles.promote_writable(ctx.backend, args.datasets)
    return {
        "epoch": args.epoch,
        "datasets": len(reports),
        "rolled_back": sum(1 for r in reports if r.rolled_back_to),
        "aborted_receives": sum(1 for r in reports if r.aborted_receive),
        "mounted": sum(1 for r in reports if r.mounted),
    }


@handles(DemoteArgs)
def demote(ctx: StepContext, args: DemoteArgs) -> Result:
    reports = roles.demote_readonly(ctx.backend, args.datasets, unmount=args.unmount)
    return {"epoch": args.epoch, "datasets": len(reports),
            "made_readonly": sum(1 for r in reports if r.made_readonly)}  # fmt: skip


@handles(FenceArgs)
def fence(ctx: StepContext, args: FenceArgs) -> Result:
    reports = roles.fence(ctx.backend, args.datasets)
    return {"epoch": args.epoch, "present": sum(1 for r in reports if r.present),
            "made_readonly": sum(1 for r in reports if r.made_readonly)}  # fmt: skip


@handles(PreserveArgs)
def preserve_divergence(ctx: StepContext, args: PreserveArgs) -> Result:
    # Every dataset's divergence is judged before any split: a split renames datasets aside and
    # back, which rewrites mountpoint directories in parents and children (zfs#12580), so a
    # dataset judged after another's split would look changed and be split for nothing. Then
    # the splits, deepest first; then every dataset whose main line now ends at its common
    # snapshot is rolled back to it, clearing what the splits left in its live tree (the host is
    # fenced: nothing else wrote there), so that the next increment applies even where this
    # rejoin has nothing to send.
    order = sorted(args.datasets, key=lambda d: (-d[0].count("/"), d[0]))
    diverged = {d for d, c in order if roles.has_diverged(ctx.backend, d, c, args.tag)}
    kept: list[str] = []
    for dataset, common in order:
        if dataset in diverged:
            report = roles.preserve_divergence(ctx.backend, dataset, common, args.tag)
            if report.aside is not None:
                kept.append(report.aside)
    rewound = sum(roles.rewind_to_common(ctx.backend, d, c) for d, c in order)
    return {"epoch": args.epoch, "diverged": len(kept), "aside": ",".join(kept),
            "rewound": rewound}  # fmt: skip


@handles(KeepDivergedArgs)
def keep_diverged(ctx: StepContext, args: KeepDivergedArgs) -> Result:
    replaced: list[str] = []
    for dataset in sorted(args.datasets, key=lambda d: (d.count("/"), d)):
        report = roles.keep_diverged(ctx.backend, dataset, args.tag)
        if report.aside is not None:
            replaced.append(report.aside)
    return {"epoch": args.epoch, "kept": len(replaced), "replaced": ",".join(replaced)}


@handles(HookArgs)
def hook(ctx: StepContext, args: HookArgs) -> Result:
    try:
        done = subprocess.run(list(args.argv), capture_output=True, timeout=args.timeout,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HookFailed(f"hook {args.argv[0]!r} did not run: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-500:]
        raise HookFailed(f"hook {args.argv[0]!r} exited {done.returncode}: {tail}")
    log.info("hook.ran", argv=list(args.argv))
    return {"epoch": args.epoch, "exit": 0}
