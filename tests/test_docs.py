"""README.md is the manual: it must match the code (datasette's habit)."""

import dataclasses
import re
from pathlib import Path

from tlbench import hookspecs
from tlbench.grid import Settings, TOP_LEVEL_KEYS
from tlbench.results import iter_records

from conftest import TINY_SETTINGS

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    for field in dataclasses.fields(Settings):
        assert f"| `{field.name}` |" in README, field.name


def test_every_top_level_grid_key_is_documented():
    for key in TOP_LEVEL_KEYS:
        assert f"`{key}" in README or f"[{key}" in README, key


def test_every_hook_is_documented():
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert len(hooks) == 4
    for hook in hooks:
        assert hook in README, hook


def test_every_first_party_component_is_listed(registry):
    for kind in ("strategies", "datasets"):
        for name in registry.names(kind):
            assert f"`{name}`" in README, name


def test_readme_plugin_example_runs_as_a_loose_file(tmp_path, write_grid, cli):
    """The strategy plugin printed in README.md loads from --plugins-dir and trains."""
    example = re.search(r"```python\n(# tlbench_head_only.py\n.*?)```", README, re.S).group(1)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tlbench_head_only.py").write_text(example)
    grid = write_grid(f"""
        name = "readme"
        backbones = ["test_efficientnet"]
        strategies = ["head_only_sgd"]
        datasets = ["digits"]
        {TINY_SETTINGS}
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "r", "--plugins-dir", plugins)
    assert code == 0, err
    (record,) = iter_records(tmp_path / "r", "readme")
    assert record["status"] == "ok"
    assert record["trainable_params"] == 256 * 10 + 10
