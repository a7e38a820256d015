"""A report as a table (for a terminal), CSV or JSON, aggregates only.

Exports suppress small numbers so no person can be singled out: a count from 1 to
``min_count - 1`` is withheld, and so is every value computed over such a count (a rate, a
mean, a percentile). Withheld cells are empty in CSV and ``null`` in JSON, and listed in
``suppressed``. Zero is shown: it describes nobody.

A breakdown's groups add up to ``all`` for every count, so one withheld group would be ``all``
minus the others. Complementary suppression closes that: in a count's column, when the groups
withheld are only small ones, the next-smallest nonzero group is withheld too (with the values
computed over it). Withholding ``all`` instead would not do: the same ``all`` is in every
breakdown of the period, and in the report without one.
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


def small_counts(row: Row, metrics: tuple[Metric, ...], min_count: int) -> set[str]:
    """The counts of ``row`` withheld for being small (primary suppression)."""
    return {m.name for m in metrics if m.kind == "count" and is_small(row.values.get(m.name), min_count)}


def withheld_counts(report: Report, min_count: int) -> list[set[str]]:
    """Per row of ``report``, the counts withheld: the small ones and, in a breakdown, the
    complementary ones (see the module's docstring)."""
    metrics = report.metrics()
    withheld = [small_counts(row, metrics, min_count) for row in report.rows]
    if report.breakdown is None:
        return withheld
    groups = range(1, len(report.rows))  # rows[0] is ``all``
    for metric in metrics:
        if metric.kind != "count" or not any(metric.name in withheld[i] for i in groups):
            continue
        # Withheld groups here are all small (nothing else is withheld yet): their sum, ``all``
        # minus the groups shown, would give one away, or pin two ones. Add the smallest shown.
        shown = [
            (value, i)
            for i in groups
            if metric.name not in withheld[i]
            and isinstance(value := report.rows[i].values.get(metric.name), int)
            and value > 0
        ]
        if shown:
            withheld[min(shown)[1]].add(metric.name)
    return withheld


def suppressed_row(
    row: Row, metrics: tuple[Metric, ...], min_count: int, withheld: set[str] | None = None
) -> dict[str, Value]:
    """The row's values with withheld counts (``withheld``; by default its small ones), and
    values computed over them, set to None."""
    hidden = small_counts(row, metrics, min_count) if withheld is None else withheld
    values: dict[str, Value] = {}
    for metric in metrics:
        if metric.name in hidden or any(name in hidden for name in metric.inputs):
            values[metric.name] = None
        else:
            values[metric.name] = row.values.get(metric.name)
    return values


def suppressed_rows(report: Report, min_count: int) -> list[dict[str, Value]]:
    """Every row's values as an export shows them: small and complementary counts withheld."""
    metrics = report.metrics()
    return [
        suppressed_row(row, metrics, min_count, withheld)
        for row, withheld in zip(report.rows, withheld_counts(report, min_count), strict=True)
    ]


def _shown(value: Value, metric: Metric) -> str:
    if value is None:
        return ""
    if metric.kind == "rate":
        return f"{value * 100:.1f}%"
    if metric.kind in ("seconds", "score", "ratio"):
        return f"{value:.1f}" if metric.kind != "ratio" else f"{value:.2f}"
    return str(value)


def to_table(report: Report, min_count: int | None = None) -> str:
    """Metrics down, groups across. With ``min_count``, small counts show as ``<n`` and other
    withheld values (computed over a withheld count, or complementary) as ``*``."""
    metrics = report.metrics()
    shown = suppressed_rows(report, min_count) if min_count else [dict(row.values) for row in report.rows]
    header = ["metric", *[row.group for row in report.rows]]
    lines = [header]
    starred = False
    for metric in metrics:
        cells = [metric.label]
        for values, original in zip(shown, report.rows, strict=True):
            value, exact = values.get(metric.name), original.values.get(metric.name)
            if value is None and exact is not None and min_count:
                small = metric.kind == "count" and is_small(exact, min_count)
                starred = starred or not small
                cells.append(SUPPRESSED.format(n=min_count) if small else "*")
            else:
                cells.append(_shown(value, metric) or "-")
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
    note = [f"* withheld: computed over a withheld count, or so that a count under {min_count} cannot be worked out"]
    return "\n".join([title, "", *body, *(note if starred else [])]) + "\n"


def to_csv(report: Report, min_count: int = DEFAULT_MIN_COUNT) -> str:
    """One line per group; one column per metric (its name, as in docs/metrics.md)."""
    metrics = report.metrics()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["period_start", "period_end", "channel", "breakdown", "group", *[m.name for m in metrics]])
    for row, values in zip(report.rows, suppressed_rows(report, min_count), strict=True):
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
    for row, values in zip(report.rows, suppressed_rows(report, min_count), strict=True):
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
