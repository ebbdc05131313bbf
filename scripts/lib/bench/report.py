"""Figures → a table for people and one JSON document for machines."""

from __future__ import annotations

import json
import statistics

#: (key, label, unit, better) for every figure the table shows, in order
FIGURES = [
    ("login.logins_per_s", "login rate", "logins/s", "higher"),
    ("login.p50_ms", "login latency p50", "ms", "lower"),
    ("login.p99_ms", "login latency p99", "ms", "lower"),
    ("login.server_cpu_s", "server CPU, login phase", "s", "lower"),
    ("login.loadgen_cpu_pct", "load generator CPU, login", "% of 1 core", "-"),
    ("messages.msgs_per_s", "message throughput", "msgs/s", "higher"),
    ("messages.p50_ms", "message latency p50", "ms", "lower"),
    ("messages.p99_ms", "message latency p99", "ms", "lower"),
    ("messages.server_cpu_s_per_1000", "server CPU per 1000 msgs", "s", "lower"),
    ("messages.loadgen_cpu_pct", "load generator CPU, messages", "% of 1 core", "-"),
    ("messages.loadgen_cpu_us_per_msg", "load generator CPU per msg", "µs", "-"),
    ("messages.delivered", "messages delivered", "", "-"),
]


def percentile(values, p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))          # ceil(n·p/100)
    return ordered[int(rank) - 1]


def median(values) -> float | None:
    return statistics.median(values) if values else None


def _get(figures: dict, dotted: str):
    section, _, key = dotted.partition(".")
    return figures.get(section, {}).get(key)


def ratios(results: dict) -> dict:
    """xferd / Prosody for every figure both have (a plain quotient; see ``better``)."""
    x, p = results.get("xferd"), results.get("prosody")
    out: dict = {}
    if not x or not p:
        return out
    for key, *_ in FIGURES:
        a, b = _get(x, key), _get(p, key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
            section, _, name = key.partition(".")
            out.setdefault(section, {})[name] = round(a / b, 3)
    return out


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(document: dict) -> str:
    results, ratio = document["results"], document["ratios"]
    servers = [s for s in ("xferd", "prosody") if s in results]
    head = ["figure", "unit", *servers] + (["xferd/prosody", "better"] if ratio else [])
    rows = [head]
    for key, label, unit, better in FIGURES:
        if all(_get(results[s], key) is None for s in servers):
            continue
        row = [label, unit, *(_fmt(_get(results[s], key)) for s in servers)]
        if ratio:
            r = _get(ratio, key)
            row += [f"{r:.2f}×" if r is not None else "—", better]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    p = document["parameters"]
    title = (f"xferd benchmark — {p['clients']} clients, {p['messages']} messages each, "
             f"{p['window']} in flight, SCRAM-SHA-1 × {p['iterations']} iterations, "
             f"{document['machine']['cpu_count']} CPUs")
    return "\n".join([title, "", *lines])


def to_json(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False)
