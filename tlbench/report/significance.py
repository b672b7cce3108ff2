"""Which rows a leaderboard's numbers separate: each task's rows against its best row (ties,
shared ranks, the leading rows' paired tests) and what holds across tasks (a bootstrap interval
of mean top-1, the probability of improvement over the control, Friedman's test and Nemenyi's
critical difference).

The rules, in words (docs/leaderboards.md says the same for readers):

- The best row of a task has the highest mean top-1. Another row is *tied with it* when the
  records cannot separate the two at 95%: the t-interval of their per-seed differences (seed k
  of both rows, the seeds both ran ok) contains zero. With fewer than FEW_SEEDS common seeds and
  per-image predictions on both sides for each of them, the exact McNemar test over the test
  images pooled across those seeds decides instead (p >= 0.05: tied). With neither (one seed, no
  predictions) nothing is judged: ``tied_with_best`` is None. Equal mean top-1 is always a tie.
- A task's rank: the row's place by mean top-1 (equal means share the average place), except
  that the best row and every row tied with it share rank 1.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional

from tlbench.report.stats import (CONFIDENCE, average_ranks, friedman, holm, mcnemar_exact_p, mean_ci, paired_t_p,
                                  probability_of_improvement, stratified_bootstrap_ci)

ALPHA = 1.0 - CONFIDENCE
FEW_SEEDS = 3  # below this many common seeds, per-image predictions (when there are) judge a tie
LEADING = 4  # rows compared with the best in each task's pairwise table
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same records give the same interval
MIN_TASKS_FOR_CD = 5  # Friedman's chi-square approximation and Nemenyi's test need several tasks

SeedRecords = dict  # {seed: ok record} of one row


def compare(row: dict, records: SeedRecords, best: dict, best_records: SeedRecords) -> dict:
    """One row against its task's best row: the paired difference over their common ok seeds
    (mean, t-interval, paired t-test), the McNemar test over the images of those seeds where both
    have per-image predictions, and whether the row is tied with the best (None: not judged)."""
    common = sorted(set(records) & set(best_records))
    differences = [records[s]["top1"] - best_records[s]["top1"] for s in common]
    paired = mean_ci(differences)
    images, p_images = _image_test(records, best_records, common)
    if row["top1"] == best["top1"]:
        tied, test = True, "equal"
    elif len(common) < FEW_SEEDS and p_images is not None:
        tied, test = p_images >= ALPHA, "images"
    elif len(common) >= 2:
        tied, test = paired.low <= 0.0 <= paired.high, "seeds"
    else:
        tied, test = None, None
    return {"difference": paired.mean, "difference_ci95": paired.half_width, "paired_seeds": len(common),
            "p_value": paired_t_p(differences), "images": images, "p_images": p_images,
            "tied_with_best": tied, "tie_test": test}


def _image_test(records: SeedRecords, best_records: SeedRecords, seeds: list) -> tuple[int, Optional[float]]:
    """(paired images, exact McNemar p) over the given seeds, pooling each seed's discordant
    images (a stratified sign test); (0, None) unless every seed has predictions of the same
    test images on both sides."""
    from tlbench.predictions import of_record

    if not seeds:
        return 0, None
    only_row = only_best = images = 0
    for seed in seeds:
        mine, theirs = records[seed], best_records[seed]
        if mine.get("split_digest") != theirs.get("split_digest"):
            return 0, None
        a, b = of_record(mine), of_record(theirs)
        if a is None or b is None or a[1].size != b[1].size:
            return 0, None
        only_row += int((a[1] & ~b[1]).sum())
        only_best += int((b[1] & ~a[1]).sum())
        images += int(a[1].size)
    return images, mcnemar_exact_p(only_row, only_best)


def judge_task(rows: list[dict], records_of: Callable[[dict], SeedRecords]) -> list[dict]:
    """Set ``rank``, ``best`` (bold: the best row and rows tied with it), ``tied_with_best`` and
    ``tie_test`` on the rows of one task (sorted best first); return its pairwise table: the
    LEADING rows after the best, each against it, with Holm's adjustment of their t-test p-values."""
    scored = [row for row in rows if row["top1"] is not None]
    for row in rows:
        row.update(rank=None, best=False, tied_with_best=None, tie_test=None)
    if not scored:
        return []
    best, others = scored[0], scored[1:]
    best_records = records_of(best)
    comparisons = {id(row): compare(row, records_of(row), best, best_records) for row in others}
    places = average_ranks({i: row["top1"] for i, row in enumerate(scored)})
    best.update(rank=1.0, best=True, tied_with_best=True, tie_test="best")
    for i, row in enumerate(others, start=1):
        tied = comparisons[id(row)]["tied_with_best"]
        row.update(rank=1.0 if tied else places[i], best=bool(tied), tied_with_best=tied,
                   tie_test=comparisons[id(row)]["tie_test"])
    leading = others[:LEADING]
    adjusted = holm([comparisons[id(row)]["p_value"] for row in leading])
    return [{"dataset": row["dataset"], "backbone": row["backbone"], "strategy": row["strategy"],
             "best_backbone": best["backbone"], "best_strategy": best["strategy"], "top1": row["top1"],
             "best_top1": best["top1"], **comparisons[id(row)], "p_holm": p_holm}
            for row, p_holm in zip(leading, adjusted)]


# -- across tasks ------------------------------------------------------------------------------


def across_tasks(overall: list[dict], per_dataset: list[dict], tasks: list[str],
                 records_of: Callable[[dict], SeedRecords], control: Optional[str]) -> None:
    """Add to each overall row the stratified-bootstrap interval of its mean top-1 over the tasks
    it ran on (``mean_top1_low``/``_high``) and, with a control, the probability that it improves
    on the control's row of the same backbone (``p_improvement``, over ``p_improvement_tasks``)."""
    by_pair: dict = {}
    for row in per_dataset:
        by_pair.setdefault((row["backbone"], row["strategy"]), {})[row["dataset"]] = row
    for row in overall:
        mine = by_pair.get((row["backbone"], row["strategy"]), {})
        values = [_values(records_of(mine[t])) for t in tasks if t in mine and mine[t]["top1"] is not None]
        row["mean_top1_low"], row["mean_top1_high"] = stratified_bootstrap_ci(
            values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        row["p_improvement"], row["p_improvement_tasks"] = None, 0
        if control is None or row["strategy"] == control:
            continue
        theirs = by_pair.get((row["backbone"], control), {})
        pairs = [(_values(records_of(mine[t])), _values(records_of(theirs[t]))) for t in tasks
                 if t in mine and t in theirs and mine[t]["top1"] is not None and theirs[t]["top1"] is not None]
        row["p_improvement"] = probability_of_improvement(pairs)
        row["p_improvement_tasks"] = len(pairs)


def _values(records: SeedRecords) -> list[float]:
    return [records[seed]["top1"] for seed in sorted(records)]


def critical_difference(per_dataset: list[dict], tasks: list[str]) -> dict:
    """Friedman's test over the tasks and Nemenyi's critical difference, for the rows with a
    top-1 on every task; ``{"drawn": False, "reason": ...}`` when it cannot say anything."""
    if len(tasks) < MIN_TASKS_FOR_CD:
        counted = (_plural(len(tasks), "task") + " (each dataset at each value of its curve)"
                   if any(row.get("sweep") for row in per_dataset) else _plural(len(tasks), "dataset"))
        return {"drawn": False, "tasks": len(tasks),
                "reason": (f"{counted}, and it "
                           f"needs at least {MIN_TASKS_FOR_CD}: Friedman's test ranks the rows within each one, "
                           "and with fewer its chi-square approximation and Nemenyi's critical difference "
                           "mean little")}
    scores: dict = {}
    for row in per_dataset:
        if row["top1"] is not None:
            scores.setdefault((row["backbone"], row["strategy"]), {})[row["dataset"]] = row["top1"]
    complete = sorted(pair for pair, by_task in scores.items() if len(by_task) == len(tasks))
    left_out = sorted(set((row["backbone"], row["strategy"]) for row in per_dataset) - set(complete))
    if len(complete) < 2:
        return {"drawn": False, "tasks": len(tasks),
                "reason": "fewer than two rows have a top-1 on every task, so there is nothing to rank"}
    test = friedman([[scores[pair][task] for pair in complete] for task in tasks], ALPHA)
    rows = sorted(({"backbone": b, "strategy": s, "mean_rank": rank}
                   for (b, s), rank in zip(complete, test.mean_ranks)),
                  key=lambda r: (r["mean_rank"], r["backbone"], r["strategy"]))
    return {"drawn": True, "tasks": len(tasks), "alpha": ALPHA, "rows": rows,
            "friedman_chi2": test.statistic, "friedman_p": test.p_value,
            "critical_difference": test.critical_difference,
            "groups": _cliques([r["mean_rank"] for r in rows], test.critical_difference),
            "left_out": [{"backbone": b, "strategy": s} for b, s in left_out]}


def _cliques(ranks: list[float], cd: float) -> list[list[int]]:
    """Maximal runs of consecutive rows (sorted by mean rank) whose ranks lie within ``cd`` of
    each other: the bars of a critical-difference diagram (no two rows in one differ at 95%)."""
    runs = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in runs):
            runs.append((i, j))
    return [[a, b] for a, b in runs]


def _plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def group_by_task(per_dataset: list[dict]) -> list[tuple[str, list[dict]]]:
    return [(task, list(rows)) for task, rows in itertools.groupby(per_dataset, key=lambda row: row["dataset"])]

