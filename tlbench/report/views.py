"""How a Leaderboard's numbers are shown: one set of formatting rules and table views shared by
the markdown, the page and the terminal."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

from tlbench.report.board import Leaderboard
from tlbench.report.curves import curve_settings, grid_axes, value_key
from tlbench.report.significance import BOOTSTRAP_RESAMPLES, FEW_SEEDS, LEADING
from tlbench.report.stats import CONFIDENCE

# -- formatting (one set of rules for markdown, CSV-free views, the page and the terminal) -----


def fmt_fixed(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_ci(mean: Optional[float], half: Optional[float], digits: int = 3, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if half is None else f"{text} ± {half:.{digits}f}"


def fmt_seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.1f}"


def fmt_rate(value: Optional[float]) -> str:
    """Three significant figures without exponents: 1,320 · 132 · 13.2 · 1.32 · 0.13."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_count(value: Optional[float]) -> str:
    """Parameter counts as timm's tables give them: 3.38M, 12.8k, 842."""
    if value is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.{2 if scaled < 10 else 1 if scaled < 100 else 0}f}{suffix}"
    return f"{value:.0f}"


def fmt_mb(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_p(value: Optional[float]) -> str:
    """A p-value: three decimals, and <0.001 below that (smaller p-values are not more precise)."""
    if value is None:
        return "-"
    return "<0.001" if value < 0.0005 else f"{value:.3f}"


def _p_equals(value: float) -> str:
    text = fmt_p(value)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def fmt_rank(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g}"


def fmt_interval(low: Optional[float], high: Optional[float], digits: int = 3) -> str:
    return "-" if low is None else f"{low:.{digits}f}–{high:.{digits}f}"


def fmt_tied(tied: Optional[bool], test: Optional[str]) -> str:
    """Whether a row is tied with its task's best, and what said so."""
    if tied is None:
        return "-"
    word = "yes" if tied else "no"
    return f"{word} ({TIE_TESTS[test]})" if test in TIE_TESTS else word


TIE_TESTS = {"images": "images", "equal": "equal top-1"}


@dataclass
class View:
    """A table as shown: headers, cell texts, sort values (None sorts last), row styles."""

    name: str
    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]] = field(default_factory=list)
    sort_values: list[list] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)  # "best", "problem" or ""
    titles: list[str] = field(default_factory=list)  # hover text for a row (why it failed)

    def add(self, cells: list[tuple[str, object]], style: str = "", title: str = "") -> None:
        self.rows.append([text for text, _ in cells])
        self.sort_values.append([value for _, value in cells])
        self.styles.append(style)
        self.titles.append(title)


def _style(row: dict) -> str:
    return "best" if row.get("best") else ("problem" if row["status"] != "ok" else "")


def dataset_view(board: Leaderboard, dataset: str) -> View:
    view = View(f"dataset-{dataset}", ["backbone", "strategy", "top-1", "n", "rank", "train s", "all fits s",
                                       "samples/s", "trainable params", "peak mem MB", "status"],
                [False, False, True, True, True, True, True, True, True, True, False])
    for row in board.per_dataset:
        if row["dataset"] != dataset:
            continue
        view.add([(row["backbone"], row["backbone"]), (row["strategy"], row["strategy"]),
                  (fmt_ci(row["top1"], row["top1_ci95"]), row["top1"]), (fmt_seeds(row), row["seeds"]),
                  (fmt_rank(row["rank"]), row["rank"]),
                  (fmt_seconds(row["train_s"]), row["train_s"]), (fmt_seconds(row["fit_s"]), row["fit_s"]),
                  (fmt_rate(row["train_samples_per_s"]), row["train_samples_per_s"]),
                  (fmt_count(row["trainable_params"]), row["trainable_params"]),
                  (fmt_mb(row["peak_mem_mb"]), row["peak_mem_mb"]), (row["status"], row["status"])],
                 _style(row), row["error"])
    return view


def overall_view(board: Leaderboard) -> View:
    """A row per backbone/strategy; with a curve, a block of rows per curve point (leading columns
    give its values), each over the datasets at that point only."""
    improve = board.has_control
    settings = curve_settings(board.overall)
    view = View("overall", [*settings, "backbone", "strategy", "mean top-1", "95% interval", "mean rank",
                            "datasets", "best on", *([f"P(> {board.control})"] if improve else []), "not ok"],
                [*[True] * len(settings), False, False, True, True, True, True, True, *([True] if improve else []),
                 False])
    for row in board.overall:
        sweep = row.get("sweep") or {}
        cells = [(str(sweep.get(s, "-")), sweep.get(s)) for s in settings]
        cells += [(row["backbone"], row["backbone"]), (row["strategy"], row["strategy"]),
                  (fmt_fixed(row["mean_top1"]), row["mean_top1"]),
                  (fmt_interval(row["mean_top1_low"], row["mean_top1_high"]), row["mean_top1_low"]),
                  (fmt_fixed(row["mean_rank"], 2), row["mean_rank"]),
                  (f"{row['datasets']}/{row['of_datasets']}", row["datasets"]), (str(row["wins"]), row["wins"])]
        if improve:
            cells.append((fmt_fixed(row["p_improvement"], 2), row["p_improvement"]))
        cells.append((row["not_ok"] or "-", row["not_ok"]))
        view.add(cells, "problem" if row["not_ok"] else "")
    return view


def pairwise_view(board: Leaderboard, dataset: str) -> View:
    """The leading rows of one task against its best row."""
    images = any(row["p_images"] is not None for row in board.pairwise)
    view = View(f"pairwise-{dataset}", ["backbone", "strategy", "top-1", "minus best", "n", "p", "Holm p",
                                       *(["images", "McNemar p"] if images else []), "tied"],
                [False, False, True, True, True, True, True, *([True, True] if images else []), False])
    for row in board.pairwise:
        if row["dataset"] != dataset:
            continue
        cells = [(row["backbone"], row["backbone"]), (row["strategy"], row["strategy"]),
                 (fmt_fixed(row["top1"]), row["top1"]),
                 (fmt_ci(row["difference"], row["difference_ci95"], signed=True), row["difference"]),
                 (str(row["paired_seeds"]), row["paired_seeds"]), (fmt_p(row["p_value"]), row["p_value"]),
                 (fmt_p(row["p_holm"]), row["p_holm"])]
        if images:
            cells += [(f"{row['images']:,}" if row["images"] else "-", row["images"]),
                      (fmt_p(row["p_images"]), row["p_images"])]
        cells.append((fmt_tied(row["tied_with_best"], row["tie_test"]), row["tied_with_best"]))
        view.add(cells, "best" if row["tied_with_best"] else "")
    return view


def best_of(board: Leaderboard, dataset: str) -> Optional[dict]:
    return next((row for row in board.per_dataset if row["dataset"] == dataset and row["tie_test"] == "best"), None)


def unjudged(board: Leaderboard, dataset: str) -> list[dict]:
    """The rows of a task with a top-1 whose tie with the best nothing could judge."""
    return [row for row in board.per_dataset
            if row["dataset"] == dataset and row["top1"] is not None and row["tied_with_best"] is None]


def gain_view(board: Leaderboard) -> View:
    control = board.control
    view = View("transfer_gain", ["dataset", "backbone", "strategy", "top-1", control, "gain", "n", "note"],
                [False, False, False, True, True, True, True, False])
    for row in board.transfer_gain:
        view.add([(row["dataset"], row["dataset"]), (row["backbone"], row["backbone"]),
                  (row["strategy"], row["strategy"]), (fmt_fixed(row["top1"]), row["top1"]),
                  (fmt_fixed(row["control_top1"]), row["control_top1"]),
                  (fmt_ci(row["gain"], row["gain_ci95"], signed=True), row["gain"]),
                  (str(row["paired_seeds"]) if row["paired_seeds"] else "-", row["paired_seeds"]),
                  (row["note"] or "-", row["note"])],
                 "problem" if row["note"] else "")
    return view


def environment_view(board: Leaderboard) -> View:
    view = View("environment", ["field", "value"], [False, False])
    for name, value in board.environment:
        view.add([(name, name), (value, value)])
    return view


def describe(board: Leaderboard) -> str:
    """One line: what the grid is and when its records were made (dates from the records only).
    A curve's values are counted as values, not as datasets: 2 datasets × 4 values of k."""
    def plural(n, word, many=None):
        return f"{n} {word if n == 1 else (many or word + 's')}"

    datasets, sweeps = grid_axes(board.per_dataset)
    done = sum(1 for row in board.per_dataset for _ in row["ok_seeds"])
    axes = [plural(len(board.backbones), "backbone"), plural(len(board.strategies), "strategy", "strategies"),
            plural(len(datasets), "dataset"),
            *[f"{plural(len(values), 'value')} of {setting} ({', '.join(map(str, values))})"
              for setting, values in sweeps.items()],
            plural(len(board.seeds), "seed")]
    parts = [f"{plural(board.cells, 'cell')} ({done} ok)", " × ".join(axes)]
    if board.first_started and board.last_finished:
        parts.append(f"records from {board.first_started} to {board.last_finished}")
    return "; ".join(parts)


CI_NOTE = (f"top-1 on each dataset's test split: mean over seeds ± half-width of the "
           f"{CONFIDENCE:.0%} confidence interval (Student t; none with one seed); n = seeds that ran ok; "
           "train s = the scored fit; all fits s = every candidate's fit when options were tuned on validation "
           "plus, for a probe, the extraction of the features it read from the cache (the compute the row cost, "
           "warm cache or cold)")
OVERALL_NOTE = ("mean top-1 over the datasets where the pair ran ok, with its 95% stratified-bootstrap "
                f"interval (each dataset's seeds resampled, {BOOTSTRAP_RESAMPLES:,} times, fixed seed); mean rank "
                "over the same datasets (each dataset's rank: 1 for its best top-1 and every row tied with it, "
                "else the place by top-1); best on = datasets where it is the best or tied with it")
IMPROVEMENT_NOTE = ("P(> {control}) = the probability that a run of the pair beats a run of `{control}` on the "
                    "same backbone and dataset (every seed against every seed, a tie counting half), averaged over "
                    "datasets: how often it wins, not by how much")
TIE_NOTE = ("Bold: the best top-1 of each dataset and every row tied with it, i.e. not separated from "
            "it at 95% by these records: the 95% t-interval of their per-seed differences contains zero "
            f"(with fewer than {FEW_SEEDS} seeds in common and per-image predictions on both sides, the exact "
            "McNemar test over the test images decides instead). Tied means not separated, not equal. Rank: "
            "1 for the bold rows, else the place by top-1")
PAIRWISE_NOTE = (f"Under each dataset, its leading rows (up to {LEADING} after the best) against the best row: "
                 "minus best = the row's top-1 minus the best's over the seeds both ran ok (n) ± half-width of "
                 "its 95% t-interval; p = paired t-test; Holm p = p adjusted (Holm) over the comparisons of "
                 "that table; tied = not separated at 95% (the rule above)")
IMAGES_NOTE = ("; images = test images paired over those seeds, McNemar p = exact McNemar test on the images "
               "exactly one of the two got right (it judges these trained models on this test split: "
               "seed-to-seed variation is not in it)")


def fmt_seeds(row: dict) -> str:
    """``5``, or ``5 (2 raced)`` / ``5 (2 added later)`` where seeds came from racing or later."""
    origins = [f"{row[key]} {words}" for key, words in (("raced_seeds", "raced"), ("later_seeds", "added later"))
               if row.get(key)]
    return f"{row['seeds']} ({', '.join(origins)})" if origins else str(row["seeds"])


def seed_origin_note(board: Leaderboard, dataset: str) -> str:
    """What the n column's notes mean, under a task where some row has them."""
    rows = [row for row in board.per_dataset if row["dataset"] == dataset]
    notes = []
    if any(row.get("raced_seeds") for row in rows):
        notes.append("raced: seeds that racing (`tlbench run --race-seeds`) added to the best row and the rows "
                     "tied with it, by a rule fixed before any result was read (it is in their records)")
    if any(row.get("later_seeds") for row in rows):
        notes.append("added later: seeds the grid listed only after its first seeds had run; if they were added "
                     "after reading a leaderboard, that is optional stopping and the row's interval is optimistic")
    return "; ".join(notes)


def unjudged_note(rows: list[dict]) -> str:
    names = ", ".join(f"{row['backbone']} / {row['strategy']}" for row in rows)
    return (f"one seed: ties cannot be judged for {names} (fewer than two seeds in common with the best row "
            "and no per-image predictions), so only the highest top-1 is in bold")


def pairwise_note(board: Leaderboard) -> str:
    images = any(row["p_images"] is not None for row in board.pairwise)
    return PAIRWISE_NOTE + (IMAGES_NOTE if images else "")


def improvement_note(board: Leaderboard) -> str:
    return IMPROVEMENT_NOTE.format(control=board.control)


def critical_difference_note(board: Leaderboard) -> str:
    """What the critical-difference diagram shows, or why there is none."""
    cd = board.critical_difference
    if not cd.get("drawn"):
        return f"No critical-difference diagram: {cd.get('reason', 'no records')}"
    tasks = (f"{cd['tasks']} tasks (each dataset at each value of its curve)" if board.curves
             else f"{cd['tasks']} datasets")
    text = (f"Friedman's test over the {tasks} and the {len(cd['rows'])} pairs with a top-1 on "
            f"every one: chi-square = {cd['friedman_chi2']:.2f}, p {_p_equals(cd['friedman_p'])}. Nemenyi's critical "
            f"difference at 95% is {cd['critical_difference']:.2f} mean-rank units: in the diagram, pairs joined "
            "by a bar are not separated. Its ranks are Friedman's (each dataset's places by mean top-1, equal "
            "values sharing the average place, no tie rule), so they can differ from the table's mean rank")
    if cd["left_out"]:
        text += "; left out (no top-1 on every dataset): " + ", ".join(
            f"{r['backbone']} / {r['strategy']}" for r in cd["left_out"])
    return text


CURVE_OVERALL_NOTE = ("with a curve setting, a block of rows per value of it (first columns): each block's means, "
                      "ranks and intervals are over the datasets at that value only, never averaged across "
                      "values")
CURVE_NOTE = ("top-1 for each value of a setting the grid lists several values of (mean over seeds ± "
              "half-width of the 95% confidence interval)")


def curve_views(board: Leaderboard) -> list[tuple[tuple, View]]:
    """One table per dataset and swept setting: a row per backbone/strategy, a column per value."""
    out = []
    for key, rows in itertools.groupby(board.curves, key=lambda c: (c["dataset"], c["setting"])):
        rows = list(rows)
        values = sorted({p["value"] for c in rows for p in c["points"]}, key=value_key)
        view = View(f"curve-{key[0]}-{key[1]}", ["backbone", "strategy", *map(str, values)],
                    [False, False, *[True] * len(values)])
        for curve in rows:
            by_value = {p["value"]: p for p in curve["points"]}
            cells = [(curve["backbone"], curve["backbone"]), (curve["strategy"], curve["strategy"])]
            for value in values:
                point = by_value.get(value)
                cells.append(("-", None) if point is None else
                             (fmt_ci(point["top1"], point["top1_ci95"]), point["top1"]))
            view.add(cells)
        out.append((key, view))
    return out


def gain_note(board: Leaderboard) -> str:
    what = ("the network trained from random weights" if board.control_from_random
            else "the grid's control" if board.control_from == "grid" else "the control chosen with --control")
    return (f"each strategy's top-1 minus `{board.control}` ({what}) on "
            f"the same backbone and dataset; ± from per-seed differences, n = paired seeds")


def no_gain_note(board: Leaderboard) -> str:
    if board.control is not None and board.control_from == "grid":
        return (f"No `{board.control}` records yet: run its cells (`tlbench run --grid GRID.toml --only "
                f"strategy={board.control}`) to measure the gain over it")
    if board.control is not None:
        return (f"No `{board.control}` records: add `{board.control}` to the grid's strategies "
                f"to measure what pretraining adds")
    return ("No control: no single strategy of this grid starts from random weights. Add one "
            "(`tlbench ls strategies -v` says which do) to measure what pretraining adds, or choose "
            "a control with `tlbench report --control STRATEGY`")
