"""BatchNorm folded into convolutions for frozen extraction: same features, original restored."""

import pytest
import timm
import torch
from torch import nn

from tlbench.frozen.folding import folded


def frozen(model: nn.Module) -> nn.Module:
    """``model`` frozen, in eval mode, with BatchNorm statistics and affine terms far from their
    defaults, so a wrong fold (or none) shows in the output."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def frozen_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return frozen(timm.create_model(name, num_classes=3))


def batchnorms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-4 * b.abs().max())


@torch.no_grad()
def fold_and_check(model: nn.Module, images: torch.Tensor, left: list, kept: tuple = ()) -> dict:
    """Fold ``model`` on ``images``: exactly the BatchNorms ``left`` stay, the modules named in
    ``kept`` are the same objects, the features are the unfolded ones. Returns what it logged."""
    logged = {}
    modules = [model.get_submodule(name) for name in kept]
    expected = model.forward_features(images)
    with folded(model, images, log=logged.update) as network:
        assert batchnorms(network) == left
        assert [network.get_submodule(name) for name in kept] == modules
        assert close(network.forward_features(images), expected)
    return logged


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet"])
def test_folded_network_computes_the_same_features_and_is_put_back(name):
    model = frozen_model(name)
    images = torch.randn(4, 3, 32, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model.modules())
    with torch.no_grad():
        expected = model.forward_features(images)
        with folded(model, images[:2]) as network:
            assert batchnorms(network) == []  # every conv + BatchNorm pair was folded
            got = network.forward_features(images)
    assert close(got, expected)
    assert list(model.modules()) == modules  # the very same module objects are back
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_original_modules_are_put_back_when_extraction_fails():
    model = frozen_model("test_efficientnet")
    modules = list(model.modules())
    with pytest.raises(RuntimeError, match="killed mid-extraction"):
        with folded(model, torch.randn(2, 3, 32, 32)) as network:
            assert batchnorms(network) == []
            raise RuntimeError("killed mid-extraction")
    assert list(model.modules()) == modules


def test_trainable_layers_are_left_as_they_are():
    model = frozen_model("test_efficientnet")
    last_stage = model.blocks[-1]
    for p in last_stage.parameters():
        p.requires_grad_(True)
    trainable_norms = batchnorms(last_stage)
    assert trainable_norms
    with torch.no_grad(), folded(model, torch.randn(2, 3, 32, 32)) as network:
        assert batchnorms(network) == trainable_norms
        assert network.blocks[-1] is last_stage


class ConvOutputUsedTwice(nn.Module):
    """conv -> BatchNorm, but the conv's output is also added back: folding would change it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward_features(self, x):
        y = self.conv(x)
        return self.norm(y) + y


def test_a_fold_that_would_change_the_output_is_not_used():
    model = frozen(ConvOutputUsedTwice())
    logged = fold_and_check(model, torch.randn(2, 3, 8, 8), left=[model.norm], kept=("conv", "norm"))
    assert logged == {"folded_batchnorms": 0}


def test_a_network_without_batchnorm_is_used_as_it_is():
    model = timm.create_model("test_vit", num_classes=3)
    for p in model.parameters():
        p.requires_grad_(False)
    modules = list(model.modules())
    with torch.no_grad(), folded(model, torch.randn(2, 3, 160, 160)) as network:
        assert network is model and list(network.modules()) == modules


class StandardisedThenPlain(nn.Module):
    """timm's StdConv2d re-standardises its weight on every call, which would undo a fold."""

    def __init__(self):
        super().__init__()
        from timm.layers import StdConv2d

        self.std_conv, self.std_norm = StdConv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv, self.norm = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward_features(self, x):
        return self.norm(self.conv(self.std_norm(self.std_conv(x))))


def test_a_convolution_that_rewrites_its_weight_is_not_folded_and_the_rest_is():
    model = frozen(StandardisedThenPlain())
    assert fold_and_check(model, torch.randn(2, 3, 8, 8), left=[model.std_norm]) == {"folded_batchnorms": 1}


class NormCalledByKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward_features(self, x):
        return self.norm(input=self.conv(x))


def test_a_norm_called_by_keyword_is_left_alone():
    model = frozen(NormCalledByKeyword())
    fold_and_check(model, torch.randn(2, 3, 4, 4), left=[model.norm])


class ConvFeedingTwoNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm_a, self.norm_b = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.last_conv, self.last_norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward_features(self, x):
        y = self.conv(x)
        return self.last_norm(self.last_conv(self.norm_a(y) + self.norm_b(y)))


def test_a_conv_feeding_two_norms_is_not_folded_and_the_rest_is():
    model = frozen(ConvFeedingTwoNorms())
    fold_and_check(model, torch.randn(2, 3, 4, 4), left=[model.norm_a, model.norm_b])


# -- through a strategy: the record says how many were folded -----------------------------------


def test_the_probe_record_says_how_many_batchnorms_were_folded(setup_cell, cell_tools):
    cell_setup, _ = setup_cell("linear_probe")
    model = cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["folded_batchnorms"] == len(batchnorms(model)) == 13


def test_no_folding_under_bf16_autocast(setup_cell, cell_tools):
    """Under autocast the folded weights would round differently from the network the core
    scores (on CUDA, where tlbench uses bf16); run on the CPU with the precision set by hand."""
    cell_setup, _ = setup_cell("linear_probe")
    cell_setup.ctx.precision = "bf16"
    model = cell_tools.fit(cell_setup)
    assert cell_setup.ctx.info["folded_batchnorms"] == 0
    assert len(batchnorms(model)) == 13
