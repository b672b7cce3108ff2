"""The `tlbench` command. Heavy imports (torch, pandas) happen inside commands only."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from tlbench import __version__
from tlbench.errors import ConfigError, RunStopped
from tlbench.records import RUNNING, STATUSES

DEFAULT_GRID = object()  # `--grid` given without a file
HINTS = {  # what to try, by the error_kind of failed cells
    "oom": "out of memory: lower batch_size or image_size in [settings], or free the device",
    "non_finite": "non-finite loss: lower the strategy's lr",
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins-dir", metavar="DIR",
                        help="also load every .py file in DIR as a plugin (env: TLBENCH_PLUGINS_DIR)")


def _add_grid_options(parser: argparse.ArgumentParser) -> None:
    """What `run` and `rank` share: the grid, the results folder, quiet, the plugins folder."""
    parser.add_argument("--grid", nargs="?", const=DEFAULT_GRID, default=DEFAULT_GRID, metavar="GRID.toml",
                        help="grid file; without a file, the default grid the installed plugins provide")
    parser.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_common(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark pretrained backbones x transfer strategies x datasets.",
    )
    parser.add_argument("--version", action="version", version=f"tlbench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run every cell of a grid and write records + leaderboard",
        description="Run every cell of a grid; cells with records are skipped. Several runs may "
                    "share a results folder: each cell runs in one of them.")
    _add_grid_options(run)
    run.add_argument("--executor", choices=["local", "subprocess", "ray"], default="local",
                     help="where cells run: local (default, in this process), subprocess (each cell "
                          "in a fresh process) or ray (Ray tasks on a local instance or a cluster)")
    run.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                     help="kill a cell that runs longer and record it as failed (subprocess and ray)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="join this Ray cluster ('auto': the one started on this node with `ray start`); "
                          "default: start a local instance sized to this machine")
    run.add_argument("--cpus-per-cell", type=float, default=1.0, metavar="N",
                     help="CPUs Ray reserves for each cell, also its torch threads (default: 1)")
    run.add_argument("--gpu-share", action="append", default=[], metavar="STRATEGY=FRACTION",
                     help="fraction of a GPU Ray reserves for each cell of a strategy, overriding "
                          "the strategy's own (repeatable; e.g. linear_probe=0.25)")
    run.add_argument("--ray-max-retries", type=int, default=2, metavar="N",
                     help="times Ray reruns a cell whose worker died (default: 2); after that the "
                          "cell has no record and the next run picks it up")
    run.add_argument("--race-seeds", type=int, metavar="N",
                     help="after the grid's seeds, add one seed a round to each dataset's best row and "
                          "the rows its seeds do not separate from it, until none is left or they have N "
                          "seeds (racing; --executor local or subprocess)")
    run.add_argument("--retry-failed", action="store_true", help="rerun cells whose record says failed")
    run.add_argument("--force", action="store_true", help="rerun every cell, even those already done")

    ls = commands.add_parser("ls", help="list registered backbones, strategies or datasets",
                             description="List what the installed plugins register, one name a line.")
    ls.add_argument("kind", choices=["backbones", "strategies", "datasets", "scores"])
    ls.add_argument("-v", "--verbose", action="store_true", help="also show each one's options")
    _add_common(ls)

    report = commands.add_parser(
        "report", help="(re)write leaderboards, plots and the page from stored records",
        description="Rebuild every leaderboard file of a grid from its records alone: tables "
                    "(leaderboard.md, .csv, .json), plots (PNG) and leaderboard.html. Works on "
                    "records from several runs or machines merged into one folder.")
    report.add_argument("--results", default="results", metavar="DIR",
                        help="results folder, or one grid's folder in it (default: ./results)")
    report.add_argument("--grid", metavar="NAME", help="only this grid (default: every grid in DIR)")
    report.add_argument("--control", default=None, metavar="STRATEGY",
                        help="the strategy transfer gain is measured against (default: the grid's one "
                             "strategy that starts from random weights)")
    report.add_argument("--screenshot", action="store_true",
                        help="also save leaderboard.png, the page as headless Chromium renders it "
                             "(needs Playwright and a system Chromium)")

    runs = commands.add_parser("runs", help="list stored records with status and key metrics",
                               description="List the records (and the cells running now) under a "
                                           "results folder. Name filters take shell patterns (resnet*).")
    runs.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    runs.add_argument("--grid", metavar="NAME", help="only this grid (default: every grid in DIR)")
    runs.add_argument("--backbone", metavar="PATTERN", help="only these backbones")
    runs.add_argument("--strategy", metavar="PATTERN", help="only these strategies")
    runs.add_argument("--dataset", metavar="PATTERN", help="only these datasets")
    runs.add_argument("--status", choices=(*STATUSES, RUNNING), help="only records with this status")

    rank = commands.add_parser(
        "rank", help="forecast which backbone transfers best, from frozen features only",
        description="Compute every transferability score (tlbench ls scores) for each backbone x "
                    "dataset pair of a grid, from cached frozen features, and, where the grid's "
                    "records have measured top-1 for those pairs, Kendall's tau between each score "
                    "and the best measured accuracy. Writes rank.md, rank.csv and rank.json next "
                    "to the grid's records.")
    _add_grid_options(rank)
    rank.add_argument("--scores", metavar="NAMES", help="comma-separated scores (default: every registered one)")

    reproduce = commands.add_parser(
        "reproduce", help="rerun a sample of stored cells elsewhere and compare their top-1",
        description="Rebuild some cells of a results folder from their records (the same run_id, "
                    "or the cell is reported as another configuration), rerun them with the local "
                    "executor into a scratch folder, and compare top-1 and environment with the "
                    "published records. The results folder is only read. Exit 0 when every rerun "
                    "cell is within the tolerance, 1 otherwise.")
    reproduce.add_argument("--results", required=True, metavar="DIR",
                           help="results folder to check, or one grid's folder in it (only read)")
    reproduce.add_argument("--grid", metavar="NAME", help="the grid to check (needed when DIR has several)")
    chosen = reproduce.add_mutually_exclusive_group()
    chosen.add_argument("--cells", type=int, metavar="N",
                        help="how many ok cells of the grid's current configuration to rerun, spread "
                             "over strategies and datasets, the same ones every time (default: 4)")
    chosen.add_argument("--run-id", nargs="+", action="extend", default=[], metavar="ID",
                        help="rerun these cells (a run_id, or its start as `tlbench runs` shows it)")
    reproduce.add_argument("--tolerance", type=float, metavar="T",
                           help="largest absolute top-1 difference that counts as reproduced (default: 0.02)")
    reproduce.add_argument("--scratch", metavar="DIR",
                           help="where the reruns' records go, kept afterwards (default: a temporary "
                                "folder, removed afterwards)")
    reproduce.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_common(reproduce)
    return parser


def _load_grid(args):
    """(registry, grid) for `run` and `rank`: plugins loaded (the broken ones said), grid validated."""
    from tlbench.grid import load_grid
    from tlbench.plugins import load_registry

    registry = load_registry(args.plugins_dir)
    _report_broken(registry)
    return registry, load_grid(None if args.grid is DEFAULT_GRID else args.grid, registry)


def cmd_rank(args) -> int:
    """`tlbench rank`; exit 0, or 1 when a score failed for some pair."""
    from tlbench import rank

    registry, grid = _load_grid(args)
    names = rank.score_names(registry, args.scores)
    rank.pair_cells(grid, registry)  # a grid without a pretrained strategy fails before any work

    from tlbench.machine import check_device
    from tlbench.results import grid_dir, iter_records, writable_folder
    from tlbench.runner import Runner

    check_device(grid.settings.device)
    folder = writable_folder(grid_dir(args.results, grid.name))  # no records folder: rank runs no cell
    log = (lambda *a: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    ranking = rank.rank(grid, registry, names, Runner(registry, args.results),
                        iter_records(args.results, grid.name), log=log)
    paths = rank.write(ranking, folder)
    print(rank.to_markdown(ranking), end="")
    print(f"\nRanking in {folder}/: " + ", ".join(p.name for p in paths))
    if ranking.failed:
        print(f"{len(ranking.failed)} score(s) failed; see the Failed section.", file=sys.stderr)
        return 1
    return 0


def cmd_reproduce(args) -> int:
    """`tlbench reproduce`; exit 0 when every rerun cell is within tolerance, 1 otherwise."""
    import shutil
    import tempfile
    from pathlib import Path

    from tlbench import reproduce
    from tlbench.plugins import load_registry
    from tlbench.progress import Progress

    if not Path(args.results).is_dir():
        raise ConfigError(f"Results folder {args.results!r} not found. Name a folder that holds a grid's "
                          "records, e.g. --results results/offline-default.")
    _grid_folder_as_results(args)
    grids = _grids(args)
    if len(grids) > 1:
        raise ConfigError(f"{args.results!r} holds several grids: {', '.join(grids)}. Name one with --grid NAME.")
    cells = reproduce.DEFAULT_CELLS if args.cells is None else args.cells
    if cells < 1:
        raise ConfigError(f"--cells must be 1 or more, got {cells}.")
    tolerance = reproduce.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ConfigError(f"--tolerance is an absolute top-1 difference from 0 to 1 (e.g. 0.02), got {tolerance:g}.")
    scratch = _scratch_folder(args.scratch, args.results)
    registry = load_registry(args.plugins_dir)
    _report_broken(registry)
    log = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    folder = Path(scratch or tempfile.mkdtemp(prefix="tlbench-reproduce-"))
    try:
        with _sigterm_as_interrupt():
            code = reproduce.reproduce(args.results, grids[0], registry, folder, cells=cells, run_ids=args.run_id,
                                       tolerance=tolerance, progress=Progress(enabled=not args.quiet), log=log)
    finally:
        if scratch is None:
            shutil.rmtree(folder, ignore_errors=True)
    if scratch is not None:
        print(f"Rerun records kept in {os.path.join(scratch, grids[0], 'records')}/")
    return code


def _scratch_folder(scratch, results: str):
    """``--scratch``, checked: writable, and outside the results folder (which is only read)."""
    from pathlib import Path

    from tlbench.results import writable_folder

    if scratch is None:
        return None
    if not scratch.strip():
        raise ConfigError("--scratch is empty; name a folder, e.g. --scratch /tmp/rerun.")
    where, checked = Path(scratch).resolve(), Path(results).resolve()
    if where == checked or checked in where.parents:
        raise ConfigError(f"--scratch {scratch!r} is inside the results folder {results!r}, which reproduce "
                          "never writes to. Choose a folder outside it.")
    writable_folder(where)
    return scratch


def cmd_ls(args) -> int:
    from tlbench.options import describe_options
    from tlbench.plugins import load_registry

    registry = load_registry(args.plugins_dir)
    _report_broken(registry)
    rows = list(registry.listing(args.kind))
    width = max((len(name) for name, _, _ in rows), default=0)
    described = set()
    for name, text, reg in rows:
        print(f"{name:<{width}}  {text}  (from {reg.where()})")
        if args.verbose and reg.component not in described:
            described.add(reg.component)
            for opt, kind, default, help_text in describe_options(reg.component.Options):
                print(f"    {opt} ({kind}, default {default}): {help_text}")
    return 0


def cmd_run(args) -> int:
    from tlbench.progress import Progress
    from tlbench.results import ensure_writable

    registry, grid = _load_grid(args)
    if args.race_seeds is not None:
        from tlbench.race import check_cap

        check_cap(args.race_seeds, grid)
        if args.executor == "ray":
            raise ConfigError("--race-seeds runs with --executor local or subprocess: each round is "
                              "decided on the driver from the records of the last.")

    from tlbench.report import build_report, terminal_summary, write_board
    from tlbench.results import grid_dir
    from tlbench.machine import check_device, deterministic_cublas
    from tlbench.runner import Runner, check_cache_dir

    if any(cell.settings.deterministic for cell in grid.cells):
        deterministic_cublas()  # before anything here touches CUDA; workers inherit it
    if args.executor != "ray":  # on Ray, the cluster's GPUs count, not the driver's (see RayExecutor)
        check_device(grid.settings.device)
    ensure_writable(args.results, grid.name)

    progress = Progress(enabled=not args.quiet)
    runner = Runner(registry, args.results, progress=progress)
    if args.executor != "ray" or args.ray_address is None:  # a cluster's nodes check their own (node_check)
        check_cache_dir(runner.cache_dir)
    pool, job_for = _pool(args, registry, grid, runner)
    try:
        with _sigterm_as_interrupt():
            from tlbench.driver import run_grid_on

            outcome = run_grid_on(pool, runner, grid, job_for, retry_failed=args.retry_failed,
                                  force=args.force)
            if args.race_seeds:
                grid.cells = grid.cells + _race(args, registry, grid, runner, outcome)
    except KeyboardInterrupt as exc:
        progress.grid_done()
        cell = _interrupted_cells(getattr(exc, "records", []))
        print(f"Interrupted: {cell}finished cells are saved. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    board = build_report(args.results, grid.name, cells=grid.cells)
    # the answer first: the files (plots, page) take seconds to render
    print(terminal_summary(board, color=_color(sys.stdout)), end="", flush=True)
    paths = write_board(board, grid_dir(args.results, grid.name))
    print(_where(paths))
    if outcome.failed:
        _print_failures(outcome.failed)
    if outcome.lost:
        print(f"{len(outcome.lost)} cell(s) have no record because their worker was lost; run the same "
              "command again to run them.", file=sys.stderr)
    return 1 if outcome.failed or outcome.lost else 0


def _race(args, registry, grid, runner, outcome) -> list:
    """Racing rounds after the grid's own cells (tlbench.race); returns the cells they added.
    Failures and lost cells of each round join ``outcome``."""
    from tlbench.driver import run_grid_on
    from tlbench.race import next_round
    from tlbench.report import build_report

    added, used = [], set(grid.seeds)
    for round_no in range(1, args.race_seeds - len(grid.seeds) + 1):
        board = build_report(args.results, grid.name, cells=grid.cells + added)
        racing = next_round(grid, registry, board.per_dataset, used, args.race_seeds, round_no)
        if racing is None:
            break
        used |= set(racing.seeds)
        if not args.quiet:
            rows = len({(c.task, c.backbone, c.strategy) for c in racing.cells})
            print(f"Racing, round {round_no}: seed {racing.seeds[0]} for {rows} row(s) not separated from "
                  "their dataset's best", file=sys.stderr)
        pool, job_for = _pool(args, registry, racing, runner)
        more = run_grid_on(pool, runner, racing, job_for, retry_failed=args.retry_failed)
        outcome.ran += more.ran
        outcome.skipped += more.skipped
        outcome.lost += more.lost
        added += racing.cells
    return added


def _pool(args, registry, grid, runner):
    """(pool that runs the cells, cell -> job for its workers) for --executor."""
    from tlbench.cell_job import job_maker
    from tlbench.executors import LocalExecutor, SubprocessExecutor

    if args.cell_timeout is not None and not (math.isfinite(args.cell_timeout) and args.cell_timeout > 0):
        raise ConfigError(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout:g}.")
    if args.executor == "local":
        if args.cell_timeout is not None:
            raise ConfigError("--cell-timeout needs --executor subprocess or ray: a cell running in "
                              "this process cannot be stopped safely.")
        _only_with_ray(args)
        return LocalExecutor(runner), None  # it sizes torch's threads before each cell
    plugins_dir = args.plugins_dir or os.environ.get("TLBENCH_PLUGINS_DIR")
    if plugins_dir:
        plugins_dir = os.path.abspath(plugins_dir)
    cache_dir = os.environ.get("TLBENCH_CACHE_DIR")
    if args.executor == "subprocess":
        _only_with_ray(args)
        return SubprocessExecutor(args.cell_timeout), job_maker(grid, plugins_dir, cache_dir,
                                                               progress=runner.progress.bars)
    from tlbench.node_check import DriverView
    from tlbench.ray_executor import RayExecutor

    if args.cpus_per_cell <= 0:
        raise ConfigError(f"--cpus-per-cell must be positive, got {args.cpus_per_cell:g}.")
    if args.ray_max_retries < 0:
        raise ConfigError(f"--ray-max-retries must be 0 or more, got {args.ray_max_retries}.")
    shares = _gpu_shares(args.gpu_share, registry)
    pool = RayExecutor(registry, args.ray_address, args.cpus_per_cell, shares,
                       use_gpus=grid.settings.device != "cpu", max_retries=args.ray_max_retries,
                       timeout_s=args.cell_timeout, needs_gpu=grid.settings.device.startswith("cuda"),
                       plugins_dir=plugins_dir)
    if not args.quiet:
        print(pool.describe(), file=sys.stderr)
    # no cache folder: each node keeps its own (its TLBENCH_CACHE_DIR, else its default)
    return pool, DriverView(registry, grid, runner).jobs(job_maker(grid, plugins_dir, None))


def _only_with_ray(args) -> None:
    given = [flag for flag, value, default in (
        ("--ray-address", args.ray_address, None), ("--cpus-per-cell", args.cpus_per_cell, 1.0),
        ("--gpu-share", args.gpu_share, []), ("--ray-max-retries", args.ray_max_retries, 2))
        if value != default]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to --executor ray (got --executor {args.executor}).")


def _gpu_shares(pairs: list[str], registry) -> dict:
    shares = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            share = float(value)
        except ValueError:
            share = -1.0
        if not 0 < share <= 1:
            example = f"{name or registry.names('strategies')[0]}=0.25"
            raise ConfigError(f"--gpu-share {pair!r}: expected STRATEGY=FRACTION with 0 < FRACTION <= 1, "
                              f"e.g. --gpu-share {example}.")
        registry.get("strategies", name)  # an unknown name: one message with the closest names
        shares[name] = share
    return shares


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A scheduler's SIGTERM (preemption, end of an allocation) stops the grid as cleanly as
    Ctrl-C: the running cell is recorded as interrupted. Signals reach the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_cells(records: list) -> str:
    """``A is recorded as interrupted; `` or ``A and B are ...``, naming every cell Ctrl-C stopped."""
    from tlbench.grid import cell_label

    labels = [cell_label(r) for r in records]
    if not labels:
        return ""
    if len(labels) == 1:
        return f"{labels[0]} is recorded as interrupted; "
    return f"{', '.join(labels[:-1])} and {labels[-1]} are recorded as interrupted; "


def _print_failures(records: list[dict]) -> None:
    from tlbench.grid import cell_label

    print(f"{len(records)} cell(s) failed:", file=sys.stderr)
    for record in records:
        print(f"  {cell_label(record)}: [{record.get('error_kind', 'exception')}] {record['error']}",
              file=sys.stderr)
    for kind in sorted({r.get("error_kind") for r in records} & HINTS.keys()):
        print(f"  hint: {HINTS[kind]}", file=sys.stderr)
    print("Fix the cause and rerun with --retry-failed.", file=sys.stderr)


def _grids(args) -> list[str]:
    """The grids a command reads: ``--grid`` or every grid under ``--results``."""
    from tlbench.results import grid_names

    available = grid_names(args.results)
    if args.grid:
        if args.grid not in available:
            from tlbench.errors import unknown_name_error

            raise unknown_name_error("grid", args.grid, available, f" in {args.results!r}")
        return [args.grid]
    if not available:
        raise ConfigError(f"No records under {args.results!r}. Run `tlbench run` first or pass --results DIR.")
    return available


def cmd_report(args) -> int:
    from tlbench.report import build_report, write_board
    from tlbench.results import grid_dir

    _grid_folder_as_results(args)
    boards = [build_report(args.results, name, control=args.control)
              for name in _grids(args)]
    if args.control and not any(args.control in board.strategies for board in boards):
        from tlbench.errors import unknown_name_error

        raise unknown_name_error("control strategy", args.control,
                                 {s for board in boards for s in board.strategies}, " in the records")
    for board in boards:
        paths = write_board(board, grid_dir(args.results, board.grid))
        if args.screenshot:
            from tlbench.report.browser import screenshot

            page = next(p for p in paths if p.suffix == ".html")
            paths.append(screenshot(page, page.with_suffix(".png")))
        print(_where(paths))
    return 0


def _grid_folder_as_results(args) -> None:
    """`--results results/my-grid` (a grid's own folder) means `--results results --grid my-grid`."""
    from pathlib import Path

    folder = Path(args.results)
    if (folder / "records").is_dir() and args.grid in (None, folder.name):
        args.results, args.grid = str(folder.parent), folder.name


def _where(paths: list) -> str:
    """Where the leaderboard files went: their folder once, then their names."""
    folder = paths[0].parent
    return f"Leaderboard in {folder}{'/' if str(folder)[-1:] != '/' else ''}: " + ", ".join(p.name for p in paths)


def _color(stream) -> bool:
    return (hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


RUNS_COLUMNS = ["grid", "backbone", "strategy", "dataset", "seed", "status", "top1", "train_s",
                "run_id", "node", "error"]


def cmd_runs(args) -> int:
    from collections import Counter

    from tabulate import tabulate

    rows = [r for name in _grids(args) for r in _runs_of(args.results, name)]
    shown = sorted((r for r in rows if _runs_match(r, args)), key=_runs_order)
    if not shown:
        given = " ".join(f"--{k} {getattr(args, k)}" for k in ("backbone", "strategy", "dataset", "status")
                         if getattr(args, k))
        print(f"No records match {given} ({len(rows)} record(s) under {args.results!r}).", file=sys.stderr)
        return 0
    print(tabulate([_runs_row(r) for r in shown], headers=RUNS_COLUMNS, tablefmt="simple",
                   disable_numparse=True))
    counts = Counter(r["status"] for r in shown)
    print(f"{len(shown)} record(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _runs_of(results: str, grid: str) -> list[dict]:
    """A grid's records, with the cells some process is running now shown as running instead."""
    from tlbench.results import active_claims, iter_records

    running = {c["run_id"]: c for c in active_claims(results, grid)}
    rows = [r for r in iter_records(results, grid) if r["run_id"] not in running]
    for claim in running.values():
        holder = f"pid {claim.get('pid', '?')} on {claim.get('host', '?')} since {claim.get('since', '?')}"
        rows.append({"grid": grid, "run_id": claim["run_id"], "status": "running", "error": holder,
                     **{k: claim.get(k, "?") for k in ("backbone", "strategy", "dataset", "seed")}})
    return rows


def _runs_match(record: dict, args) -> bool:
    from fnmatch import fnmatchcase

    patterns = {"backbone": args.backbone, "strategy": args.strategy, "dataset": args.dataset}
    return (all(p is None or fnmatchcase(str(record[k]), p) for k, p in patterns.items())
            and args.status in (None, record["status"]))


def _runs_order(record: dict) -> tuple:
    seed = record["seed"] if isinstance(record["seed"], int) else -1
    names = tuple(str(record[k]) for k in ("grid", "backbone", "strategy", "dataset"))
    return names + (seed, record["run_id"])


def _runs_row(record: dict) -> list:
    def number(key, digits):
        value = record.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    error = (record.get("error") or "").replace("\n", " ")
    return [record["grid"], record["backbone"], record["strategy"], record["dataset"], record["seed"],
            record["status"], number("top1", 3), number("train_s", 1), record["run_id"][:8], _runs_node(record),
            error if len(error) <= 60 else error[:57] + "..."]


def _runs_node(record: dict) -> str:
    """The machine that ran the cell: a Ray node's hostname and address (hostnames can be the
    same on two nodes), else the environment's hostname."""
    node = record.get("node") if isinstance(record.get("node"), dict) else {}
    environment = record.get("environment") if isinstance(record.get("environment"), dict) else {}
    hostname = node.get("hostname") or environment.get("hostname") or "-"
    return f"{hostname} {node['address']}" if node.get("address") else str(hostname)


def _report_broken(registry) -> None:
    for plugin, why in registry.broken:
        print(f"warning: plugin {plugin!r} was skipped: {why}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tlbench.cpus import quiet_threads

    quiet_threads()  # before any command imports torch
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"run": cmd_run, "ls": cmd_ls, "report": cmd_report, "runs": cmd_runs, "rank": cmd_rank,
               "reproduce": cmd_reproduce}[args.command]
    try:
        if getattr(args, "results", None) is not None and not args.results.strip():
            raise ConfigError("--results is empty; name a folder, e.g. --results results.")
        code = handler(args)
        sys.stdout.flush()  # here, so that a reader gone away is seen below, not at exit
        return code
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # `run` handles its own; elsewhere nothing is half-written
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tlbench ls | head`: the reader has gone, which is not an error
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit raises nothing more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
