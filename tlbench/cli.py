"""The `tlbench` command. Heavy imports (torch, pandas) happen inside commands only."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tlbench import __version__
from tlbench.errors import ConfigError

DEFAULT_GRID = object()  # `--grid` given without a file


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins-dir", metavar="DIR",
                        help="also load every .py file in DIR as a plugin (env: TLBENCH_PLUGINS_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark pretrained backbones x transfer strategies x datasets.",
    )
    parser.add_argument("--version", action="version", version=f"tlbench {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run every cell of a grid and write records + leaderboard",
                              description="Run every cell of a grid; cells with records are skipped.")
    run.add_argument("--grid", nargs="?", const=DEFAULT_GRID, default=DEFAULT_GRID, metavar="GRID.toml",
                     help="grid file; without a file, the built-in offline default grid")
    run.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    run.add_argument("--executor", choices=["local"], default="local",
                     help="where cells run (default: local, in this process)")
    run.add_argument("--retry-failed", action="store_true", help="rerun cells whose record says failed")
    run.add_argument("--force", action="store_true", help="rerun every cell, even those already done")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_common(run)

    ls = commands.add_parser("ls", help="list registered backbones, strategies or datasets",
                             description="List what the installed plugins register, one name a line.")
    ls.add_argument("kind", choices=["backbones", "strategies", "datasets"])
    ls.add_argument("-v", "--verbose", action="store_true", help="also show each one's options")
    _add_common(ls)

    report = commands.add_parser("report", help="(re)write leaderboards from stored records",
                                 description="Rebuild leaderboard.md and leaderboard.csv from records.")
    report.add_argument("--results", default="results", metavar="DIR", help="results folder (default: ./results)")
    report.add_argument("--grid", metavar="NAME", help="only this grid (default: every grid in DIR)")
    return parser


def cmd_ls(args) -> int:
    from tlbench.options import describe_options
    from tlbench.plugins import load_registry

    registry = load_registry(args.plugins_dir)
    _report_broken(registry)
    rows = list(registry.listing(args.kind))
    width = max((len(name) for name, _, _ in rows), default=0)
    described = set()
    for name, text, reg in rows:
        print(f"{name:<{width}}  {text}  ({reg.plugin})")
        if args.verbose and reg.component not in described:
            described.add(reg.component)
            for opt, kind, default, help_text in describe_options(reg.component.Options):
                print(f"    {opt} ({kind}, default {default}): {help_text}")
    return 0


def cmd_run(args) -> int:
    from tlbench.grid import load_grid
    from tlbench.plugins import load_registry
    from tlbench.progress import Progress
    from tlbench.results import ensure_writable

    registry = load_registry(args.plugins_dir)
    _report_broken(registry)
    grid = load_grid(None if args.grid is DEFAULT_GRID else args.grid, registry)
    ensure_writable(args.results, grid.name)

    from tlbench.report import write_report
    from tlbench.runner import Runner

    progress = Progress(enabled=not args.quiet)
    runner = Runner(registry, args.results, progress=progress)
    try:
        outcome = runner.run_grid(grid, retry_failed=args.retry_failed, force=args.force)
    except KeyboardInterrupt:
        progress.grid_done()
        print("Interrupted: finished cells are saved; run the same command again to resume.",
              file=sys.stderr)
        return 130
    paths = write_report(args.results, grid.name, cells=grid.cells)
    if not args.quiet:
        print(f"Leaderboard: {paths[0]}", file=sys.stderr)
    print(paths[0].read_text(encoding="utf-8"))
    if outcome.failed:
        print(f"{len(outcome.failed)} cell(s) failed:", file=sys.stderr)
        for record in outcome.failed:
            print(f"  {record['backbone']} / {record['strategy']} / {record['dataset']} / "
                  f"seed {record['seed']}: {record['error']}", file=sys.stderr)
        print("Fix the cause and rerun with --retry-failed.", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from tlbench.report import write_report
    from tlbench.results import grid_names

    available = grid_names(args.results)
    if args.grid:
        if args.grid not in available:
            from tlbench.errors import unknown_name_error

            raise unknown_name_error("grid", args.grid, available, f" in {args.results!r}")
        names = [args.grid]
    else:
        names = available
    if not names:
        raise ConfigError(f"No records under {args.results!r}. Run `tlbench run` first or pass --results DIR.")
    for name in names:
        paths = write_report(args.results, name)
        print(f"{name}: " + ", ".join(str(p) for p in paths))
    return 0


def _report_broken(registry) -> None:
    for plugin, why in registry.broken:
        print(f"warning: plugin {plugin!r} was skipped: {why}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"run": cmd_run, "ls": cmd_ls, "report": cmd_report}[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
