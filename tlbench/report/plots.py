"""Leaderboard plots: top-1 against what it cost, one panel per dataset, Pareto front marked;
top-1 against a swept setting; the critical-difference diagram of mean ranks across datasets.

Rendered with matplotlib's Agg canvas directly (no pyplot state, no GUI backend), with
matplotlib's own defaults rather than the user's matplotlibrc, and without the Software
and date metadata, so the same records give the same PNG bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math

from tlbench.grid_values import ZERO_MEANS
from tlbench.report.stats import pareto_front

WIDTH_IN = 10.0  # at 100 dpi, 1,000 px: sharp when a README shows it ~880 px wide
PANEL_HEIGHT_IN = 3.4
MAX_COLUMNS = 3
MAX_PANELS = 12  # a figure of more is taller than a page: 600 datasets made one 68,090 px tall
MARKERS = "osD^vP*Xh<>p"
# A strategy's colour comes from its name, so it is the same in every grid's plots: its hash picks
# one of tab10's colours (without grey, which marks backbones in legends). The salt was fixed once
# so that the first-party strategies get nine different ones (a test keeps them so); a strategy
# whose colour another of the same plot already has takes the first free one after them.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
HASHED_COLORS = 9  # the tab10 ones; the rest of PALETTE (tab20b's darks) only settles clashes
COLOR_SALT = "tlbench-2552:"
CURVES_PLOT = "accuracy_curves.png"
CD_PLOT = "critical_difference.png"
# file -> title, for the markdown and the page
PLOT_TITLES = {
    "accuracy_vs_train_time.png": "Top-1 vs training time",
    "accuracy_vs_trainable_params.png": "Top-1 vs trainable parameters",
    CURVES_PLOT: "Top-1 against the swept settings",
    CD_PLOT: "Critical difference of mean ranks across datasets",
}
_SCATTER_CAPTION = ("per dataset; points on the dashed line are Pareto-optimal (nothing else is both cheaper "
                    "and more accurate); bars are 95% intervals over seeds.")
# file -> caption on the page
PLOT_CAPTIONS = {
    "accuracy_vs_train_time.png": f"Top-1 vs training time {_SCATTER_CAPTION}",
    "accuracy_vs_trainable_params.png": f"Top-1 vs trainable parameters {_SCATTER_CAPTION}",
    CURVES_PLOT: "Top-1 against each swept setting, a line per backbone/strategy; bars are 95% intervals "
                 "over seeds.",
    CD_PLOT: "Mean rank over datasets (1 = best, Friedman's ranks); pairs joined by a thick bar differ by "
             "less than Nemenyi's critical difference (CD, top left) and are not separated at 95%.",
}
SCATTER_PLOTS = (
    # file, x field, x label
    ("accuracy_vs_train_time.png", "train_s", "training time (s, log scale)"),
    ("accuracy_vs_trainable_params.png", "trainable_params", "trainable parameters (log scale)"),
)


def render_plots(board) -> dict[str, bytes]:
    """{file name: PNG bytes} for the plots these records can draw (none without ok cells)."""
    out = {}
    for name, x_field, x_label in SCATTER_PLOTS:
        rows = [r for r in board.per_dataset if r["top1"] is not None and r.get(x_field) is not None]
        if rows:
            out[name] = _plot(board, rows, x_field, x_label)
    if any(p["top1"] is not None for c in board.curves for p in c["points"]):
        out[CURVES_PLOT] = _plot_curves(board.curves)
    if board.critical_difference.get("drawn"):
        out[CD_PLOT] = _plot_critical_difference(board.critical_difference)
    return out


def _plot_critical_difference(cd: dict) -> bytes:
    """Demšar's diagram: the rows on an axis of mean rank (1 = best, at the left), the better
    half labelled on the left, the rest on the right, Nemenyi's CD as a scale bar, and a thick bar
    under each group of rows whose mean ranks lie within CD of each other."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = cd["rows"]
    k = len(rows)
    one_backbone = len({r["backbone"] for r in rows}) == 1
    labels = [r["strategy"] if one_backbone else f"{r['backbone']} / {r['strategy']}" for r in rows]
    half = math.ceil(k / 2)
    axis_y = 0.9
    first_label = axis_y + 0.35 + 0.12 * len(cd["groups"])
    line_h = 0.28
    height = first_label + line_h * max(half, k - half) + 0.2
    left, right = 0.3, 0.7

    def x(rank: float) -> float:
        return left + (rank - 1.0) / max(k - 1, 1) * (right - left)

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update({"font.size": 10, "svg.hashsalt": "tlbench", "path.simplify": False,
                                    "text.parse_math": False})  # names are plain text: see _figure
        fig = Figure(figsize=(WIDTH_IN, height), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(height, 0)
        ax.plot([x(1), x(k)], [axis_y, axis_y], color="black", linewidth=1)
        for rank in range(1, k + 1):
            ax.plot([x(rank)] * 2, [axis_y - 0.07, axis_y], color="black", linewidth=1)
            ax.text(x(rank), axis_y - 0.1, str(rank), ha="center", va="bottom")
        width = cd["critical_difference"]
        ax.plot([x(1), x(1 + width)], [0.3, 0.3], color="black", linewidth=1.5)
        for end in (x(1), x(1 + width)):
            ax.plot([end, end], [0.25, 0.35], color="black", linewidth=1.5)
        ax.text((x(1) + x(1 + width)) / 2, 0.22, f"CD = {width:.2f}", ha="center", va="bottom")
        for i, (a, b) in enumerate(cd["groups"]):
            y = axis_y + 0.25 + 0.12 * i
            ax.plot([x(rows[a]["mean_rank"]) - 0.006, x(rows[b]["mean_rank"]) + 0.006], [y, y],
                    color="black", linewidth=4, solid_capstyle="butt")
        for i, (row, label) in enumerate(zip(rows, labels)):
            on_left = i < half
            y = first_label + line_h * (i if on_left else k - 1 - i)
            end = left - 0.03 if on_left else right + 0.03
            ax.plot([x(row["mean_rank"])] * 2 + [end], [axis_y, y, y], color="black", linewidth=1)
            ax.text(end - 0.005 if on_left else end + 0.005, y, f"{label} ({row['mean_rank']:.2f})",
                    ha="right" if on_left else "left", va="center")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _plot_curves(curves: list[dict]) -> bytes:
    """Top-1 against each swept setting (log x: shots and sizes grow geometrically), one panel
    per dataset and setting, a line per backbone/strategy with its 95% interval."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    panels = list(dict.fromkeys((c["dataset"], c["setting"]) for c in curves))  # curves come in numeric order
    backbones = sorted({c["backbone"] for c in curves})
    with _figure(len(panels), sorted({c["strategy"] for c in curves}), backbones, 0.6) as (fig, axes, color, marker):
        for ax, (dataset, setting) in zip(axes, panels):
            left_out = set()
            for curve in (c for c in curves if (c["dataset"], c["setting"]) == (dataset, setting)):
                points = [p for p in curve["points"] if p["top1"] is not None and not _stands_for_all(setting, p["value"])]
                left_out |= {p["value"] for p in curve["points"] if _stands_for_all(setting, p["value"])}
                label = curve["strategy"] if len(backbones) == 1 else f"{curve['strategy']} / {curve['backbone']}"
                ax.errorbar([p["value"] for p in points], [p["top1"] for p in points],
                            yerr=[p["top1_ci95"] or 0.0 for p in points], color=color[curve["strategy"]],
                            marker=marker[curve["backbone"]], capsize=3, label=label)
            ax.set_xscale("log")
            # ticks at the grid's values, not at powers of ten ("3×10⁰"): the values are what ran
            drawn = [p for c in curves if (c["dataset"], c["setting"]) == (dataset, setting)
                     for p in c["points"] if p["top1"] is not None and not _stands_for_all(setting, p["value"])]
            values = sorted({float(p["value"]) for p in drawn if float(p["value"]) > 0}) or [1.0]  # log: no 0
            if left_out:  # records of a grid older than the refusal (tlbench.grid_values.ZERO_MEANS)
                ax.text(0.02, 0.02, f"{setting} = 0 ({ZERO_MEANS[setting]}) not drawn: not a size",
                        transform=ax.transAxes, fontsize=8, color="0.4")
            ax.set_xlim(values[0] / 1.25, values[-1] * 1.25)
            ax.xaxis.set_major_locator(FixedLocator(_apart(values, 1.2)))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(_short_number))
            ax.set_ylim(*_top1_range(drawn or [{"top1": 0.5}]))
            ax.set_title(dataset)
            ax.set_xlabel(setting)
            ax.set_ylabel("top-1")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, frameon=False)
    return fig.png


def _stands_for_all(setting: str, value) -> bool:
    """A curve value that is not a point of its axis: 0 for a setting where 0 means "all"."""
    return setting in ZERO_MEANS and type(value) is int and value == 0


@contextlib.contextmanager
def _figure(panels: int, strategies: list[str], backbones: list[str], legend_in: float):
    """A figure of ``panels`` panels (at most MAX_COLUMNS a line; past MAX_PANELS, the first
    MAX_PANELS, as its title says), a colour per strategy and a marker per backbone, drawn with
    matplotlib's defaults whatever the user's matplotlibrc says; on leaving, ``fig.png`` holds
    the PNG bytes (no Software or date metadata: stable bytes)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = min(panels, MAX_PANELS)
    columns = min(MAX_COLUMNS, shown)
    lines = math.ceil(shown / columns)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        # names are plain text: a "$" pair in a dataset or strategy name is no formula to typeset
        # (mathtext raised on "$x_$", and every report of those records failed)
        matplotlib.rcParams.update({"font.size": 10, "axes.titlesize": 11, "svg.hashsalt": "tlbench",
                                    "path.simplify": False, "text.parse_math": False})
        color = strategy_colors(strategies)
        marker = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(backbones)}
        fig = Figure(figsize=(WIDTH_IN, PANEL_HEIGHT_IN * lines + legend_in), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(lines, columns, squeeze=False)
        for ax in axes.flat[shown:]:
            ax.set_visible(False)
        yield fig, list(axes.flat[:shown]), color, marker
        if shown < panels:
            fig.suptitle(f"The first {shown} of {panels} panels; the leaderboard's tables hold every one")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        fig.png = buffer.getvalue()


def strategy_colors(strategies: list[str]) -> dict[str, str]:
    """{strategy: colour} chosen by name (see ``PALETTE``), distinct within one plot while it has room."""
    taken: set = set()
    colors = {}
    for name in sorted(strategies):
        index = int.from_bytes(hashlib.sha256((COLOR_SALT + name).encode()).digest()[:8], "big") % HASHED_COLORS
        if index in taken:
            index = next((i for i in range(HASHED_COLORS, len(PALETTE)) if i not in taken),
                         next((i for i in range(HASHED_COLORS) if i not in taken), index))
        taken.add(index)
        colors[name] = PALETTE[index]
    return colors


def _top1_range(rows: list[dict]) -> tuple[float, float]:
    """A top-1 axis that fits the points and their intervals (not 0 to 1: the differences are
    what a reader looks at), with a margin, within [0, 1.02]."""
    low = min(r["top1"] - (r.get("top1_ci95") or 0.0) for r in rows)
    high = max(r["top1"] + (r.get("top1_ci95") or 0.0) for r in rows)
    margin = max(0.02, 0.08 * (high - low))
    return max(0.0, low - margin), min(1.02, high + margin)


# decades an axis spans -> (tick mantissas, every how many decades)
TICK_STEPS = ((1.2, (1, 2, 5), 1), (3.0, (1, 3), 1), (7.0, (1,), 1), (math.inf, (1,), 2))


def _log_ticks(low: float, high: float) -> tuple[float, float, list[float]]:
    """(low, high, ticks) for a log axis: 1-2-5, 1-3 or decade ticks by how many decades the
    axis spans (labels a panel's width holds without touching), at least two of them: the range
    grows to the nearest ticks outside it when fewer fall inside (matplotlib's fallback there,
    linear ticks, gave labels run together: "0.350.40.45")."""
    decades = math.log10(high / low)
    mantissas, every = next((m, n) for limit, m, n in TICK_STEPS if decades <= limit)
    first, last = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
    candidates = sorted(float(f"{m}e{k}") for k in range(first, last + 1) if k % every == 0 for m in mantissas)
    inside = [t for t in candidates if low <= t <= high]
    while len(inside) < 2:
        below = [t for t in candidates if t < low]
        above = [t for t in candidates if t > high]
        if below and (not inside or not above or low / below[-1] <= above[0] / high):
            low = below[-1] / 1.15
        else:
            high = above[0] * 1.15
        inside = [t for t in candidates if low <= t <= high]
    return low, high, inside


def _apart(values: list[float], factor: float) -> list[float]:
    """The sorted values, skipping any closer than ``factor`` to the last one kept (their labels
    would touch on a log axis)."""
    kept = values[:1]
    for value in values[1:]:
        if value >= kept[-1] * factor:
            kept.append(value)
    return kept


def _short_number(value: float, _position=None) -> str:
    """Axis labels as people write them: 0.5, 2, 50, 200, 1k, 20k, 3M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _plot(board, rows: list[dict], x_field: str, x_label: str) -> bytes:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    datasets = [d for d in board.datasets if any(r["dataset"] == d for r in rows)]  # curve values by size
    strategies = sorted({r["strategy"] for r in rows})
    backbones = sorted({r["backbone"] for r in rows})
    with _figure(len(datasets), strategies, backbones, 0.9) as (fig, axes, color, marker):
        for ax, dataset in zip(axes, datasets):
            mine = [r for r in rows if r["dataset"] == dataset]
            positive = [float(r[x_field]) for r in mine if float(r[x_field]) > 0]
            # nothing trained (a k-NN probe): log scale has no 0, so 0 sits a decade left of the rest
            zero_at = min(positive) / 10 if positive else 1.0
            points = {(r["backbone"], r["strategy"]): (float(r[x_field]) if float(r[x_field]) > 0 else zero_at,
                                                       r["top1"]) for r in mine}
            front = pareto_front(points)
            for r in mine:
                key = (r["backbone"], r["strategy"])
                x, y = points[key]
                ax.errorbar([x], [y], yerr=None if r["top1_ci95"] is None else [r["top1_ci95"]],
                            fmt=marker[r["backbone"]], color=color[r["strategy"]], markersize=8,
                            markeredgecolor="black" if key in front else color[r["strategy"]],
                            markeredgewidth=1.5 if key in front else 0.5, capsize=3, zorder=3)
            staircase = sorted(points[k] for k in front)
            xs = [p[0] for p in staircase]
            ys = [p[1] for p in staircase]
            ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1, zorder=2)
            ax.set_xscale("log")
            ax.set_title(dataset)
            ax.set_xlabel(x_label)
            ax.set_ylabel("top-1")
            ax.set_ylim(*_top1_range(mine))
            xs = [p[0] for p in points.values()]
            zero = zero_at if len(positive) < len(mine) else None
            low, high, ticks = _log_ticks(min(positive or xs) / 1.8, max(xs) * 1.8)
            if zero is not None:
                low, ticks = zero / 1.8, [zero] + [t for t in ticks if t >= zero * 3]
            ax.set_xlim(low, high)
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, zero=zero: "0" if v == zero else _short_number(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="major", alpha=0.3)

        handles = [Line2D([], [], color=color[s], marker="o", linestyle="", markersize=8, label=s)
                   for s in strategies]
        if len(backbones) > 1:
            handles += [Line2D([], [], color="grey", marker=marker[b], linestyle="", markersize=8, label=b)
                        for b in backbones]
        handles.append(Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="white",
                              markeredgewidth=1.5, label="Pareto front"))
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
    return fig.png
