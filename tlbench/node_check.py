"""A cluster node runs a cell only on what the driver means: the same plugins, files and data.

A Ray worker rebuilds its cell from the grid with its own plugins, its own copies of the files
the options name and its own data. So the driver sends, with each cell, what it has: where
each plugin of the grid came from (package and version, or a file's hash), the hash of each
file the cell's options name, the dataset's fingerprint and the cell's split digest. The worker
compares before the cell runs. A node that differs is *unfit* for the cells that need what
differs (``NodeUnfit``, with a scope): the executor keeps those cells off it and sends them to
another node (tlbench.ray_pool), instead of recording a column of failures or, worse, a score
computed on other data under the same run_id.
"""

from __future__ import annotations

import socket
from typing import Optional

NODE_WIDE = "node"  # the scope of a node that can run no cell of the grid


class NodeUnfit(Exception):
    """This node cannot run cells that need ``scope``: ``node`` (every cell), ``data:...`` (the
    cells of one dataset) or ``file:PATH`` (the cells whose options name that file).
    ``reason`` reads after the node's name: "lacks the strategy plugin 'x' ..."."""

    def __init__(self, scope: str, reason: str):
        super().__init__(reason)
        self.scope, self.reason = scope, reason


def data_scope(cell) -> str:
    return f"data:{cell.dataset}"  # a grid sets each dataset up once ([dataset.NAME])


def file_scope(path: str) -> str:
    return f"file:{path}"


def scopes_of(cell) -> set:
    """Every scope a node can be unfit for that would keep this cell off it."""
    return {NODE_WIDE, data_scope(cell), *(file_scope(path) for path in cell.files)}


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
    compare with. Each dataset is loaded here once, when its first cell is handed out, and the
    split digests of all its cells computed then; one that cannot be loaded here is not checked
    (a driver need not hold the data)."""

    def __init__(self, registry, grid, runner):
        parts = {("backbones", c.backbone) for c in grid.cells} | {("strategies", c.strategy) for c in grid.cells} \
            | {("datasets", c.dataset) for c in grid.cells}
        self.plugins = {f"{kind}:{name}": comparable_origin(registry.registration(kind, name).origin)
                        for kind, name in sorted(parts)}
        self.grid, self.runner = grid, runner
        self._data: dict = {}  # data scope -> (fingerprint, {run_id: split digest}), or None

    def expected(self, cell) -> dict:
        return {"dataset": cell.dataset, "plugins": self.plugins, "files": cell.files, "data": self._data_of(cell)}

    def _data_of(self, cell) -> Optional[dict]:
        scope = data_scope(cell)
        if scope not in self._data:
            self._data[scope] = self._fingerprint(scope, [c for c in self.grid.cells if data_scope(c) == scope])
        if self._data[scope] is None:
            return None
        fingerprint, split_digests = self._data[scope]
        return {"dataset": fingerprint, "split_digest": split_digests[cell.run_id]}

    def _fingerprint(self, scope: str, cells: list) -> Optional[tuple]:
        from tlbench.data import images_fingerprint

        try:
            images = self.runner.load_images(cells[0])
            return images_fingerprint(images), {c.run_id: self.runner.prepare_splits(c, images).digest()
                                                for c in cells}
        except Exception as exc:
            self.runner.progress.note(
                f"dataset {cells[0].dataset!r} cannot be loaded on this machine ({type(exc).__name__}: {exc}); "
                "its cells use each node's own copy, unchecked")
            return None


# -- the worker's side ---------------------------------------------------------------------------


def local_plugins_dir(driver_dir: Optional[str]) -> Optional[str]:
    """The plugins folder to load on this node: the copy Ray shipped with the task (runtime_env
    ``py_modules`` unpacks it under a folder on sys.path, by its own name), else the driver's
    path itself (a shared filesystem, or a single machine)."""
    import os
    import sys

    if not driver_dir:
        return None
    name = os.path.basename(os.path.normpath(driver_dir))
    for entry in sys.path:
        candidate = os.path.join(entry, name)
        if "runtime_resources" in entry and os.path.isdir(candidate):
            return candidate
    return driver_dir



SINGULAR = {"backbones": "backbone", "strategies": "strategy", "datasets": "dataset"}


def grid_for(grid_data: dict, dataset: str) -> dict:
    """The grid as far as one dataset's cells go (their run_ids do not depend on the others): a
    node need not hold every dataset of the grid to run the cells of one."""
    data = dict(grid_data, datasets=[dataset])
    if isinstance(grid_data.get("dataset"), dict):
        data["dataset"] = {name: table for name, table in grid_data["dataset"].items() if name == dataset}
    return data


def check_dataset_options(registry, grid_data: dict, dataset: str) -> None:
    """The dataset's options hold here too (a `folder` whose path this node lacks does not)."""
    from tlbench.errors import ConfigError
    from tlbench.options import build_options

    tables = grid_data.get("dataset") if isinstance(grid_data.get("dataset"), dict) else {}
    try:
        build_options(registry.get("datasets", dataset).Options, tables.get(dataset, {}), f"[dataset.{dataset}]")
    except ConfigError as exc:
        raise NodeUnfit(f"data:{dataset}", f"cannot use dataset {dataset!r} as the grid sets it up, which "
                                           f"the driver can ({exc})") from None


def check_plugins(registry, expected: dict) -> None:
    """Every plugin the grid uses, here, from the same package version or file content."""
    from tlbench.errors import ConfigError

    for key, theirs in expected.items():
        kind, name = key.split(":", 1)
        what = f"{SINGULAR[kind]} plugin {name!r}"
        try:
            ours = comparable_origin(registry.registration(kind, name).origin)
        except ConfigError:
            raise NodeUnfit(NODE_WIDE, f"lacks the {what}, which the driver has ({describe_origin(theirs)}): "
                                       "install it on every node (see docs/operations.md, 'Ray clusters')") from None
        if ours != theirs:
            raise NodeUnfit(NODE_WIDE, f"has the {what} from {describe_origin(ours)}, the driver from "
                                       f"{describe_origin(theirs)}: install the same version on every node")


def check_files(expected: dict) -> None:
    """The files the cell's options name (checkpoints, say), with the driver's content."""
    import os

    from tlbench.grid import file_sha256

    for path, sha256 in expected.items():
        if not os.path.isfile(path):
            raise NodeUnfit(file_scope(path), f"has no file {path}, which the grid's options name: copy it "
                                              "to the same path on every node")
        if file_sha256(path) != sha256:
            raise NodeUnfit(file_scope(path), f"has another {path} than the driver (sha256 "
                                              f"{file_sha256(path)[:12]} there, {sha256[:12]} on the driver)")


def check_data(runner, cell, expected: Optional[dict]) -> None:
    """The dataset as the driver has it, split the same way."""
    if expected is None:
        return
    scope = data_scope(cell)
    try:
        here = runner.data_fingerprint(cell)
    except Exception as exc:
        raise NodeUnfit(scope, f"cannot load dataset {cell.dataset!r}, which the driver loads "
                               f"({type(exc).__name__}: {exc})") from None
    ours, theirs = here["dataset"], expected["dataset"]
    if ours != theirs:
        if (ours["images"], ours["classes"]) != (theirs["images"], theirs["classes"]):
            how = (f"{ours['images']} images in {ours['classes']} classes there, {theirs['images']} in "
                   f"{theirs['classes']} on the driver")
        else:
            how = "as many images and classes as the driver's, but other labels or class names"
        raise NodeUnfit(scope, f"has another copy of dataset {cell.dataset!r} ({how}): make the data the "
                               "same on every node")
    if here["split_digest"] != expected["split_digest"]:
        raise NodeUnfit(scope, f"splits dataset {cell.dataset!r} differently from the driver (split digest "
                               f"{here['split_digest']} there, {expected['split_digest']} on the driver): "
                               "install the driver's tlbench version on every node")
