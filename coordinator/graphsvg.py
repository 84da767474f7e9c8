"""A picture of the fleet as SVG, written by hand (no graphviz): hosts, datasets, snapshots, clones.

One panel per host (and per object store that reported an inventory). In a panel each dataset is a
row, indented under its parent; each snapshot is a dot in the column of its name, columns ordered
by creation, so one recursive snapshot lines up across datasets and hosts. A curved arrow runs
from a clone's origin snapshot to the clone. Rows that are job targets are shaded by replication
lag (green up to date, amber behind, red missing) and show which source snapshots they lack as
hollow red dots. Every dot and row carries a tooltip (``<title>``) with names, guids and times.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from xml.sax.saxutils import escape, quoteattr

from coordinator.graph import Dataset, FleetGraph
from coordinator.lag import BEHIND, MISSING, UP_TO_DATE, Lag

LEFT: Final = 16
LABEL_W: Final = 300
COL_W: Final = 58
ROW_H: Final = 22
HEAD_MIN: Final = 70  # room for the title; slanted column names add to it
PANEL_TITLE_H: Final = 30
PANEL_GAP: Final = 18
LAG_W: Final = 190
MAX_COLS: Final = 30
DOT_R: Final = 6
FONT: Final = "DejaVu Sans, Helvetica, Arial, sans-serif"
COLOURS: Final = {
    "source": "#4c78a8", "held": "#2e8b57", "lacking": "#d62728",
    UP_TO_DATE: "#e3f4e8", BEHIND: "#fff1cc", MISSING: "#fde0df",
    "panel": "#f7f7f9", "edge": "#7f5fb0", "text": "#222222", "muted": "#777777",
}  # fmt: skip


@dataclass(frozen=True)
class _Row:
    host: str
    name: str
    depth: int
    dataset: Dataset | None  # None: a target the job expects but the host lacks
    lag: Lag | None


def columns(graph: FleetGraph) -> list[str]:
    """Snapshot names in creation order across the fleet.

    Creation times survive a send but have one-second resolution. Names created in the same
    second are ordered as every dataset holding them orders them; names no dataset orders (those
    of unrelated datasets) by createtxg on the host holding most of them, since txgs of different
    pools cannot be compared; then by name.
    """
    created: dict[str, int] = {}
    after: dict[str, set[str]] = {}
    txgs: dict[str, dict[str, int]] = {}  # host -> name -> lowest createtxg there
    for ds in graph:
        snaps = ds.snapshots()
        on_host = txgs.setdefault(ds.host, {})
        for s in snaps:
            created[s.short] = min(created.get(s.short, s.creation), s.creation)
            on_host[s.short] = min(on_host.get(s.short, s.createtxg), s.createtxg)
        for a, b in itertools.pairwise(snaps):
            if a.short != b.short:
                after.setdefault(a.short, set()).add(b.short)
    order: list[str] = []
    for second in sorted(set(created.values())):
        group = [n for n, c in created.items() if c == second]
        host = max(txgs.values(), key=lambda t: sum(n in t for n in group))
        rank = {n: (host.get(n, sys.maxsize), n) for n in group}
        order += _topological(group, after, rank)
    return order


def _topological(
    names: list[str], after: dict[str, set[str]], rank: dict[str, tuple[int, str]]
) -> list[str]:
    """``names`` with every ``a`` before the names in ``after[a]``, else in ``rank`` order.

    Datasets that disagree (a cycle) cannot all be right: then the best-ranked name goes first.
    """
    members = set(names)
    before = {n: {a for a in names if n in after.get(a, ())} for n in names}
    out: list[str] = []
    while members:
        ready = [n for n in members if not (before[n] & members)] or list(members)
        pick = min(ready, key=rank.__getitem__)
        out.append(pick)
        members.discard(pick)
    return out


def _rows(graph: FleetGraph, lags: Sequence[Lag]) -> dict[str, list[_Row]]:
    # a store keeps a stream under its source dataset's name
    by_target = {(lg.target_host, lg.target_dataset or lg.dataset): lg for lg in lags}
    panels: dict[str, list[_Row]] = {}
    for host, inv in sorted(graph.hosts.items()):
        names = set(inv.datasets)
        names |= {d for (h, d) in by_target if h == host and d is not None}
        rows = []
        for name in sorted(names):
            depth = name.count("/")
            lag = by_target.get((host, name))
            rows.append(_Row(host, name, depth, inv.datasets.get(name), lag))
        panels[host] = rows
    return panels


def _fmt_age(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def _lag_text(lag: Lag) -> str:
    if lag.state == UP_TO_DATE:
        return "up to date"
    if lag.state == MISSING:
        return f"missing ({lag.behind} snapshots)"
    return f"{lag.behind} behind, {_fmt_age(lag.seconds)}"


def _text(x: float, y: float, body: str, *, size: int = 12, fill: str = COLOURS["text"],
          weight: str = "normal", extra: str = "") -> str:  # fmt: skip
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}" {extra}>{escape(body)}</text>')  # fmt: skip


def render_svg(
    graph: FleetGraph,
    lags: Sequence[Lag] = (),
    *,
    title: str = "zfleet",
    now: float | None = None,
) -> str:
    """The fleet as an SVG document (a string)."""
    now = time.time() if now is None else now
    cols = columns(graph)
    hidden = max(0, len(cols) - MAX_COLS)
    cols = cols[hidden:]
    col_x = {name: LEFT + LABEL_W + COL_W * (i + 0.5) for i, name in enumerate(cols)}
    panels = _rows(graph, lags)
    width = LEFT + LABEL_W + COL_W * max(1, len(cols)) + LAG_W + LEFT
    out: list[str] = []
    y = 40.0
    out.append(_text(LEFT, 26, title, size=18, weight="bold"))
    out.append(_text(LEFT + 2, 44, time.strftime("as of %Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
                     + (f" · {hidden} older snapshot names not shown" if hidden else ""),
                     size=11, fill=COLOURS["muted"]))  # fmt: skip
    # a name slanted at 40 degrees rises about 0.64 of its length (at ~6.5 px a character)
    y = HEAD_MIN + 0.64 * 6.5 * max((len(c) for c in cols), default=0)
    for name, x in col_x.items():
        out.append(_text(x, y - 8, name, size=11, fill=COLOURS["muted"],
                         extra=f'transform="rotate(-40 {x:.1f} {y - 8:.1f})"'))  # fmt: skip
    for host, rows in panels.items():
        y += PANEL_GAP
        out.extend(_panel(host, rows, graph, col_x, top=y, width=width))
        y += PANEL_TITLE_H + ROW_H * max(1, len(rows)) + 8
    y += PANEL_GAP
    out.extend(_legend(y))
    height = y + 40
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family={quoteattr(FONT)}>')  # fmt: skip
    defs = (f'<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{COLOURS["edge"]}"/></marker></defs>')  # fmt: skip
    background = '<rect width="100%" height="100%" fill="white"/>'
    return "\n".join([head, defs, background, *out, "</svg>", ""])


def _panel(
    host: str,
    rows: Sequence[_Row],
    graph: FleetGraph,
    col_x: dict[str, float],
    *,
    top: float,
    width: float,
) -> Iterable[str]:
    height = PANEL_TITLE_H + ROW_H * max(1, len(rows)) + 4
    yield (f'<rect x="{LEFT / 2}" y="{top:.1f}" width="{width - LEFT:.0f}" height="{height:.0f}" '
           f'rx="8" fill="{COLOURS["panel"]}" stroke="#d0d0d8"/>')  # fmt: skip
    sources = sorted({f"{lg.source_host}" for r in rows if (lg := r.lag) is not None})
    subtitle = f"  replica of {', '.join(sources)}" if sources else ""
    yield _text(LEFT, top + 20, host, size=15, weight="bold")
    yield _text(LEFT + 14 + 10.5 * len(host), top + 20, subtitle, size=11, fill=COLOURS["muted"])
    y_of: dict[str, float] = {}
    for i, row in enumerate(rows):
        y_of[row.name] = top + PANEL_TITLE_H + ROW_H * (i + 0.5)
    for row in rows:
        yield from _row(row, graph, col_x, y_of[row.name], width)
    for row in rows:  # clone edges last, above the dots
        ds = row.dataset
        if ds is None or not ds.origin:
            continue
        origin_ds, _, origin_snap = ds.origin.partition("@")
        if origin_ds not in y_of or origin_snap not in col_x:
            continue
        x1, y1 = col_x[origin_snap], y_of[origin_ds]
        y2 = y_of[row.name]
        firsts = [col_x[s.short] for s in ds.snapshots() if s.short in col_x]
        x2 = (min(firsts) - DOT_R - 2) if firsts else x1 + COL_W / 2
        x2 = max(x2, x1 + 12)
        yield (f'<path d="M{x1:.1f},{y1 + DOT_R:.1f} C{x1:.1f},{y2:.1f} {x1:.1f},{y2:.1f} '
               f'{x2:.1f},{y2:.1f}" fill="none" stroke="{COLOURS["edge"]}" stroke-width="1.6" '
               f'marker-end="url(#arrow)"><title>{escape(row.name)} is a clone of '
               f'{escape(ds.origin)}</title></path>')  # fmt: skip


def _row(
    row: _Row, graph: FleetGraph, col_x: dict[str, float], y: float, width: float
) -> Iterable[str]:
    lag = row.lag
    if lag is not None:
        yield (f'<rect x="{LEFT}" y="{y - ROW_H / 2 + 1:.1f}" width="{width - 2 * LEFT:.0f}" '
               f'height="{ROW_H - 2}" rx="4" fill="{COLOURS[lag.state]}"/>')  # fmt: skip
    label = row.name.rsplit("/", 1)[-1] if row.depth else row.name
    ds = row.dataset
    tip = row.name
    if ds is not None and ds.origin:
        tip += f" (clone of {ds.origin})"
    if ds is None:
        label += " (missing)"
    fill = COLOURS["muted"] if ds is None else COLOURS["text"]
    yield (f'<g><title>{escape(tip)}</title>'
           + _text(LEFT + 8 + 14 * row.depth, y + 4, label, fill=fill) + "</g>")  # fmt: skip
    held_guids = set(ds.snap_guids) if ds is not None else set()
    if ds is not None:
        dot = COLOURS["held"] if lag is not None else COLOURS["source"]
        for s in ds.snapshots():
            if s.short not in col_x:
                continue
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.creation))
            yield (f'<circle cx="{col_x[s.short]:.1f}" cy="{y:.1f}" r="{DOT_R}" fill="{dot}">'
                   f'<title>{escape(s.name)}\nguid {s.guid:#x}\ncreated {when} UTC</title>'
                   f'</circle>')  # fmt: skip
    if lag is not None:
        src = graph.dataset(lag.source_host, lag.dataset)
        for s in src.snapshots() if src is not None else []:
            if s.guid in held_guids or s.short not in col_x:
                continue
            yield (f'<circle cx="{col_x[s.short]:.1f}" cy="{y:.1f}" r="{DOT_R - 1}" fill="white" '
                   f'stroke="{COLOURS["lacking"]}" stroke-width="2"><title>lacks '
                   f'{escape(s.name)} of {escape(lag.source_host)}</title></circle>')  # fmt: skip
        yield _text(width - LEFT - LAG_W + 12, y + 4, _lag_text(lag), size=11)


def _legend(y: float) -> Iterable[str]:
    x = float(LEFT)
    items = [
        ("circle", COLOURS["source"], "snapshot"),
        ("circle", COLOURS["held"], "snapshot held by a target"),
        ("hollow", COLOURS["lacking"], "source snapshot the target lacks"),
        ("edge", COLOURS["edge"], "clone of"),
        ("rect", COLOURS[UP_TO_DATE], "up to date"),
        ("rect", COLOURS[BEHIND], "behind"),
        ("rect", COLOURS[MISSING], "missing"),
    ]
    for kind, colour, label in items:
        if kind == "circle":
            yield f'<circle cx="{x + 6:.1f}" cy="{y:.1f}" r="{DOT_R}" fill="{colour}"/>'
        elif kind == "hollow":
            yield (f'<circle cx="{x + 6:.1f}" cy="{y:.1f}" r="{DOT_R - 1}" fill="white" '
                   f'stroke="{colour}" stroke-width="2"/>')  # fmt: skip
        elif kind == "edge":
            yield (f'<path d="M{x:.1f},{y:.1f} L{x + 14:.1f},{y:.1f}" stroke="{colour}" '
                   f'stroke-width="1.6" marker-end="url(#arrow)"/>')  # fmt: skip
        else:
            yield (f'<rect x="{x:.1f}" y="{y - 7:.1f}" width="14" height="14" rx="3" '
                   f'fill="{colour}" stroke="#bbbbbb"/>')  # fmt: skip
        yield _text(x + 20, y + 4, label, size=11)
        x += 32 + 6.5 * len(label)
