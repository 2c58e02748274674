"""Charts as inline SVG, drawn at build time: no script, no font or style sheet to fetch, text the
browser renders and prints sharply. Every text that comes from data is escaped."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

GREEN, RED, AMBER, GREY, PURPLE, BLUE = "#2e7d32", "#c62828", "#ef6c00", "#9e9e9e", "#6a1b9a", "#1565c0"
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="12"'


def _svg(width: int, height: int, title: str, body: str) -> Markup:
    label = escape(title)
    return Markup(
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" {FONT}>'
        f"<title>{label}</title>{body}</svg>"
    )


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def stacked_bar(title: str, segments: Sequence[tuple[str, float, str]], width: int = 640) -> Markup:
    """One horizontal bar split into its parts, with a legend of each part and its count."""
    total = sum(v for _, v, _ in segments) or 1.0
    # a part too small to see (11 rows of 110,000) still shows: 3 pixels at least
    shown = [(label, max(v / total * width, 3.0), color, v) for label, v, color in segments if v > 0]
    scale = width / (sum(w for _, w, _, _ in shown) or 1.0)
    x, parts = 0.0, []
    for label, w, color, value in shown:
        w *= scale
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="28" fill="{color}">'
            f"<title>{escape(label)}: {_n(value)}</title></rect>"
        )
        x += w
    legend, lx = [], 0
    for label, value, color in segments:
        text = f"{label} {_n(value)}"
        legend.append(
            f'<rect x="{lx}" y="38" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="47">{escape(text)}</text>'
        )
        lx += 24 + 7 * len(text)
    if not parts:
        parts.append(f'<rect x="0" y="0" width="{width}" height="28" fill="#eeeeee"/>')
    return _svg(max(width, lx), 54, title, "".join(parts) + "".join(legend))


def bars(title: str, items: Sequence[tuple[str, float, str]], width: int = 640) -> Markup:
    """Horizontal bars, one per item, labelled on the left, the value at the end."""
    label_w, row_h = 220, 22
    longest = max((v for _, v, _ in items), default=0) or 1.0
    room = width - label_w - 60
    rows = []
    for i, (label, value, color) in enumerate(items):
        y = i * row_h
        w = max(value / longest * room, 1.0)
        short = label if len(label) <= 30 else label[:29] + "…"
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">'
            f"{escape(short)}<title>{escape(label)}</title></text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.2f}" height="{row_h - 6}" fill="{color}"/>'
            f'<text x="{label_w + w + 4:.2f}" y="{y + 15}">{_n(value)}</text>'
        )
    return _svg(width, max(len(items), 1) * row_h + 4, title, "".join(rows))


def bullet(
    title: str, observed: float | None, threshold: float | None, passed: bool, width: int = 220
) -> Markup:
    """An observed value against its threshold: the bar, the threshold as a line."""
    top = max(observed or 0.0, threshold or 0.0) * 1.25 or 1.0
    w = (observed or 0.0) / top * width
    tx = (threshold or 0.0) / top * width
    color = GREEN if passed else RED
    body = (
        f'<rect x="0" y="4" width="{width}" height="12" fill="#eeeeee"/>'
        f'<rect x="0" y="4" width="{w:.2f}" height="12" fill="{color}"/>'
    )
    if threshold is not None:
        body += f'<line x1="{tx:.2f}" x2="{tx:.2f}" y1="0" y2="20" stroke="#212121" stroke-width="2"/>'
    return _svg(width, 20, title, body)


def line(
    title: str,
    points: Sequence[tuple[str, float | None, bool]],
    threshold: float | None,
    width: int = 640,
    height: int = 170,
) -> Markup:
    """A check's observed value run after run: the line, the threshold dashed, each failure a red
    dot (labels: the runs' start dates)."""
    left, right, top, bottom = 48, 12, 10, 30
    values = [v for _, v, _ in points if v is not None]
    hi = max([*values, threshold or 0.0, 0.0]) * 1.1 or 1.0
    inner_w, inner_h = width - left - right, height - top - bottom

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (inner_w * i / max(len(points) - 1, 1) if len(points) > 1 else inner_w / 2)
        return x, top + inner_h - v / hi * inner_h

    body = [
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + inner_h}" stroke="#bdbdbd"/>',
        f'<line x1="{left}" x2="{width - right}" y1="{top + inner_h}" y2="{top + inner_h}" '
        'stroke="#bdbdbd"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_n(hi)}</text>',
        f'<text x="{left - 6}" y="{top + inner_h + 4}" text-anchor="end">0</text>',
    ]
    if threshold is not None:
        _, ty = xy(0, threshold)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{ty:.2f}" y2="{ty:.2f}" stroke="{AMBER}" '
            f'stroke-dasharray="6 4" stroke-width="1.5"><title>threshold {_n(threshold)}</title></line>'
        )
    path = [xy(i, v) for i, (_, v, _) in enumerate(points) if v is not None]
    if len(path) > 1:
        body.append(
            '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
                BLUE, " ".join(f"{x:.2f},{y:.2f}" for x, y in path)
            )
        )
    for i, (label, v, passed) in enumerate(points):
        if v is None:
            continue
        x, y = xy(i, v)
        color, r = (BLUE, 3) if passed else (RED, 5)
        body.append(
            f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r}" fill="{color}">'
            f"<title>{escape(label)}: {_n(v)}{'' if passed else ' (failed)'}</title></circle>"
        )
    if points:
        body.append(f'<text x="{left}" y="{height - 8}">{escape(points[0][0])}</text>')
        if len(points) > 1:
            body.append(
                f'<text x="{width - right}" y="{height - 8}" text-anchor="end">{escape(points[-1][0])}</text>'
            )
    return _svg(width, height, title, "".join(body))
