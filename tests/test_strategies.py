"""Each strategy trains exactly the parameters it claims to, and leaves frozen parts untouched."""

import re
from pathlib import Path

import pytest
import torch

from tlbench.grid import load_grid
from tlbench.runner import Runner, count_parameters


def test_small_cell_trains_on_a_small_sample(small_cell):
    cell_setup, _ = small_cell("full_finetune", "[strategy.full_finetune]\nlr = 0.01\n")
    assert (len(cell_setup.train), len(cell_setup.val)) == (80, 20)
    assert cell_setup.strategy.options.lr == 0.01


def test_linear_probe_trains_only_the_head(small_cell, cell_tools):
    cell_setup, before = small_cell("linear_probe")
    model = cell_tools.fit(cell_setup)
    assert cell_tools.trainable_names(model) == {"classifier.weight", "classifier.bias"}
    assert count_parameters(model)[0] == 256 * 10 + 10  # test_efficientnet: 256 features, 10 digits
    # frozen BatchNorm statistics and weights are exactly as before; the head was fitted
    assert cell_tools.changed(model, before) == {"classifier.weight", "classifier.bias"}
    assert cell_setup.ctx.info["feature_dim"] == 256
    # it learns from the training split alone, as the strategies that train do (refit_on_val)
    assert not cell_setup.ctx.selecting and cell_setup.ctx.info["refit_on_val"] is False


def test_partial_unfreeze_trains_the_last_stages_and_head(small_cell, cell_tools):
    cell_setup, before = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\nblocks = 2\n")
    model = cell_tools.fit(cell_setup)
    names = {n for n, _ in model.named_parameters()}
    expected = {n for n in names if n.startswith(("blocks.3.", "blocks.4.", "conv_head.", "bn2.", "classifier."))}
    assert cell_tools.trainable_names(model) == expected
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    touched = cell_tools.changed(model, before)
    frozen_buffers = {k for k in before if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2."))}
    assert frozen_buffers and not (touched & frozen_buffers)  # frozen BN running stats included
    assert "blocks.4.0.bn1.running_mean" in touched  # trainable BN layers do update


def test_partial_unfreeze_with_more_blocks_than_stages_fails_clearly(small_cell, cell_tools):
    cell_setup, _ = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\nblocks = 40\n")
    with pytest.raises(ValueError, match="blocks = 40.*6 stages"):
        cell_tools.fit(cell_setup)


def test_full_finetune_trains_everything(small_cell, cell_tools):
    cell_setup, before = small_cell("full_finetune")
    model = cell_tools.fit(cell_setup)
    assert cell_tools.trainable_names(model) == {n for n, _ in model.named_parameters()}
    assert count_parameters(model) == (101_766, 101_766)  # test_efficientnet with 10 classes
    assert "conv_stem.weight" in cell_tools.changed(model, before)


def test_strategies_never_receive_the_test_split(setup_cell):
    cell_setup, _ = setup_cell("linear_probe")
    train, val, test = (set(s.indices.tolist()) for s in (cell_setup.train, cell_setup.val, cell_setup.test))
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(train | val | test) == 1797


def test_partial_unfreeze_trains_on_cached_boundary_activations(small_cell, cell_tools):
    cell_setup, _ = small_cell("partial_unfreeze")
    cell_tools.fit(cell_setup)
    info = cell_setup.ctx.info
    assert info["path"] == "cached_activations" and info["boundary"] == "blocks.3"


def test_cached_and_full_forward_paths_train_the_same_model(setup_cell, cell_tools):
    # all of digits: after a few steps only, the BatchNorm running statistics have not caught
    # up with the biases AdamW walks on rounding noise (see below), and eval outputs differ
    cached, _ = setup_cell("partial_unfreeze")
    full, _ = setup_cell("partial_unfreeze", "[strategy.partial_unfreeze]\ncache_mb = 0\n")
    a, b = cell_tools.fit(cached).eval(), cell_tools.fit(full).eval()
    assert full.ctx.info["path"] == "full_forward" and "cache_mb = 0" in full.ctx.info["reason"]
    # The same function, compared by outputs: the cached activations come from the folded
    # network (equal up to rounding), and a bias whose effect the next train-mode BatchNorm
    # removes has no real gradient, so AdamW walks it on rounding noise alike on both paths.
    images, _ = next(iter(cached.val.batches(len(cached.val))))
    with torch.no_grad():
        logits_a, logits_b = a(images), b(images)
    assert (logits_a - logits_b).abs().max() < 1e-3 * logits_b.abs().max()
    weights = [k for k, p in a.named_parameters() if p.ndim > 1]
    assert max((a.get_parameter(k) - b.get_parameter(k)).abs().max().item() for k in weights) < 1e-4
    assert cached.ctx.info["val_top1"] == pytest.approx(full.ctx.info["val_top1"], abs=0.01)


def test_activations_over_the_memory_budget_go_to_disk_and_train_the_same_model(small_cell, cell_tools):
    """With cache_mb = 0 and a disk budget, the boundary activations live in a file under the
    cache dir, mapped into memory, and train what the in-memory cache trains. The file leaves
    the directory as soon as it is mapped, so not even a killed run leaves it behind."""
    in_memory, _ = small_cell("partial_unfreeze")
    on_disk, _ = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\ncache_mb = 0\ndisk_cache_mb = 100\n")
    folder = Path(on_disk.ctx.cache_dir) / "activations"
    mapped = []
    on_disk.ctx.progress = watching_mappings(on_disk.ctx.progress, folder, mapped)
    a, b = cell_tools.fit(in_memory), cell_tools.fit(on_disk)
    assert in_memory.ctx.info["storage"] == "memory"
    assert on_disk.ctx.info["path"] == "cached_activations" and on_disk.ctx.info["storage"] == "disk"
    assert on_disk.ctx.info["activations_mb"] == in_memory.ctx.info["activations_mb"] > 0
    assert any(mapped), "no activation file was mapped while the fit trained"
    assert list(folder.glob("*")) == []
    for name, p in a.named_parameters():
        assert torch.equal(p, b.get_parameter(name)), name


def watching_mappings(progress, folder: Path, mapped: list):
    """A ctx.progress that notes, at each loop it wraps, the files under ``folder`` that this
    process has mapped into memory (Linux lists them in /proc/self/maps, deleted or not)."""
    def watch(iterable, **kwargs):
        maps = Path("/proc/self/maps").read_text()
        mapped.append([line for line in maps.splitlines() if str(folder) in line])
        return progress(iterable, **kwargs)

    return watch


def test_activations_over_both_budgets_run_the_frozen_part_every_step(small_cell, cell_tools):
    cell_setup, _ = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\ncache_mb = 0\ndisk_cache_mb = 0\n")
    cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["path"] == "full_forward"
    reason = cell_setup.ctx.info["reason"]
    assert "cache_mb = 0 and > disk_cache_mb = 0 (raise either" in reason
    assert float(re.search(r"activations need ([\d.]+) MB", reason).group(1)) > 0  # small, not "0 MB"


def test_boundary_split_works_for_a_vision_transformer(write_grid, registry, tmp_path, cell_tools, tiny_settings):
    path = write_grid(f"""
        name = "vit"
        backbones = ["test_vit"]
        strategies = ["partial_unfreeze"]
        datasets = ["faces"]
        {tiny_settings.replace("image_size = 32", "image_size = 0")}
        train_size = 40
    """)
    cell_setup = Runner(registry, tmp_path).setup(load_grid(str(path), registry).cells[0])
    cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["path"] == "cached_activations"
    assert cell_setup.ctx.info["boundary"] == "blocks.4"


def test_augmentation_runs_the_frozen_part_every_step(small_cell, cell_tools):
    cell_setup, _ = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\naugment = true\n")
    cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["path"] == "full_forward"
    assert "augmentation" in cell_setup.ctx.info["reason"]


def test_scratch_starts_from_random_weights_even_when_pretrained_is_set(write_grid, registry, tmp_path):
    path = write_grid("""
        name = "scratch"
        backbones = ["efficientnet_lite0"]
        strategies = ["scratch", "full_finetune"]
        datasets = ["faces"]
    """)
    cells = load_grid(str(path), registry).cells
    runner = Runner(registry, tmp_path)
    weights = {c.strategy: runner.setup(c).facts["weights"] for c in cells}
    assert weights["scratch"] == "random"
    assert weights["full_finetune"].startswith("bundled:")


def test_lp_ft_fits_a_probe_then_trains_everything(small_cell, cell_tools):
    cell_setup, before = small_cell("lp_ft")
    model = cell_tools.fit(cell_setup)
    assert cell_tools.trainable_names(model) == {n for n, _ in model.named_parameters()}
    info = cell_setup.ctx.info
    assert 0 < info["probe_val_top1"] <= 1 and "l2" in info
    assert "conv_stem.weight" in cell_tools.changed(model, before)


def test_lp_ft_keeps_the_norm_statistics_its_probe_was_fitted_with(small_cell, cell_tools):
    """The probe saw features normalised by BatchNorm's running statistics; fine-tuning with
    batch statistics handed it other features and undid it (0.81 -> 0.33 on validation)."""
    cell_setup, before = small_cell("lp_ft")
    model = cell_tools.fit(cell_setup)
    moved = cell_tools.changed(model, before)
    assert "bn1.weight" in moved and "bn1.bias" in moved  # the norms' scale and shift train
    assert not {k for k in moved if k.endswith(("running_mean", "running_var"))}


def test_layer_decay_slows_stages_near_the_input(setup_cell):
    from tlbench_plugins.machinery.training import parameter_groups

    cell_setup, _ = setup_cell("full_finetune")
    model = cell_setup.model
    groups = parameter_groups(model, lr=1.0, weight_decay=0.1, layer_decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1.0
    assert lr_of[id(named["blocks.4.0.conv_pw.weight"])] == 0.5
    assert lr_of[id(named["conv_stem.weight"])] == 0.5 ** 6
    assert decay_of[id(named["conv_stem.weight"])] == 0.1 and decay_of[id(named["bn1.bias"])] == 0.0


def test_full_finetune_from_random_weights_normalises_by_the_batch(small_cell, cell_tools):
    """Its recipe keeps a pretrained network's BatchNorm statistics; a random network's (0 and 1)
    mean nothing, so a grid with pretrained = false trains on batch statistics, and says so."""
    cell_setup, before = small_cell("full_finetune")
    assert cell_setup.ctx.pretrained is False and cell_setup.strategy.options.norm_statistics == "keep"
    model = cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["norm_statistics"] == "update (random weights)"
    assert "bn1.running_mean" in cell_tools.changed(model, before)


def test_recomputed_norm_statistics_are_those_of_the_training_images(small_cell, cell_tools):
    """norm_statistics = "recompute" trains on batch statistics, then sets each BatchNorm's
    running mean to its inputs' mean over the training images with the final weights: the first
    norm's, the stem's output averaged over every training image and position."""
    import torch

    cell_setup, _ = small_cell("scratch", '[strategy.scratch]\nnorm_statistics = "recompute"')
    model = cell_tools.fit(cell_setup)
    model.eval()
    with torch.no_grad():
        stem = torch.cat([model.conv_stem(x) for x, _ in cell_setup.train.batches(64, device=cell_setup.ctx.device)])
    assert torch.allclose(model.bn1.running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model.bn1.momentum == 0.1  # the layer's own momentum is back for later use


def test_an_unknown_norm_statistics_is_refused():
    from tlbench_plugins.machinery.options import SupervisedOptions

    with pytest.raises(ValueError, match="update, keep, recompute"):
        SupervisedOptions(norm_statistics="frozen")


def test_a_disk_too_full_for_the_activations_file_trains_without_the_cache(small_cell, cell_tools, monkeypatch):
    """The activations' file gets its disk space before it is mapped: a disk that filled since the
    budget was checked is the full forward path with the reason, not a SIGBUS mid-fit."""
    import errno
    import os

    def no_space(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    on_disk, _ = small_cell("partial_unfreeze", "[strategy.partial_unfreeze]\ncache_mb = 0\ndisk_cache_mb = 100\n")
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(os, "ftruncate", no_space)
    cell_tools.fit(on_disk)
    assert on_disk.ctx.info["path"] == "full_forward"
    assert "No space left on device" in on_disk.ctx.info["reason"]
    assert list((Path(on_disk.ctx.cache_dir) / "activations").glob("*")) == []
