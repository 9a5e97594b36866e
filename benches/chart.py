#!/usr/bin/env python3
"""Draws the growth benchmark as an SVG: per-item cost against item count and against limit.

Reads criterion's results of `cargo bench -p flowgate-benches --bench growth` from
target/criterion/growth_<flavor>_<items|limit>/<operator>/<value>/new/estimates.json and
writes benches/growth.svg (or the path given as the first argument). Standard library only.

    python3 benches/chart.py [OUT.svg]
"""

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
OPERATORS = ["map_concurrent_unordered", "map_concurrent", "buffer_unordered", "buffered"]
COLOURS = {
    "map_concurrent_unordered": "#1b9e77",
    "map_concurrent": "#d95f02",
    "buffer_unordered": "#7570b3",
    "buffered": "#999999",
}
LIMIT_SWEEP_ITEMS = 100_000


def per_item_ns(group, operator, value, items):
    path = CRITERION / group / operator / str(value) / "new" / "estimates.json"
    if not path.exists():
        return None
    estimates = json.loads(path.read_text())
    return estimates["mean"]["point_estimate"] / items


def series(flavor, sweep):
    group = f"growth_{flavor}_{sweep}"
    folder = CRITERION / group
    out = {}
    for operator in OPERATORS:
        points = []
        directory = folder / operator
        if not directory.exists():
            continue
        for child in directory.iterdir():
            if not child.name.isdigit():
                continue
            value = int(child.name)
            items = value if sweep == "items" else LIMIT_SWEEP_ITEMS
            cost = per_item_ns(group, operator, value, items)
            if cost is not None:
                points.append((value, cost))
        out[operator] = sorted(points)
    return out


def panel(x0, y0, width, height, title, data, x_label):
    """One log-x panel; returns SVG elements."""
    values = [v for points in data.values() for v, _ in points]
    costs = [c for points in data.values() for _, c in points]
    if not values:
        return [f'<text x="{x0}" y="{y0 + 20}">{title}: no data</text>']
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi == lo:
        hi = lo + 1
    top = max(costs) * 1.15
    left, bottom = x0 + 55, y0 + height - 40
    plot_w, plot_h = width - 75, height - 70

    def px(v):
        return left + (math.log10(v) - lo) / (hi - lo) * plot_w

    def py(c):
        return bottom - c / top * plot_h

    parts = [
        f'<text x="{x0 + width / 2}" y="{y0 + 16}" text-anchor="middle" '
        f'font-weight="bold">{title}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{bottom - plot_h}" stroke="black"/>',
        f'<text x="{left + plot_w / 2}" y="{bottom + 32}" text-anchor="middle">{x_label}</text>',
        f'<text x="{x0 + 12}" y="{bottom - plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 12} {bottom - plot_h / 2})">ns per item</text>',
    ]
    for v in sorted(set(values)):
        parts.append(
            f'<text x="{px(v)}" y="{bottom + 15}" text-anchor="middle" font-size="11">{v:,}</text>'
        )
    for step in range(0, 5):
        c = top * step / 4
        parts.append(
            f'<text x="{left - 6}" y="{py(c) + 4}" text-anchor="end" font-size="11">{c:.0f}</text>'
        )
        parts.append(
            f'<line x1="{left}" y1="{py(c)}" x2="{left + plot_w}" y2="{py(c)}" '
            f'stroke="#eeeeee"/>'
        )
    for operator, points in data.items():
        if not points:
            continue
        colour = COLOURS[operator]
        path = " ".join(f"{px(v):.1f},{py(c):.1f}" for v, c in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for v, c in points:
            parts.append(f'<circle cx="{px(v):.1f}" cy="{py(c):.1f}" r="3" fill="{colour}"/>')
    return parts


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benches" / "growth.svg"
    width, height = 460, 300
    parts = []
    for row, flavor in enumerate(["current_thread", "multi_thread"]):
        for col, (sweep, label) in enumerate([("items", "items (limit 64)"),
                                              ("limit", f"limit ({LIMIT_SWEEP_ITEMS:,} items)")]):
            title = f"{flavor}: cost per item against {sweep}"
            parts += panel(col * width, 30 + row * height, width, height, title,
                           series(flavor, sweep), label)
    legend_y = 30 + 2 * height + 10
    for i, operator in enumerate(OPERATORS):
        x = 20 + i * 220
        parts.append(f'<rect x="{x}" y="{legend_y}" width="14" height="14" '
                     f'fill="{COLOURS[operator]}"/>')
        parts.append(f'<text x="{x + 20}" y="{legend_y + 12}">{operator}</text>')
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" '
        f'height="{legend_y + 30}" font-family="sans-serif" font-size="13">'
        f'<rect width="100%" height="100%" fill="white"/>'
        f'<text x="10" y="18">flowgate growth benchmark (criterion means)</text>'
        + "".join(parts)
        + "</svg>\n"
    )
    out.write_text(svg)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
