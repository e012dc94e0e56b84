"""Charts as inline SVG, drawn by matplotlib on the server: no script, no font or request to
any third party in the page, text kept as text (`svg.fonttype = none`: small, and
readable by a screen reader and a search in the page).

matplotlib rather than hand-made SVG: axes, ticks and label placement are what it has done
well for twenty years. Imported only by `campaign report` (it costs ~0.3 s to load).
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

__all__ = ["bars", "timeline"]

_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
INK, ACCENT, MUTED = "#1f2933", "#1f5f8b", "#9aa5b1"


def _svg(figure: object, name: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", bbox_inches="tight",  # type: ignore[attr-defined]
                       metadata={"Date": None, "Creator": None, "Format": None,
                                 "Type": None})
    svg = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1))
    # Scales with the page (a phone is narrower than the figure).
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"',
                  r'<svg\1 role="img" style="width:100%;height:auto"', svg, count=1)


def _figure(height: float) -> object:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, height), dpi=72)
    axes = figure.add_subplot()
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(colors=INK, labelsize=10)
    return figure


def timeline(minutes: Sequence[int], sent: Sequence[int], rate_per_minute: float, *,
             xlabel: str, ylabel: str, rate_label: str, name: str = "timeline") -> str:
    """Messages sent per minute since the first, with the configured rate as a line.

    One filled step line over every minute from the first to the last (a minute without
    sends at zero), not a bar per minute: a bar is an artist drawn twice (the tight bounding
    box), and the 334 minutes of a million sends at 50/s took 0.6 CPU-seconds as bars
    (bench/report_bench.py); one path takes the same time however long the send."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(2.8)
    axes = figure.axes[0]  # type: ignore[attr-defined]
    counts = [0] * (max(minutes) + 1 if minutes else 0)
    for minute, n in zip(minutes, sent, strict=True):
        counts[minute] = n
    axes.stairs(counts, range(len(counts) + 1), fill=True, color=ACCENT, label=ylabel)
    if rate_per_minute:
        if max(counts, default=0) * 5 >= rate_per_minute:
            axes.axhline(rate_per_minute, color=MUTED, linestyle="--", linewidth=1,
                         label=rate_label)
        else:  # far above a small send: drawn, it would flatten the sends to nothing
            axes.plot([], [], color=MUTED, linestyle="--", linewidth=1,
                      label=f"{rate_label}: {rate_per_minute:.0f}")
        # above the plot: over a send at full rate it would hide in the filled area
        axes.legend(frameon=False, fontsize=10, loc="lower left", bbox_to_anchor=(0, 1),
                    ncols=2)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(xlabel, color=INK, fontsize=10)
    axes.set_ylabel(ylabel, color=INK, fontsize=10)
    return _svg(figure, name)


def bars(labels: Sequence[str], values: Sequence[int], *, name: str,
         colours: Sequence[str] | None = None) -> str:
    """Horizontal bars, the largest on top, each with its value written at its end."""
    figure = _figure(0.35 * max(len(labels), 2) + 0.6)
    axes = figure.axes[0]  # type: ignore[attr-defined]
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, values, color=list(colours) if colours else ACCENT, height=0.6)
    axes.set_yticks(positions, labels=list(labels))
    for y, value in zip(positions, values, strict=True):
        axes.text(value, y, f" {value:,}", va="center", fontsize=10, color=INK)
    axes.set_xticks([])
    axes.spines["bottom"].set_visible(False)
    return _svg(figure, name)
