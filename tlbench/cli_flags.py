"""The `tlbench` command's flags, checked where argparse cannot check them: values in range,
flags that only go with others, the old spelling `--grid NAME`, and which grids a command that
reads records reads. Each problem is a ConfigError naming the fix, raised before any work."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tlbench.errors import ConfigError

# The flags that only `--executor ray` reads, with their defaults (as build_parser sets them).
RAY_ONLY = (("--ray-address", "ray_address", None), ("--gpu-share", "gpu_share", []),
            ("--ray-max-retries", "ray_max_retries", 2))
# ... only `--executor slurm` (all default to None)
SLURM_ONLY = ("partition", "time", "gpus", "mem", "account", "qos", "array_parallelism", "sbatch")  # --slurm-*
SLURM_FLAGS = (*((f"--slurm-{name.replace('_', '-')}", f"slurm_{name}") for name in SLURM_ONLY),
               ("--cells-per-task", "cells_per_task"))


def check_common_flags(args) -> None:
    """What every command checks: an empty ``--results``; ``--grid NAME`` where a command takes
    ``--grid-name`` (the old spelling: accepted with a warning, see ``_take_old_grid_spelling``)."""
    if getattr(args, "results", None) is not None and not args.results.strip():
        raise ConfigError("--results is empty; name a folder, e.g. --results results.")
    _take_old_grid_spelling(args)


def _take_old_grid_spelling(args) -> None:
    """`report`, `runs` and `reproduce` once took the grid's name as ``--grid``, which `run` and
    `rank` take as a grid file. Scripts that still say so keep working, with one line saying the
    new spelling, until the old one is removed."""
    old = getattr(args, "old_grid_name", None)
    if old is None:
        return
    if args.grid_name not in (None, old):
        raise ConfigError(f"--grid {old!r} and --grid-name {args.grid_name!r} name two grids; "
                          "give --grid-name only.")
    print(f"warning: `tlbench {args.command} --grid NAME` is deprecated and will be removed: use "
          f"--grid-name {old} (--grid names a grid file, in `tlbench run` and `tlbench rank`).", file=sys.stderr)
    args.grid_name = old


def check_run_flags(args) -> None:
    """`tlbench run`'s flags: each value in range, and each with the executor it applies to."""
    if args.race_seeds is not None and args.only:
        raise ConfigError("--race-seeds decides each round from every row of the grid, so it races the "
                          "whole grid, not a slice: run the slice (--only) first, then the grid with --race-seeds.")
    if args.race_seeds is not None and args.executor == "ray":
        raise ConfigError("--race-seeds runs with --executor local or subprocess: each round is "
                          "decided on the driver from the records of the last.")
    if args.cell_timeout is not None and not (math.isfinite(args.cell_timeout) and args.cell_timeout > 0):
        raise ConfigError(f"--cell-timeout must be a positive number of seconds, got {args.cell_timeout:g}.")
    if args.executor == "local" and args.cell_timeout is not None:
        raise ConfigError("--cell-timeout needs --executor subprocess or ray: a cell running in "
                          "this process cannot be stopped safely.")
    if args.executor != "ray":
        given = [flag for flag, dest, default in RAY_ONLY if getattr(args, dest) != default]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --executor ray (got --executor {args.executor}).")
    if args.executor not in ("ray", "slurm") and args.cpus_per_cell != 1.0:
        raise ConfigError(f"--cpus-per-cell only applies to --executor ray or slurm (got --executor {args.executor}).")
    if args.executor != "slurm":
        given = [flag for flag, dest in SLURM_FLAGS if getattr(args, dest) is not None] + \
            (["--detach"] if args.detach else [])
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --executor slurm (got --executor {args.executor}).")
    if args.executor == "slurm":
        _check_slurm_flags(args)
    if args.executor != "ray":
        return
    if args.cpus_per_cell <= 0:
        raise ConfigError(f"--cpus-per-cell must be positive, got {args.cpus_per_cell:g}.")
    if args.ray_max_retries < 0:
        raise ConfigError(f"--ray-max-retries must be 0 or more, got {args.ray_max_retries}.")


def _check_slurm_flags(args) -> None:
    """`--executor slurm`'s flags, each value checked (tlbench.slurm_options), and the flags of
    the other executors that it does not take."""
    if args.race_seeds is not None:
        raise ConfigError("--race-seeds runs with --executor local or subprocess: each round is "
                          "decided on the driver from the records of the last.")
    if args.cell_timeout is not None:
        raise ConfigError("--cell-timeout does not apply to --executor slurm: give each task a time limit "
                          "with --slurm-time (a cell running at the limit is recorded as a timeout).")
    slurm_options(args, {})


def slurm_options(args, table: dict):
    """The SlurmOptions of `tlbench run --executor slurm`: the flags over the grid's
    [executor.slurm] ``table``. --cpus-per-cell counts when it is not its default, 1."""
    from tlbench.slurm_options import slurm_options as merged

    flags = {"partition": args.slurm_partition, "time": args.slurm_time, "gpus": args.slurm_gpus,
             "mem": args.slurm_mem, "account": args.slurm_account, "qos": args.slurm_qos,
             "array_parallelism": args.slurm_array_parallelism, "sbatch": args.slurm_sbatch,
             "cells_per_task": args.cells_per_task,
             "cpus_per_task": None if args.cpus_per_cell == 1.0 else args.cpus_per_cell}
    return merged(flags, table)


def gpu_shares(pairs: list[str], registry) -> dict:
    """``--gpu-share STRATEGY=FRACTION`` flags as {strategy: fraction}, each name registered."""
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


def check_reproduce_flags(args) -> tuple[str, int, float]:
    """(grid name, cells, tolerance) of `tlbench reproduce`, with ``--results`` and ``--scratch``
    checked (``args`` gets the results folder a grid folder is in)."""
    from tlbench import reproduce

    if not Path(args.results).is_dir():
        raise ConfigError(f"Results folder {args.results!r} not found. Name a folder that holds a grid's "
                          "records, e.g. --results results/offline-default.")
    grid_folder_as_results(args)
    grids = grids_to_read(args)
    if len(grids) > 1:
        raise ConfigError(f"{args.results!r} holds several grids: {', '.join(grids)}. "
                          "Name one with --grid-name NAME.")
    cells = reproduce.DEFAULT_CELLS if args.cells is None else args.cells
    if cells < 1:
        raise ConfigError(f"--cells must be 1 or more, got {cells}.")
    tolerance = reproduce.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not (math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise ConfigError(f"--tolerance is an absolute top-1 difference from 0 to 1 (e.g. 0.02), got {tolerance:g}.")
    _check_scratch(args.scratch, args.results)
    return grids[0], cells, tolerance


def _check_scratch(scratch, results: str) -> None:
    """``--scratch``: writable, and outside the results folder (which is only read)."""
    from tlbench.atomic_files import writable_folder

    if scratch is None:
        return
    if not scratch.strip():
        raise ConfigError("--scratch is empty; name a folder, e.g. --scratch /tmp/rerun.")
    where, checked = Path(scratch).resolve(), Path(results).resolve()
    if where == checked or checked in where.parents:
        raise ConfigError(f"--scratch {scratch!r} is inside the results folder {results!r}, which reproduce "
                          "never writes to. Choose a folder outside it.")
    writable_folder(where)


def grid_folder_as_results(args) -> None:
    """`--results results/my-grid` (a grid's own folder) means `--results results --grid-name my-grid`."""
    folder = Path(args.results)
    if folder.name in ("", ".."):  # `--results .` run inside the grid's folder: it has a name
        folder = folder.resolve()
    if (folder / "records").is_dir() and args.grid_name in (None, folder.name):
        args.results, args.grid_name = str(folder.parent), folder.name


def grids_to_read(args) -> list[str]:
    """The grids a command reads: ``--grid-name`` or every grid under ``--results``."""
    from tlbench.results import grid_names

    available = grid_names(args.results)
    if args.grid_name:
        if args.grid_name not in available:
            from tlbench.errors import unknown_name_error

            raise unknown_name_error("grid", args.grid_name, available, f" in {args.results!r}")
        return [args.grid_name]
    if not available:
        raise ConfigError(f"No records under {args.results!r}. Run `tlbench run` first or pass --results DIR.")
    return available
