"""Leaderboards from stored records alone, so they can be rebuilt after a resume, a merge of
records from several machines, or a run on a cluster.

``build_leaderboard`` reads one grid's records into a ``Leaderboard``, ``write_leaderboard``
writes its files (``rebuild_leaderboards`` does both for the grids `tlbench report` names):
three tables (per dataset, overall, transfer gain over a control strategy), two plots and a
self-contained page, all next to the records::

    RESULTS/GRID/leaderboard.md                       every table, GitHub markdown
    RESULTS/GRID/leaderboard.csv                      per dataset (one row per backbone/strategy)
    RESULTS/GRID/leaderboard_overall.csv              per backbone/strategy across datasets
    RESULTS/GRID/leaderboard_transfer_gain.csv        each strategy minus the control
    RESULTS/GRID/leaderboard_transfer_gain_vs_C.csv   with several controls: minus each control C after the first
    RESULTS/GRID/leaderboard.json                     all of the above and the environment
    RESULTS/GRID/leaderboard_*.tex                    each table as a LaTeX tabular (booktabs), for papers
    RESULTS/GRID/leaderboard.html                     one page, nothing remote, sortable tables
    RESULTS/GRID/accuracy_vs_train_time.png           per dataset, Pareto front marked
    RESULTS/GRID/accuracy_vs_trainable_params.png
    RESULTS/GRID/critical_difference.png              with five or more datasets: mean ranks, Nemenyi CD

The cells the grid holds and its controls come from the grid snapshot beside the records
(``RESULTS/GRID/grid.json``, tlbench.grid_snapshot) where `tlbench run` left one.

Which rows the numbers separate (ties with each dataset's best, the leading rows' paired tests,
the bootstrap interval, P(improvement) and Friedman's test) is ``significance``; the arithmetic
itself is ``stats``.

Output is byte-stable for the same records: rows are sorted, numbers formatted fixed, plots
rendered without timestamps, and the only dates shown are those in the records.
"""

from __future__ import annotations

from tlbench.report.board import Leaderboard, build_leaderboard
from tlbench.report.files import rebuild_leaderboards, write_leaderboard
from tlbench.report.markdown import terminal_summary, to_markdown
from tlbench.report.tables import frames

__all__ = ["Leaderboard", "build_leaderboard", "frames", "rebuild_leaderboards", "terminal_summary", "to_markdown",
           "write_leaderboard"]
