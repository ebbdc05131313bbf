"""The PNG: one bar per compared figure, xferd / Prosody on a log scale.

A bar right of 1× means xferd's number is larger. Whether larger is good
depends on the figure, so bars are coloured by who comes out ahead (green:
xferd, red: Prosody) and each label says "higher/lower is better". The
whisker is the ratio's range over the repeats. Only the figures the table
marks with a direction are drawn; context figures (load generator CPU …) are not.
"""

from __future__ import annotations

from pathlib import Path

from .report import FIGURES, get


def bars(document: dict) -> list[tuple[str, float, list | None, bool]]:
    """(label, ratio, [lo, hi] or None, xferd ahead?) for each figure to draw."""
    out = []
    for key, label, unit, better in FIGURES:
        if better not in ("higher", "lower"):
            continue
        ratio = get(document["ratios"], key)
        if not ratio:
            continue
        spread = get(document.get("ratio_spread", {}), key)
        ahead = ratio > 1 if better == "higher" else ratio < 1
        out.append((f"{label} ({better} is better)", ratio, spread, ahead))
    return out


def write(document: dict, path: Path) -> bool:
    """Draw the chart into *path*; False (and nothing written) when there is nothing to draw."""
    rows = bars(document)
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.reverse()                                   # first figure at the top
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.8))
    y = range(len(rows))
    values = [r[1] for r in rows]
    colours = ["#2e8b57" if r[3] else "#c0392b" for r in rows]
    errors = [[max(0.0, r[1] - r[2][0]) if r[2] else 0 for r in rows],
              [max(0.0, r[2][1] - r[1]) if r[2] else 0 for r in rows]]
    ax.barh(list(y), [v - 1 for v in values], left=1, color=colours, xerr=errors, capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "#333333"})           # bars grow from 1×
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(list(y))
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    low = min(min(values), min((r[2][0] for r in rows if r[2]), default=1), 0.5)
    high = max(max(values), max((r[2][1] for r in rows if r[2]), default=1), 2)
    ax.set_xlim(max(low, 1e-3) / 1.6, high * 1.6)
    for i, r in enumerate(rows):
        right = r[1] >= 1
        ax.annotate(f"{r[1]:.2f}×", (max(r[1], 1) if right else min(r[1], 1), i),
                    xytext=(-4, 6) if right else (4, 6), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7)
    machine, params = document["machine"], document["parameters"]
    ax.set_xlabel("xferd / Prosody (log scale; green: xferd ahead, red: Prosody ahead)")
    ax.set_title(f"xferd vs Prosody {machine.get('prosody') or ''} — "
                 f"{machine['cpu_count']} CPUs, medians of {params['repeats']} repeats\n"
                 f"{document['started']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
