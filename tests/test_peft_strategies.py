"""bitfit, lora, knn_probe and l2sp train exactly the parameters they claim, and report them."""

import sys

import pytest
import torch

from tlbench.grid import load_grid
from tlbench.runner import Runner, count_parameters


# -- bitfit ------------------------------------------------------------------------------------


def test_bitfit_trains_every_bias_and_the_head_only(small_cell, cell_tools):
    cell_setup, before = small_cell("bitfit")
    assert len(cell_setup.train) == 80
    names = {n for n, _ in cell_setup.model.named_parameters()}
    model = cell_tools.fit(cell_setup)
    biases = {n for n in names if n.endswith(".bias")}
    assert cell_tools.trainable_names(model) == biases | {"classifier.weight"}
    # test_efficientnet: its convolutions have no bias; BatchNorm shifts (bn*.bias) and SE biases do
    assert "bn1.bias" in biases and "blocks.3.0.se.conv_reduce.bias" in biases
    assert count_parameters(model) == (4_174, 101_766)
    touched = cell_tools.changed(model, before)
    assert "bn1.bias" in touched and "classifier.weight" in touched
    # norm scales, every weight but the head's and every BatchNorm statistic are exactly as before
    assert touched == {n for n in biases if n in touched} | {"classifier.weight"}
    assert not any("running" in k for k in touched)


def test_bitfit_trains_the_attention_and_mlp_biases_of_a_vision_transformer(setup_cell, cell_tools):
    cell_setup, _ = setup_cell("bitfit", backbone="test_vit", dataset="faces")
    model = cell_tools.fit(cell_setup)
    trained = cell_tools.trainable_names(model)
    assert "blocks.0.attn.qkv.bias" in trained and "blocks.0.norm1.bias" in trained
    assert "blocks.0.norm1.weight" not in trained and "cls_token" not in trained
    assert trained == {n for n, _ in model.named_parameters() if n.endswith(".bias")} | {"head.weight"}


# -- lora --------------------------------------------------------------------------------------


ADAPTED = ["blocks.1.0.conv_pwl", "blocks.2.0.conv_pwl", "blocks.3.0.conv_pw", "blocks.3.0.se.conv_reduce",
           "blocks.3.0.se.conv_expand", "blocks.3.0.conv_pwl", "blocks.4.0.conv_pw", "blocks.4.0.se.conv_reduce",
           "blocks.4.0.se.conv_expand", "blocks.4.0.conv_pwl", "conv_head"]


def test_lora_adapts_every_1x1_conv_and_trains_adapters_and_head_only(small_cell, cell_tools):
    cell_setup, before = small_cell("lora", "[strategy.lora]\nrank = 4\n")
    assert len(cell_setup.train) == 80 and cell_setup.strategy.options.rank == 4
    model = cell_tools.fit(cell_setup)
    expected = {f"{m}.lora_{ab}.default.weight" for m in ADAPTED for ab in "AB"}
    expected |= {"classifier.weight", "classifier.bias"}
    assert cell_tools.trainable_names(model) == expected
    named = dict(model.named_parameters())
    adapters = sum(named[n].numel() for n in expected if ".lora_" in n)
    # rank 4: A is (4, in, 1, 1), B is (out, 4, 1, 1), so 4 * (in + out) per layer
    modules = dict(model.named_modules())
    assert adapters == sum(4 * (modules[m].base_layer.in_channels + modules[m].base_layer.out_channels)
                           for m in ADAPTED)
    assert count_parameters(model)[0] == adapters + 256 * 10 + 10
    assert cell_setup.ctx.info["adapter_params"] == adapters
    assert cell_setup.ctx.info["adapted_modules"] == len(ADAPTED)
    # the pretrained weights of layers without adapters and every BatchNorm statistic are untouched
    touched = cell_tools.changed(model, before)
    assert "conv_stem.weight" not in touched and not any("running" in k for k in touched)
    # the adapted layers' weights now hold the merged update W + (alpha / rank) B A
    assert {f"{m}.weight" for m in ADAPTED} <= touched
    assert touched - {f"{m}.weight" for m in ADAPTED} == {"classifier.weight", "classifier.bias"}


def test_lora_is_merged_for_scoring_and_merging_changes_nothing_but_speed(setup_cell, cell_tools):
    from peft.tuners.lora import LoraLayer

    cell_setup, _ = setup_cell("lora")
    model = cell_tools.fit(cell_setup)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == len(ADAPTED) and all(layer.merged for layer in layers)
    x, _ = next(iter(cell_setup.val.batches(16)))
    merged = model(x)
    for layer in layers:
        layer.unmerge()
    assert torch.allclose(merged, model(x), atol=1e-4)  # adapters applied on the fly: same output
    assert cell_setup.ctx.info["val_top1"] > 0.15  # it learnt something (10 classes)


def test_lora_targets_option_selects_layers_by_pattern(small_cell, cell_tools):
    cell_setup, _ = small_cell("lora", '[strategy.lora]\ntargets = ["conv_head", "blocks.4.*.conv_p*"]\n')
    model = cell_tools.fit(cell_setup)
    adapted = {n.split(".lora_")[0] for n in cell_tools.trainable_names(model) if ".lora_" in n}
    assert adapted == {"conv_head", "blocks.4.0.conv_pw", "blocks.4.0.conv_pwl"}


def test_lora_targets_a_vision_transformer_linear_layers(setup_cell, cell_tools):
    cell_setup, _ = setup_cell("lora", backbone="test_vit", dataset="faces")
    model = cell_tools.fit(cell_setup)
    adapted = {n.split(".lora_")[0] for n in cell_tools.trainable_names(model) if ".lora_" in n}
    blocks = {n.split(".")[1] for n in adapted}
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"} <= adapted
    assert len(adapted) == 4 * len(blocks) and "head" not in adapted


def test_lora_target_matching_nothing_names_real_layers(small_cell, cell_tools):
    cell_setup, _ = small_cell("lora", '[strategy.lora]\ntargets = ["attn.qkv"]\n')
    with pytest.raises(ValueError, match=r"'attn.qkv' matches no Linear.*conv_stem"):
        cell_tools.fit(cell_setup)


def test_lora_without_peft_is_a_grid_error_naming_the_install(write_grid, tiny_settings, cli, monkeypatch):
    grid = write_grid(f"""
        name = "nopeft"
        backbones = ["test_efficientnet"]
        strategies = ["lora"]
        datasets = ["digits"]
        {tiny_settings}
    """)
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError, as if not installed
    code, _, err = cli("run", "--grid", grid, "--results", grid.parent / "r")
    assert code == 2, err
    assert "pip install 'tlbench[peft]'" in err and "Traceback" not in err
    assert not (grid.parent / "r").exists()  # said before anything ran


# -- knn_probe ---------------------------------------------------------------------------------


def test_knn_probe_trains_nothing_and_shares_the_linear_probe_feature_cache(setup_cell, cell_tools):
    probe_setup, _ = setup_cell("linear_probe")
    cell_tools.fit(probe_setup)
    assert probe_setup.ctx.info["feature_cache"] == "miss"
    cell_setup, before = setup_cell("knn_probe")
    model = cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["feature_cache"] == "hit"
    assert count_parameters(model)[0] == 0
    assert count_parameters(model)[1] == 101_766 - (256 * 10 + 10)  # the unused random head is gone
    assert type(model) is type(cell_setup.model)  # the head in the network's own classifier slot
    assert cell_tools.changed(model, {k: v for k, v in before.items() if not k.startswith("classifier.")}) == set()
    assert cell_setup.ctx.info["memory"] == len(cell_setup.train)
    assert cell_setup.ctx.info["val_top1"] > 0.5


def test_knn_probe_votes_are_the_logits_the_core_scores(small_cell, cell_tools):
    cell_setup, _ = small_cell("knn_probe", "[strategy.knn_probe]\nk = 1\n")
    model = cell_tools.fit(cell_setup).eval()
    x, y = next(iter(cell_setup.train.batches(64)))
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (64, 10)
    # with k = 1 each training image is its own nearest neighbour: one vote, for its own class
    assert torch.equal(logits.argmax(1), y) and torch.equal((logits > 0).sum(1), torch.ones(64, dtype=torch.long))


def test_a_knn_head_stays_outside_a_network_whose_classifier_gets_other_features():
    from tlbench_plugins.machinery.knn import KnnHead, into_classifier_slot

    class Doubled(torch.nn.Module):  # its classifier's output is scaled: not head(pre-logits)
        def __init__(self):
            super().__init__()
            self.body, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Identity()

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, x, pre_logits=False):
            x = x.mean((2, 3))
            return x if pre_logits else 2 * self.fc(x)

        def get_classifier(self):
            return self.fc

    model = Doubled()
    slot = model.fc
    head = KnnHead(torch.randn(6, 4), torch.arange(6) % 3, num_classes=3, k=2, temperature=0.1)
    assert not into_classifier_slot(model, head, torch.randn(2, 3, 8, 8))
    assert model.fc is slot


def test_weighted_votes_by_hand():
    from tlbench_plugins.machinery.knn import weighted_votes

    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[0.8, 0.6]])  # cosine 0.8 with rows 0 and 1, 0.6 with row 2
    votes = weighted_votes(query, memory, labels, num_classes=3, k=2, temperature=0.1)
    weight = torch.exp(torch.tensor((0.96 - 1.0) / 0.1))  # row 1: 0.6*0.8 + 0.8*0.6 = 0.96
    assert torch.allclose(votes, torch.tensor([[torch.exp(torch.tensor(-2.0)), weight, 0.0]]))
    # leave-one-out: row 1 asked about itself votes with rows 0 and 2 only
    votes = weighted_votes(memory[1:2], memory, labels, 3, k=2, temperature=1.0, itself=torch.tensor([1]))
    assert votes[0, 0] == pytest.approx(torch.exp(torch.tensor(-0.4)).item())
    assert votes[0, 1] == pytest.approx(torch.exp(torch.tensor(-0.2)).item())


def test_knn_probe_k_list_is_selected_on_validation_by_the_harness(write_grid, registry, tmp_path, tiny_settings):
    grid = write_grid(f"""
        name = "k"
        backbones = ["test_efficientnet"]
        strategies = ["knn_probe"]
        datasets = ["digits"]
        {tiny_settings}
        [strategy.knn_probe]
        k = [1, 10]
    """)
    record = Runner(registry, tmp_path).run_cell(load_grid(str(grid), registry).cells[0])
    assert record["status"] == "ok", record.get("traceback")
    assert [c["options"]["k"] for c in record["candidates"]] == [1, 10]
    vals = [c["val_top1"] for c in record["candidates"]]
    assert record["options"]["k"] == [1, 10][vals.index(max(vals))]
    assert 0 < max(vals) < 1  # validation images are not in the memory: no free self-match
    assert record["trainable_params"] == 0


# -- l2sp --------------------------------------------------------------------------------------


def test_l2sp_trains_everything_and_stays_nearer_the_pretrained_weights(small_cell, cell_tools):
    loose, _ = small_cell("l2sp", "[strategy.l2sp]\nalpha = 0.0\nbeta = 0.0\nlr = 0.01\n")
    tight, _ = small_cell("l2sp", "[strategy.l2sp]\nalpha = 50.0\nlr = 0.01\n")
    model = cell_tools.fit(tight)
    assert cell_tools.trainable_names(model) == {n for n, _ in model.named_parameters()}
    assert count_parameters(model) == (101_766, 101_766)
    cell_tools.fit(loose)
    drifts = tight.ctx.info["relative_drift"], loose.ctx.info["relative_drift"]
    assert drifts[0] < 0.5 * drifts[1], drifts


def test_l2sp_without_penalties_is_full_finetune_without_weight_decay(small_cell, cell_tools):
    l2sp, _ = small_cell("l2sp", "[strategy.l2sp]\nalpha = 0.0\nbeta = 0.0\n")
    full, _ = small_cell("full_finetune", "[strategy.full_finetune]\nweight_decay = 0.0\n")
    a, b = cell_tools.fit(l2sp).state_dict(), cell_tools.fit(full).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
