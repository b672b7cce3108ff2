"""Grid files (TOML) -> validated grid -> cells.

The whole grid is validated before any cell runs: unknown keys, names and options, wrong
types and out-of-range values are ConfigErrors that name the problem and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from tlbench.errors import ConfigError, closest, unknown_name_error
from tlbench.grid_values import check_finite, controls_of, seeds_of, settings_variants, string_list
from tlbench.options import build_candidates, build_options, options_as_dict, path_values
from tlbench.plugins import Registry
from tlbench.settings import Settings
from tlbench.slurm_options import executor_tables
from tlbench.variants import PLURAL, axis_rows

GRID_NAME_MAX = 100  # characters: a folder name, with room for what tlbench puts beside it
GRID_NAME_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{GRID_NAME_MAX - 1}}}$")
TOP_LEVEL_KEYS = ("name", "backbones", "strategies", "datasets", "seeds", "control", "settings", "budget",
                  "backbone", "strategy", "dataset", "score", "sinks", "sink", "executor")
#: Settings a ``[budget.STRATEGY]`` table may change for one strategy's cells: how much it trains.
BUDGET_SETTINGS = ("epochs", "batch_size")
LIST_KEYS = {plural: singular for singular, plural in PLURAL.items()}  # "backbones": "backbone", ...


@dataclass(frozen=True)
class Cell:
    """One (backbone, strategy, dataset, seed) combination with everything resolved."""

    grid: str
    backbone: str
    strategy: str
    dataset: str
    seed: int
    settings: Settings
    backbone_options: Any
    strategy_candidates: tuple  # one options instance, or several to select from on validation
    dataset_options: Any
    #: (setting, value) pairs this cell takes from a list in [settings] (a curve: one cell per value)
    sweep: tuple = ()
    #: set on a seed added by racing (tlbench.race): its round, cap and rule, for the record; not
    #: part of the identity (the cell is the one a grid listing that seed would have)
    race: tuple = ()
    #: (axis, plugin) for each axis whose name is a variant of another plugin (tlbench.variants)
    variant_of: tuple = ()
    #: (axis, name) for each axis whose row an ablation made: the name the grid file lists
    listed_as: tuple = ()

    def plugin(self, axis: str) -> str:
        """The registered plugin the cell runs on ``axis`` (backbone, strategy, dataset)."""
        return dict(self.variant_of).get(axis) or getattr(self, axis)

    def listed(self, axis: str) -> str:
        """The name the grid file lists for the cell's row on ``axis``."""
        return dict(self.listed_as).get(axis) or getattr(self, axis)

    @property
    def strategy_options(self) -> Any:
        """The options when there is nothing to select (the first candidate otherwise)."""
        return self.strategy_candidates[0]

    def identity(self) -> dict:
        """Everything that changes this cell's result; hashed into ``run_id``.

        Options that name a file (a checkpoint, say) add the file's content hash, so a file
        replaced in place is a new configuration, not a finished one.
        """
        identity = {
            "backbone": self.backbone,
            "backbone_options": options_as_dict(self.backbone_options),
            "strategy": self.strategy,
            "strategy_options": (options_as_dict(self.strategy_options)
                                 if len(self.strategy_candidates) == 1
                                 else [options_as_dict(c) for c in self.strategy_candidates]),
            "dataset": self.dataset,
            "dataset_options": options_as_dict(self.dataset_options),
            "seed": self.seed,
            "settings": _settings_identity(self.settings),
        }
        if self.variant_of:  # only then: grids without variants keep their run_ids
            identity["variant_of"] = dict(self.variant_of)
        files = _named_files([self.backbone_options, self.dataset_options, *self.strategy_candidates])
        if files:  # only then: the run_ids of cells without files stay as they always were
            identity["files"] = files
        return identity

    @functools.cached_property
    def _identity_at_start(self) -> dict:
        return self.identity()

    @functools.cached_property
    def run_id(self) -> str:
        # cached: a file option's content must not change a cell's id in the middle of a run
        return _digest(self._identity_at_start)

    def changed_files(self) -> list[str]:
        """Files named by options whose content changed since the run_id was computed: the
        cell would record one file's id with another file's result."""
        then, now = self.files, self.identity().get("files", {})
        return sorted(path for path in then if now.get(path) != then[path])

    @property
    def files(self) -> dict:
        """{path: sha256} of the files its options name, as they were when the grid was read."""
        return dict(self._identity_at_start.get("files", {}))

    @functools.cached_property
    def config_id(self) -> str:
        """Like run_id but the same for every seed: the cells averaged in one leaderboard row."""
        identity = self.identity()
        del identity["seed"]
        return _digest(identity)

    @property
    def task(self) -> str:
        """The dataset and the swept settings: what a leaderboard ranks strategies on."""
        return task_name(self.dataset, dict(self.sweep))

    @property
    def label(self) -> str:
        return cell_label({"backbone": self.backbone, "strategy": self.strategy, "dataset": self.dataset,
                           "sweep": dict(self.sweep), "seed": self.seed})


def task_name(dataset: str, sweep: dict) -> str:
    """``digits`` or, for a cell of a curve, ``digits (train_per_class=5)``."""
    if not sweep:
        return dataset
    return f"{dataset} ({', '.join(f'{k}={v}' for k, v in sorted(sweep.items()))})"


def cell_label(record: dict) -> str:
    """How messages name a cell, from its record's fields (a Cell's ``label`` too):
    ``lite0 / linear_probe / digits (train_per_class=5) / seed 0``."""
    task = task_name(record["dataset"], record.get("sweep") or {})
    return f"{record['backbone']} / {record['strategy']} / {task} / seed {record['seed']}"


# Settings added after records existed: left out of the identity at their default, so that
# the run_ids of grids that do not use them stay as they were (their records stay finished).
LATER_SETTINGS = {"train_size": 0, "test_size": 0, "threads": 0, "deterministic": False}


def _settings_identity(settings: Settings) -> dict:
    values = options_as_dict(settings)
    return {k: v for k, v in values.items() if LATER_SETTINGS.get(k, object()) != v}


def _named_files(option_sets: list) -> dict:
    """{path: sha256} for every option declared a path (``tlbench.option(path=True)``) that
    names an existing file. Other options are never files, whatever exists by their value's
    name in the working folder (a split called "train" beside a folder ./train)."""
    files = {}
    for options in option_sets:
        for value in path_values(options).values():
            path = os.path.abspath(os.path.expanduser(value))
            if os.path.isfile(path):
                files[path] = file_sha256(path)
    return files


def file_sha256(path: str) -> str:
    """The content hash of a file named by an option (cached while the file is unchanged)."""
    stat = os.stat(path)
    return _file_sha256(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so an edited file is hashed again; once per process
    otherwise (about 1 s a GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _digest(identity: dict) -> str:
    canonical = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Grid:
    name: str
    backbones: list[str]
    strategies: list[str]
    datasets: list[str]
    seeds: list[int]
    settings: Settings
    cells: list[Cell] = field(default_factory=list)
    source: str = ""
    data: dict = field(default_factory=dict)  # the parsed file: what workers rebuild the cells from
    #: validated options of each score a ``[score.NAME]`` table sets, for ``tlbench rank``
    #: (no cell uses them, so they change no run_id)
    score_options: dict = field(default_factory=dict)
    #: the strategies transfer gain is measured against (``control``; the first also gives the
    #: overall table's P(> control)); not part of any cell, so they change no run_id
    controls: list[str] = field(default_factory=list)
    #: ``sinks`` and ``[sink.NAME]`` (``_sinks``): {"on": names, "options":
    #: {name: options}}; where records are copied changes no run_id
    sinks: dict = field(default_factory=lambda: {"on": [], "options": {}})
    #: ``[executor.slurm]`` (tlbench.slurm_options): {"slurm": {key: value}}; where cells run
    #: changes no run_id
    executor: dict = field(default_factory=dict)


def default_grid_path(registry: Registry) -> Path:
    """The grid file a plugin provides for ``tlbench run --grid`` without a file."""
    provided = registry.default_grids
    if not provided:
        raise ConfigError("No installed plugin provides a default grid. Name a grid file: "
                          "tlbench run --grid GRID.toml")
    if len(provided) > 1:
        owners = " and ".join(f"{plugin!r} ({path})" for plugin, path in provided)
        raise ConfigError(f"Two plugins provide a default grid: {owners}. Name a grid file "
                          "(tlbench run --grid GRID.toml), or uninstall one of them.")
    return Path(provided[0][1])


def read_grid_file(path: str | Path) -> tuple[dict, str]:
    """Parse a grid file into plain data."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")  # a byte-order mark from a Windows editor is fine
    except FileNotFoundError:
        raise ConfigError(f"Grid file {str(source)!r} not found. Check the path.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read grid file {str(source)!r}: {exc}") from None
    try:
        return tomllib.loads(text), str(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Grid file {str(source)!r} is not valid TOML: {exc}") from None


def _check_keys(data: dict, source: str) -> None:
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            hint = closest(key, TOP_LEVEL_KEYS)
            fix = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"Unknown key {key!r} in grid file {source!r}.{fix} Valid keys: {', '.join(TOP_LEVEL_KEYS)}"
            )


def _registered_tables(data: dict, singular: str, registry: Registry, source: str, listed=()) -> dict:
    """Validated options from ``[singular.NAME]`` tables of a kind no axis of the grid lists
    (scores: ``tlbench rank`` computes every one or those ``--scores`` names; sinks: a table may
    configure one only ``--sink`` turns on), so a table may name any registered one; and each
    of ``listed`` (the grid's ``sinks``), with its defaults when it has no table."""
    tables = data.get(singular, {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{singular!r} in {source!r} must be a table of [{singular}.NAME] tables.")
    plural = f"{singular}s"
    resolved = {}
    for name in [*listed, *(n for n in tables if n not in listed)]:
        if name not in registry.names(plural):
            where = f" in [{singular}.{name}] of {source!r}" if name in tables else f" in {source!r}"
            raise unknown_name_error(singular, name, registry.names(plural), where, hint=registry.missing_hint())
        table = tables.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{singular}.{name}] in {source!r} must be a table of options.")
        resolved[name] = build_options(registry.get(plural, name).Options, table, f"[{singular}.{name}]")
    return resolved


def _sinks(data: dict, registry: Registry, source: str) -> dict:
    """The grid's ``sinks`` list and ``[sink.NAME]`` tables: {"on": the listed names, "options":
    {name: options} of each listed sink and of each table}. Where records are copied is no part
    of a cell's identity: nothing here changes a run_id."""
    listed = data.get("sinks", [])
    if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        raise ConfigError(f"'sinks' in {source!r} must be a list of sink names, e.g. sinks = [\"NAME\"] "
                          "(tlbench ls sinks lists them).")
    if len(set(listed)) != len(listed):
        raise ConfigError(f"'sinks' in {source!r} names a sink twice: {listed!r}.")
    return {"on": list(listed), "options": _registered_tables(data, "sink", registry, source, listed)}


def _budgets(data: dict, strategies: list[str], source: str) -> dict:
    """``[budget.STRATEGY]`` tables: epochs or batch size for one strategy's cells, so that a
    strategy that needs more steps gets them, visibly (its records' settings say so)."""
    tables = data.get("budget", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"'budget' in {source!r} must be a table of [budget.STRATEGY] tables.")
    for name, table in tables.items():
        if name not in strategies:
            raise ConfigError(f"[budget.{name}] in {source!r} names a strategy the grid does not use; "
                              f"add it to 'strategies' or remove the table. In use: {', '.join(strategies)}")
        if not isinstance(table, dict):
            raise ConfigError(f"[budget.{name}] in {source!r} must be a table, e.g. epochs = 10.")
        for key, value in table.items():
            if key not in BUDGET_SETTINGS:
                raise ConfigError(f"'{key}' in [budget.{name}] of {source!r} is not a budget; "
                                  f"a budget sets {' or '.join(BUDGET_SETTINGS)} for one strategy.")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key} = {value!r} in [budget.{name}] of {source!r}: use a whole number >= 1.")
    return tables


def _with_budget(settings: Settings, budget: Optional[dict]) -> Settings:
    return replace(settings, **budget) if budget else settings


def load_grid(path: Optional[str], registry: Registry) -> Grid:
    """The grid in file ``path`` (None: the default grid a plugin provides), validated."""
    data, source = read_grid_file(default_grid_path(registry) if path is None else path)
    return build_grid(data, source, registry)


def build_grid(data: dict, source: str, registry: Registry) -> Grid:
    _check_keys(data, source)
    check_finite(data, source)
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise ConfigError(f"'name' in {source!r} must be a string, e.g. name = \"my-grid\"; got {name!r}.")
    if not GRID_NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"Grid name {name!r} in {source!r} is not a safe folder name: use at most {GRID_NAME_MAX} letters, "
            "digits, '.', '_' and '-' (no slashes), starting with a letter or digit, e.g. name = \"my-grid\""
            + (f"; it has {len(name)} characters." if len(name) > GRID_NAME_MAX else ".")
        )
    lists = {key: string_list(data, key, source) for key in LIST_KEYS}
    # only strategies take lists of values to select from; other lists are type errors
    rows = {singular: axis_rows(data, singular, lists[key], registry, source,
                                build_candidates if singular == "strategy" else build_options)
            for key, singular in LIST_KEYS.items()}
    settings_data = data.get("settings", {})
    if not isinstance(settings_data, dict):
        raise ConfigError(f"'settings' in {source!r} must be a table: [settings].")
    variants = settings_variants(settings_data, source)
    settings = variants[0][1]
    seeds = seeds_of(data, source)
    budgets = _budgets(data, lists["strategies"], source)
    swept = {key for sweep, _ in variants for key, _ in sweep}
    for strategy, table in budgets.items():
        for key in swept & set(table):
            raise ConfigError(f"[budget.{strategy}] sets {key}, which [settings] lists as a curve in {source!r}: "
                              f"remove one of them (a budget would flatten that strategy's curve).")
    names = {singular: [row.name for row in axis] for singular, axis in rows.items()}
    grid = Grid(name, names["backbone"], names["strategy"], names["dataset"], seeds, settings,
                source=source, data=data, score_options=_registered_tables(data, "score", registry, source),
                controls=controls_of(data, names["strategy"], source), sinks=_sinks(data, registry, source),
                executor=executor_tables(data, source))
    for dataset, (sweep, cell_settings), backbone, strategy, seed in itertools.product(
        rows["dataset"], variants, rows["backbone"], rows["strategy"], grid.seeds
    ):
        parts = {"backbone": backbone, "strategy": strategy, "dataset": dataset}
        grid.cells.append(Cell(
            grid=name, backbone=backbone.name, strategy=strategy.name, dataset=dataset.name, seed=seed,
            settings=_with_budget(cell_settings, budgets.get(strategy.listed)),
            backbone_options=backbone.options,
            strategy_candidates=strategy.options,
            dataset_options=dataset.options,
            sweep=sweep,
            variant_of=tuple((axis, row.plugin) for axis, row in parts.items() if row.plugin != row.name),
            listed_as=tuple((axis, row.listed) for axis, row in parts.items() if row.listed != row.name),
        ))
    for cell in grid.cells:
        cell.run_id  # now: files named by options are hashed as the grid is read (see changed_files)
    return grid

