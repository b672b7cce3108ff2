"""The `tlbench` command line: every command, flag and help text (argparse). The commands' work
is in ``cli``; nothing here imports more than the standard library and tlbench's light modules."""

from __future__ import annotations

import argparse

from tlbench import __version__
from tlbench.records import QUEUED, RUNNING, STATUSES

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


def _add_sink(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--sink", action="append", default=[], metavar="NAME", help=help_text)


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
        description="Run every cell of a grid (or of a slice of it, --only); cells with records are "
                    "skipped. Several runs may share a results folder: each cell runs in one of them. "
                    "The leaderboard written at the end is the grid's, from all of its records.")
    _add_grid_file(run)
    run.add_argument("--executor", choices=["local", "subprocess", "ray", "slurm"], default="local",
                     help="where cells run: local (default, in this process), subprocess (each cell "
                          "in a fresh process), ray (Ray tasks on a local instance or a cluster) or "
                          "slurm (a Slurm job array; the results folder on the cluster's shared disk)")
    run.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                     help="kill a cell that runs longer and record it as failed (subprocess and ray)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="join this Ray cluster ('auto': the one started on this node with `ray start`); "
                          "default: start a local instance sized to this machine")
    run.add_argument("--cpus-per-cell", type=float, default=1.0, metavar="N",
                     help="CPUs Ray reserves for each cell, or Slurm for each task (a whole number), also "
                          "the cell's torch threads (default: 1)")
    run.add_argument("--gpu-share", action="append", default=[], metavar="STRATEGY=FRACTION",
                     help="fraction of a GPU Ray reserves for each cell of a strategy, overriding "
                          "the strategy's own (repeatable; e.g. linear_probe=0.25)")
    run.add_argument("--ray-max-retries", type=int, default=2, metavar="N",
                     help="times Ray reruns a cell whose worker died (default: 2); after that the "
                          "cell has no record and the next run picks it up")
    _add_slurm(run)
    run.add_argument("--race-seeds", type=int, metavar="N",
                     help="after the grid's seeds, add one seed a round to each dataset's best row and "
                          "the rows its seeds do not separate from it, until none is left or they have N "
                          "seeds (racing; --executor local or subprocess)")
    run.add_argument("--only", action="append", metavar="AXIS=VALUE,...",
                     help="run only the cells with these values (a slice): axes backbone, strategy, dataset, "
                          "seed and the grid's curve settings; one axis given twice means either value, "
                          "different axes must all match (repeatable, pooled the same way); e.g. "
                          "--only strategy=NAME,seed=1")
    run.add_argument("--retry-failed", action="store_true",
                     help="rerun cells whose record says failed (with --only: of the slice)")
    run.add_argument("--force", action="store_true",
                     help="rerun every cell, even those already done (with --only: of the slice)")
    _add_sink(run, "also send each record stored and the leaderboard to this sink (repeatable; adds to the "
                   "grid's sinks, with its [sink.NAME] options if the grid has them; tlbench ls sinks)")


def _add_slurm(run) -> None:
    """The flags only `--executor slurm` reads; a grid's [executor.slurm] table gives the same."""
    run.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition of the tasks (default: the cluster's)")
    run.add_argument("--slurm-time", metavar="TIME",
                     help="time limit of each task, in minutes or [D-]HH:MM:SS (default: 60); a cell still "
                          "running at the limit is recorded as failed (timeout)")
    run.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs of each task (default: 0)")
    run.add_argument("--slurm-mem", metavar="MEM", help="memory of each task, as sbatch --mem takes it (e.g. 8G)")
    run.add_argument("--slurm-account", metavar="NAME", help="Slurm account the tasks are charged to")
    run.add_argument("--slurm-qos", metavar="NAME", help="Slurm quality of service of the tasks")
    run.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                     help="tasks of the array running at once (default: 256)")
    run.add_argument("--slurm-sbatch", action="append", metavar="FLAG[=VALUE]",
                     help="one more sbatch flag for the tasks, without its dashes (repeatable; e.g. "
                          "--slurm-sbatch constraint=a100 --slurm-sbatch exclude=node7)")
    run.add_argument("--cells-per-task", type=int, metavar="N",
                     help="cells each Slurm task runs one after another (default: 1); raise it for cells of "
                          "under a minute, since each task spends 5-10 s starting Python and torch")
    run.add_argument("--detach", action="store_true",
                     help="submit the Slurm job array and return, printing its job id; the tasks store the "
                          "records, and `tlbench runs` shows what is pending, running and done")


def _add_ls(commands) -> None:
    ls = commands.add_parser("ls", help="list registered backbones, strategies, datasets, scores or sinks",
                             description="List what the installed plugins register, one name a line.")
    ls.add_argument("kind", choices=["backbones", "strategies", "datasets", "scores", "sinks"])
    ls.add_argument("pattern", nargs="?", help="only the names that match this fnmatch pattern, e.g. "
                                               "'efficientnet*' (quote it: the shell expands * itself)")
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
    report.add_argument("--control", action="append", default=None, metavar="STRATEGY",
                        help="the strategy transfer gain is measured against, in place of the grid's "
                             "`control` (repeatable: a table per control; default: the grid's `control`, "
                             "else its one strategy that starts from random weights)")
    report.add_argument("--screenshot", action="store_true",
                        help="also save leaderboard.png, the page as headless Chromium renders it "
                             "(needs Playwright and a system Chromium)")
    _add_sink(report, "also send each leaderboard written to this sink, with its default options "
                      "(repeatable; tlbench ls sinks)")
    _add_common(report)


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
    runs.add_argument("--status", choices=(*STATUSES, RUNNING, QUEUED), help="only records with this status")


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
