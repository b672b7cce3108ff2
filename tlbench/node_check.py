"""A cluster node runs a cell only on what the driver means: the same plugins, files and data.

A Ray worker rebuilds its cell from the grid with its own plugins, its own copies of the files
the options name and its own data. So the driver sends, with each cell, what it has: where
each plugin of the grid came from (package and version, or a file's hash), the hash of each
file the cell's options name, the dataset's fingerprint and the cell's split digest. The worker
compares before the cell runs, and asks the cell's components whether they can run on its node
(``unavailable``, as the driver asked of its own before the first cell: tlbench.preflight). A node that differs is *unfit* for the cells that need what
differs (``NodeUnfit``, with a scope): the executor keeps those cells off it and hands them to
another node (tlbench.ray_executor), instead of recording a column of failures or, worse, a
score computed on other data under the same run_id. The worker's side is tlbench.ray_worker.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Optional

from tlbench.errors import ConfigError
from tlbench.variants import PLURAL

# Scopes: what a node can be unfit for. Strings, so they travel back from a worker as they are.
NODE_WIDE = "node"  # every cell of the grid


def data_scope(dataset: str) -> str:
    return f"data:{dataset}"  # a grid sets each dataset up once ([dataset.NAME])


def file_scope(path: str) -> str:
    return f"file:{path}"


def scopes_of(cell) -> set:
    """Every scope a node can be unfit for that would keep this cell off it."""
    return {NODE_WIDE, data_scope(cell.dataset), *(file_scope(path) for path in cell.files)}


def cells_of(scope: str) -> str:
    """The cells a scope keeps off a node, in a user's words."""
    if scope == NODE_WIDE:
        return "cells of this grid"
    kind, _, name = scope.partition(":")
    return f"cells of dataset {name!r}" if kind == "data" else f"cells that name {name}"


class NodeUnfit(Exception):
    """This node cannot run the cells of ``scope``. ``reason`` reads after the node's name:
    "lacks the strategy plugin 'x' ..."."""

    def __init__(self, scope: str, reason: str):
        super().__init__(reason)
        self.scope, self.reason = scope, reason


def comparable_origin(origin: dict) -> dict:
    """What must match between two machines: a package's version, a loose file's content (its
    path differs from node to node when Ray ships it)."""
    return {k: v for k, v in origin.items() if k in ("package", "version", "sha256", "module")}


def describe_origin(origin: dict) -> str:
    if "package" in origin:
        return f"{origin['package']} {origin.get('version') or ''}".strip()
    if "sha256" in origin:
        return f"a file with sha256 {origin['sha256'][:12]}"
    return origin.get("module", "?")


def describe_node(node: Optional[dict]) -> str:
    """``Ray node vm2 (10.0.0.7:40231, id 3f9c2a1b)``: the hostname alone can be the same on two
    nodes (containers), the address and id are not."""
    if not node:
        return "a Ray node"
    where = ", ".join(filter(None, [node.get("address"), f"id {node['id'][:8]}" if node.get("id") else None]))
    return f"Ray node {node.get('hostname', '?')}" + (f" ({where})" if where else "")


def this_node() -> dict:
    """The node this process runs on: its hostname, and its Ray node id inside a Ray worker."""
    node = {"hostname": socket.gethostname()}
    try:
        import ray

        if ray.is_initialized():
            node["id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray, or a Ray without a runtime context: the hostname says enough
        pass
    return node


# -- the driver's side ---------------------------------------------------------------------------


class DriverView:
    """What the driver has for each cell of a grid, sent in the cell's job for its worker to
    compare with. Each dataset is loaded here once, when its first cell is handed out (one that
    downloads is downloaded here too), and the split digests of all its cells computed then; a
    dataset that cannot be loaded here is not checked (a driver need not hold the data)."""

    def __init__(self, registry, grid, runner):
        for cell in grid.cells:
            _refuse_relative_files(cell)
        parts = {(plural, c.plugin(axis)) for c in grid.cells for axis, plural in PLURAL.items()}
        self.plugins = {f"{kind}:{name}": comparable_origin(registry.registration(kind, name).origin)
                        for kind, name in sorted(parts)}
        self.grid, self.runner = grid, runner
        self._data: dict = {}  # dataset -> (fingerprint, {run_id: split digest or None}), or None

    def jobs(self, job_for):
        """cell -> the job ``job_for`` makes, carrying what the driver has for its node to check."""
        from dataclasses import replace

        return lambda cell: replace(job_for(cell), expected=self.expected(cell))

    def expected(self, cell) -> dict:
        return {"plugins": self.plugins, "files": cell.files, "data": self._data_of(cell)}

    def _data_of(self, cell) -> Optional[dict]:
        if cell.dataset not in self._data:
            self._data[cell.dataset] = self._fingerprint([c for c in self.grid.cells if c.dataset == cell.dataset])
        if self._data[cell.dataset] is None:
            return None
        fingerprint, split_digests = self._data[cell.dataset]
        return {"dataset": fingerprint, "split_digest": split_digests[cell.run_id]}

    def _fingerprint(self, cells: list) -> Optional[tuple]:
        from tlbench.splits import images_fingerprint

        try:
            images = self.runner.data.load_images(cells[0])
        except Exception as exc:
            self.runner.progress.note(
                f"dataset {cells[0].dataset!r} cannot be loaded on this machine ({type(exc).__name__}: {exc}); "
                "its cells use each node's own copy, unchecked")
            return None
        return images_fingerprint(images), {c.run_id: self._split_digest(c, images) for c in cells}

    def _split_digest(self, cell, images) -> Optional[str]:
        """None for a cell whose splits fail here: it fails the same way on its node, and says why."""
        from tlbench.cell_data import cell_splits

        try:
            return cell_splits(cell, images).digest()
        except Exception:
            return None


def _refuse_relative_files(cell) -> None:
    """A relative path names another file on a worker (its working folder is Ray's or Slurm's,
    not the driver's): options declared as paths that name a file here must be absolute on a
    cluster. Other options are not paths, whatever their value."""
    from tlbench.options import path_values

    for options in (cell.backbone_options, cell.dataset_options, *cell.strategy_candidates):
        for key, value in path_values(options).items():
            if not os.path.isabs(os.path.expanduser(value)) and os.path.isfile(value):
                raise ConfigError(f"The option {key} = {value!r} ({cell.label}) is a relative path: on a "
                                  "cluster (Ray, Slurm) each node resolves it in its own working folder. Give the absolute "
                                  "path, the same on every node.")


# -- the worker's side ---------------------------------------------------------------------------


def local_plugins_dir(driver_dir: Optional[str]) -> Optional[str]:
    """The plugins folder to load on this node: the copy Ray shipped with the run (runtime_env
    ``py_modules`` unpacks it under a folder on sys.path, by its own name), else the driver's
    path itself (a shared filesystem, or a single machine)."""
    if not driver_dir:
        return None
    name = os.path.basename(os.path.normpath(driver_dir))
    for entry in sys.path:
        candidate = os.path.join(entry, name)
        if "runtime_resources" in entry and os.path.isdir(candidate):
            return candidate
    return driver_dir


def check_dataset_options(registry, grid_data: dict, dataset: str) -> None:
    """The dataset's options hold here too (a path they name may be missing on this node);
    ``grid_data`` is the grid as far as the cell goes (tlbench.worker.grid_for)."""
    from tlbench.options import build_options
    from tlbench.variants import axis_rows

    try:
        axis_rows(grid_data, "dataset", grid_data["datasets"], registry, "the grid", build_options)
    except ConfigError as exc:
        raise NodeUnfit(data_scope(dataset), f"cannot use dataset {dataset!r} as the grid sets it up, which the "
                                             f"driver can ({exc})") from None


def check_plugins(registry, expected: dict) -> None:
    """Every plugin the grid uses, here, from the same package version or file content."""
    from tlbench.plugins import KINDS

    for key, theirs in expected.items():
        kind, name = key.split(":", 1)
        what = f"{KINDS[kind][2]} plugin {name!r}"
        try:
            ours = comparable_origin(registry.registration(kind, name).origin)
        except ConfigError:
            raise NodeUnfit(NODE_WIDE, f"lacks the {what}, which the driver has ({describe_origin(theirs)}): "
                                       f"{_how_to_match(theirs)}") from None
        if ours != theirs:
            raise NodeUnfit(NODE_WIDE, f"has the {what} from {describe_origin(ours)}, the driver from "
                                       f"{describe_origin(theirs)}: {_how_to_match(theirs)}")


def _how_to_match(origin: dict) -> str:
    if "sha256" in origin:  # a loose file: Ray ships the driver's, so this node loaded another
        return ("the node must load the driver's --plugins-dir file, which Ray ships with the run: remove "
                "the node's own copy of that plugin (an installed package, or its TLBENCH_PLUGINS_DIR)")
    return "install the driver's version on every node (the same pip install, or the cluster's image)"


def check_files(expected: dict) -> None:
    """The files the cell's options name (checkpoints, say), with the driver's content."""
    from tlbench.grid import file_sha256

    for path, sha256 in expected.items():
        if not os.path.isfile(path):
            raise NodeUnfit(file_scope(path), f"has no file {path}, which the grid's options name: copy the "
                                              "driver's file to the same path on every node")
        if file_sha256(path) != sha256:
            raise NodeUnfit(file_scope(path), f"has another {path} than the driver (sha256 {file_sha256(path)[:12]} "
                                              f"there, {sha256[:12]} on the driver): copy the driver's file to "
                                              "every node")


def check_available(registry, cell) -> None:
    """The cell's components can run on this node as they say themselves (``unavailable``, which
    the driver asked of its own copies before the first cell: tlbench.preflight)."""
    from tlbench.preflight import unavailable_components

    for problem in unavailable_components([cell], registry):
        scope = data_scope(cell.dataset) if problem.kind == "dataset" else NODE_WIDE
        raise NodeUnfit(scope, f"cannot run the {problem.line()}")


def check_data(runner, cell, expected: Optional[dict]) -> None:
    """The dataset as the driver has it, split the same way."""
    if expected is None:
        return
    scope = data_scope(cell.dataset)
    try:
        here = runner.data.fingerprint(cell)
    except Exception as exc:
        raise NodeUnfit(scope, f"cannot load dataset {cell.dataset!r}, which the driver loads "
                               f"({type(exc).__name__}: {exc}): put the driver's copy at the same path on "
                               "every node") from None
    ours, theirs = here["dataset"], expected["dataset"]
    if ours != theirs:
        if (ours["images"], ours["classes"]) != (theirs["images"], theirs["classes"]):
            how = (f"{ours['images']} images in {ours['classes']} classes there, {theirs['images']} in "
                   f"{theirs['classes']} on the driver")
        else:
            how = "as many images and classes as the driver's, but other labels or class names"
        raise NodeUnfit(scope, f"has another copy of dataset {cell.dataset!r} ({how}): make the data the "
                               "same on every node")
    if expected["split_digest"] not in (None, here["split_digest"]):
        raise NodeUnfit(scope, f"splits dataset {cell.dataset!r} differently from the driver (split digest "
                               f"{here['split_digest']} there, {expected['split_digest']} on the driver): install "
                               "the driver's tlbench and numpy versions on every node")
