"""A report as a table (for a terminal), CSV or JSON, aggregates only.

Exports suppress small numbers so no person can be singled out: a count from 1 to
``min_count - 1`` is withheld, and so is every value computed over such a count (a rate, a
mean, a percentile). Withheld cells are empty in CSV and ``null`` in JSON, and listed in
``suppressed``. Zero is shown: it describes nobody.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from metrics.compute import METRICS_BY_NAME, Metric, Report, Row, Value

DEFAULT_MIN_COUNT = 5
SUPPRESSED = "<{n}"


def is_small(value: Value, min_count: int) -> bool:
    return isinstance(value, int) and 0 < value < min_count


def suppressed_row(row: Row, metrics: tuple[Metric, ...], min_count: int) -> dict[str, Value]:
    """The row's values with small counts, and values computed over them, set to None."""
    values: dict[str, Value] = {}
    for metric in metrics:
        value = row.values.get(metric.name)
        inputs_small = any(is_small(row.values.get(name), min_count) for name in metric.inputs)
        if (metric.kind == "count" and is_small(value, min_count)) or inputs_small:
            values[metric.name] = None
        else:
            values[metric.name] = value
    return values


def _shown(value: Value, metric: Metric) -> str:
    if value is None:
        return ""
    if metric.kind == "rate":
        return f"{value * 100:.1f}%"
    if metric.kind in ("seconds", "score", "ratio"):
        return f"{value:.1f}" if metric.kind != "ratio" else f"{value:.2f}"
    return str(value)


def to_table(report: Report, min_count: int | None = None) -> str:
    """Metrics down, groups across. With ``min_count``, small numbers show as ``<n``."""
    metrics = report.metrics()
    rows = [
        (row.group, suppressed_row(row, metrics, min_count) if min_count else dict(row.values)) for row in report.rows
    ]
    header = ["metric", *[group for group, _ in rows]]
    lines = [header]
    for metric in metrics:
        cells = [metric.label]
        for (_group, values), original in zip(rows, report.rows, strict=True):
            value = values.get(metric.name)
            hidden = value is None and original.values.get(metric.name) is not None
            cells.append(SUPPRESSED.format(n=min_count) if hidden else (_shown(value, metric) or "-"))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    title = (
        f"{report.channel} contacts, {report.period.start} to {report.period.end} (end excluded), "
        f"times in {report.timezone}"
    )
    body = [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line))
        for line in lines
    ]
    return "\n".join([title, "", *body]) + "\n"


def to_csv(report: Report, min_count: int = DEFAULT_MIN_COUNT) -> str:
    """One line per group; one column per metric (its name, as in docs/metrics.md)."""
    metrics = report.metrics()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["period_start", "period_end", "channel", "breakdown", "group", *[m.name for m in metrics]])
    for row in report.rows:
        values = suppressed_row(row, metrics, min_count)
        writer.writerow(
            [
                report.period.start.isoformat(),
                report.period.end.isoformat(),
                report.channel,
                report.breakdown or "",
                row.group,
                *["" if values[m.name] is None else _csv_number(values[m.name]) for m in metrics],
            ]
        )
    return out.getvalue()


def _csv_number(value: Value) -> str:
    return str(round(value, 4)) if isinstance(value, float) else str(value)


def to_json(report: Report, min_count: int = DEFAULT_MIN_COUNT) -> str:
    metrics = report.metrics()
    document: dict[str, Any] = {
        "period": {"start": report.period.start.isoformat(), "end": report.period.end.isoformat()},
        "timezone": report.timezone,
        "channel": report.channel,
        "breakdown": report.breakdown,
        "min_count": min_count,
        "definitions": "docs/metrics.md",
        "metrics": {m.name: {"label": m.label, "kind": m.kind} for m in metrics},
        "rows": [],
    }
    for row in report.rows:
        values = suppressed_row(row, metrics, min_count)
        document["rows"].append(
            {
                "group": row.group,
                "values": {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()},
                "suppressed": sorted(k for k, v in values.items() if v is None and row.values.get(k) is not None),
            }
        )
    return json.dumps(document, indent=2) + "\n"


def metric(name: str) -> Metric:
    return METRICS_BY_NAME[name]
