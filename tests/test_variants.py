"""Named variants (one plugin as several rows: `[dataset.NAME]` with `plugin = "hf"`) and
ablation rows (`rank = {ablate = [4, 16]}`): each is a row of its own everywhere results are
read, its record keeps the plugin it ran, and grids that use neither keep their cell ids."""

import csv
import glob
import json
from pathlib import Path

import numpy as np
import pytest

from tlbench.grid import build_grid, load_grid

ROOT = Path(__file__).parent.parent
CLASSES = ("red", "green", "blue")


def colour_images(values) -> dict:
    """{class: [8×8 RGB image]}: each class one bright channel, ``values`` its brightnesses."""
    rng = np.random.default_rng(0)
    images = {}
    for channel, name in enumerate(CLASSES):
        images[name] = []
        for value in values:
            pixels = rng.integers(0, 40, (8, 8, 3), dtype=np.uint8)
            pixels[..., channel] = value
            images[name].append(pixels)
    return images


def image_folder(folder: Path, values) -> Path:
    from PIL import Image

    for name, images in colour_images(values).items():
        (folder / name).mkdir(parents=True)
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def saved_hf_dataset(folder: Path, values) -> Path:
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    columns = {"image": [], "label": []}
    for label, images in enumerate(colour_images(values).values()):
        columns["image"] += [Image.fromarray(p) for p in images]
        columns["label"] += [label] * len(images)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    datasets.disable_progress_bars()
    try:
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns, features=features)}).save_to_disk(str(folder))
    finally:
        datasets.enable_progress_bars()
    return folder


SETTINGS = """
[settings]
image_size = 16
epochs = 1
batch_size = 16
pretrained = false
threads = 1
"""


def test_two_hf_two_folder_datasets_and_two_lora_variants_are_each_a_row_everywhere(tmp_path, write_grid, cli,
                                                                                     monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folders = {"hf_a": saved_hf_dataset(tmp_path / "hf-a", range(150, 210, 6)),
               "hf_b": saved_hf_dataset(tmp_path / "hf-b", range(100, 160, 6)),
               "folder_a": image_folder(tmp_path / "fa", range(150, 210, 6)),
               "folder_b": image_folder(tmp_path / "fb", range(100, 160, 6))}
    tables = "".join(f'[dataset.{name}]\nplugin = "{name.split("_")[0]}"\npath = "{path}"\n'
                     + ('test_split = ""\n' if name.startswith("hf") else "")  # the core draws one
                     for name, path in folders.items())
    grid = write_grid(f"""
        name = "variants"
        backbones = ["test_vit"]
        strategies = ["lora_r2", "lora_r4"]
        datasets = ["hf_a", "hf_b", "folder_a", "folder_b"]
        {SETTINGS}
        [strategy.lora_r2]
        plugin = "lora"
        rank = 2
        [strategy.lora_r4]
        plugin = "lora"
        rank = 4
        {tables}
    """)
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 0, err
    records = [json.loads(Path(f).read_text()) for f in glob.glob(str(results / "variants" / "records" / "*.json"))]
    rows = {(r["dataset"], r["strategy"]) for r in records}
    assert rows == {(d, s) for d in folders for s in ("lora_r2", "lora_r4")}  # every combination, once
    for r in records:
        assert r["status"] == "ok", r.get("error")
        assert r["variant_of"] == {"dataset": r["dataset"].split("_")[0], "strategy": "lora"}
        assert r["options"]["rank"] == int(r["strategy"][-1])
        assert r["dataset_options"]["path"] == str(folders[r["dataset"]])
        assert r["plugins"]["strategy"]["plugin"] == "strategies"  # the provenance of the plugin that ran
    assert len({r["run_id"] for r in records}) == 8
    # the variant's name is the row in `tlbench runs`, the tables and the exports
    code, listing, err = cli("runs", "--results", results)
    assert code == 0, err
    for dataset, strategy in rows:
        assert any(dataset in line and strategy in line for line in listing.splitlines())
    with open(results / "variants" / "leaderboard.csv", newline="") as handle:
        table = {(row["dataset"], row["strategy"]) for row in csv.DictReader(handle)}
    assert table == rows
    markdown = (results / "variants" / "leaderboard.md").read_text()
    assert all(f"### {dataset}" in markdown for dataset in folders)
    for dataset in folders:  # a LaTeX table each
        assert "lora\\_r2" in (results / "variants" / f"leaderboard_dataset-{dataset}.tex").read_text()
    # a rerun finds every cell done
    code, out, err = cli("run", "--grid", grid, "--results", results)
    assert code == 0 and "8 of 8 cells already have records" in err, err


def test_a_backbone_variant_creates_the_network_its_plugin_names(write_grid, registry, tmp_path):
    from tlbench.runner import Runner

    grid = load_grid(str(write_grid(f"""
        name = "b"
        backbones = ["tiny"]
        strategies = ["linear_probe"]
        datasets = ["digits"]
        {SETTINGS}
        [backbone.tiny]
        plugin = "test_efficientnet"
    """)), registry)
    (cell,) = grid.cells
    assert (cell.backbone, cell.plugin("backbone")) == ("tiny", "test_efficientnet")
    setup = Runner(registry, tmp_path).setup(cell)
    assert type(setup.model).__name__ == "EfficientNet"


def grid_of(registry, strategy_table: str, strategies=("lora",), source="g.toml"):
    import tomllib

    data = tomllib.loads(f'strategies = {json.dumps(list(strategies))}\n{strategy_table}')
    data.update(name="g", backbones=["test_vit"], datasets=["digits"], seeds=[0, 1])
    return build_grid(data, source, registry)


def test_an_ablation_gives_a_row_per_value_and_a_tuned_list_one_row(registry):
    ablated = grid_of(registry, "[strategy.lora]\nrank = {ablate = [4, 16]}\nlr = [1e-3, 3e-4]")
    assert ablated.strategies == ["lora[rank=4]", "lora[rank=16]"]
    assert len(ablated.cells) == 4  # 2 rows × 2 seeds
    for cell in ablated.cells:
        assert cell.plugin("strategy") == "lora" and cell.listed("strategy") == "lora"
        assert [c.rank for c in cell.strategy_candidates] == [int(cell.strategy[10:-1])] * 2  # lr still tuned
    tuned = grid_of(registry, "[strategy.lora]\nrank = [4, 16]")
    assert tuned.strategies == ["lora"] and len(tuned.cells) == 2
    assert [c.rank for c in tuned.cells[0].strategy_candidates] == [4, 16]
    two = grid_of(registry, "[strategy.lora]\nrank = {ablate = [4, 16]}\nalpha = {ablate = [8.0, 16.0]}")
    assert two.strategies == ["lora[rank=4,alpha=8.0]", "lora[rank=4,alpha=16.0]",
                              "lora[rank=16,alpha=8.0]", "lora[rank=16,alpha=16.0]"]
    assert len({c.config_id for c in two.cells}) == 4


def test_variant_cell_ids_differ_and_grids_without_variants_keep_theirs(registry):
    plain = grid_of(registry, "[strategy.lora]\nrank = 4")
    assert "variant_of" not in plain.cells[0].identity()
    named = grid_of(registry, '[strategy.r4]\nplugin = "lora"\nrank = 4\n[strategy.r4b]\nplugin = "lora"\nrank = 4',
                    strategies=("r4", "r4b"))
    ids = {c.strategy: c.run_id for c in named.cells if c.seed == 0}
    assert len(set(ids.values()) | {plain.cells[0].run_id}) == 3  # same options, three rows


@pytest.mark.parametrize("folder, grid", [("offline-default", None), ("transfer-zoo", "grids/transfer-zoo.toml"),
                                          ("epochs-curve", "grids/epochs-curve.toml")])
def test_the_published_grids_still_make_the_published_cell_ids(registry, folder, grid):
    cells = load_grid(grid and str(ROOT / grid), registry).cells
    published = {json.loads(Path(f).read_text())["run_id"] for f in glob.glob(str(ROOT / "results" / folder / "records" / "*.json"))}
    assert published and published == {c.run_id for c in cells}


def test_a_record_of_a_variant_rebuilds_its_cell_and_a_worker_finds_an_ablation_row(registry):
    from tlbench.cell_job import job_maker
    from tlbench.cell_record import base
    from tlbench.rebuild import rebuild
    from tlbench.worker import cell_of

    grid = grid_of(registry, '[strategy.small]\nplugin = "lora"\nrank = {ablate = [2, 4]}\nlr = [1e-3, 3e-4]',
                   strategies=("small", "linear_probe"))
    job_for = job_maker(grid, None, None)
    for cell in grid.cells:
        record = {**base(cell, registry), "candidates": [{"options": {**vars(c)}} for c in cell.strategy_candidates]}
        assert rebuild(json.loads(json.dumps(record)), registry, "r.json").run_id == cell.run_id
        job = json.loads(json.dumps(job_for(cell).__dict__))  # as a subprocess or Slurm task reads it
        from tlbench.cell_job import CellJob
        assert cell_of(CellJob(**job), registry).run_id == cell.run_id


def test_only_slices_an_ablation_row_by_its_name_commas_and_all(registry):
    from tlbench.slices import parse_only, slice_cells

    grid = grid_of(registry, "[strategy.lora]\nrank = {ablate = [4, 16]}\nalpha = {ablate = [8.0, 16.0]}")
    cells = slice_cells(grid, parse_only(["strategy=lora[rank=16,alpha=8.0],seed=1"]))
    assert [(c.strategy, c.seed) for c in cells] == [("lora[rank=16,alpha=8.0]", 1)]


@pytest.mark.parametrize("table, strategies, expected", [
    ('[strategy.r4]\nplugin = "loar"', ["r4"], "[strategy.r4] of 'g.toml': plugin = 'loar': Unknown strategy 'loar'. Did you mean: lora?"),
    ('[strategy.scratch]\nplugin = "lora"', ["scratch"], "'scratch' is itself a strategy plugin, which the name would hide"),
    ('[strategy.r4]\nplugin = "lora"\nrank = "four"', ["r4"], "Option 'rank' in [strategy.r4] must be int, got 'four'"),
    ('[strategy.r4]\nplugin = "lora"\nrnak = 4', ["r4"], "Unknown option 'rnak' in [strategy.r4]. Did you mean 'rank'?"),
    ('[strategy."lora[rank=4]"]\nplugin = "lora"\n[strategy.lora]\nrank = {ablate = [4, 8]}', ["lora[rank=4]", "lora"],
     "Two strategies of 'g.toml' have the name 'lora[rank=4]' (from 'lora[rank=4]' and 'lora')"),
    ('[strategy."my lora"]\nplugin = "lora"', ["my lora"], "Variant name 'my lora' in 'g.toml' is not a usable name"),
    ('[strategy.r4]\nplugin = 4', ["r4"], "'plugin' in [strategy.r4] of 'g.toml' must be the name of a strategy plugin"),
    ('[strategy.lora]\nrank = {ablate = []}', ["lora"], "the one table an option takes is {ablate = [...]}, a non-empty list"),
    ('[strategy.lora]\nrank = {tune = [4]}', ["lora"], "the one table an option takes is {ablate = [...]}"),
    ('[strategy.lora]\nrank = {ablate = [4, 4]}', ["lora"], "ablates a value twice"),
    ('[strategy.r4]\nrank = 4', ["r4"], "Unknown strategy 'r4'. Available: "),
])
def test_a_wrong_variant_or_ablation_is_one_clear_error(registry, table, strategies, expected):
    from tlbench.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        grid_of(registry, table, strategies=strategies)
    assert expected in str(caught.value)


def test_a_table_without_plugin_for_an_unknown_name_says_how_to_make_it_a_variant(registry):
    from tlbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[strategy\.r4\] configures it: .* plugin = \"PLUGIN\""):
        grid_of(registry, "[strategy.r4]\nrank = 4", strategies=("r4",))


def test_a_bad_variant_on_the_command_line_is_exit_2_one_line(write_grid, cli, tmp_path):
    grid = write_grid(f"""
        name = "bad"
        backbones = ["test_vit"]
        strategies = ["linear_probe"]
        datasets = ["colors_a"]
        {SETTINGS}
        [dataset.colors_a]
        plugin = "hff"
        path = "/nowhere"
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "r")
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: [dataset.colors_a] of {str(grid)!r}: plugin = 'hff': Unknown dataset 'hff'. "
                           "Did you mean: hf")
    assert not (tmp_path / "r").exists()
