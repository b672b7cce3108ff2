"""The core scores a frozen body's test split from cached features only when its own digest of
the body matches: the same predictions as the plain forward pass, a changed body scored afresh,
anything it cannot vouch for scored by ``model(x)``."""

import pytest
import timm
import torch

from tlbench import records
from tlbench.frozen import cache as feature_cache
from tlbench.frozen import scoring
from tlbench.grid import load_grid
from tlbench.runner import Runner, evaluate

METRICS = ("top1", "top5", "mean_per_class_acc", "predictions")


@pytest.fixture
def probe_grid(write_grid, registry, tiny_settings):
    """The cells of a tiny linear_probe grid (``seeds``, ``strategy``, extra TOML lines)."""
    def make(seeds=(0,), strategy="linear_probe", extra="", pretrained=False):
        settings = tiny_settings.replace("pretrained = false", f"pretrained = {str(pretrained).lower()}")
        # the CPU scores in fp32, the features' precision (a GPU cell in bf16 takes the plain pass)
        settings += 'device = "cpu"\n'
        path = write_grid(f"""
            name = "scored"
            backbones = ["test_efficientnet"]
            strategies = ["{strategy}"]
            datasets = ["digits"]
            seeds = {list(seeds)}
            {settings}
            {extra}
        """)
        return load_grid(str(path), registry).cells

    return make


@pytest.fixture
def checkpoint(tmp_path):
    """A weights file, so that every seed starts from the same body (as pretrained weights do)."""
    torch.manual_seed(0)
    path = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    return f'[backbone.test_efficientnet]\ncheckpoint = "{path}"\n'


def fit_and_score(runner, cell, edit=None):
    """(the core's result, the plain pass's metrics) for one fit; ``edit(model)`` runs between
    the fit and the scoring, as the end of a strategy's fit would."""
    fitted = runner._fit(cell, cell.strategy_options, {})
    if edit is not None:
        edit(fitted.model)
    result = runner._score(fitted)
    return result, evaluate(fitted.model, fitted.setup.test, fitted.setup.ctx), fitted


def assert_same_metrics(result, plain):
    for name in METRICS:
        assert result[name] == plain[name], name


def test_cold_then_warm_cache_gives_the_plain_pass_predictions(probe_grid, registry, tmp_path):
    (cell,) = probe_grid()
    cold, plain_cold, _ = fit_and_score(Runner(registry, tmp_path), cell)
    warm, plain_warm, _ = fit_and_score(Runner(registry, tmp_path), cell)
    assert cold["scoring"]["path"] == warm["scoring"]["path"] == "features"
    assert (cold["scoring"]["cache"], warm["scoring"]["cache"]) == ("miss", "hit")
    assert cold["scoring"]["body_digest"] == warm["scoring"]["body_digest"]
    assert warm["scoring"]["cached_extraction_s"] > 0
    assert cold["scoring"]["folded_batchnorms"] > 0  # the fast path
    assert_same_metrics(cold, plain_cold)
    assert_same_metrics(warm, plain_warm)


def test_seeds_after_the_first_read_the_first_seeds_test_features(probe_grid, registry, tmp_path, checkpoint):
    cells = probe_grid(seeds=(0, 1, 2), extra=checkpoint, pretrained=True)
    runner = Runner(registry, tmp_path)
    found = [runner.run_cell(cell) for cell in cells]
    assert [r["status"] for r in found] == ["ok"] * 3, [r.get("error") for r in found]
    assert [r["scoring"]["cache"] for r in found] == ["miss", "hit", "hit"]
    assert all(records.problem(r, r["run_id"]) is None for r in found)


def test_a_body_with_one_weight_edited_after_the_features_were_cached_is_scored_afresh(
        probe_grid, registry, tmp_path):
    (cell,) = probe_grid()
    first, _, _ = fit_and_score(Runner(registry, tmp_path), cell)

    def edit(model):  # in place, still frozen: only the digest can tell
        with torch.no_grad():
            model.bn2.bias[0] += 50.0

    edited, plain, fitted = fit_and_score(Runner(registry, tmp_path), cell, edit)
    assert not fitted.model.bn2.bias.requires_grad
    assert edited["scoring"]["cache"] == "miss"
    assert edited["scoring"]["body_digest"] != first["scoring"]["body_digest"]
    assert_same_metrics(edited, plain)
    assert edited["predictions"] != first["predictions"]  # the edit mattered, and was scored


def test_a_body_that_gives_nan_fails_as_the_plain_pass_does(probe_grid, registry, tmp_path):
    (cell,) = probe_grid()

    def poison(model):
        with torch.no_grad():
            model.bn2.bias[0] = float("nan")

    with pytest.raises(FloatingPointError, match="non-finite logits"):
        fit_and_score(Runner(registry, tmp_path), cell, poison)


@pytest.mark.parametrize("change, why", [
    (lambda m: setattr(m, "forward", lambda x: torch.zeros(len(x), 10)), "forward was replaced"),
    (lambda m: m.conv_stem.register_forward_hook(lambda mod, args, out: out * 0), "forward hooks"),
    (lambda m: setattr(m, "__class__", type("Sub", (type(m),), {})), "not the EfficientNet"),
    (lambda m: m.add_module("copy", m.classifier), "not one submodule"),
])
def test_a_network_the_core_cannot_vouch_for_is_scored_by_its_own_forward(probe_grid, registry, tmp_path,
                                                                          change, why):
    (cell,) = probe_grid()
    fit_and_score(Runner(registry, tmp_path), cell)  # the body's features are cached
    result, plain, _ = fit_and_score(Runner(registry, tmp_path), cell, change)
    assert result["scoring"]["path"] == "forward"
    assert why in result["scoring"]["why"]
    assert_same_metrics(result, plain)


def test_a_cached_entry_that_does_not_match_the_network_is_not_used(probe_grid, registry, tmp_path):
    """A stale or forged entry under the right key: the spot check runs the network itself."""
    (cell,) = probe_grid()
    first, _, fitted = fit_and_score(Runner(registry, tmp_path), cell)
    test, ctx = fitted.setup.test, fitted.setup.ctx
    key, _ = scoring._cache_key(fitted.model, "classifier", test, ctx)
    features, seconds = feature_cache.load(ctx.cache_dir, key, test.labels)
    feature_cache.store(ctx.cache_dir, key, features.flip(0), test.labels, seconds)
    result, plain, _ = fit_and_score(Runner(registry, tmp_path), cell)
    assert result["scoring"]["path"] == "forward"
    assert "did not reproduce" in result["scoring"]["why"]
    assert_same_metrics(result, plain)
    assert result["predictions"] == first["predictions"]


def test_a_fine_tuned_body_takes_the_fast_path_and_caches_nothing(probe_grid, registry, tmp_path):
    (cell,) = probe_grid(strategy="full_finetune")
    result, plain, fitted = fit_and_score(Runner(registry, tmp_path), cell)
    assert result["scoring"] == {"path": "features", "cache": "off",
                                 "why_not_cached": "the body has trainable parameters",
                                 "folded_batchnorms": 0}
    assert_same_metrics(result, plain)


def test_a_knn_probe_reads_the_test_features_the_linear_probe_cached(probe_grid, registry, tmp_path):
    (probe,) = probe_grid()
    (knn,) = probe_grid(strategy="knn_probe")
    first, _, _ = fit_and_score(Runner(registry, tmp_path), probe)
    result, plain, _ = fit_and_score(Runner(registry, tmp_path), knn)
    assert result["scoring"]["cache"] == "hit"  # the same body, another head
    assert result["scoring"]["body_digest"] == first["scoring"]["body_digest"]
    assert_same_metrics(result, plain)


class NoPreLogits(torch.nn.Module):
    """A network with timm's methods, but a forward_head without ``pre_logits``."""

    def __init__(self):
        super().__init__()
        self.body, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 10)

    def forward_features(self, x):
        return self.body(x)

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc


def test_a_network_whose_features_cannot_be_taken_is_scored_by_its_own_forward(probe_grid, registry, tmp_path):
    (cell,) = probe_grid()
    cell_setup = Runner(registry, tmp_path).setup(cell)
    model = NoPreLogits()
    batches, facts = scoring.scored_logits(model, cell_setup.test, cell_setup.ctx, NoPreLogits)
    assert batches is None
    assert facts["path"] == "forward" and "pre_logits" in facts["why"]
    assert evaluate(model, cell_setup.test, cell_setup.ctx)["top1"] >= 0  # the plain pass scores it


def test_half_precision_cells_are_scored_by_the_plain_pass(probe_grid, registry, tmp_path):
    (cell,) = probe_grid()
    fitted = Runner(registry, tmp_path)._fit(cell, cell.strategy_options, {})
    fitted.setup.ctx.precision = "bf16"
    batches, facts = scoring.scored_logits(fitted.model, fitted.setup.test, fitted.setup.ctx, fitted.setup.built)
    assert batches is None
    assert facts == {"path": "forward", "why": "features are cached in fp32; this cell scores in bf16"}


# -- the digest itself -----------------------------------------------------------------------------


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=10).eval()


def test_the_digest_ignores_the_head_and_the_memory_layout(tiny):
    from tlbench.frozen import body

    before = body.digest(tiny, "classifier")
    with torch.no_grad():
        tiny.classifier.weight.mul_(3.0)
    assert body.digest(tiny.to(memory_format=torch.channels_last), "classifier") == before


@pytest.mark.parametrize("change", [
    lambda m: setattr(m.bn1, "eps", 1e-3),  # an attribute, no tensor changed
    lambda m: setattr(m.bn1, "act", torch.nn.GELU()),  # another activation: a module, no parameters
    lambda m: m.bn1.running_var.add_(1e-6),  # a buffer
    lambda m: m.conv_stem.weight.data.view(-1)[0].add_(1e-3),  # one weight
])
def test_the_digest_sees_every_change_to_the_body(tiny, change):
    from tlbench.frozen import body

    before = body.digest(tiny, "classifier")
    with torch.no_grad():
        change(tiny)
    assert body.digest(tiny, "classifier") != before


def test_a_head_the_body_also_reaches_is_hashed_with_the_body(tiny):
    from tlbench.frozen import body

    tiny.stem_alias = tiny.classifier
    before = body.digest(tiny, "classifier")
    with torch.no_grad():
        tiny.classifier.weight.mul_(3.0)
    assert body.digest(tiny, "classifier") != before


def test_a_body_attribute_the_digest_cannot_pin_down_is_not_cached(probe_grid, registry, tmp_path):
    (cell,) = probe_grid()
    scale = [1.0]
    result, plain, _ = fit_and_score(Runner(registry, tmp_path), cell,
                                     lambda m: setattr(m.bn2, "note", lambda x: x * scale[0]))
    assert result["scoring"]["cache"] == "off"
    assert result["scoring"]["why_not_cached"] == "part of the body has no exact digest"
    assert_same_metrics(result, plain)
