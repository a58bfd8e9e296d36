"""Charts as server-rendered SVG (no script, no asset from the internet): the dashboard's pictures.

Each function returns a `markupsafe.Markup` holding one `<svg>`; values are escaped.
"""

from __future__ import annotations

import time
from typing import Sequence

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return float(step)
    return float(value)


def series_bars(series: Sequence[dict], *, keys: Sequence[str], width: int = 720, height: int = 180,
                title: str = "") -> Markup:
    """Stacked-free bars per minute for `keys` (e.g. requests and errors), oldest on the left."""
    pad_l, pad_b, pad_t = 40, 22, 18
    inner_w, inner_h = width - pad_l - 8, height - pad_b - pad_t
    top = _nice_max(max((p[k] for p in series for k in keys), default=0))
    slot = inner_w / max(1, len(series))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        y = pad_t + inner_h * (1 - frac)
        parts.append(f'<line x1="{pad_l}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{top * frac:g}</text>')
    for i, point in enumerate(series):
        for j, key in enumerate(keys):
            value = point[key]
            if not value:
                continue
            h = inner_h * value / top
            w = max(1.0, slot / len(keys) - 1)
            x = pad_l + i * slot + j * w
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{pad_t + inner_h - h:.1f}" width="{w:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[j]}"><title>{escape(key)}: {value}</title></rect>')
    if series:
        for point, anchor in ((series[0], "start"), (series[-1], "end")):
            label = time.strftime("%H:%M", time.gmtime(point["minute"]))
            x = pad_l if anchor == "start" else width - 8
            parts.append(f'<text x="{x}" y="{height - 6}" text-anchor="{anchor}" font-size="10">{label} UTC</text>')
    for j, key in enumerate(keys):
        parts.append(f'<rect x="{pad_l + j * 90}" y="2" width="10" height="10" fill="{PALETTE[j]}"/>'
                     f'<text x="{pad_l + 14 + j * 90}" y="11" font-size="11">{escape(key)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def hbars(values: dict[str, float], *, width: int = 360, unit: str = "", title: str = "") -> Markup:
    """Horizontal bars, one per label (an empty mapping draws a 'no data' note)."""
    row, label_w = 22, 130
    height = max(1, len(values)) * row + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}"><title>{escape(title)}</title>']
    if not values:
        parts.append('<text x="4" y="18" font-size="12" fill="#6b7280">no data yet</text>')
    top = max(values.values(), default=0) or 1
    for i, (label, value) in enumerate(values.items()):
        y = 4 + i * row
        w = (width - label_w - 60) * value / top
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="11">{escape(label)}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="14" '
                     f'fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{label_w + max(w, 1) + 4:.1f}" y="{y + 14}" font-size="11">{value:g}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
