"""The linear probe's feature cache: hits, misses, invalidation; selection on validation only."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tlbench.grid import load_grid
from tlbench.runner import Runner


@pytest.fixture
def probe_cell(write_grid, registry, tmp_path, tiny_settings):
    def make(image_size=32, seed=0):
        path = write_grid(f"""
            name = "cache"
            backbones = ["test_efficientnet"]
            strategies = ["linear_probe"]
            datasets = ["faces"]
            seeds = [{seed}]
            {tiny_settings.replace("image_size = 32", f"image_size = {image_size}")}
        """)
        return load_grid(str(path), registry).cells[0]

    return make


def run_probe(registry, tmp_path, cell):
    cell_setup = Runner(registry, tmp_path).setup(cell)
    model = cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)
    return cell_setup, model.get_classifier().weight.detach().clone()


def cache_files(ctx):
    return sorted((Path(ctx.cache_dir) / "features").glob("*.pt"))


def test_second_run_hits_the_cache_and_fits_the_same_probe(probe_cell, registry, tmp_path):
    first, head_cold = run_probe(registry, tmp_path, probe_cell())
    second, head_warm = run_probe(registry, tmp_path, probe_cell())
    assert first.ctx.info["feature_cache"] == "miss"
    assert second.ctx.info["feature_cache"] == "hit"
    assert len(cache_files(first.ctx)) == 2  # train and val
    assert torch.allclose(head_cold, head_warm, atol=1e-5)


def test_cache_false_extracts_every_time_and_writes_nothing(setup_cell):
    for _ in range(2):
        cell_setup, _ = setup_cell("linear_probe", "[strategy.linear_probe]\ncache = false\n")
        cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)
        assert cell_setup.ctx.info["feature_cache"] == "off"
        assert cache_files(cell_setup.ctx) == []


def test_a_fit_on_cached_features_reports_no_images_per_second(probe_cell, registry, tmp_path):
    """A warm probe draws no images: its record has no rate (not 0, which tables would rank
    slowest), and the leaderboard shows none."""
    from tlbench.report.views import fmt_rate

    cold, warm = (Runner(registry, tmp_path).run_cell(probe_cell()) for _ in range(2))
    assert (cold["strategy_info"]["feature_cache"], warm["strategy_info"]["feature_cache"]) == ("miss", "hit")
    assert cold["train_samples_per_s"] > 0
    assert warm["status"] == "ok" and warm["train_samples_per_s"] is None
    assert fmt_rate(warm["train_samples_per_s"]) == "-"


def test_anything_that_changes_features_is_a_miss(probe_cell, registry, tmp_path):
    run_probe(registry, tmp_path, probe_cell())
    resized, _ = run_probe(registry, tmp_path, probe_cell(image_size=40))
    assert resized.ctx.info["feature_cache"] == "miss"
    reseeded, _ = run_probe(registry, tmp_path, probe_cell(seed=5))  # random weights differ by seed
    assert reseeded.ctx.info["feature_cache"] == "miss"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_labels"])
def test_corrupt_or_stale_entries_are_set_aside_and_rebuilt(probe_cell, registry, tmp_path, damage):
    first, head = run_probe(registry, tmp_path, probe_cell())
    for path in cache_files(first.ctx):
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:100])
        elif damage == "garbage":
            path.write_bytes(b"not a tensor file")
        else:
            entry = torch.load(path, weights_only=True)
            entry["labels"] = torch.zeros_like(entry["labels"])
            torch.save(entry, path)
    again, head_again = run_probe(registry, tmp_path, probe_cell())
    assert again.ctx.info["feature_cache"] == "miss"
    assert len(list((Path(again.ctx.cache_dir) / "features" / "corrupt").iterdir())) == 2  # set aside
    assert torch.allclose(head, head_again, atol=1e-5)
    third, _ = run_probe(registry, tmp_path, probe_cell())
    assert third.ctx.info["feature_cache"] == "hit"  # the rebuilt entries are good


def test_probe_selection_never_touches_test_images(probe_cell, registry, tmp_path, monkeypatch):
    from tlbench.frozen import features

    seen = []
    original = features.pooled_features
    monkeypatch.setattr(features, "pooled_features", lambda extraction, splits, ctx: seen.extend(
        set(split.indices.tolist()) for split in splits) or original(extraction, splits, ctx))
    cell_setup, _ = run_probe(registry, tmp_path, probe_cell())
    test = set(cell_setup.test.indices.tolist())
    assert len(seen) == 2 and all(not (indices & test) for indices in seen)
    path = cell_setup.ctx.info["l2_path"]
    assert cell_setup.ctx.info["l2"] == max(path, key=lambda step: step[1])[0]
    assert [step[0] for step in path] == sorted((step[0] for step in path), reverse=True)


def test_images_replaced_in_place_are_a_miss_and_score_as_a_fresh_cache_would(write_grid, registry, tmp_path,
                                                                              tiny_settings):
    """Same file names, same count, other pixels: the cache is keyed by the files' content
    (Images.content), so neither features nor a score of the old images are reused."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"

    def photos(shade_of):
        for c, name in enumerate(("ant", "bee")):
            (folder / name).mkdir(parents=True, exist_ok=True)
            for i in range(12):
                pixels = np.full((8, 8, 3), shade_of(c, i), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / name / f"{i}.png")

    grid = write_grid(f"""
        name = "replaced"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["folder"]
        {tiny_settings}
        [dataset.folder]
        path = "{folder}"
    """)

    def run(cache):
        cell = load_grid(str(grid), registry).cells[0]
        return Runner(registry, tmp_path / "results", cache_dir=str(cache)).run_cell(cell)

    photos(lambda c, i: 40 + 150 * c + i)  # the classes differ in brightness
    assert run(tmp_path / "cache")["strategy_info"]["feature_cache"] == "miss"
    photos(lambda c, i: 120 + i % 2)  # the same files, rewritten: nothing tells the classes apart
    again, fresh = run(tmp_path / "cache"), run(tmp_path / "fresh-cache")
    assert again["strategy_info"]["feature_cache"] == "miss"
    assert again["top1"] == fresh["top1"]


def test_a_full_disk_skips_the_cache_write_with_one_warning(probe_cell, registry, tmp_path, monkeypatch, capsys):
    """The features were computed: a cache that cannot keep them (ENOSPC) costs the next cell an
    extraction, said once, not this cell its result."""
    import errno
    import os

    from tlbench.frozen import cache

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.os, "fsync", no_space)
    monkeypatch.setattr(cache, "_WARNED", set())
    record = Runner(registry, tmp_path).run_cell(probe_cell())
    assert record["status"] == "ok", record.get("error")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "feature cache" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]
    assert list((Path(os.environ["TLBENCH_CACHE_DIR"]) / "features").glob("*")) == []


def test_a_warm_cache_probe_decodes_no_image_it_fits_on(probe_cell, registry, tmp_path, monkeypatch):
    """A split decodes its images when a batch is asked for, not when the cell is set up: a
    cold probe decodes each of the cell's images once; a warm one (a fresh process, as a
    Runner's data is its own) reads train's and val's features from the cache and decodes
    none of their images; scoring reads the test split's features from the cache and decodes
    only the few images the network checks them on. Its record is the cold one's."""
    from tlbench import decoding
    from tlbench.cell_data import cell_splits
    from tlbench.frozen.scoring import SPOT_IMAGES

    decoded = []
    real = decoding.decode_all
    monkeypatch.setattr(decoding, "decode_all", lambda samples, rows, *args, **kwargs:
                        decoded.extend(rows.tolist()) or real(samples, rows, *args, **kwargs))
    cell = probe_cell()
    cold = Runner(registry, tmp_path).run_cell(cell)
    runner = Runner(registry, tmp_path)
    splits = cell_splits(cell, runner.data.load_images(cell))
    assert sorted(decoded) == sorted(np.concatenate([splits.train, splits.val, splits.test]).tolist())

    decoded.clear()
    fitted, _ = run_probe(registry, tmp_path, cell)
    assert fitted.ctx.info["feature_cache"] == "hit" and decoded == []  # the whole fit: nothing
    warm = runner.run_cell(cell)
    assert warm["strategy_info"]["feature_cache"] == "hit"
    assert warm["scoring"]["cache"] == "hit" and cold["scoring"]["cache"] == "miss"
    # scoring reads the test features from the cache too; the network itself checks them on its
    # first test images, the only ones decoded
    assert decoded == splits.test[:SPOT_IMAGES].tolist()
    timed = {"train_s", "eval_s", "run_s", "started_at", "finished_at", "peak_mem_mb", "train_samples_per_s",
             "strategy_info", "scoring"}
    assert {k: v for k, v in warm.items() if k not in timed} == {k: v for k, v in cold.items() if k not in timed}
