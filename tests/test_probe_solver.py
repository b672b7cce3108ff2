"""The linear probe's solver fits the textbook multinomial logistic regression."""

import numpy as np
import pytest
import torch
from torch import nn

from tlbench_plugins.machinery import linear_head


def scikit_learns(**options):
    """scikit-learn's LogisticRegression, imported by the tests that compare with it (it takes
    seconds to import, which every test process would pay at collection)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**options)


def problem(seed=0, samples=240, dims=12, classes=4):
    generator = np.random.default_rng(seed)
    centres = generator.normal(scale=1.5, size=(classes, dims))
    labels = generator.integers(0, classes, samples)
    features = centres[labels] + generator.normal(size=(samples, dims))
    return torch.tensor(features, dtype=torch.float32), torch.tensor(labels)


@pytest.mark.parametrize("l2", [1.0, 1e-2])
def test_fit_matches_scikit_learn(l2):
    """Same objective as scikit-learn's (mean cross-entropy + l2/2 |W|^2, bias unpenalised,
    i.e. C = 1 / (l2 * n)), so the same minimiser."""
    from tlbench_plugins.machinery import softmax_regression

    features, labels = problem()
    weight, bias = softmax_regression.fit(features, labels, 4, l2=l2, max_iter=500)

    reference = scikit_learns(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=5000)
    reference.fit(features.double().numpy(), labels.numpy())
    probabilities = torch.softmax(features @ weight.t() + bias, 1).double().numpy()
    np.testing.assert_allclose(probabilities, reference.predict_proba(features.double().numpy()), atol=2e-3)
    # softmax parameters are defined up to a per-feature constant across classes: compare centred
    ours = weight.double().numpy()
    np.testing.assert_allclose(ours - ours.mean(0), reference.coef_ - reference.coef_.mean(0), atol=5e-3)

def test_fit_probe_takes_raw_features():
    """The standardisation used for solving is folded into the returned head."""
    features, labels = problem(seed=1)
    shifted = features * 50 + 7  # badly scaled raw features
    weight, bias = linear_head.fit_probe(shifted, labels, num_classes=4, penalty=1e-3, max_iter=200)
    logits = shifted @ weight.t() + bias
    assert (logits.argmax(1) == labels).float().mean().item() > 0.9
    mean, scale = shifted.mean(0), shifted.std(0)
    solved_weight, solved_bias = weight * scale, bias + weight @ mean  # on standardised features
    assert torch.allclose((shifted - mean) / scale @ solved_weight.t() + solved_bias, logits, atol=1e-3)


def mean_loss(weight, bias, features, labels, l2):
    logits = features.double() @ weight.double().t() + bias.double()
    return (nn.functional.cross_entropy(logits, labels) + 0.5 * l2 * weight.double().pow(2).sum()).item()


@pytest.mark.parametrize("memory", [3, 20])
def test_solver_reaches_scikit_learns_optimum_with_a_short_memory(memory):
    """More iterations than memory slots (the ring wraps many times), 8 classes, a weak
    penalty: the loss reached is scikit-learn's to float32 precision."""
    from tlbench_plugins.machinery import softmax_regression

    features, labels = problem(seed=2, samples=400, dims=30, classes=8)
    l2 = 1e-3
    weight, bias = softmax_regression.fit(features, labels, 8, l2=l2, max_iter=1000, memory=memory)
    reference = scikit_learns(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=10000)
    reference.fit(features.double().numpy(), labels.numpy())
    best = mean_loss(torch.tensor(reference.coef_), torch.tensor(reference.intercept_), features, labels, l2)
    assert mean_loss(weight, bias, features, labels, l2) <= best + 1e-5


def test_solver_started_at_the_optimum_does_not_leave_it():
    """A warm start (the path's) at the optimum: the loss does not rise, the model stays put."""
    from tlbench_plugins.machinery import softmax_regression

    features, labels = problem(seed=3)
    weight, bias = softmax_regression.fit(features, labels, 4, l2=1e-2, max_iter=500)
    again, again_bias = softmax_regression.fit(features, labels, 4, l2=1e-2, max_iter=5, weight=weight, bias=bias)
    assert mean_loss(again, again_bias, features, labels, 1e-2) <= mean_loss(weight, bias, features, labels, 1e-2) + 1e-7
    before, after = (torch.softmax(features @ w.t() + b, 1) for w, b in ((weight, bias), (again, again_bias)))
    assert torch.allclose(after, before, atol=1e-3)


def test_constant_features_get_zero_weight_and_change_nothing_else():
    """Features constant over the rows are left out of the solve (the bias does their work):
    the probe equals the one fitted without them, with zero weight there."""
    features, labels = problem(seed=4, samples=200, dims=6, classes=3)
    padded = torch.cat([torch.zeros(200, 2), features[:, :3], torch.full((200, 1), 7.0), features[:, 3:]], 1)
    assert linear_head.varying(padded).tolist() == [2, 3, 4, 6, 7, 8]
    weight, bias = linear_head.fit_probe(padded, labels, num_classes=3, penalty=1e-2, max_iter=300)
    plain_weight, plain_bias = linear_head.fit_probe(features, labels, num_classes=3, penalty=1e-2, max_iter=300)
    assert weight[:, [0, 1, 5]].abs().max() == 0
    assert torch.allclose(weight[:, [2, 3, 4, 6, 7, 8]], plain_weight, atol=1e-4)
    assert torch.allclose(padded @ weight.t() + bias, features @ plain_weight.t() + plain_bias, atol=1e-3)


def test_the_path_keeps_full_width_states_that_score_like_the_head():
    """Path states are for every feature (zeros where constant), so the refit can start from them."""
    features, labels = problem(seed=5, samples=300, dims=8, classes=4)
    features[:, 2] = 0.0  # a unit that never fires on train
    train_x, train_y, val_x, val_y = features[:200], labels[:200], features[200:], labels[200:]
    path = linear_head.probe_path(train_x, train_y, val_x, val_y, 4, [1.0, 0.1, 0.01], max_iter=100)
    mean, scale = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    for _, accuracy, (weight, bias) in path:
        assert weight.shape == (4, 8) and weight[:, 2].abs().max() == 0
        predicted = (((val_x - mean) / scale) @ weight.t() + bias).argmax(1)
        assert (predicted == val_y).float().mean().item() == pytest.approx(accuracy)


def test_badly_scaled_features_still_train():
    """The first step is steepest descent, as long as the gradient: its first trial is scaled
    down (else no trial step of a halving search lowers the loss and the zero model comes back)."""
    from tlbench_plugins.machinery import softmax_regression

    features, labels = problem(seed=1)
    weight, bias = softmax_regression.fit(features * 1e6, labels, 4, l2=1e-2, max_iter=50)
    assert mean_loss(weight, bias, features * 1e6, labels, 1e-2) < 0.5 * np.log(4)


def test_non_finite_features_are_refused():
    from tlbench_plugins.machinery import softmax_regression

    features, labels = problem()
    features[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        softmax_regression.fit(features, labels, 4, l2=1e-2, max_iter=10)


def test_standardising_in_place_gives_the_copys_numbers_and_path_in_the_features_own_memory():
    """Without a refit on val, linear_probe standardises the training features over their raw
    ones: the same numbers, the same path and head, one n x d tensor instead of two."""
    features, labels = problem(seed=3, samples=3000, dims=40)
    features[:, [0, 7, 39]] = 2.5  # constant columns: left out, so the rows move in memory
    val_x, val_y = problem(seed=4, samples=300, dims=40)
    copied = linear_head.Standardization(features)
    raw = features.clone()
    in_place = linear_head.Standardization(raw, in_place=True)
    assert torch.equal(in_place.standardized, copied.standardized) and in_place.standardized.shape == (3000, 37)
    assert torch.equal(in_place.mean, copied.mean) and torch.equal(in_place.scale, copied.scale)
    assert in_place.standardized.data_ptr() == raw.data_ptr()  # no second n x d tensor
    path = linear_head.probe_path(features, labels, val_x, val_y, 4, [1.0, 0.1], max_iter=50)
    same = linear_head.probe_path(in_place, labels, val_x, val_y, 4, [1.0, 0.1], max_iter=50)
    assert [(p, a) for p, a, _ in path] == [(p, a) for p, a, _ in same]
    for (_, _, (w1, b1)), (_, _, (w2, b2)) in zip(path, same):
        assert torch.equal(w1, w2) and torch.equal(b1, b2)
    head = linear_head.fit_probe(features, labels, 4, 0.1, 50, start=path[1][2])
    assert all(torch.equal(a, b) for a, b in zip(head, linear_head.fit_probe(in_place, labels, 4, 0.1, 50,
                                                                              start=same[1][2])))
