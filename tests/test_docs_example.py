"""The plugin examples printed in the docs work verbatim: each is cut out of its page, saved as a
loose file in a plugins folder, and run through the command line."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PLUGINS_PAGE = ROOT / "docs" / "plugins.md"

GRID = """
name = "{name}"
backbones = ["test_efficientnet"]
strategies = ["{strategy}"]
datasets = ["{dataset}"]

[settings]
image_size = 32
epochs = 1
batch_size = 32
pretrained = false
"""


def section(text: str, title: str) -> str:
    """The text under the markdown heading ``title``, up to the next heading of its level or
    higher (headings inside code blocks do not count)."""
    lines, fenced, start, level = text.splitlines(), False, None, 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"^(#+)\s+(.*?)\s*$", line)
        if heading and start is not None and len(heading.group(1)) <= level:
            return "\n".join(lines[start:i])
        if heading and start is None and heading.group(2) == title:
            start, level = i + 1, len(heading.group(1))
    assert start is not None, f"no heading {title!r}"
    return "\n".join(lines[start:])


def first_python_block(text: str) -> str:
    match = re.search(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert match, "no python block"
    return match.group(1)


def save_example(page: Path, heading: str, folder: Path) -> Path:
    """Write the first python block under ``heading`` of ``page``, verbatim, into ``folder`` under
    the file name its first line gives (``# tlbench_shapes.py``)."""
    code = first_python_block(section(page.read_text(encoding="utf-8"), heading))
    name = re.match(r"# (\w+\.py)\n", code).group(1)
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(code, encoding="utf-8")
    return path


def tlbench(*argv) -> subprocess.CompletedProcess:
    """`tlbench ARGV...` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "tlbench.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=600)


def documented_record_fields() -> set[str]:
    """The code spans of the first column of docs/records.md's field table."""
    rows = [line for line in section((ROOT / "docs" / "records.md").read_text(encoding="utf-8"),
                                     "Fields").splitlines() if line.startswith("|")]
    return {name for row in rows[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def only_record(results: Path, grid: str) -> dict:
    (path,) = (results / grid / "records").glob("*.json")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def shapes_plugin(tmp_path):
    """The dataset plugin of docs/plugins.md, alone in a plugins folder."""
    return save_example(PLUGINS_PAGE, "A dataset plugin", tmp_path / "plugins").parent


def test_dataset_example_is_listed_by_tlbench_ls(shapes_plugin):
    done = tlbench("ls", "datasets", "--plugins-dir", shapes_plugin)
    assert done.returncode == 0, done.stderr
    assert "shapes" in [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    assert "tlbench_shapes" not in done.stderr  # no warning that it was skipped


def test_dataset_example_runs_a_grid_cell(shapes_plugin, write_grid, cli, tmp_path):
    grid = write_grid(GRID.format(name="shapes", strategy="linear_probe", dataset="shapes"))
    # in this process (the listing above is the fresh-interpreter check): the same CLI, faster
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results", "--plugins-dir", shapes_plugin)
    assert code == 0, err
    record = only_record(tmp_path / "results", "shapes")
    assert record["status"] == "ok", record.get("error")
    assert record["dataset"] == "shapes" and record["num_classes"] == 3
    assert record["split_sizes"]["test"] == 36  # every fifth of 3 × 60 images: the official test split
    undocumented = set(record) - documented_record_fields()
    assert not undocumented, f"record fields missing from docs/records.md: {sorted(undocumented)}"


@pytest.mark.parametrize("page, heading, strategy", [
    (ROOT / "README.md", "A plugin", "head_only_sgd"),
    (PLUGINS_PAGE, "A strategy plugin", "nearest_mean"),
])
def test_strategy_example_trains_the_head(page, heading, strategy, shapes_plugin, write_grid, cli, tmp_path):
    save_example(page, heading, shapes_plugin)  # beside the dataset example: tiny data, fast
    grid = write_grid(GRID.format(name="example", strategy=strategy, dataset="shapes"))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results", "--plugins-dir", shapes_plugin)
    assert code == 0, err
    record = only_record(tmp_path / "results", "example")
    assert record["status"] == "ok", record.get("error")
    assert record["trainable_params"] == 256 * 3 + 3  # the head of test_efficientnet, 3 shapes


def test_readme_example_shuffles_each_seed_and_epoch_its_own_way(write_grid, tmp_path):
    """Two seeds of a grid are two draws of the batch order, not one order twice; a rerun of a
    seed is the same draw."""
    from tlbench.grid import load_grid
    from tlbench.plugins import load_registry
    from tlbench.runner import Runner

    folder = save_example(ROOT / "README.md", "A plugin", tmp_path / "plugins").parent
    registry = load_registry(str(folder))
    grid = load_grid(str(write_grid("""
        name = "orders"
        backbones = ["test_efficientnet"]
        strategies = ["head_only_sgd"]
        datasets = ["faces"]
        seeds = [0, 1]
        [settings]
        image_size = 16
        epochs = 2
        pretrained = false
    """)), registry)  # the split is split_seed's: every seed trains on the same images

    def labels_served(cell) -> list[list[int]]:
        """The training labels in the order the example's fit was served them, one list an epoch."""
        setup = Runner(registry, tmp_path).setup(cell)
        served, batches = [], setup.train.batches

        def recording(*args, **kwargs):
            served.append([])
            for x, y in batches(*args, **kwargs):
                served[-1] += y.tolist()
                yield x, y

        setup.train.batches = recording
        setup.strategy.fit(setup.model, setup.train, setup.val, setup.ctx)
        return served

    seed_0, seed_1 = grid.cells
    first = labels_served(seed_0)
    assert len(first) == 2 and first[0] != first[1]  # each epoch its own order
    other = labels_served(seed_1)
    assert sorted(other[0]) == sorted(first[0]) and other != first  # the same images, another order
    assert labels_served(seed_0) == first


def test_score_example_ranks_with_its_grid_table(shapes_plugin, write_grid, cli, tmp_path):
    """The score of docs/plugins.md: `rank` runs it with the option of its [score.NAME] table,
    and a bad value is one line, exit 2, before anything runs."""
    save_example(PLUGINS_PAGE, "A score plugin", shapes_plugin)
    base = GRID.format(name="scored", strategy="linear_probe", dataset="shapes")

    def centroid_fit(table):
        grid = write_grid(base + table)
        code, out, err = cli("rank", "--grid", grid, "--results", tmp_path / "r", "--plugins-dir", shapes_plugin,
                             "--scores", "centroid_fit", "-q")
        assert code == 0, err
        ranking = json.loads((tmp_path / "r" / "scored" / "rank.json").read_text())
        (pair,) = ranking["pairs"]
        return ranking["score_options"]["centroid_fit"], pair["scores"]["centroid_fit"]

    default_options, default = centroid_fit("")
    sharp_options, sharp = centroid_fit("[score.centroid_fit]\ntemperature = 0.05\n")
    assert default_options == {"temperature": 0.1} and sharp_options == {"temperature": 0.05}
    assert default < 0 and sharp < 0 and sharp != default  # log-probabilities, at two temperatures
    grid = write_grid(base + "[score.centroid_fit]\ntemperature = 0\n")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "r", "--plugins-dir", shapes_plugin)
    assert code == 2 and err.strip() == "error: [score.centroid_fit]: temperature must be positive, got 0.0"
