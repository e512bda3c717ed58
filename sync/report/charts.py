"""Hand-written inline SVG charts (no JS, no fonts, no CDN): exact control and no extra dependency.

Every text placed in an SVG goes through :func:`markupsafe.escape`; each function returns ``Markup``.
"""

from __future__ import annotations

from markupsafe import Markup, escape

PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b2df8a",
           "#fb9a99", "#6a3d9a", "#666666")
RISK_COLOURS = {"low": "#66a61e", "medium": "#e6ab02", "high": "#d95f02", "unknown": "#bbbbbb"}


def segment_colours(names: list[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def _svg(width: int, height: int, body: str, label: str, cls: str) -> Markup:
    return Markup(f'<svg class="chart {cls}" role="img" '
                  f'aria-label="{escape(label)}" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}">{body}</svg>')


def bar(share_pct: float, colour: str = "#4a78b5", width: int = 120) -> Markup:
    """One inline bar of ``share_pct`` percent."""
    w = max(0.0, min(100.0, float(share_pct))) * width / 100
    return _svg(width, 12, f'<rect x="0" y="1" width="{width}" height="10" fill="#eee"/>'
                           f'<rect x="0" y="1" width="{w:.1f}" height="10" fill="{colour}"/>',
                f"{share_pct}%", "bar")


def heatmap(grid: dict, colours: dict[str, str], title: str) -> Markup:
    """R (rows, high on top) × F (columns) cells shaded by customers, labelled with customers and average
    monetary, outlined in the colour of the cell's segment."""
    levels, cells = grid["levels"], {(c["r"], c["f"]): c for c in grid["cells"]}
    size, pad = 96, 40
    top = max((c["customers"] for c in grid["cells"]), default=0) or 1
    parts = []
    for i, r in enumerate(range(levels, 0, -1)):
        y = pad + i * size
        parts.append(f'<text x="{pad - 6}" y="{y + size / 2}" text-anchor="end" class="ax">R{r}</text>')
        for f in range(1, levels + 1):
            x = pad + (f - 1) * size
            c = cells.get((r, f))
            if c is None:
                parts.append(f'<rect class="cell" x="{x + 3}" y="{y + 3}" width="{size - 6}" height="{size - 6}" '
                             f'fill="#fafafa" stroke="#ddd"/>')
                continue
            alpha = 0.12 + 0.78 * c["customers"] / top
            parts.append(
                f'<rect class="cell" x="{x + 3}" y="{y + 3}" width="{size - 6}" height="{size - 6}" '
                f'fill="#4a78b5" fill-opacity="{alpha:.2f}" stroke="{colours.get(c["segment"], "#666")}" '
                f'stroke-width="5"><title>{escape(c["segment"])}</title></rect>'
                f'<text x="{x + size / 2}" y="{y + size / 2 - 4}" text-anchor="middle" class="v">'
                f'{c["customers"]}</text><text x="{x + size / 2}" y="{y + size / 2 + 14}" text-anchor="middle" '
                f'class="s">{c["avg_monetary"]:,.0f}</text>')
    for f in range(1, levels + 1):
        parts.append(f'<text x="{pad + (f - 0.5) * size}" y="{pad + levels * size + 16}" text-anchor="middle" '
                     f'class="ax">F{f}</text>')
    side = pad + levels * size + 24
    return _svg(side, side, "".join(parts), title, "heatmap")


def curve(points: list[dict], boundary_day: int | None, reminder_day: int | None, title: str,
          labels: tuple[str, str]) -> Markup:
    """The return probability against silent days with the reminder and boundary days marked."""
    if not points:
        return Markup("")
    w, h, pad = 640, 280, 40
    xmax = max(p["days"] for p in points) or 1

    def x(d: float) -> float:
        return pad + (w - 2 * pad) * d / xmax

    def y(p: float) -> float:
        return h - pad - (h - 2 * pad) * p

    path = " ".join(f'{"M" if i == 0 else "L"}{x(p["days"]):.1f},{y(p["p_return"]):.1f}'
                    for i, p in enumerate(points))
    parts = [f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="{pad - 4}" y="{y(1) + 4}" text-anchor="end" class="ax">100%</text>',
             f'<text x="{pad - 4}" y="{y(0) + 4}" text-anchor="end" class="ax">0</text>',
             f'<text x="{w - pad}" y="{h - pad + 16}" text-anchor="end" class="ax">{xmax}</text>',
             f'<path class="curve" d="{path}" fill="none" stroke="#4a78b5" stroke-width="2"/>']
    for day, colour, label in ((reminder_day, "#e6ab02", labels[0]), (boundary_day, "#d95f02", labels[1])):
        if day is not None:
            parts.append(f'<line class="marker" x1="{x(day):.1f}" y1="{pad}" x2="{x(day):.1f}" y2="{h - pad}" '
                         f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/>'
                         f'<text x="{x(day) + 4:.1f}" y="{pad + (12 if colour == "#e6ab02" else 28)}" '
                         f'class="ax">{escape(label)}</text>')
    return _svg(w, h, "".join(parts), title, "curve")


def stacked_risk(rows: list[dict], title: str) -> Markup:
    """One horizontal bar per segment, split into low / medium / high / unknown churn risk."""
    w, row_h, label_w = 640, 22, 180
    parts = []
    for i, r in enumerate(rows):
        total = (r["low"] + r["medium"] + r["high"] + r["unknown"]) or 1
        yy = i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{yy + 15}" text-anchor="end" class="ax">'
                     f'{escape(r["segment"])}</text>')
        x = float(label_w)
        for key in ("low", "medium", "high", "unknown"):
            width = (w - label_w - 10) * r[key] / total
            if width:
                parts.append(f'<rect x="{x:.1f}" y="{yy + 3}" width="{width:.1f}" height="{row_h - 6}" '
                             f'fill="{RISK_COLOURS[key]}"><title>{key}: {r[key]}</title></rect>')
            x += width
    return _svg(w, max(row_h, row_h * len(rows)), "".join(parts), title, "risk")
