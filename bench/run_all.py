"""Every figure of the speed issue's outcomes, each beside its same-run baseline and the ratio.

    bench/run-all [--full] [--big] [--only NAME,...] [--logs DIR] [--json]

Runs the bench scripts one after another in child processes, with short settings by default
(the whole run stays under 10 minutes on a 2-core machine; each script has a time limit), keeps
each one's whole output in --logs (default: a new temporary directory, printed), reads its
figures back and prints one table: outcome, figure, value, baseline (measured in the same
run by the same script), ratio, goal, and whether the goal is met.

- coordination  bench/coordination.py (50 datasets x 4 rounds, 3 workers): overhead per step,
                end to end beyond the step's run, small transfers/s; baseline a raw Celery
                no-op round trip. --big adds a 10,000-dataset round (long: tens of minutes).
- scale         bench/coordinator_scale.py: the coordinator alone on a 10,000-dataset round,
                workers scripted (no data moves): what the loop itself costs at that size.
- transfer      bench/transfer.py (64 MiB, 1 run): 1 peer vs the hand pipeline, mutual TLS vs
                plain, 3-peer fan-out vs three sequential hand pipelines, CPU per GB.
- store         bench/store_vs_restic_borg.py (16 MiB, 4 snapshots): ingest and restore vs
                borg, peak RSS vs borg's.
- sim           bench/sim_stream.py (64 MiB, 1 run): simulated send -> receive vs a pipe.
- planner       bench/planner.py at a tenth of the issue's fleet (100 hosts, 10,000 datasets,
                100,000 snapshots); --full runs the issue's 1,000 x 100,000 x 1 M (and every
                script at its own defaults).

A figure that cannot be read back (a script changed its output, failed or timed out) is shown
as missing, with the log that explains it; the exit code is 1 then, else 0 (a goal not met is
reported, not an error: the table is for comparisons over time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 600.0


@dataclass(frozen=True)
class Figure:
    outcome: int
    name: str
    value: float | None
    unit: str
    baseline: str = ""
    base_value: float | None = None
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    short: tuple[str, ...]
    timeout: float
    read: Callable[[str], list[Figure]]


def _num(pattern: str, text: str, group: int = 1) -> float | None:
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(group)) if m else None


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def _at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


# -- reading each script's output ---------------------------------------------------------------
def read_coordination(out: str) -> list[Figure]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{") and "noop_median_ms" in ln]
    f = json.loads(lines[-1]) if lines else {}
    noop = f.get("noop_median_ms")
    over, e2e, rate = f.get("overhead_median_ms"), f.get("e2e_median_ms"), f.get("transfers_per_s")
    noop_rate = 1000 / noop if noop else None
    size = f"{f.get('datasets', '?')} datasets x {f.get('rounds', '?')} rounds"
    return [
        Figure(1, f"overhead per step, median ({size})", over, "ms", "Celery no-op round trip",
               noop, _div(over, noop), "<= 5 ms", _at_most(over, 5.0)),
        Figure(1, "end to end beyond the step's run, median", e2e, "ms",
               "Celery no-op round trip", noop, _div(e2e, noop), "<= 50 ms", _at_most(e2e, 50.0)),
        Figure(1, "small incremental transfers/s, 3 workers", rate, "/s",
               "sequential no-ops/s", noop_rate, _div(rate, noop_rate), ">= 100/s",
               _at_least(rate, 100.0)),
        Figure(1, "coordinator CPU per step", f.get("cpu_per_step_ms"), "ms",
               "Celery no-op round trip", noop, _div(f.get("cpu_per_step_ms"), noop)),
    ]  # fmt: skip


def read_big_round(out: str) -> list[Figure]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{") and "noop_median_ms" in ln]
    f = json.loads(lines[-1]) if lines else {}
    noop = f.get("noop_median_ms")
    return [
        Figure(1, f"{f.get('datasets', 10000):,}-dataset round: wall", f.get("wall_s"), "s"),
        Figure(1, "  its transfers/s", f.get("transfers_per_s"), "/s", "sequential no-ops/s",
               1000 / noop if noop else None, _div(f.get("transfers_per_s"),
                                                   1000 / noop if noop else None)),
        Figure(1, "  its overhead per step, median", f.get("overhead_median_ms"), "ms",
               "Celery no-op round trip", noop, _div(f.get("overhead_median_ms"), noop)),
    ]  # fmt: skip


def read_scale(out: str) -> list[Figure]:
    lines = [ln for ln in out.splitlines() if ln.startswith("{") and "baseline_median_ms" in ln]
    f = json.loads(lines[-1]) if lines else {}
    base, over = f.get("baseline_median_ms"), f.get("overhead_median_ms")
    size = f"{f.get('datasets', 10000):,}"
    return [
        Figure(1, f"{size}-dataset round, coordinator alone: wall", f.get("wall_s"), "s"),
        Figure(1, "  its steps/s (scripted workers)", f.get("steps_per_s"), "/s"),
        Figure(1, "  its overhead per step, median", over, "ms", "scripted round trip", base,
               _div(over, base)),
        Figure(1, "  its coordinator CPU per step", f.get("cpu_per_step_ms"), "ms",
               "scripted round trip", base, _div(f.get("cpu_per_step_ms"), base)),
    ]  # fmt: skip


def _row(name: str, out: str) -> tuple[float | None, float | None, float | None]:
    """MB/s, ratio and CPU s/GB of one row of bench/transfer.py's table."""
    m = re.search(rf"^{re.escape(name)}\s+(\d+)\s+(\S+)\s+([\d.]+)", out, re.MULTILINE)
    if not m:
        return None, None, None
    ratio = None if m.group(2) == "-" else float(m.group(2))
    return float(m.group(1)), ratio, float(m.group(3))


def read_transfer(out: str) -> list[Figure]:
    hand, _, hand_cpu = _row("hand: zstd -T0 | socat | zstd -d", out)
    hand3, _, hand3_cpu = _row("hand x3, one after the other", out)
    one, one_r, one_cpu = _row("zfleet, 1 peer", out)
    tls, _, tls_cpu = _row("zfleet, 1 peer, mutual TLS", out)
    three, three_r, three_cpu = _row("zfleet, fan-out to 3 peers", out)
    tls_r = _num(r"^mutual TLS / plain, 1 peer: ([\d.]+)", out)
    return [
        Figure(2, "1 peer", one, "MB/s", "hand zstd|socat|zstd", hand, one_r, ">= 1.2x",
               _at_least(one_r, 1.2)),
        Figure(2, "mutual TLS, 1 peer", tls, "MB/s", "plain zfleet, 1 peer", one, tls_r,
               ">= 0.95x", _at_least(tls_r, 0.95)),
        Figure(2, "one send fanned out to 3 peers", three, "MB/s", "3 hand pipelines in a row",
               hand3, three_r, ">= 2.7x", _at_least(three_r, 2.7)),
        Figure(2, "CPU per GB, 1 peer", one_cpu, "s/GB", "hand", hand_cpu,
               _div(one_cpu, hand_cpu)),
        Figure(2, "CPU per GB, mutual TLS", tls_cpu, "s/GB", "hand", hand_cpu,
               _div(tls_cpu, hand_cpu)),
        Figure(2, "CPU per GB per peer, 3 peers", three_cpu, "s/GB", "hand x3", hand3_cpu,
               _div(three_cpu, hand3_cpu)),
    ]  # fmt: skip


def read_store(out: str) -> list[Figure]:
    figures = []
    for label in ("fulls", "chain", "fixtures"):
        part = out.split(f"== {label}:", 1)[1].split("\n==", 1)[0] if f"== {label}:" in out else ""
        z = _num(r"^zfleet\s+[\d,]+\s+[\d.]+%\s+([\d.]+)", part)
        b = _num(r"^borg\s+[\d,]+\s+[\d.]+%\s+([\d.]+)", part)
        one = _num(r"in one `put`: ([\d.]+) MB/s total", part)
        b_total = _num(r"^borg\s+[\d,]+\s+[\d.]+%\s+[\d.]+\s+([\d.]+)", part)
        inproc = _num(r"StreamIngest.*?ingest median ([\d.]+) MB/s", part)
        figures += [
            Figure(3, f"ingest `cloud put` per stream, {label}", z, "MB/s", "borg zstd-3", b,
                   _div(z, b), ">= 2x", _at_least(_div(z, b), 2.0)),
            Figure(3, f"ingest, all {label} in one `put`", one, "MB/s", "borg zstd-3, total",
                   b_total, _div(one, b_total), ">= 2x", _at_least(_div(one, b_total), 2.0)),
            Figure(3, f"ingest in process (StreamSink), {label}", inproc, "MB/s", "borg zstd-3",
                   b, _div(inproc, b), ">= 2x", _at_least(_div(inproc, b), 2.0)),
        ]  # fmt: skip
    zr = _num(r"^zfleet ([\d.]+), borg ([\d.]+): zfleet", out)
    br = _num(r"^zfleet ([\d.]+), borg ([\d.]+): zfleet", out, 2)
    rss = _num(r"^zfleet put / borg create: ([\d.]+)x", out)
    z_rss = _num(r"^zfleet put\s+([\d.]+)$", out)
    b_rss = _num(r"^borg create\s+([\d.]+)$", out)
    figures += [
        Figure(3, "restore, CLI", zr, "MB/s", "borg extract", br, _div(zr, br), ">= 1x",
               _at_least(_div(zr, br), 1.0)),
        Figure(3, "peak RSS, put", z_rss, "MiB", "borg create", b_rss, rss, "<= 1.2x",
               _at_most(rss, 1.2)),
    ]  # fmt: skip
    return figures


def read_sim(out: str) -> list[Figure]:
    pipe = _num(r"cat \| cat > /dev/null \(baseline\)\s+(\d+) MB/s", out)
    e2e = _num(r"sim send -> sim receive -u\s+(\d+) MB/s", out)
    mounted = _num(r"sim send -> sim receive, mounted\s+(\d+) MB/s", out)
    e2e_cpu = _num(r"sim send -> sim receive -u\s+\d+ MB/s.*?([\d.]+) CPU s/GB", out)
    return [
        Figure(4, "sim send -> receive -u", e2e, "MB/s", "cat | cat pipe", pipe, _div(e2e, pipe),
               ">= 250 MB/s", _at_least(e2e, 250.0)),
        Figure(4, "sim send -> receive, mounted", mounted, "MB/s", "cat | cat pipe", pipe,
               _div(mounted, pipe)),
        Figure(4, "sim send -> receive -u, CPU per GB", e2e_cpu, "s/GB"),
    ]  # fmt: skip


def read_planner(out: str) -> list[Figure]:
    scale = re.search(r"^fleet: (\d+) hosts, ([\d,]+) datasets, ([\d,]+) snapshots", out, re.M)
    full = scale is not None and int(scale.group(1)) >= 1000 and scale.group(2) == "100,000"
    where = f" ({scale.group(1)} hosts, {scale.group(2)} datasets)" if scale else ""
    total = _num(r"= ([\d.]+) s untraced", out)
    plan = _num(r"^planning \d+ jobs.*?: ([\d.]+) s,", out)
    naive = _num(r"^naive newest-common scan over ZfsObject rows: ([\d.]+) s", out)
    peak = _num(r"tracemalloc peak ([\d.]+) GiB", out)
    rss = _num(r"^peak RSS: (\d+) MiB", out)
    at = "" if full else " at full scale"
    return [
        Figure(5, f"graph + plan, untraced{where}", total, "s", "", None, None, f"< 10 s{at}",
               _at_most(total, 10.0) if full else None),
        Figure(5, "planning alone", plan, "s", "naive newest-common scan", naive,
               _div(plan, naive)),
        Figure(5, "peak memory, separate traced graph + plan", peak, "GiB", "", None, None,
               f"< 2 GiB{at}", _at_most(peak, 2.0) if full else None),
        Figure(5, "peak RSS, separate untraced graph + plan", rss, "MiB"),
    ]  # fmt: skip


BENCHES: tuple[Bench, ...] = (
    Bench("coordination", "coordination.py",
          ("--datasets", "50", "--rounds", "4", "--noops", "100"), 300, read_coordination),
    Bench("scale", "coordinator_scale.py", ("--datasets", "10000"), 400, read_scale),
    Bench("transfer", "transfer.py", ("--size-mib", "64", "--runs", "1"), 240, read_transfer),
    Bench("store", "store_vs_restic_borg.py", ("--size-mib", "16", "--snapshots", "4"), 300,
          read_store),
    Bench("sim", "sim_stream.py", ("--size-mib", "64", "--runs", "1"), 150, read_sim),
    Bench("planner", "planner.py",
          ("--hosts", "100", "--datasets", "10000", "--snapshots", "100000", "--runs", "1"),
          240, read_planner),
)  # fmt: skip
BIG = Bench("big-round", "coordination.py", ("--datasets", "10000", "--rounds", "1",
                                            "--noops", "50"), 7200, read_big_round)  # fmt: skip


def run(bench: Bench, args: Sequence[str], logs: Path) -> tuple[str, float, str | None]:
    """The script's output, its seconds, and why it failed (None when it did not)."""
    cmd = [sys.executable, str(ROOT / "bench" / bench.script), *args]
    if bench.read in (read_coordination, read_big_round, read_scale):
        cmd.append("--json")
    log = logs / f"{bench.name}.log"
    t0 = time.monotonic()
    print(f"-- {bench.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=bench.timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        log.write_text(out)
        return out, time.monotonic() - t0, f"timed out after {bench.timeout:.0f} s"
    log.write_text(done.stdout + ("\n--- stderr ---\n" + done.stderr if done.stderr else ""))
    why = None if done.returncode == 0 else f"exit code {done.returncode}"
    return done.stdout, time.monotonic() - t0, why


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "missing"
    text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    head = f"{'#':<2} {'figure':<48} {'value':>14} {'baseline':<28} {'base':>11} {'ratio':>7}"
    lines = [f"{head}  {'goal':<22} met"]
    for f in figures:
        met = "-" if f.met is None else "yes" if f.met else "NO"
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
        base = "" if not f.baseline else _fmt(f.base_value)
        lines.append(f"{f.outcome:<2} {f.name:<48} {_fmt(f.value, f.unit):>14} "
                     f"{f.baseline:<28} {base:>11} {ratio:>7}  {f.goal:<22} {met}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--full", action="store_true",
                    help="every script at its own defaults (the planner at the issue's scale)")
    ap.add_argument("--big", action="store_true", help="also a 10,000-dataset fleet round")
    ap.add_argument("--only", default="", help="comma-separated: " +
                    ",".join(b.name for b in BENCHES))  # fmt: skip
    ap.add_argument("--logs", type=Path, default=None, help="where each script's output goes")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    a = ap.parse_args()
    chosen = [b for b in BENCHES if not a.only or b.name in a.only.split(",")]
    unknown = set(filter(None, a.only.split(","))) - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown bench {', '.join(sorted(unknown))}")
    if a.big:
        chosen.append(BIG)
    logs = a.logs or Path(tempfile.mkdtemp(prefix="zfleet-run-all-"))
    logs.mkdir(parents=True, exist_ok=True)
    env_note = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    figures: list[Figure] = []
    problems: list[str] = []
    started = time.monotonic()
    for bench in chosen:
        out, secs, why = run(bench, () if a.full else bench.short, logs)
        got = bench.read(out)
        figures += got
        missing = [f.name for f in got if f.value is None]
        note = f"{bench.name}: {secs:.0f} s"
        if why or missing:
            problems.append(f"{note}, {why or 'ran'}; missing {len(missing)} figure(s), see "
                            f"{logs / (bench.name + '.log')}")  # fmt: skip
        print(f"-- {note}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    print(f"zfleet bench/run-all: {'full' if a.full else 'short'} settings, {env_note}, "
          f"logs in {logs}")  # fmt: skip
    print(table(figures))
    print(f"total {elapsed:.0f} s (budget {BUDGET_S:.0f} s: x{elapsed / BUDGET_S:.2f})")
    for p in problems:
        print(f"problem: {p}")
    if a.json:
        print(json.dumps({"figures": [asdict(f) for f in figures], "seconds": elapsed}))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
