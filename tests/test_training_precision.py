"""The shared training loop and frozen extraction under the precisions and options a GPU brings,
run on the CPU: fp16 with loss scaling, torch.compile with its time counted alike in every cell,
and frozen features in fp32 whatever the cell's precision."""

import pytest
import torch

SMALL = """
train_size = 60
test_size = 20
"""


def fitted(cell_setup):
    return cell_setup.strategy.fit(cell_setup.model, cell_setup.train, cell_setup.val, cell_setup.ctx)


def test_fp16_training_scales_the_loss(setup_cell):
    cell_setup, before = setup_cell("full_finetune", SMALL)
    cell_setup.ctx.precision = "fp16"  # as on a GPU before compute capability 8.0
    model = fitted(cell_setup)
    info = cell_setup.ctx.info
    assert 0 < info["loss_scale"] <= 2.0 ** 16  # the scaler ran (it starts at 2^16 and backs off)
    after = model.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items() if v.is_floating_point())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp32_and_bf16_need_no_loss_scale(setup_cell):
    cell_setup, _ = setup_cell("full_finetune", SMALL)
    fitted(cell_setup)
    assert "loss_scale" not in cell_setup.ctx.info


def test_every_compiled_cell_pays_and_records_its_own_compilation(setup_cell, monkeypatch):
    """Dynamo's caches live as long as the process: without a reset per cell, the second cell of
    an architecture would compile nothing and look faster than the first."""
    compile_for_real = torch.compile
    # the eager backend: dynamo traces and counts graphs as on a GPU, without a C++ compiler
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compile_for_real(model, backend="eager"))
    options = SMALL + "[strategy.full_finetune]\ncompile = true\n"
    for _ in range(2):
        cell_setup, _ = setup_cell("full_finetune", options)
        fitted(cell_setup)
        info = cell_setup.ctx.info
        assert info["compiled_graphs"] >= 1 and info["compile_s"] > 0, info


def test_frozen_features_are_fp32_under_a_half_precision_cell(setup_cell):
    from tlbench.frozen.features import frozen_features

    cell_setup, _ = setup_cell("linear_probe", SMALL)
    ctx, model, train = cell_setup.ctx, cell_setup.model.eval(), cell_setup.train
    ctx.precision = "bf16"  # CPU autocast computes bf16 as a GPU's would
    (features,), _ = frozen_features(model, [train], ctx, use_cache=False)
    with torch.no_grad():
        reference = torch.cat([model.forward_head(model.forward_features(x), pre_logits=True)
                               for x, _ in train.batches(64)])
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, reference, rtol=1e-4, atol=1e-5)
    with torch.no_grad(), ctx.autocast():  # what the features were before: visibly different
        rounded = torch.cat([model.forward_head(model.forward_features(x), pre_logits=True).float()
                             for x, _ in train.batches(64)])
    assert not torch.allclose(rounded, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_feature_cache_key_names_the_extraction_precision_not_the_cells(setup_cell, precision):
    from tlbench.frozen.cache import cache_key

    cell_setup, _ = setup_cell("linear_probe", SMALL)
    cell_setup.ctx.precision = precision
    assert cache_key(cell_setup.model, cell_setup.train, cell_setup.ctx, "pre_logits")["precision"] == "fp32"
