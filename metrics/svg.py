"""Charts as SVG strings, drawn on the server with no library and no CDN.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and ``<desc>`` (the numbers in
words, for a screen reader), with text labels on the axes and values on the marks; every
mark carries a ``<title>`` of its own (a tooltip) and a class (``bar``, ``cell``…) a page may
style. Only aggregates are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from metrics.compute import WEEKDAYS, Report
from metrics.staffing import HOURS, StaffingGrid

FONT = "font-family='system-ui, sans-serif' font-size='11'"
BAR_COLOUR = "#3b6ea5"
LINE_COLOUR = "#c0392b"


def _open(width: int, height: int, chart_id: str, title: str, desc: str) -> list[str]:
    return [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-labelledby='{chart_id}-title {chart_id}-desc' {FONT}>",
        f"<title id='{chart_id}-title'>{escape(title)}</title>",
        f"<desc id='{chart_id}-desc'>{escape(desc)}</desc>",
    ]


def _text(x: float, y: float, words: str, anchor: str = "middle", extra: str = "") -> str:
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}'{extra}>{escape(words)}</text>"


def contacts_over_time(report: Report, chart_id: str = "contacts-over-time") -> str:
    """Bars: contacts offered per day; line and dots: that day's answer rate (right axis)."""
    days = report.daily
    width, height, left, right, top, bottom = max(360, 40 + 22 * len(days)), 260, 44, 44, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max((day.offered for day in days), default=0)
    scale = _nice_ceiling(most)
    slot = plot_w / max(1, len(days))
    answered = sum(day.answered for day in days)
    offered = sum(day.offered for day in days)
    rate = f"{answered / offered:.0%}" if offered else "no contacts"
    parts = _open(
        width, height, chart_id,
        f"{report.channel.capitalize()} contacts and answer rate per day, {report.period.start} to {report.period.end}",
        f"{offered} contacts offered over {len(days)} days, {answered} answered ({rate}). "
        "Bars are contacts offered per day; the line is the share answered.",
    )  # fmt: skip
    parts.append(f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#555'/>")
    for tick in (0, scale // 2, scale) if scale else (0,):
        y = top + plot_h - (tick / scale * plot_h if scale else 0)
        parts.append(_text(left - 6, y + 4, str(tick), "end"))
    for pct in (0, 50, 100):
        parts.append(_text(left + plot_w + 6, top + plot_h - pct / 100 * plot_h + 4, f"{pct}%", "start"))
    parts.append(_text(12, top + plot_h / 2, "contacts", extra=f" transform='rotate(-90 12 {top + plot_h / 2:.1f})'"))
    points = []
    for index, day in enumerate(days):
        x = left + index * slot
        bar_h = day.offered / scale * plot_h if scale else 0
        label = f"{day.day.isoformat()}: {day.offered} offered, {day.answered} answered"
        parts.append(
            f"<rect class='bar' x='{x + slot * 0.15:.1f}' y='{top + plot_h - bar_h:.1f}' width='{slot * 0.7:.1f}' "
            f"height='{bar_h:.1f}' fill='{BAR_COLOUR}'><title>{escape(label)}</title></rect>"
        )
        if len(days) <= 16 or index % math.ceil(len(days) / 16) == 0:
            parts.append(_text(x + slot / 2, top + plot_h + 14, day.day.strftime("%d %b")))
        if day.answer_rate is not None:
            points.append((x + slot / 2, top + plot_h - day.answer_rate * plot_h, day))
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        parts.append(f"<polyline class='rate' points='{path}' fill='none' stroke='{LINE_COLOUR}' stroke-width='2'/>")
    for x, y, day in points:
        label = f"{day.day.isoformat()}: {day.answer_rate:.0%} answered"
        parts.append(
            f"<circle class='rate-point' cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{LINE_COLOUR}'>"
            f"<title>{escape(label)}</title></circle>"
        )
    parts.append(_text(left, height - 10, "Bars: contacts offered. Line: answer rate.", "start"))
    parts.append("</svg>")
    return "\n".join(parts)


def histogram_bins(
    seconds: Sequence[tuple[int, int]], bin_seconds: int = 15, max_seconds: int = 300
) -> list[tuple[str, int]]:
    """Counts per ``bin_seconds`` wide bin from 0 to ``max_seconds``, then one bin for the rest,
    from counts per whole second (``Report.speed_to_answer_counts``)."""
    edges = list(range(0, max_seconds, bin_seconds))
    counts = [0] * (len(edges) + 1)
    for second, count in seconds:
        index = len(edges) if second >= max_seconds else max(0, second) // bin_seconds
        counts[index] += count
    labels = [f"{edge}-{edge + bin_seconds}s" for edge in edges] + [f"{max_seconds}s+"]
    return list(zip(labels, counts, strict=True))


def speed_to_answer_histogram(
    report: Report, chart_id: str = "speed-to-answer", bin_seconds: int = 15, max_seconds: int = 300
) -> str:
    """How long answered contacts waited: one bar per bin, its count written above it."""
    bins = histogram_bins(report.speed_to_answer_counts, bin_seconds, max_seconds)
    width, height, left, top, bottom = 40 + 30 * len(bins), 240, 40, 20, 60
    plot_w, plot_h = width - left - 10, height - top - bottom
    scale = _nice_ceiling(max((count for _, count in bins), default=0))
    slot = plot_w / len(bins)
    total = sum(count for _, count in report.speed_to_answer_counts)
    parts = _open(
        width, height, chart_id,
        f"Speed to answer, {report.channel}, {report.period.start} to {report.period.end}",
        f"{total} answered contacts by seconds waited, in {bin_seconds}-second bins up to {max_seconds} seconds: "
        + "; ".join(f"{label}: {count}" for label, count in bins if count) + ".",
    )  # fmt: skip
    parts.append(f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='#555'/>")
    for index, (label, count) in enumerate(bins):
        x = left + index * slot
        bar_h = count / scale * plot_h if scale else 0
        parts.append(
            f"<rect class='bar' x='{x + 2:.1f}' y='{top + plot_h - bar_h:.1f}' width='{slot - 4:.1f}' "
            f"height='{bar_h:.1f}' fill='{BAR_COLOUR}'><title>{escape(f'{label}: {count}')}</title></rect>"
        )
        if count:
            parts.append(_text(x + slot / 2, top + plot_h - bar_h - 3, str(count)))
        lx, ly = x + slot / 2, top + plot_h + 10
        parts.append(_text(lx, ly, label, "end", extra=f" transform='rotate(-60 {lx:.1f} {ly:.1f})'"))
    parts.append("</svg>")
    return "\n".join(parts)


def staffing_heatmap(grid: StaffingGrid, chart_id: str = "staffing", language_name: str | None = None) -> str:
    """Hour by weekday: the colour is demand (contacts per week), the number is responders on
    shift; a cell with demand and nobody on shift is outlined as a gap."""
    cell_w, cell_h, left, top = 26, 22, 40, 40
    width, height = left + cell_w * 24 + 10, top + cell_h * 7 + 40
    who = language_name or grid.language or "all languages"
    gaps = [cell for cell in grid.cells if cell.gap]
    parts = _open(
        width, height, chart_id,
        f"Demand against responders on shift, {who}, last {grid.weeks} weeks",
        f"Contacts per week by hour and weekday from {grid.period.start} to {grid.period.end}; darker is busier "
        f"(busiest hour: {grid.busiest:.1f} a week). The number in each cell is responders on shift. "
        f"{len(gaps)} hours with contacts and nobody on shift"
        + (": " + ", ".join(f"{WEEKDAYS[c.weekday]} {c.hour:02d}h" for c in gaps[:12]) if gaps else "") + ".",
    )  # fmt: skip
    for hour in HOURS:
        if hour % 3 == 0:
            parts.append(_text(left + hour * cell_w + cell_w / 2, top - 8, f"{hour:02d}h"))
    for weekday, name in enumerate(WEEKDAYS):
        parts.append(_text(left - 6, top + weekday * cell_h + cell_h / 2 + 4, name, "end"))
        for hour in HOURS:
            cell = grid.cell(weekday, hour)
            x, y = left + hour * cell_w, top + weekday * cell_h
            share = cell.demand_per_week / grid.busiest if grid.busiest else 0.0
            fill = _blend(share)
            stroke = " stroke='#c0392b' stroke-width='2'" if cell.gap else " stroke='#fff'"
            label = (
                f"{name} {hour:02d}:00-{hour + 1:02d}:00: {cell.demand_per_week:.1f} contacts a week, "
                f"{cell.on_shift:.1f} on shift"
            )
            parts.append(
                f"<rect class='cell{' gap' if cell.gap else ''}' x='{x}' y='{y}' width='{cell_w}' height='{cell_h}' "
                f"fill='{fill}'{stroke} data-demand={quoteattr(f'{cell.demand_per_week:.2f}')} "
                f"data-on-shift={quoteattr(f'{cell.on_shift:.2f}')}><title>{escape(label)}</title></rect>"
            )
            colour = " fill='#fff'" if share > 0.55 else ""
            parts.append(_text(x + cell_w / 2, y + cell_h / 2 + 4, f"{cell.on_shift:g}", extra=colour))
    parts.append(
        _text(left, height - 12, "Colour: contacts per week (darker is more). Number: responders on shift.", "start")
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _blend(share: float) -> str:
    """White to dark blue."""
    share = min(1.0, max(0.0, share))
    start, end = (247, 251, 255), (8, 48, 107)
    red, green, blue = (round(a + (b - a) * share) for a, b in zip(start, end, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _nice_ceiling(value: float) -> int:
    """A round axis maximum at or above ``value`` (0 stays 0)."""
    if value <= 0:
        return 0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude) if step * magnitude >= 1 else 1
    return int(10 * magnitude)
