"""`tlbench rank`: transferability scores for every backbone × dataset pair of a grid, and how
well they forecast the accuracy the grid's strategies measured.

Each pair is built exactly as one of its cells would be (same network, weights, split and
cache folder), then every registered score (plugins: the ``register_scores`` hook) estimates
from the frozen network and the training split; the first-party scores read features from the
cache the probes share. Where the grid's records hold measured top-1 for the same pairs, the
rank correlation (Kendall's tau) between each score and the best measured top-1 is computed
across backbones within each dataset, and pooled over datasets.
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from tlbench.errors import ConfigError
from tlbench.options import build_options
from tlbench.records import plugin_of

FILES = ("rank.md", "rank.csv", "rank.json")


@dataclass
class PairScores:
    """The scores of one backbone on one dataset."""

    dataset: str
    backbone: str
    scores: dict = field(default_factory=dict)  # score name -> value (None when it failed)
    seconds: dict = field(default_factory=dict)  # score name -> seconds its estimate took
    errors: dict = field(default_factory=dict)  # score name -> "Type: message"
    info: dict = field(default_factory=dict)  # what the scores logged (feature cache, ...)
    best_top1: Optional[float] = None  # best measured mean top-1 over the grid's strategies
    best_strategy: Optional[str] = None
    top1: dict = field(default_factory=dict)  # strategy -> mean top-1 over seeds
    #: what the scored network started from: "pretrained" weights, or "random" ones (a grid
    #: with ``pretrained = false``): the label every output gives it
    weights: str = "pretrained"

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


@dataclass
class Ranking:
    grid: str
    scores: list  # score names, in column order
    strategies: list  # strategies with measured top-1 (pretrained ones only)
    pairs: list  # PairScores, by dataset then backbone
    tau_best: dict  # score -> {dataset or "pooled": (tau, compared backbone pairs)}
    tau_strategy: dict  # score -> {strategy: (tau, compared pairs)}, pooled over datasets
    options: dict = field(default_factory=dict)  # score -> the options it ran with ([score.NAME])

    @property
    def datasets(self) -> list:
        return sorted({p.dataset for p in self.pairs})

    @property
    def failed(self) -> list:
        return [(p, name) for p in self.pairs for name in p.errors]


# -- choosing the pairs and the scores ---------------------------------------------------------


def score_names(registry, requested: Optional[str]) -> list[str]:
    available = registry.names("scores")
    if not available:
        raise ConfigError("No transferability scores are registered: reinstall tlbench "
                          "or add a plugin that implements register_scores.")
    if not requested:
        return available
    names = [n.strip() for n in requested.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--scores {requested!r} names no score; give comma-separated names, e.g. "
                          f"--scores {available[0]}. Available: {', '.join(available)}")
    for name in names:
        registry.get("scores", name)  # raises with the closest names
    if len(set(names)) != len(names):
        raise ConfigError(f"--scores names a score twice: {requested!r}.")
    return names


def score_options(grid, registry, names: list[str]) -> dict:
    """{name: options} for each score: the grid's ``[score.NAME]`` table, else the score's
    defaults, checked as a table is (a required option is one clear error before any work)."""
    return {name: grid.score_options[name] if name in grid.score_options
            else build_options(registry.get("scores", name).Options, {}, f"[score.{name}]")
            for name in names}


def pair_cells(grid, registry) -> list:
    """One cell per (dataset, backbone): the first seed, and a strategy that starts from the
    pretrained weights (a score of random weights forecasts nothing)."""
    chosen: dict = {}
    for cell in grid.cells:
        key = (cell.dataset, cell.backbone)
        if cell.seed != grid.seeds[0] or key in chosen:
            continue
        if registry.get("strategies", cell.plugin("strategy")).pretrained:
            chosen[key] = cell
    if not chosen:
        raise ConfigError(f"Grid {grid.name!r} has no strategy that starts from pretrained weights; "
                          "tlbench rank scores pretrained networks (add a strategy that does: `tlbench ls strategies -v`).")
    return [chosen[key] for key in sorted(chosen)]


# -- computing ---------------------------------------------------------------------------------


def compute(grid, registry, names: list[str], runner, log=print) -> list[PairScores]:
    """Every score for every pair; a score that raises is recorded as failed, the rest go on."""
    options = score_options(grid, registry, names)
    from tlbench.cell_record import starts_pretrained

    pairs = []
    cells = pair_cells(grid, registry)
    for i, cell in enumerate(cells, 1):
        weights = "pretrained" if starts_pretrained(cell, registry.get("strategies", cell.plugin("strategy"))) else "random"
        pair = PairScores(cell.dataset, cell.backbone, weights=weights)
        log(f"[{i}/{len(cells)}] {cell.backbone} / {cell.dataset} ({weights} weights) ...")
        try:
            setup = runner.setup(cell)
        except Exception as exc:
            pair.errors = {name: f"{type(exc).__name__}: {exc}" for name in names}
            pair.scores = {name: None for name in names}
            pairs.append(pair)
            continue
        for name in names:
            score = registry.get("scores", name)(options[name])
            start = time.perf_counter()
            try:
                value = float(score.estimate(setup.model, setup.train, setup.ctx))
                if not math.isfinite(value):
                    raise FloatingPointError(f"{name} gave {value}")
                pair.scores[name] = value
            except Exception as exc:
                pair.scores[name] = None
                pair.errors[name] = f"{type(exc).__name__}: {exc}"
                pair.info.setdefault("tracebacks", {})[name] = traceback.format_exc()
            pair.seconds[name] = time.perf_counter() - start
        pair.info.update(setup.ctx.info)
        pairs.append(pair)
        del setup
    return pairs


def attach_measured(pairs: list[PairScores], records: Iterable[dict], grid, registry) -> list[str]:
    """Fill each pair's measured top-1 from the records of the grid's current cells; returns
    the strategies seen. Controls that start from random weights (scratch) are left out."""
    wanted = {cell.run_id for cell in grid.cells}
    by_pair: dict = {}
    for r in records:
        if r.get("run_id") not in wanted or r.get("status") != "ok" or r.get("top1") is None:
            continue
        if not registry.get("strategies", plugin_of(r, "strategy")).pretrained:
            continue
        by_pair.setdefault((r["dataset"], r["backbone"]), {}).setdefault(r["strategy"], []).append(r["top1"])
    strategies = set()
    for pair in pairs:
        measured = by_pair.get((pair.dataset, pair.backbone), {})
        pair.top1 = {s: statistics.fmean(v) for s, v in sorted(measured.items())}
        strategies.update(pair.top1)
        if pair.top1:
            pair.best_strategy = max(sorted(pair.top1), key=lambda s: pair.top1[s])
            pair.best_top1 = pair.top1[pair.best_strategy]
    return sorted(strategies)


def kendall_tau(groups: Iterable[list[tuple[float, float]]]) -> tuple[Optional[float], int]:
    """Kendall's tau between a forecast and a measurement, counting pairs within each group only.

    Each group is [(forecast, measured)] for the backbones of one dataset: backbones are
    compared on the same dataset, never across datasets, whose scores and accuracies live on
    different scales. tau = (concordant - discordant) / compared pairs, a pair tied in either
    value counting as neither (tau-a; the same as scipy's tau-b when nothing ties). Returns
    (tau, compared pairs); tau is None with no pair to compare.
    """
    concordant = discordant = compared = 0
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                sign = _sign(group[i][0] - group[j][0]) * _sign(group[i][1] - group[j][1])
                concordant += sign > 0
                discordant += sign < 0
                compared += 1
    return ((concordant - discordant) / compared if compared else None), compared


def _sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def correlations(pairs: list[PairScores], names: list[str], strategies: list[str]) -> tuple[dict, dict]:
    datasets = sorted({p.dataset for p in pairs})

    def groups(name, measured):
        out = {}
        for d in datasets:
            out[d] = [(p.scores[name], measured(p)) for p in pairs
                      if p.dataset == d and p.scores.get(name) is not None and measured(p) is not None]
        return out

    tau_best, tau_strategy = {}, {}
    for name in names:
        by_dataset = groups(name, lambda p: p.best_top1)
        tau_best[name] = {d: kendall_tau([g]) for d, g in by_dataset.items()}
        tau_best[name]["pooled"] = kendall_tau(by_dataset.values())
        tau_strategy[name] = {s: kendall_tau(groups(name, lambda p, s=s: p.top1.get(s)).values())
                              for s in strategies}
    return tau_best, tau_strategy


def rank(grid, registry, names: list[str], runner, records: Iterable[dict], log=print) -> Ranking:
    import dataclasses

    pairs = compute(grid, registry, names, runner, log=log)
    strategies = attach_measured(pairs, records, grid, registry)
    tau_best, tau_strategy = correlations(pairs, names, strategies)
    options = {name: dataclasses.asdict(value) for name, value in score_options(grid, registry, names).items()}
    return Ranking(grid.name, names, strategies, pairs, tau_best, tau_strategy, options)


# -- output ------------------------------------------------------------------------------------


def _num(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _tau(entry: tuple) -> str:
    tau, compared = entry
    return "-" if tau is None else f"{tau:+.2f} ({compared})"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    from tlbench.report.markdown import markdown_text

    def line(cells):  # names and errors as text (tlbench.report.markdown.literal_board)
        return "| " + " | ".join(markdown_text(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "|".join("---" for _ in headers) + "|", *map(line, rows)])


def score_rows(ranking: Ranking) -> tuple[list[str], list[list[str]]]:
    headers = ["dataset", "backbone", "weights", *ranking.scores, "features", "seconds", "best top1", "best strategy"]
    rows = []
    for p in ranking.pairs:
        cache = p.info.get("feature_cache", "-")
        features_s = p.info.get("features_s")
        cache = f"{cache} ({features_s:.1f} s)" if features_s is not None else cache
        rows.append([p.dataset, p.backbone, p.weights, *(_num(p.scores.get(n)) if n not in p.errors else "failed"
                                              for n in ranking.scores),
                     cache, f"{p.total_s:.1f}", _num(p.best_top1, 3), p.best_strategy or "-"])
    return headers, rows


def to_markdown(ranking: Ranking) -> str:
    from tlbench.report.markdown import markdown_text as text

    headers, rows = score_rows(ranking)
    parts = [
        f"# Transferability ranking: {text(ranking.grid)}",
        "",
        f"Scores of each backbone ({_weights_phrase(ranking)}) on each dataset's training split, computed from its "
        "frozen features before any fine-tuning (higher forecasts better transfer). `features`: "
        "whether they came from the feature cache, and the time it took to get them; `seconds`: "
        "everything, features included. `best top1`: the best mean test top-1 the grid's "
        "strategies measured for the pair (controls from random weights left out).",
        "",
        _table(headers, rows),
    ]
    with_options = [f"`{text(name)}` " + ", ".join(text(f"{key} = {value!r}") for key, value in options.items())
                    for name, options in ranking.options.items() if options]
    if with_options:
        parts += ["", "Options (`[score.NAME]` in the grid, else the defaults): " + "; ".join(with_options) + "."]
    if ranking.strategies:
        columns = [*ranking.datasets, "pooled"]
        parts += [
            "",
            "## How far the forecast can be trusted",
            "",
            "Kendall's tau between each score and the best measured top-1, over the backbones of "
            "each dataset; `pooled` counts the backbone pairs of every dataset together (never "
            "comparing across datasets). In brackets: backbone pairs compared. +1: the score "
            "orders the backbones exactly as fine-tuning did; 0: no better than chance; -1: reversed.",
            "",
            _table(["score", *columns],
                   [[n, *(_tau(ranking.tau_best[n][c]) for c in columns)] for n in ranking.scores]),
            "",
            "Against each strategy's own top-1 (pooled over datasets):",
            "",
            _table(["score", *ranking.strategies],
                   [[n, *(_tau(ranking.tau_strategy[n][s]) for s in ranking.strategies)]
                    for n in ranking.scores]),
        ]
    else:
        parts += ["", "No measured top-1 for these pairs yet: run the grid (`tlbench run --grid ...`) "
                      "and rank again to see how well each score forecasts it."]
    if ranking.failed:
        parts += ["", "## Failed", ""]
        parts += [text(f"- {p.backbone} / {p.dataset} / {name}: {p.errors[name]}") for p, name in ranking.failed]
    return "\n".join(parts) + "\n"


def _weights_phrase(ranking: Ranking) -> str:
    """What the scored networks started from, in words: random weights are never called pretrained."""
    kinds = {p.weights for p in ranking.pairs}
    if kinds == {"random"}:
        return ("random weights, not pretrained ones: the grid sets `pretrained = false`, so these scores "
                "forecast how untrained networks transfer")
    if kinds == {"pretrained"}:
        return "pretrained weights"
    return "the `weights` column says which started from pretrained weights and which from random ones"


def to_csv(ranking: Ranking) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "backbone", *ranking.scores, *(f"{n}_s" for n in ranking.scores),
                     "feature_cache", "features_s", "best_top1", "best_strategy", "weights"])
    for p in ranking.pairs:
        writer.writerow([p.dataset, p.backbone, *(_csv(p.scores.get(n)) for n in ranking.scores),
                         *(_csv(p.seconds.get(n)) for n in ranking.scores), p.info.get("feature_cache", ""),
                         _csv(p.info.get("features_s")), _csv(p.best_top1), p.best_strategy or "", p.weights])
    return out.getvalue()


def _csv(value) -> str:
    return "" if value is None else repr(float(value))


def to_json(ranking: Ranking) -> str:
    def tau(entry):
        return {"tau": entry[0], "pairs": entry[1]}

    data = {
        "grid": ranking.grid,
        "scores": ranking.scores,
        "score_options": ranking.options,  # what each score ran with: the numbers depend on it
        "pairs": [{"dataset": p.dataset, "backbone": p.backbone, "scores": p.scores, "seconds": p.seconds,
                   "errors": p.errors, "info": {k: v for k, v in p.info.items() if k != "tracebacks"},
                   "top1": p.top1, "best_top1": p.best_top1, "best_strategy": p.best_strategy,
                   "weights": p.weights}
                  for p in ranking.pairs],
        "kendall_tau_vs_best": {n: {k: tau(v) for k, v in ranking.tau_best[n].items()} for n in ranking.scores},
        "kendall_tau_vs_strategy": {n: {k: tau(v) for k, v in ranking.tau_strategy[n].items()}
                                    for n in ranking.scores},
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write(ranking: Ranking, folder: Path) -> list[Path]:
    from tlbench.atomic_files import write_atomic

    paths = []
    for name, text in zip(FILES, (to_markdown(ranking), to_csv(ranking), to_json(ranking))):
        path = folder / name
        write_atomic(path, text)
        paths.append(path)
    return paths
