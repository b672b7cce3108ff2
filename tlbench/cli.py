"""The `tlbench` command: parse the command line and dispatch each command to the code that does
its work. Flag checks are in ``cli_flags``, what the commands print in ``cli_views``; heavy
imports (torch, pandas) happen inside commands only, so `tlbench --help` stays fast."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tlbench import __version__
from tlbench.cli_flags import (check_common_flags, check_reproduce_flags, check_run_flags, grid_folder_as_results,
                               grids_to_read)
from tlbench.cli_views import answer_run, interrupted_cells, warn_broken_plugins, where
from tlbench.errors import ConfigError, RunStopped
from tlbench.records import RUNNING, STATUSES
from tlbench.sigterm import sigterm_as_interrupt

DEFAULT_GRID = object()  # `--grid` given without a file


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins-dir", metavar="DIR",
                        help="also load every .py file in DIR as a plugin (env: TLBENCH_PLUGINS_DIR)")


def _add_grid_file(parser: argparse.ArgumentParser) -> None:
    """What `run` and `rank` share: the grid file, the results folder, quiet, the plugins folder."""
    parser.add_argument("--grid", nargs="?", const=DEFAULT_GRID, default=DEFAULT_GRID, metavar="GRID.toml",
                        help="grid file; without a file, the default grid the installed plugins provide")
    parser.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_common(parser)


def _add_grid_name(parser: argparse.ArgumentParser, help_text: str) -> None:
    """What `report`, `runs` and `reproduce` take instead: a grid by its name, the folder of its
    records. ``--grid NAME``, their old spelling, still works with a warning (cli_flags)."""
    parser.add_argument("--grid-name", metavar="NAME", help=help_text)
    parser.add_argument("--grid", dest="old_grid_name", metavar="NAME",
                        help="deprecated spelling of --grid-name (--grid names a grid file in run and rank)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark pretrained backbones x transfer strategies x datasets.",
    )
    parser.add_argument("--version", action="version", version=f"tlbench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_run, _add_ls, _add_report, _add_runs, _add_rank, _add_reproduce):
        add(commands)
    return parser


def _add_run(commands) -> None:
    run = commands.add_parser(
        "run", help="run every cell of a grid and write records + leaderboard",
        description="Run every cell of a grid; cells with records are skipped. Several runs may "
                    "share a results folder: each cell runs in one of them.")
    _add_grid_file(run)
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


def _add_ls(commands) -> None:
    ls = commands.add_parser("ls", help="list registered backbones, strategies or datasets",
                             description="List what the installed plugins register, one name a line.")
    ls.add_argument("kind", choices=["backbones", "strategies", "datasets", "scores"])
    ls.add_argument("-v", "--verbose", action="store_true", help="also show each one's options")
    _add_common(ls)


def _add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="(re)write leaderboards, plots and the page from stored records",
        description="Rebuild every leaderboard file of a grid from its records alone: tables "
                    "(leaderboard.md, .csv, .json), plots (PNG) and leaderboard.html. Works on "
                    "records from several runs or machines merged into one folder.")
    report.add_argument("--results", default="results", metavar="DIR",
                        help="results folder, or one grid's folder in it (default: ./results)")
    _add_grid_name(report, "only the grid of this name (default: every grid in DIR)")
    report.add_argument("--control", default=None, metavar="STRATEGY",
                        help="the strategy transfer gain is measured against (default: the grid's one "
                             "strategy that starts from random weights)")
    report.add_argument("--screenshot", action="store_true",
                        help="also save leaderboard.png, the page as headless Chromium renders it "
                             "(needs Playwright and a system Chromium)")


def _add_runs(commands) -> None:
    runs = commands.add_parser(
        "runs", help="list stored records (one per cell) with status and key metrics",
        description="List the records (one per cell; the cell id is the record's run_id) and the cells "
                    "running now under a results folder. Name filters take shell patterns (resnet*).")
    runs.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    _add_grid_name(runs, "only the grid of this name (default: every grid in DIR)")
    runs.add_argument("--backbone", metavar="PATTERN", help="only these backbones")
    runs.add_argument("--strategy", metavar="PATTERN", help="only these strategies")
    runs.add_argument("--dataset", metavar="PATTERN", help="only these datasets")
    runs.add_argument("--status", choices=(*STATUSES, RUNNING), help="only records with this status")


def _add_rank(commands) -> None:
    rank = commands.add_parser(
        "rank", help="forecast which backbone transfers best, from frozen features only",
        description="Compute every transferability score (tlbench ls scores) for each backbone x "
                    "dataset pair of a grid, from cached frozen features, and, where the grid's "
                    "records have measured top-1 for those pairs, Kendall's tau between each score "
                    "and the best measured accuracy. Writes rank.md, rank.csv and rank.json next "
                    "to the grid's records.")
    _add_grid_file(rank)
    rank.add_argument("--scores", metavar="NAMES", help="comma-separated scores (default: every registered one)")


def _add_reproduce(commands) -> None:
    reproduce = commands.add_parser(
        "reproduce", help="rerun a sample of stored cells elsewhere and compare their top-1",
        description="Rebuild some cells of a results folder from their records (the same cell id, "
                    "run_id, or the cell is reported as another configuration), rerun them with the "
                    "local executor into a scratch folder, and compare top-1 and environment with the "
                    "published records. The results folder is only read. Exit 0 when every rerun "
                    "cell is within the tolerance, 1 otherwise.")
    reproduce.add_argument("--results", required=True, metavar="DIR",
                           help="results folder to check, or one grid's folder in it (only read)")
    _add_grid_name(reproduce, "the name of the grid to check (needed when DIR has several)")
    chosen = reproduce.add_mutually_exclusive_group()
    chosen.add_argument("--cells", type=int, metavar="N",
                        help="how many ok cells of the grid's current configuration to rerun, spread "
                             "over strategies and datasets, the same ones every time (default: 4)")
    chosen.add_argument("--run-id", nargs="+", action="extend", default=[], metavar="ID",
                        help="rerun these cells: a cell id (the record's run_id), or its start as "
                             "`tlbench runs` shows it")
    reproduce.add_argument("--tolerance", type=float, metavar="T",
                           help="largest absolute top-1 difference that counts as reproduced (default: 0.02)")
    reproduce.add_argument("--scratch", metavar="DIR",
                           help="where the reruns' records go, kept afterwards (default: a temporary "
                                "folder, removed afterwards)")
    reproduce.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_common(reproduce)


# -- the commands ------------------------------------------------------------------------------


def _registry(args):
    """The installed plugins' registry (and --plugins-dir's), the broken plugins said."""
    from tlbench.plugins import load_registry

    registry = load_registry(args.plugins_dir)
    warn_broken_plugins(registry)
    return registry


def _load_grid(args):
    """(registry, grid) for `run` and `rank`: plugins loaded, grid validated."""
    from tlbench.grid import load_grid

    registry = _registry(args)
    return registry, load_grid(None if args.grid is DEFAULT_GRID else args.grid, registry)


def _log(args):
    """Progress lines for stderr, or nothing with --quiet."""
    return (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))


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
    ranking = rank.rank(grid, registry, names, Runner(registry, args.results),
                        iter_records(args.results, grid.name), log=_log(args))
    paths = rank.write(ranking, folder)
    print(rank.to_markdown(ranking), end="")
    print(f"\nRanking in {folder}/: " + ", ".join(p.name for p in paths))
    if ranking.failed:
        print(f"{len(ranking.failed)} score(s) failed; see the Failed section.", file=sys.stderr)
        return 1
    return 0


def cmd_reproduce(args) -> int:
    """`tlbench reproduce`; exit 0 when every rerun cell is within tolerance, 1 otherwise."""
    from tlbench import reproduce
    from tlbench.progress import Progress

    grid, cells, tolerance = check_reproduce_flags(args)
    registry = _registry(args)
    with sigterm_as_interrupt():
        code = reproduce.reproduce(args.results, grid, registry, args.scratch, cells=cells, run_ids=args.run_id,
                                   tolerance=tolerance, progress=Progress(enabled=not args.quiet), log=_log(args))
    if args.scratch is not None:
        print(f"Rerun records kept in {os.path.join(args.scratch, grid, 'records')}/")
    return code


def cmd_ls(args) -> int:
    from tlbench.cli_views import print_listing

    print_listing(_registry(args), args.kind, args.verbose)
    return 0


def cmd_run(args) -> int:
    """`tlbench run`: exit 0 when every cell is done, 1 when one failed or was lost, 130 when stopped."""
    check_run_flags(args)
    registry, grid = _load_grid(args)
    if args.race_seeds is not None:
        from tlbench.race import check_cap

        check_cap(args.race_seeds, grid)
    runner = _runner(args, registry, grid)
    executor, job_for = _executor(args, registry, grid, runner)
    try:
        with sigterm_as_interrupt():
            from tlbench.driver import run_grid_on

            outcome = run_grid_on(executor, runner, grid, job_for, retry_failed=args.retry_failed,
                                  force=args.force)
            if args.race_seeds:
                grid.cells = grid.cells + _race(args, registry, grid, runner, outcome)
    except KeyboardInterrupt as exc:
        runner.progress.grid_done()
        cell = interrupted_cells(getattr(exc, "records", []))
        print(f"Interrupted: {cell}finished cells are saved. Run the same command again to resume.",
              file=sys.stderr)
        return 130
    return answer_run(args.results, grid, outcome)


def _runner(args, registry, grid):
    """The Runner of `tlbench run`'s cells, once the device, results folder and cache can serve them."""
    from tlbench.machine import check_device, deterministic_cublas
    from tlbench.progress import Progress
    from tlbench.results import ensure_writable
    from tlbench.runner import Runner, check_cache_dir

    if any(cell.settings.deterministic for cell in grid.cells):
        deterministic_cublas()  # before anything here touches CUDA; workers inherit it
    if args.executor != "ray":  # on Ray, the cluster's GPUs count, not the driver's (see RayExecutor)
        check_device(grid.settings.device)
    ensure_writable(args.results, grid.name)
    runner = Runner(registry, args.results, progress=Progress(enabled=not args.quiet))
    if args.executor != "ray" or args.ray_address is None:  # a cluster's nodes check their own (node_check)
        check_cache_dir(runner.cache_dir)
    return runner


def _race(args, registry, grid, runner, outcome) -> list:
    """Racing rounds after the grid's own cells (tlbench.race); returns the cells they added.
    Failures and lost cells of each round join ``outcome``."""
    from tlbench.driver import run_grid_on
    from tlbench.race import next_round
    from tlbench.report import build_leaderboard

    added, used = [], set(grid.seeds)
    for round_no in range(1, args.race_seeds - len(grid.seeds) + 1):
        board = build_leaderboard(args.results, grid.name, cells=grid.cells + added)
        racing = next_round(grid, registry, board.per_dataset, used, args.race_seeds, round_no)
        if racing is None:
            break
        used |= set(racing.seeds)
        if not args.quiet:
            rows = len({(c.task, c.backbone, c.strategy) for c in racing.cells})
            print(f"Racing, round {round_no}: seed {racing.seeds[0]} for {rows} row(s) not separated from "
                  "their dataset's best", file=sys.stderr)
        executor, job_for = _executor(args, registry, racing, runner)
        more = run_grid_on(executor, runner, racing, job_for, retry_failed=args.retry_failed)
        outcome.ran += more.ran
        outcome.skipped += more.skipped
        outcome.lost += more.lost
        added += racing.cells
    return added


def _executor(args, registry, grid, runner):
    """(the executor that runs the cells, cell -> job for its workers) for --executor."""
    from tlbench.cell_job import job_maker
    from tlbench.executors import LocalExecutor, SubprocessExecutor

    if args.executor == "local":
        return LocalExecutor(runner), None  # it sizes torch's threads before each cell
    plugins_dir = args.plugins_dir or os.environ.get("TLBENCH_PLUGINS_DIR")
    if plugins_dir:
        plugins_dir = os.path.abspath(plugins_dir)
    cache_dir = os.environ.get("TLBENCH_CACHE_DIR")
    if args.executor == "subprocess":
        return SubprocessExecutor(args.cell_timeout), job_maker(grid, plugins_dir, cache_dir,
                                                               progress=runner.progress.bars)
    from tlbench.cli_flags import gpu_shares
    from tlbench.node_check import DriverView
    from tlbench.ray_executor import RayExecutor

    shares = gpu_shares(args.gpu_share, registry)
    executor = RayExecutor(registry, args.ray_address, args.cpus_per_cell, shares,
                           use_gpus=grid.settings.device != "cpu", max_retries=args.ray_max_retries,
                           timeout_s=args.cell_timeout, needs_gpu=grid.settings.device.startswith("cuda"),
                           plugins_dir=plugins_dir)
    if not args.quiet:
        print(executor.describe(), file=sys.stderr)
    # no cache folder: each node keeps its own (its TLBENCH_CACHE_DIR, else its default)
    return executor, DriverView(registry, grid, runner).jobs(job_maker(grid, plugins_dir, None))


def cmd_report(args) -> int:
    from tlbench.report import rebuild_leaderboards

    grid_folder_as_results(args)
    for paths in rebuild_leaderboards(args.results, grids_to_read(args), args.control, args.screenshot):
        print(where(paths))
    return 0


def cmd_runs(args) -> int:
    """`tlbench runs`: the records (one per cell) and the cells running now, as a table."""
    from tlbench.cli_views import print_records

    filters = {key: getattr(args, key) for key in ("backbone", "strategy", "dataset", "status")}
    print_records(args.results, grids_to_read(args), filters)
    return 0


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
        check_common_flags(args)
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
