"""Each strategy trains exactly the parameters it claims to, and leaves frozen parts untouched."""

import pytest
import torch

from tlbench.grid import load_grid
from tlbench.runner import Runner, count_parameters

from conftest import TINY_SETTINGS


@pytest.fixture
def setup_cell(write_grid, registry, tmp_path):
    """(setup, snapshot) for one cell of test_efficientnet on digits at 32 px."""

    def make(strategy, options=""):
        path = write_grid(f"""
            name = "s"
            backbones = ["test_efficientnet"]
            strategies = ["{strategy}"]
            datasets = ["digits"]
            {TINY_SETTINGS}
            {options}
        """)
        cell = load_grid(str(path), registry).cells[0]
        cell_setup = Runner(registry, tmp_path).setup(cell)
        snapshot = {k: v.clone() for k, v in cell_setup.model.state_dict().items()}
        return cell_setup, snapshot

    return make


def fit(cell_setup):
    return cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)


def trainable_names(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def changed(model, snapshot):
    return {k for k, v in model.state_dict().items() if not torch.equal(v, snapshot[k])}


def test_linear_probe_trains_only_the_head(setup_cell):
    cell_setup, before = setup_cell("linear_probe")
    model = fit(cell_setup)
    assert trainable_names(model) == {"classifier.weight", "classifier.bias"}
    assert count_parameters(model)[0] == 256 * 10 + 10  # test_efficientnet: 256 features, 10 digits
    # frozen BatchNorm statistics and weights are exactly as before; the head was fitted
    assert changed(model, before) == {"classifier.weight", "classifier.bias"}
    assert cell_setup.ctx.info["feature_dim"] == 256


def test_partial_unfreeze_trains_the_last_stages_and_head(setup_cell):
    cell_setup, before = setup_cell("partial_unfreeze", "[strategy.partial_unfreeze]\nblocks = 2\n")
    model = fit(cell_setup)
    names = {n for n, _ in model.named_parameters()}
    expected = {n for n in names if n.startswith(("blocks.3.", "blocks.4.", "conv_head.", "bn2.", "classifier."))}
    assert trainable_names(model) == expected
    assert count_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    touched = changed(model, before)
    frozen_buffers = {k for k in before if k.startswith(("conv_stem.", "bn1.", "blocks.0.", "blocks.1.", "blocks.2."))}
    assert frozen_buffers and not (touched & frozen_buffers)  # frozen BN running stats included
    assert "blocks.4.0.bn1.running_mean" in touched  # trainable BN layers do update


def test_partial_unfreeze_with_more_blocks_than_stages_fails_clearly(setup_cell, registry, tmp_path):
    cell_setup, _ = setup_cell("partial_unfreeze", "[strategy.partial_unfreeze]\nblocks = 40\n")
    with pytest.raises(ValueError, match="blocks = 40.*6 stages"):
        fit(cell_setup)


def test_full_finetune_trains_everything(setup_cell):
    cell_setup, before = setup_cell("full_finetune")
    model = fit(cell_setup)
    assert trainable_names(model) == {n for n, _ in model.named_parameters()}
    assert count_parameters(model) == (101_766, 101_766)  # test_efficientnet with 10 classes
    assert "conv_stem.weight" in changed(model, before)


def test_strategies_never_receive_the_test_split(setup_cell):
    cell_setup, _ = setup_cell("linear_probe")
    train, val, test = (set(s.indices.tolist()) for s in (cell_setup.train, cell_setup.val, cell_setup.test))
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(train | val | test) == 1797
