"""The picture: a similarity heatmap as plain SVG text (no plotting library).

Rows and columns are the datasets cluster by cluster, base first, so each cluster is a dark
block on the diagonal, outlined. Each cell is one ``<rect class="cell">`` with a ``<title>``
(the pair and its shared percentage) that browsers show on hover. Above ``MAX_CELLS_SIDE``
datasets a full grid would be millions of elements, so the picture becomes cluster by cluster
(mean similarity between clusters), and its title says so.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

import numpy as np

from .analyze import Analysis
from .records import SECTOR

MAX_CELLS_SIDE: Final = 200
CELL: Final = 14
LABEL_MAX: Final = 60  # rows up to this many get name labels
FONT: Final = "font-family:sans-serif;font-size:11px"


def _colour(value: float) -> str:
    """White (nothing shared) to dark blue (identical)."""
    v = min(1.0, max(0.0, value))
    r = round(255 - v * (255 - 8))
    g = round(255 - v * (255 - 48))
    b = round(255 - v * (255 - 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n // SECTOR * SECTOR} B"


def heatmap(analysis: Analysis, title: str = "zfleet dedup analyze") -> str:
    """The SVG document."""
    names = analysis.names
    order = analysis.order()
    clusters = analysis.cluster_of()
    p = analysis.proposal
    by_cluster = len(names) > MAX_CELLS_SIDE
    if by_cluster:
        count = len(p.clusters)
        labels = [
            f"cluster {i + 1} ({c.base}, {len(c.members) + 1})" for i, c in enumerate(p.clusters)
        ]
        idx = [np.array([i for i in order if clusters[i] == c]) for c in range(count)]
        grid = np.array(
            [[float(analysis.similarity[np.ix_(a, b)].mean()) for b in idx] for a in idx]
        )
        spans = [(i, 1) for i in range(count)]
    else:
        labels = [names[i] for i in order]
        grid = analysis.similarity[np.ix_(order, order)]
        spans = []
        start = 0
        for c in p.clusters:
            spans.append((start, len(c.members) + 1))
            start += len(c.members) + 1
    side = len(labels)
    cell = CELL if side <= LABEL_MAX else max(2, 800 // max(side, 1))
    margin = 10 + (min(max(len(s) for s in labels), 40) * 7 if side <= LABEL_MAX else 10)
    top = 70 + (margin if side <= LABEL_MAX else 0)
    width = max(margin + side * cell + 20, 640)  # room for the two lines of figures
    height = top + side * cell + 20
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="20" style="{FONT};font-size:14px;font-weight:bold">'
        f"{escape(title)}{' (cluster by cluster)' if by_cluster else ''}</text>",
        f'<text x="10" y="38" style="{FONT}">{len(names)} datasets, {len(p.clusters)} clusters '
        f"({p.method}): now {_mib(p.bytes_now)}, after rebase {_mib(p.bytes_after)}, "
        f"lower bound {_mib(p.lower_bound)}</text>",
        f'<text x="10" y="54" style="{FONT}">cell: bytes shared / bytes of the pair '
        f"(white 0 %, dark blue 100 %)</text>",
    ]
    if side <= LABEL_MAX:
        for i, label in enumerate(labels):
            y = top + i * cell + cell - 3
            out.append(
                f'<text x="{margin - 4}" y="{y}" text-anchor="end" style="{FONT}">'
                f"{escape(label[:40])}</text>"
            )
            x = margin + i * cell + cell - 3
            out.append(
                f'<text x="{x}" y="{top - 4}" transform="rotate(-60 {x} {top - 4})" '
                f'style="{FONT}">{escape(label[:40])}</text>'
            )
    for i in range(side):
        for j in range(side):
            value = float(grid[i, j])
            tip = f"{labels[i]} / {labels[j]}: {value * 100:.1f} %"
            out.append(
                f'<rect class="cell" x="{margin + j * cell}" y="{top + i * cell}" '
                f'width="{cell}" height="{cell}" fill="{_colour(value)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    for start, size in spans:
        if size > 1 or by_cluster:
            out.append(
                f'<rect class="cluster" x="{margin + start * cell}" y="{top + start * cell}" '
                f'width="{size * cell}" height="{size * cell}" fill="none" stroke="#d95f02" '
                'stroke-width="1.5"/>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"
