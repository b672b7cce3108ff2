"""The `tlbench` command: parse the command line (``cli_parser``) and dispatch each command to the
code that does its work. Flag checks are in ``cli_flags``, what the commands print in
``cli_views``; heavy imports (torch, pandas) happen inside commands only, so `tlbench --help`
stays fast."""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from tlbench.cli_flags import (check_common_flags, check_reproduce_flags, check_run_flags, grid_folder_as_results,
                               grids_to_read)
from tlbench.cli_parser import DEFAULT_GRID, build_parser
from tlbench.cli_views import answer_run, interrupted_cells, warn_broken_plugins, warn_capped, where
from tlbench.errors import ConfigError, RunStopped
from tlbench.sigterm import sigterm_as_interrupt


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
    pairs = rank.pair_cells(grid, registry)  # a grid without a pretrained strategy fails before any work
    from tlbench.preflight import check_components

    # rank fits no strategy: only what it builds and scores must be able to run here
    check_components(grid.name, pairs, registry, rank.score_options(grid, registry, names), strategies=False)

    from tlbench.machine import check_device
    from tlbench.atomic_files import writable_folder
    from tlbench.results import grid_dir, iter_records
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

    print_listing(_registry(args), args.kind, args.verbose, args.pattern)
    return 0


def cmd_run(args) -> int:
    """`tlbench run`: exit 0 when every cell is done, 1 when one failed or was lost, 130 when stopped."""
    from tlbench.slices import parse_only

    check_run_flags(args)
    wanted = parse_only(args.only)  # its syntax before plugins load; its names once the grid is read
    registry, grid = _load_grid(args)
    cells = _slice(args, grid, wanted)
    if args.race_seeds is not None:
        from tlbench.race import check_cap

        check_cap(args.race_seeds, grid)
    if not _on_cluster(args):  # a cluster's nodes check their own (node_check)
        from tlbench.preflight import check_components

        check_components(grid.name, grid.cells if cells is None else cells, registry)  # a slice: its own
    sinks = _sinks(registry, [*grid.sinks["on"], *args.sink], grid.sinks["options"])
    runner = _runner(args, registry, grid)
    _keep_snapshot(args.results, grid)
    try:
        if args.detach:  # the tasks store the records: no sink hears of them (operations.md)
            from tlbench.slurm_executor import submit_detached

            return submit_detached(args, registry, grid, runner, cells, _executor)
        outcome = _run_cells(args, registry, grid, runner, sinks, cells)
        if outcome is None:
            return 130
        warn_capped(outcome.ran + outcome.skipped)
        return answer_run(args.results, grid, outcome, sinks)
    finally:
        sinks.close()


def _run_cells(args, registry, grid, runner, sinks, cells):
    """The grid's pending cells (of ``cells``, a slice, when given; and racing's), each record
    told to ``sinks``; None when Ctrl-C or SIGTERM stopped them (said here)."""
    from tlbench.driver import run_grid_on

    executor, job_for = _executor(args, registry, grid, runner)
    try:
        with sigterm_as_interrupt():
            sinks.start()
            outcome = run_grid_on(executor, runner, grid, job_for, retry_failed=args.retry_failed,
                                  force=args.force, cells=cells, sinks=sinks)
            if args.race_seeds:
                grid.cells = grid.cells + _race(args, registry, grid, runner, outcome, sinks)
            return outcome
    except KeyboardInterrupt as exc:
        runner.progress.grid_done()
        cell = interrupted_cells(getattr(exc, "records", []))
        print(f"Interrupted: {cell}finished cells are saved. Run the same command again to resume.",
              file=sys.stderr)
        return None


def _on_cluster(args) -> bool:
    """Cells run on a cluster's nodes, not this machine: its device, cache and plugins' needs
    do not count, each node checks its own (tlbench.node_check)."""
    return args.executor == "slurm" or (args.executor == "ray" and args.ray_address is not None)


def _sinks(registry, names: list, options: dict):
    """The sinks a command turned on (tlbench.active_sinks); one that cannot run here is a
    ConfigError before any cell runs."""
    from tlbench.active_sinks import open_sinks

    return open_sinks(registry, names, options)


def _slice(args, grid, wanted: dict):
    """The cells ``--only`` names (None without it: every cell of the grid), said unless -q."""
    if not wanted:
        return None
    from tlbench.slices import describe, slice_cells

    cells = slice_cells(grid, wanted)
    _log(args)(f"Slice --only {describe(wanted)}: {len(cells)} of the {len(grid.cells)} cells of grid {grid.name!r}.")
    return cells


def _keep_snapshot(results: str, grid) -> None:
    """The grid snapshot next to the records, before any cell runs (tlbench.grid_snapshot)."""
    from tlbench.grid_snapshot import write_snapshot

    try:
        write_snapshot(results, grid)
    except OSError as exc:
        raise ConfigError(f"Cannot write the grid snapshot into {results!r} ({exc.strerror or exc}); nothing ran. "
                          "Free space or fix the folder's permissions, or choose another with --results DIR.") from None


def _runner(args, registry, grid):
    """The Runner of `tlbench run`'s cells, once the device, results folder and cache can serve them."""
    from tlbench.machine import check_device, deterministic_cublas
    from tlbench.progress import Progress
    from tlbench.results import ensure_writable
    from tlbench.runner import Runner, check_cache_dir

    if any(cell.settings.deterministic for cell in grid.cells):
        deterministic_cublas()  # before anything here touches CUDA; workers inherit it
    if args.executor not in ("ray", "slurm"):  # on a cluster, its GPUs count, not the driver's
        check_device(grid.settings.device)
    ensure_writable(args.results, grid.name)
    runner = Runner(registry, args.results, progress=Progress(enabled=not args.quiet))
    if not _on_cluster(args):  # a cluster's nodes check their own (node_check)
        check_cache_dir(runner.cache_dir)
    return runner


def _race(args, registry, grid, runner, outcome, sinks) -> list:
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
        more = run_grid_on(executor, runner, racing, job_for, retry_failed=args.retry_failed, sinks=sinks)
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
    from tlbench.node_check import DriverView

    if args.executor == "slurm":
        from tlbench.cli_flags import slurm_options
        from tlbench.results import grid_dir
        from tlbench.slurm_executor import SlurmExecutor

        folder = grid_dir(args.results, grid.name).absolute() / "slurm"
        executor = SlurmExecutor(slurm_options(args, grid.executor.get("slurm", {})), folder, _log(args))
        _log(args)(executor.describe())
        # the nodes share this disk, and so TLBENCH_CACHE_DIR if it is set (each node's default otherwise)
        return executor, DriverView(registry, grid, runner).jobs(job_maker(grid, plugins_dir, cache_dir))
    from tlbench.cli_flags import gpu_shares
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
    from tlbench.active_sinks import ActiveSinks

    # plugins are loaded only for a sink: a report reads records alone
    sinks = _sinks(_registry(args), args.sink, {}) if args.sink else ActiveSinks([])
    try:
        sinks.start()
        for paths in rebuild_leaderboards(args.results, grids_to_read(args), args.control, args.screenshot):
            print(where(paths))
            sinks.report(paths[0].parent.name, paths)
        return 0
    finally:
        sinks.close()


def cmd_runs(args) -> int:
    """`tlbench runs`: the records (one per cell) and the cells running now, as a table."""
    from tlbench.cli_views import print_records

    grid_folder_as_results(args)
    filters = {key: getattr(args, key) for key in ("backbone", "strategy", "dataset", "status")}
    print_records(args.results, grids_to_read(args), filters)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line's answer, as an exit status. Output streams that are closed, full or
    cannot encode the text change neither what the command does nor its status
    (tlbench.streams): a lost stdout is said on stderr, a lost stderr is silent. Everything
    printed, whatever printed it, goes out as text (tlbench.literal_text): a name or an error
    cannot drive the terminal."""
    from tlbench.literal_text import PrintableStream
    from tlbench.streams import lenient_streams

    with lenient_streams() as (stdout, _):
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (s if isinstance(s, PrintableStream) else PrintableStream(s) for s in streams)
        try:
            code = _main(argv)
        finally:
            sys.stdout, sys.stderr = streams
        if stdout.lost is not None:
            print(f"warning: the output to stdout was lost ({_why(stdout.lost)}); the command's own work is "
                  "done.", file=sys.stderr)
        return code


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _main(argv: Optional[Sequence[str]]) -> int:
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
