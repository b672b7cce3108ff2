"""The linear probe's solver fits the textbook multinomial logistic regression."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from tlbench_plugins.strategies import probe


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
    features, labels = problem()
    head = nn.Linear(features.shape[1], 4)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    probe.fit_linear_head(head, features, labels, l2=l2, max_iter=500)

    reference = LogisticRegression(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=5000)
    reference.fit(features.double().numpy(), labels.numpy())
    probabilities = torch.softmax(head(features), 1).detach().double().numpy()
    np.testing.assert_allclose(probabilities, reference.predict_proba(features.double().numpy()), atol=2e-3)
    # softmax parameters are defined up to a per-feature constant across classes: compare centred
    ours = head.weight.detach().double().numpy()
    np.testing.assert_allclose(ours - ours.mean(0), reference.coef_ - reference.coef_.mean(0), atol=5e-3)

def test_fit_probe_takes_raw_features():
    """The standardisation used for solving is folded into the returned head."""
    features, labels = problem(seed=1)
    shifted = features * 50 + 7  # badly scaled raw features
    head = probe.fit_probe(shifted, labels, num_classes=4, penalty=1e-3, max_iter=200)
    accuracy = (head(shifted).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.9
    mean, scale = probe.standardizer(shifted)
    solved = nn.Linear(features.shape[1], 4)
    with torch.no_grad():
        solved.weight.copy_(head.weight * scale)
        solved.bias.copy_(head.bias + head.weight @ mean)
    assert torch.allclose(solved((shifted - mean) / scale), head(shifted), atol=1e-3)
