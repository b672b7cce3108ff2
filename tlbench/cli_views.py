"""What the `tlbench` commands print for a person: the `runs` table of records, the `ls`
listing, a run's answer (its leaderboard, failed and interrupted cells), where files went,
skipped plugins. Reads records and writes leaderboards; runs no cell."""

from __future__ import annotations

import os
import sys

from tlbench.literal_text import one_line
from tlbench.records import RUNNING

HINTS = {  # what to try, by the error_kind of failed cells
    "oom": "out of memory: lower batch_size or image_size in [settings], or free the device",
    "non_finite": "non-finite loss: lower the strategy's lr",
}
# `tlbench runs`: a record is a cell's, so its run_id is shown as the cell id it is
RECORD_COLUMNS = ["grid", "backbone", "strategy", "dataset", "seed", "status", "top1", "train_s",
                  "cell id (run_id)", "node", "error"]


def warn_broken_plugins(registry) -> None:
    for plugin, why in registry.broken:
        print(f"warning: plugin {plugin!r} was skipped: {why}", file=sys.stderr)


def print_listing(registry, kind: str, verbose: bool, pattern=None) -> None:
    """`tlbench ls KIND [PATTERN]`: one name a line, what it is and where it comes from
    (``verbose``: and each option, once per component). A pattern that matches nothing is said
    on stderr, with the closest names: a search that found nothing, not an error (exit 0)."""
    from tlbench.options import describe_options

    said = len(registry.broken)
    rows = list(registry.listing(kind, pattern))
    for plugin, why in registry.broken[said:]:  # a family that failed to list its names
        print(f"warning: plugin {plugin!r}: {why}", file=sys.stderr)
    if not rows and pattern is not None:
        print(no_match(registry, kind, pattern), file=sys.stderr)
    width = max((len(name) for name, _, _ in rows), default=0)
    described = set()
    for name, text, reg in rows:
        print(f"{name:<{width}}  {text}  (from {reg.where()})")
        if verbose and reg.component not in described:
            described.add(reg.component)
            for opt, option_kind, default, help_text in describe_options(reg.component.Options):
                print(f"    {opt} ({option_kind}, default {default}): {help_text}")


def no_match(registry, kind: str, pattern: str) -> str:
    from tlbench.errors import closest

    hint = closest(pattern, [name for name, _, _ in registry.listing(kind)])
    maybe = f" Closest: {', '.join(hint)}." if hint else ""
    return (f"No {kind} match {pattern!r}.{maybe} `tlbench ls {kind}` lists them all; a pattern takes "
            "* and ? (e.g. 'efficientnet*').")


# -- a run's outcome -----------------------------------------------------------------------------


def interrupted_cells(records: list) -> str:
    """``A is recorded as interrupted; `` or ``A and B are ...``, naming every cell Ctrl-C stopped."""
    from tlbench.grid import cell_label

    labels = [cell_label(r) for r in records]
    if not labels:
        return ""
    if len(labels) == 1:
        return f"{labels[0]} is recorded as interrupted; "
    return f"{', '.join(labels[:-1])} and {labels[-1]} are recorded as interrupted; "


def print_failures(records: list[dict]) -> None:
    from tlbench.grid import cell_label

    print(f"{len(records)} cell(s) failed:", file=sys.stderr)
    for record in records:
        print(f"  {cell_label(record)}: [{record.get('error_kind', 'exception')}] {record['error']}",
              file=sys.stderr)
    for kind in sorted({r.get("error_kind") for r in records} & HINTS.keys()):
        print(f"  hint: {HINTS[kind]}", file=sys.stderr)
    print("Fix the cause and rerun with --retry-failed.", file=sys.stderr)


CAP_MEANING = {"test_size": "all its test split has", "train_per_class": "the fewest training images of a class"}


def warn_capped(records: list[dict]) -> None:
    """Each split size the data fell short of (a record's ``capped``), said once per setting
    and dataset however many cells it capped."""
    from tlbench.grid import task_name

    cells: dict = {}
    for record in records:
        for setting, cap in (record.get("capped") or {}).items():
            key = (setting, cap["set"], cap["used"], task_name(record["dataset"], record.get("sweep") or {}))
            cells[key] = cells.get(key, 0) + 1
    for (setting, asked, used, task), count in sorted(cells.items(), key=str):
        why = CAP_MEANING.get(setting, "what the data allowed")
        print(f"warning: {setting} = {asked} was capped to {used} ({why}) on {task}, in {count} cell(s); "
              "their records say so under `capped`", file=sys.stderr)


def answer_run(results: str, grid, outcome, sinks=None) -> int:
    """After `tlbench run`: the grid's leaderboard (its summary printed, its files written,
    ``sinks`` told) and what failed or was lost; returns the exit status. The leaderboard is `tlbench report`'s, from
    every stored record of the grid, whichever cells this run ran (a slice, a resume, a failure)."""
    from tlbench.report import build_leaderboard, terminal_summary, write_leaderboard
    from tlbench.results import grid_dir

    board = build_leaderboard(results, grid.name)
    # the answer first: the files (plots, page) take seconds to render
    print(terminal_summary(board, color=color(sys.stdout)), end="", flush=True)
    paths = write_leaderboard(board, grid_dir(results, grid.name))
    print(where(paths), flush=True)
    if sinks:
        sinks.report(grid.name, paths)
    if outcome.failed:
        print_failures(outcome.failed)
    if outcome.lost:
        print(f"{len(outcome.lost)} cell(s) have no record because their worker was lost; run the same "
              "command again to run them.", file=sys.stderr)
    return 1 if outcome.failed or outcome.lost else 0


def where(paths: list) -> str:
    """Where the leaderboard files went: their folder once, then their names."""
    folder = paths[0].parent
    return f"Leaderboard in {folder}{'/' if str(folder)[-1:] != '/' else ''}: " + ", ".join(p.name for p in paths)


def color(stream) -> bool:
    return (hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


# -- `tlbench runs`: the records -------------------------------------------------------------------


def print_records(results: str, grids: list[str], filters: dict) -> None:
    """The records of ``grids`` (and the cells running now) that match ``filters`` ({"backbone":
    pattern or None, "strategy", "dataset", "status"}), as a table and a count by status."""
    from collections import Counter

    from tabulate import tabulate

    rows = [r for name in grids for r in _records_and_claims(results, name)]
    shown = sorted((r for r in rows if _matches(r, filters)), key=_record_order)
    if not shown:
        given = " ".join(f"--{k} {v}" for k, v in filters.items() if v)
        print(f"No records match {given} ({len(rows)} record(s) under {results!r}).", file=sys.stderr)
        return
    # a curve's setting (a list in [settings]) gets a column after dataset, only where records have one
    settings = sorted({k for r in shown for k in (r.get("sweep") if isinstance(r.get("sweep"), dict) else {})})
    at = RECORD_COLUMNS.index("dataset") + 1
    table = [row[:at] + [_sweep_value(r, s) for s in settings] + row[at:] for r, row in
             ((r, _table_row(r)) for r in shown)]
    print(tabulate(table, headers=RECORD_COLUMNS[:at] + settings + RECORD_COLUMNS[at:], tablefmt="simple",
                   disable_numparse=True))
    counts = Counter(r["status"] for r in shown)
    print(f"{len(shown)} record(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def _records_and_claims(results: str, grid: str) -> list[dict]:
    """A grid's records, with the cells some process is running now shown as running instead,
    and those a detached Slurm array has yet to start as queued (tlbench.slurm_queue)."""
    from tlbench.results import active_claims, iter_records
    from tlbench.slurm_queue import queued_rows

    running = {c["run_id"]: c for c in active_claims(results, grid)}
    records = {r["run_id"]: r for r in iter_records(results, grid)}
    queued = queued_rows(results, grid, records, set(running))
    waiting = {r["run_id"] for r in queued}
    rows = [r for r in records.values() if r["run_id"] not in running and r["run_id"] not in waiting] + queued
    for claim in running.values():
        # a task of a detached Slurm array is named by Slurm's ids (tlbench.slurm_worker)
        who = f"Slurm {claim['slurm']}" if claim.get("slurm") else f"pid {claim.get('pid', '?')}"
        holder = f"{who} on {claim.get('host', '?')} since {claim.get('since', '?')}"
        rows.append({"grid": grid, "run_id": claim["run_id"], "status": RUNNING, "error": holder,
                     "node": {"hostname": str(claim.get("host", "-"))},
                     **{k: claim.get(k, "?") for k in ("backbone", "strategy", "dataset", "seed")}})
    return rows


def _matches(record: dict, filters: dict) -> bool:
    from fnmatch import fnmatchcase

    names = {k: filters.get(k) for k in ("backbone", "strategy", "dataset")}
    return (all(p is None or fnmatchcase(str(record[k]), p) for k, p in names.items())
            and filters.get("status") in (None, record["status"]))


def _record_order(record: dict) -> tuple:
    from tlbench.report.curves import sweep_key

    seed = record["seed"] if isinstance(record["seed"], int) else -1
    names = tuple(str(record[k]) for k in ("grid", "backbone", "strategy", "dataset"))
    sweep = record.get("sweep") if isinstance(record.get("sweep"), dict) else {}
    return names + (sweep_key(sweep), seed, record["run_id"])


def _sweep_value(record: dict, setting: str) -> str:
    sweep = record.get("sweep") if isinstance(record.get("sweep"), dict) else {}
    return str(sweep[setting]) if setting in sweep else "-"


def _table_row(record: dict) -> list:
    def number(key, digits):
        value = record.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    error = one_line(record.get("error") or "")
    row = [record["grid"], record["backbone"], record["strategy"], record["dataset"], record["seed"],
           record["status"], number("top1", 3), number("train_s", 1), record["run_id"][:8], _node(record),
           error if len(error) <= 60 else error[:57] + "..."]
    return [one_line(c) if isinstance(c, str) else c for c in row]  # a name's line break: no row of its own


def _node(record: dict) -> str:
    """The machine that ran the cell: a Ray node's hostname and address (hostnames can be the
    same on two nodes), else the environment's hostname."""
    node = record.get("node") if isinstance(record.get("node"), dict) else {}
    environment = record.get("environment") if isinstance(record.get("environment"), dict) else {}
    hostname = node.get("hostname") or environment.get("hostname") or "-"
    return f"{hostname} {node['address']}" if node.get("address") else str(hostname)
