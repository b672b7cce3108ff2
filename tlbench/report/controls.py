"""The control of a leaderboard: the strategy transfer gain is measured against, found from the
records when neither the grid (its ``control`` key) nor `tlbench report --control` names one,
and each strategy's gain over it. A grid may name several controls: each gets its own table
(``per_control``)."""

from __future__ import annotations

from typing import Optional

from tlbench.report.curves import task_order
from tlbench.report.stats import mean_ci


def starts_from_random(records: list[dict]) -> dict:
    """{strategy: True when its cells started from random weights} for the strategies whose
    records say (``pretrained``, the effective flag: a strategy can declare it starts from
    random weights, and a grid can ask it of every strategy)."""
    flags: dict = {}
    for r in records:
        if isinstance(r.get("pretrained"), bool):
            flags.setdefault(r["strategy"], set()).add(not r["pretrained"])
    return {strategy: all(values) for strategy, values in flags.items()}


def find_control(records: list[dict]) -> Optional[str]:
    """The control of a grid whose records do not name one: its one strategy that starts from
    random weights, when other strategies start from pretrained ones (none when zero or
    several strategies do: then ``tlbench report --control NAME`` chooses)."""
    random_starts = starts_from_random(records)
    controls = [s for s, random in random_starts.items() if random]
    if len(controls) == 1 and not all(random_starts.values()):
        return controls[0]
    return None


def per_control(board) -> list:
    """The board as seen from each of its controls, the first control's (the board itself) first:
    each with that control's transfer gain, for a table of its own."""
    from dataclasses import replace

    return [board] + [replace(board, control=c, transfer_gain=rows, more_gains={},
                              control_from_random=board.random_starts.get(c, False))
                      for c, rows in board.more_gains.items()]


def transfer_gain_rows(per_dataset: list[dict], by_key: dict, control: str) -> list[dict]:
    """Each strategy's mean top-1 minus the control's on the same backbone and dataset.

    The interval comes from per-seed differences (seed k of both shares the split and the
    k-shot sample), so it needs the same two or more ok seeds on both sides.
    """
    if control is None or not any(row["strategy"] == control for row in per_dataset):
        return []
    controls = {(row["dataset"], row["backbone"]): row for row in per_dataset if row["strategy"] == control}
    rows = []
    for row in per_dataset:
        if row["strategy"] == control:
            continue
        base = controls.get((row["dataset"], row["backbone"]))
        gain = ci = None
        n = 0
        if base is None:
            note = f"no {control} cell"
        elif base["top1"] is None:
            note = f"{control}: {base['status']}"
        elif row["top1"] is None:
            note = row["status"]
        else:
            note = ""
            gain = row["top1"] - base["top1"]
            if sorted(row["ok_seeds"]) == sorted(base["ok_seeds"]) and len(row["ok_seeds"]) >= 2:
                mine = _top1_by_seed(by_key[(row["dataset"], row["backbone"], row["strategy"])])
                theirs = _top1_by_seed(by_key[(row["dataset"], row["backbone"], control)])
                paired = mean_ci([mine[s] - theirs[s] for s in sorted(mine)])
                ci, n = paired.half_width, paired.n
        rows.append({"dataset": row["dataset"], "backbone": row["backbone"], "strategy": row["strategy"],
                     "top1": row["top1"], "control_top1": None if base is None else base["top1"],
                     "gain": gain, "gain_ci95": ci, "paired_seeds": n, "note": note})
    order = {task: i for i, task in enumerate(task_order(per_dataset))}  # a curve's values by size
    rows.sort(key=lambda r: (order[r["dataset"]], r["backbone"], r["gain"] is None, -(r["gain"] or 0.0),
                             r["strategy"]))
    return rows


def _top1_by_seed(records: list[dict]) -> dict:
    return {r["seed"]: r["top1"] for r in records if r["status"] == "ok"}
