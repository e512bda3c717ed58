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
    monetary, outlined in the colour of the cell's segment; each axis score carries its value range (quantile
    scoring) or its cut points (threshold scoring) under its name."""
    levels, cells = grid["levels"], {(c["r"], c["f"]): c for c in grid["cells"]}
    labels = grid.get("axis_labels", {})
    size, pad, top_pad = 96, 76, 8
    top = max((c["customers"] for c in grid["cells"]), default=0) or 1
    parts = []
    for i, r in enumerate(range(levels, 0, -1)):
        y = top_pad + i * size
        parts.append(f'<text x="{pad - 6}" y="{y + size / 2 - 2}" text-anchor="end" class="ax">R{r}</text>'
                     f'<text x="{pad - 6}" y="{y + size / 2 + 12}" text-anchor="end" class="ax range">'
                     f'{escape(_label(labels, "r", r))}</text>')
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
    bottom = top_pad + levels * size
    for f in range(1, levels + 1):
        parts.append(f'<text x="{pad + (f - 0.5) * size}" y="{bottom + 16}" text-anchor="middle" class="ax">F{f}</text>'
                     f'<text x="{pad + (f - 0.5) * size}" y="{bottom + 30}" text-anchor="middle" class="ax range">'
                     f'{escape(_label(labels, "f", f))}</text>')
    return _svg(pad + levels * size + 8, bottom + 38, "".join(parts), title, "heatmap")


def _label(labels: dict, axis: str, score: int) -> str:
    values = labels.get(axis) or []
    return values[score - 1] if score - 1 < len(values) else ""


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


def _money(v: float) -> str:
    """A compact axis amount: 950, 12k, 1.3M."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def clv_boxes(rows: list[dict], colours: dict[str, str], title: str) -> Markup:
    """The CLV distribution of each segment: whiskers p10–p90, box q1–q3, a line at the median, a dot at the
    mean (one row per segment, on one linear scale up to the largest p90 or mean)."""
    if not rows:
        return Markup("")
    w, row_h, label_w, right = 640, 26, 180, 16
    xmax = max(max(r["p90"], r["mean"]) for r in rows) or 1.0
    span = w - label_w - right

    def x(v: float) -> float:
        return label_w + span * min(max(v, 0.0), xmax) / xmax

    parts = []
    for i, r in enumerate(rows):
        y, colour = i * row_h + 4, colours.get(r["segment"], "#4a78b5")
        mid = y + (row_h - 8) / 2
        parts.append(
            f'<g class="box"><title>{escape(r["segment"])}: median {r["median"]:,.0f}, mean {r["mean"]:,.0f}</title>'
            f'<text x="{label_w - 6}" y="{mid + 4:.1f}" text-anchor="end" class="ax">{escape(r["segment"])}</text>'
            f'<line x1="{x(r["p10"]):.1f}" y1="{mid:.1f}" x2="{x(r["p90"]):.1f}" y2="{mid:.1f}" stroke="#555"/>'
            f'<rect x="{x(r["q1"]):.1f}" y="{y}" width="{max(1.0, x(r["q3"]) - x(r["q1"])):.1f}" '
            f'height="{row_h - 8}" fill="{colour}" fill-opacity="0.6" stroke="#333"/>'
            f'<line x1="{x(r["median"]):.1f}" y1="{y}" x2="{x(r["median"]):.1f}" y2="{y + row_h - 8}" '
            f'stroke="#000" stroke-width="2"/>'
            f'<circle cx="{x(r["mean"]):.1f}" cy="{mid:.1f}" r="3" fill="#fff" stroke="#000"/></g>')
    bottom = len(rows) * row_h + 4
    for v, anchor in ((0.0, "start"), (xmax / 2, "middle"), (xmax, "end")):
        parts.append(f'<text x="{x(v):.1f}" y="{bottom + 12}" text-anchor="{anchor}" class="ax">{_money(v)}</text>')
    return _svg(w, bottom + 18, "".join(parts), title, "clv")


def holdout_bars(groups: list[dict], title: str, labels: tuple[str, str]) -> Markup:
    """Predicted and actual purchases per customer in the holdout window, side by side for each group of
    customers by their repeat purchases before it."""
    if not groups:
        return Markup("")
    w, h, pad, bottom_pad = 640, 240, 40, 34
    ymax = max(max(g["predicted_per_customer"], g["actual_per_customer"]) for g in groups) or 1.0
    slot = (w - 2 * pad) / len(groups)
    bar_w = slot * 0.35

    def y(v: float) -> float:
        return h - bottom_pad - (h - bottom_pad - 20) * v / ymax

    parts = [f'<line x1="{pad}" y1="{h - bottom_pad}" x2="{w - pad}" y2="{h - bottom_pad}" stroke="#999"/>',
             f'<text x="{pad - 4}" y="{y(ymax) + 4:.1f}" text-anchor="end" class="ax">{ymax:.2g}</text>',
             f'<text x="{pad - 4}" y="{y(0) + 4:.1f}" text-anchor="end" class="ax">0</text>']
    for i, g in enumerate(groups):
        x0 = pad + i * slot + slot * 0.15
        for j, (key, colour) in enumerate((("predicted_per_customer", "#7570b3"), ("actual_per_customer", "#1b9e77"))):
            v = g[key]
            parts.append(f'<rect class="hb" x="{x0 + j * bar_w:.1f}" y="{y(v):.1f}" width="{bar_w:.1f}" '
                         f'height="{y(0) - y(v):.1f}" fill="{colour}"><title>{escape(labels[j])}: {v}</title></rect>')
        parts.append(f'<text x="{x0 + bar_w:.1f}" y="{h - bottom_pad + 14}" text-anchor="middle" class="ax">'
                     f'{escape(g["repeat_purchases"])}</text>')
    for j, (label, colour) in enumerate(zip(labels, ("#7570b3", "#1b9e77"))):
        lx = pad + 10 + j * 200
        parts.append(f'<rect x="{lx}" y="4" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="13" class="ax">{escape(label)}</text>')
    return _svg(w, h, "".join(parts), title, "holdout")


def size_lines(sizes: list[dict], segments: list[str], colours: dict[str, str], title: str) -> Markup:
    """Customers per segment at each recorded run: one line per segment, dates evenly spaced."""
    if len(sizes) < 2:
        return Markup("")
    w, h, pad, label_w = 640, 260, 40, 150
    ymax = max((row[s] for row in sizes for s in segments), default=0) or 1
    step = (w - pad - label_w) / (len(sizes) - 1)

    def y(v: float) -> float:
        return h - pad - (h - 2 * pad) * v / ymax

    parts = [f'<line x1="{pad}" y1="{h - pad}" x2="{w - label_w}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="{pad - 4}" y="{y(ymax) + 4:.1f}" text-anchor="end" class="ax">{ymax:,}</text>',
             f'<text x="{pad - 4}" y="{y(0) + 4:.1f}" text-anchor="end" class="ax">0</text>',
             f'<text x="{pad}" y="{h - pad + 16}" class="ax">{escape(sizes[0]["as_of"])}</text>',
             f'<text x="{w - label_w}" y="{h - pad + 16}" text-anchor="end" class="ax">'
             f'{escape(sizes[-1]["as_of"])}</text>']
    label_y = _spread(sorted((y(sizes[-1][s]) + 4, s) for s in segments), 13)
    for s in segments:
        path = " ".join(f'{"M" if i == 0 else "L"}{pad + i * step:.1f},{y(row[s]):.1f}' for i, row in enumerate(sizes))
        parts.append(f'<path class="line" d="{path}" fill="none" stroke="{colours.get(s, "#666")}" stroke-width="2">'
                     f'<title>{escape(s)}</title></path>'
                     f'<text x="{w - label_w + 6}" y="{label_y[s]:.1f}" class="ax">{escape(s)}</text>')
    return _svg(w, max(h, int(max(label_y.values(), default=0)) + 6), "".join(parts), title, "sizes")


def _spread(ys: list[tuple[float, str]], gap: float) -> dict[str, float]:
    """End-of-line labels at their lines' heights, pushed down just enough not to overlap (ys sorted)."""
    out: dict[str, float] = {}
    last = float("-inf")
    for yy, name in ys:
        last = max(yy, last + gap)
        out[name] = last
    return out


def transition_matrix(matrix: list[dict], segments: list[str], title: str, new: str, gone: str) -> Markup:
    """Customers from each segment (rows) to each segment (columns) between two recorded runs; the diagonal
    (stayed) outlined. ``new`` names the row of customers absent before, ``gone`` the column of those absent after."""
    counts = {(m["from"], m["to"]): m["customers"] for m in matrix}
    rows = segments + ([None] if any(f is None for f, _ in counts) else [])
    cols = segments + ([None] if any(t is None for _, t in counts) else [])
    cell, label_w, head_h = 56, 170, 110
    top = max(counts.values(), default=0) or 1
    parts = []
    for j, t in enumerate(cols):
        cx = label_w + j * cell + cell / 2
        parts.append(f'<text transform="translate({cx:.0f},{head_h - 6}) rotate(-40)" class="ax">'
                     f'{escape(gone if t is None else t)}</text>')
    for i, f in enumerate(rows):
        y = head_h + i * cell
        parts.append(f'<text x="{label_w - 6}" y="{y + cell / 2 + 4}" text-anchor="end" class="ax">'
                     f'{escape(new if f is None else f)}</text>')
        for j, t in enumerate(cols):
            n, x = counts.get((f, t), 0), label_w + j * cell
            stroke = ' stroke="#333" stroke-width="2"' if f is not None and f == t else ' stroke="#ddd"'
            parts.append(f'<rect class="mcell" x="{x + 2}" y="{y + 2}" width="{cell - 4}" height="{cell - 4}" '
                         f'fill="#d95f02" fill-opacity="{0.06 + 0.8 * n / top:.2f}"{stroke}/>'
                         f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" class="s">{n}</text>')
    return _svg(label_w + len(cols) * cell + 100, head_h + len(rows) * cell + 4, "".join(parts), title, "matrix")
