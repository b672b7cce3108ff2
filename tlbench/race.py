"""Racing: more seeds only where a task's ranking is unsettled (``tlbench run --race-seeds N``).

After the grid's own seeds have run, each round adds one seed to every task whose best row is
not yet separated from another by the seeds (the leaderboard's rule with three or more seeds in
common: the 95% t-interval of their paired per-seed differences excludes zero,
``report.significance``; below three seeds nothing counts as separated here), to the best row
and each such row, until every other row is separated from the best or the rows have ``N``
seeds. This is racing in the sense of
F-race and SMAC's intensification: seeds go where they can change the answer.

The rule is fixed before anything is looked at, so the seeds it adds are not optional stopping;
a seed a person adds after reading a leaderboard is. Each record a round adds carries ``race``
(the round, the cap and the rule), so the leaderboard can say which seeds the rule added.
Cells already run are never rerun.
"""

from __future__ import annotations

from dataclasses import replace

from tlbench.errors import ConfigError

RULE = ("one seed a round to each task's best row and every row its seeds do not separate from it (the "
        "95% t-interval of their paired per-seed differences, from 3 common seeds, contains zero), until "
        "none is left or each has max_seeds seeds")


def check_cap(max_seeds: int, grid) -> None:
    if max_seeds <= len(grid.seeds):
        raise ConfigError(f"--race-seeds {max_seeds} must be more than the grid's {len(grid.seeds)} seed(s) "
                          f"({grid.seeds}): it is the number of seeds a row may reach by racing.")


def unsettled(per_dataset: list[dict], max_seeds: int) -> dict:
    """{task: {(backbone, strategy), ...}}: the rows that get one more seed. A task races while
    its best row and at least one other row are not separated (tied, or not judged yet) and the
    best row has fewer than ``max_seeds`` seeds; rows at the cap stop."""
    by_task: dict = {}
    for row in per_dataset:
        by_task.setdefault(row["dataset"], []).append(row)
    racing = {}
    for task, rows in by_task.items():
        scored = [r for r in rows if r.get("top1") is not None]
        if not scored:
            continue
        best = max(scored, key=lambda r: r["top1"])
        # only the seeds settle a race: a test over test images (the leaderboard's judge where
        # seeds are few) leaves out the spread from seed to seed that more seeds would show
        contenders = [r for r in scored if r is best or not _separated_by_seeds(r)]
        if len(contenders) < 2 or best["seeds"] >= max_seeds:
            continue
        rows_left = {(r["backbone"], r["strategy"]) for r in contenders if r["seeds"] < max_seeds}
        if len(rows_left) >= 2:
            racing[task] = rows_left
    return racing


def _separated_by_seeds(row: dict) -> bool:
    return row.get("tied_with_best") is False and row.get("tie_test") == "seeds"


def next_round(grid, registry, per_dataset: list[dict], used_seeds: set, max_seeds: int, round_no: int):
    """The grid of the next round's cells (one new seed for each racing row), or None when
    every task is settled. Its cells carry ``race`` for their records."""
    from tlbench.grid import build_grid

    racing = unsettled(per_dataset, max_seeds)
    if not racing:
        return None
    seed = max(used_seeds) + 1
    data = dict(grid.data, seeds=[seed])
    built = build_grid(data, grid.source, registry)
    marker = (("round", round_no), ("max_seeds", max_seeds), ("rule", RULE))
    built.cells = [replace(cell, race=marker) for cell in built.cells
                   if (cell.backbone, cell.strategy) in racing.get(cell.task, ())]
    return built if built.cells else None

