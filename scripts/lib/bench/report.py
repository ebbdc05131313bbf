"""Figures → medians and spreads, ratios, a table for people and JSON for machines.

Each scenario returns one flat dict of figures per repeat. ``summarise`` keeps
every repeat and puts the median of each number on top, so that
``results[server][section][figure]`` is always the figure to read and
``…["spread"][figure]`` its min–max over the repeats.
"""

from __future__ import annotations

import json
import statistics

from .prosody_server import lua

#: (section.figure, label, unit, better) for every figure the table shows, in order.
#: better: "higher"/"lower" is better for the server (charted); "-" is context only.
FIGURES = [
    ("login.logins_per_s", "login rate", "logins/s", "higher"),
    ("login.p50_ms", "login latency p50", "ms", "lower"),
    ("login.p99_ms", "login latency p99", "ms", "lower"),
    ("login.server_cpu_ms_per_login", "server CPU per login", "ms", "lower"),
    ("login.loadgen_cpu_pct", "load generator CPU, login", "% of 1 core", "-"),
    ("messages.msgs_per_s", "message throughput", "msgs/s", "higher"),
    ("messages.p50_ms", "message latency p50 (closed loop)", "ms", "lower"),
    ("messages.p99_ms", "message latency p99 (closed loop)", "ms", "lower"),
    ("messages.server_cpu_s_per_1000", "server CPU per 1000 msgs", "s", "lower"),
    ("messages.loadgen_cpu_pct", "load generator CPU, messages", "% of 1 core", "-"),
    ("messages.loadgen_cpu_us_per_msg", "load generator CPU per msg", "µs", "-"),
    ("messages.loadgen_reads_per_msg", "socket reads per msg (generator)", "", "-"),
    ("messages.delivered", "messages delivered", "", "-"),
    ("paced.p50_ms", "paced latency p50", "ms", "lower"),
    ("paced.p99_ms", "paced latency p99", "ms", "lower"),
    ("paced.max_ms", "paced latency max", "ms", "-"),
    ("paced.server_cpu_pct", "server CPU, paced", "% of 1 core", "lower"),
    ("paced.loadgen_max_send_lag_ms", "load generator send lag max", "ms", "-"),
    ("idle.k_reached", "idle connections held", "", "-"),
    ("idle.kb_per_connection", "server RSS per idle connection", "KiB", "lower"),
    ("idle.kb_kept_after_close_per_connection", "RSS kept after they closed", "KiB/conn", "-"),
    ("idle.idle_server_cpu_pct", "server CPU with K idle", "% of 1 core", "-"),
    ("idle.ramp_logins_per_s", "idle ramp-up rate", "logins/s", "-"),
    ("idle.rss_growth_over_cycles_mb", "RSS growth, cycles 2..n vs 1", "MiB", "-"),
    ("roster.fetch_ms", "roster fetch", "ms", "lower"),
    ("roster.login_and_fetch_ms", "login + roster fetch", "ms", "lower"),
    ("roster.bytes", "roster answer size", "bytes", "-"),
    ("roster.server_cpu_ms", "server CPU per roster fetch", "ms", "lower"),
    ("moved.all_updated_s", "XEP-0283: all contacts updated", "s", "lower"),
    ("moved.half_updated_s", "XEP-0283: half of them updated", "s", "lower"),
    ("moved.updated", "XEP-0283: contacts updated", "", "-"),
    ("moved.tool_s", "XEP-0283: xferd migrate run", "s", "-"),
    ("transfer.all_updated_s", "XEP-0015: all contacts updated", "s", "lower"),
    ("transfer.half_updated_s", "XEP-0015: half of them updated", "s", "lower"),
    ("transfer.updated", "XEP-0015: contacts updated", "", "-"),
    ("transfer.tool_s", "XEP-0015: xferd transfer run", "s", "-"),
    ("archive.messages", "archive: messages of one user", "", "-"),
    ("archive.db_mb", "archive: database size", "MB", "-"),
    ("archive.fill_msgs_per_s", "archive: import rate", "msgs/s", "-"),
    ("archive.first_page_ms", "archive: first page (100)", "ms", "-"),
    ("archive.last_page_ms", "archive: last page (<before/>)", "ms", "-"),
    ("archive.with_last_page_ms", "archive: one contact's last page", "ms", "-"),
    ("archive.after_id_middle_ms", "archive: page after an id mid-way", "ms", "-"),
    ("archive.with_start_end_middle_ms", "archive: with+start/end mid-way", "ms", "-"),
    ("archive.with_count_ms", "archive: count of one contact's", "ms", "-"),
    ("archive.count_all_ms", "archive: count of all", "ms", "-"),
    ("archive.metadata_ms", "archive: metadata", "ms", "-"),
    ("soak.sessions", "soak: sessions", "", "-"),
    ("soak.delivered", "soak: messages delivered", "", "-"),
    ("soak.p99_ms", "soak: paced latency p99", "ms", "lower"),
    ("soak.rss_after_first_minute_mb", "soak: RSS after the first minute", "MiB", "lower"),
    ("soak.rss_end_mb", "soak: RSS at the end", "MiB", "lower"),
    ("soak.rss_growth_after_first_minute_mb", "soak: RSS growth after minute 1", "MiB", "-"),
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


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 3)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarise(runs: list[dict]) -> dict:
    """Median of every numeric figure over *runs*, its min–max, and the runs themselves."""
    if not runs:
        return {}
    out: dict = {}
    spread: dict = {}
    for key, value in runs[0].items():
        values = [r.get(key) for r in runs]
        if all(_number(v) for v in values):
            mid = statistics.median(values)
            out[key] = round(mid, 4) if isinstance(mid, float) else mid
            if len(runs) > 1:
                spread[key] = [min(values), max(values)]
        else:
            out[key] = value
    out["repeats"] = len(runs)
    if spread:
        out["spread"] = spread
    out["runs"] = runs
    return out


def get(figures: dict, dotted: str):
    section, _, key = dotted.partition(".")
    return (figures.get(section) or {}).get(key)


def _spread(figures: dict, dotted: str):
    section, _, key = dotted.partition(".")
    return ((figures.get(section) or {}).get("spread") or {}).get(key)


def ratios(results: dict, ours: str = "xferd", theirs: str = "prosody") -> tuple[dict, dict]:
    """xferd / Prosody (*ours* / *theirs*) of every figure both have (medians), and the
    ratio's range over the repeats (xferd min / Prosody max … xferd max / Prosody min)."""
    x, p = results.get(ours), results.get(theirs)
    out: dict = {}
    ranges: dict = {}
    if not x or not p:
        return out, ranges
    for key, *_ in FIGURES:
        a, b = get(x, key), get(p, key)
        if _number(a) and _number(b) and b:
            section, _, name = key.partition(".")
            out.setdefault(section, {})[name] = round(a / b, 3)
            sa, sb = _spread(x, key), _spread(p, key)
            if sa and sb and sb[0] and sb[1]:
                ranges.setdefault(section, {})[name] = [round(sa[0] / sb[1], 3),
                                                        round(sa[1] / sb[0], 3)]
    return out, ranges


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if not isinstance(value, float):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cell(figures: dict, key: str) -> str:
    section = key.partition(".")[0]
    if (figures.get(section) or {}).get("skipped"):
        return "n/a"
    value = get(figures, key)
    text = _fmt(value)
    spread = _spread(figures, key)
    if spread and _number(value) and spread[0] != spread[1]:
        text += f" ({_fmt(spread[0])}–{_fmt(spread[1])})"
    return text


def table(document: dict) -> str:
    results, ratio = document["results"], document["ratios"]
    off_ratio = document.get("ratios_mam_off") or {}
    servers = [s for s in ("xferd", "prosody", "xferd-mam-off", "prosody-mam-off")
               if s in results]
    head = ["figure", "unit", *servers] + (["xferd/prosody"] if ratio else []) + \
        (["MAM off: x/p"] if off_ratio else []) + (["better"] if ratio or off_ratio else [])
    rows = [head]
    for key, label, unit, better in FIGURES:
        if all(get(results[s], key) is None for s in servers):
            continue
        row = [label, unit, *(_cell(results[s], key) for s in servers)]
        for shown in (ratio, off_ratio):
            if shown:
                r = get(shown, key)
                row.append(f"{r:.2f}×" if r is not None else "—")
        if ratio or off_ratio:
            row.append(better)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = []
    for server in servers:
        for section, figures in results[server].items():
            if isinstance(figures, dict) and figures.get("skipped"):
                notes.append(f"{server} {section}: not measured — {figures['skipped']}")
    p = document["parameters"]
    title = (f"xferd benchmark — {', '.join(p['scenarios'])}; SCRAM-SHA-1 × {p['iterations']} "
             f"iterations, {document['machine']['cpu_count']} CPUs; medians over "
             f"{p['repeats']} repeats (min–max)")
    modules = p.get("prosody_modules")
    if modules:
        settings = ", ".join(f"{k} = {lua(v)}"
                             for k, v in (p.get("prosody_mam_settings") or {}).items())
        title += f"\nProsody modules: {', '.join(modules)}" + \
            (f" (mam: {settings}; storage internal)" if "mam" in modules else "")
        if p.get("prosody_mam_off_modules"):
            title += "\nprosody-mam-off: the same without mam; xferd-mam-off: [mam] enabled = false"
    return "\n".join([title, "", *lines, *([""] + notes if notes else [])])


def to_json(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False)
