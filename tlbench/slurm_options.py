"""What each task of a Slurm job array asks for (``tlbench run --executor slurm``): a grid's
``[executor.slurm]`` table, overridden by the ``--slurm-*`` flags; every value checked, the
message naming the flag or the table key it came from. Standard library only: the grid reads
its table through here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from tlbench.errors import ConfigError, closest

# table key -> its flag; "time" takes minutes or [D-]HH:MM:SS, as sbatch --time does
FLAGS = {"partition": "--slurm-partition", "time": "--slurm-time", "cpus_per_task": "--cpus-per-cell",
         "gpus": "--slurm-gpus", "mem": "--slurm-mem", "account": "--slurm-account", "qos": "--slurm-qos",
         "array_parallelism": "--slurm-array-parallelism", "sbatch": "--slurm-sbatch",
         "cells_per_task": "--cells-per-task"}
_LEAST = {"cpus_per_task": 1, "gpus": 0, "array_parallelism": 1, "cells_per_task": 1}
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}")


@dataclass
class SlurmOptions:
    """Each task's request, as the flags and the table name it."""

    partition: Optional[str] = None
    time: str = "60"  # minutes, or [D-]HH:MM:SS
    cpus_per_task: int = 1
    gpus: int = 0
    mem: Optional[str] = None  # as sbatch --mem takes it: 4G, 16000M
    account: Optional[str] = None
    qos: Optional[str] = None
    array_parallelism: int = 256  # tasks running at once (sbatch --array=...%N)
    sbatch: list = field(default_factory=list)  # more sbatch flags, "FLAG=VALUE" or "FLAG"
    cells_per_task: int = 1

    def submitit_parameters(self) -> dict:
        extra = {}
        for flag in self.sbatch:
            name, sep, value = flag.lstrip("-").partition("=")
            extra[name.replace("-", "_")] = value if sep else True
        parameters = {"time": self.time, "cpus_per_task": self.cpus_per_task, "array_parallelism":
                      self.array_parallelism, "partition": self.partition, "mem": self.mem,
                      "account": self.account, "qos": self.qos, "gpus_per_node": self.gpus or None,
                      # the task's own process runs the cells: no srun step to start and signal
                      "use_srun": False, "job_name": "tlbench", "additional_parameters": extra}
        return {k: v for k, v in parameters.items() if v is not None}


def executor_tables(data: dict, source: str) -> dict:
    """A grid's ``[executor.slurm]`` table, checked ({} without one): {"slurm": {key: value}}."""
    tables = data.get("executor", {})
    if not isinstance(tables, dict) or any(not isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"'executor' in {source!r} must hold tables, e.g. [executor.slurm].")
    for name in tables:
        if name != "slurm":
            raise ConfigError(f"Unknown executor table [executor.{name}] in {source!r}: only [executor.slurm] "
                              "takes options (the other executors' come from the command line).")
    table = tables.get("slurm", {})
    for key, value in table.items():
        if key not in FLAGS:
            hint = closest(key, FLAGS)
            fix = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"Unknown key {key!r} in [executor.slurm] of {source!r}.{fix} "
                              f"Valid keys: {', '.join(FLAGS)}")
        _check(key, value, f"[executor.slurm] {key} in {source!r}")
    return {"slurm": dict(table)} if table else {}


def slurm_options(flags: dict, table: dict) -> SlurmOptions:
    """The options of ``table`` (a grid's [executor.slurm]) with ``flags`` ({key: value, None
    when not given}) over them, each flag checked."""
    given = {key: int(value) if isinstance(value, float) and value.is_integer() else value
             for key, value in flags.items() if value is not None}
    for key, value in given.items():
        _check(key, value, FLAGS[key])
    return SlurmOptions(**{**table, **given})


def _check(key: str, value, where: str) -> None:
    if key in _LEAST:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < _LEAST[key]:
            raise ConfigError(f"{where} must be a whole number, {_LEAST[key]} or more; got {value!r}.")
    elif key == "sbatch":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of sbatch flags, e.g. [\"constraint=a100\"]; got {value!r}.")
        for flag in value:
            name = flag.lstrip("-").partition("=")[0]
            if not name or name.strip() != name:
                raise ConfigError(f"{where}: {flag!r} is not an sbatch flag: give FLAG or FLAG=VALUE, e.g. "
                                  "constraint=a100.")
    elif key == "time":
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return
        if not isinstance(value, str) or not _TIME.fullmatch(value.strip()):
            raise ConfigError(f"{where} {value!r}: give minutes (90) or [D-]HH:MM:SS (\"1-00:00:00\", \"2:30:00\").")
    elif not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string; got {value!r}.")
