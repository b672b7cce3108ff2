"""First-party transferability scores for ``tlbench rank``: LogME, H-score and kNN accuracy.

Each takes the frozen network's pre-logit features of the training split, from the same
on-disk cache as the linear_probe and knn_probe strategies (built through the same code when
missing), so ranking and probing a grid extract features once. The maths is in numpy and
torch, imported inside methods: ``tlbench ls scores`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import tlbench


def training_features(model, train: tlbench.Split, ctx: tlbench.FitContext):
    """(features as float64 numpy, labels as int numpy) of ``train``, through the feature cache.

    Kept in ``ctx.memo`` after the first call (``tlbench rank`` hands every score of a backbone
    × dataset pair the same context), so the second score of a pair costs no reading; the first
    logs where the features came from and how long they took.
    """
    import time

    from tlbench_plugins.machinery import training

    memo = ctx.memo.get("training_features")
    if memo is None or memo[0] is not train:
        start = time.perf_counter()
        training.freeze(model)
        (features,) = ctx.frozen_features(model, [train])  # logs feature_cache
        memo = (train, features.double().cpu().numpy(), train.labels.cpu().numpy())
        ctx.memo["training_features"] = memo
        ctx.log(features_s=time.perf_counter() - start,
                feature_dim=memo[1].shape[1], images=len(memo[2]))
    return memo[1], memo[2]


# -- LogME -------------------------------------------------------------------------------------


def logme(features, labels, max_iter: int = 1000, tol: float = 1e-10) -> float:
    """LogME (You et al., ICML 2021): the log maximum evidence per example of a Bayesian linear
    model from the features to each class's one-hot target, averaged over classes.

    For a target y (N) and features F (N x D): w ~ N(0, I/alpha), y ~ N(F w, I/beta), and
    log p(y | F, alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2pi - beta/2 ||F m - y||^2
    - alpha/2 m'm - 1/2 log det(alpha I + beta F'F), with m the posterior mean. alpha and beta
    are maximised by the paper's fixed-point iteration (MacKay's updates gamma = sum of
    beta s_i / (alpha + beta s_i), alpha = gamma / m'm, beta = (N - gamma) / ||F m - y||^2),
    run on one SVD of F shared by all classes. The evidence depends on F only through F F'
    (y ~ N(0, F F'/alpha + I/beta)), so LogME is unchanged by a global scale of the features
    (alpha absorbs it) and by a rotation of the feature space; it does change under per-feature
    scaling and under a shift of the features (the model has no intercept). Higher is better.
    """
    import numpy as np

    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2  # the nonzero part of F'F's spectrum; the other d - len(s) eigenvalues are 0
    evidences = []
    for c in np.unique(labels):
        y = (labels == c).astype(np.float64)
        x2 = (u.T @ y) ** 2
        outside = max(float(y @ y - x2.sum()), 0.0)  # the part of y outside F's column space
        evidences.append(_max_evidence(sigma, x2, outside, n, d, max_iter, tol) / n)
    return float(np.mean(evidences))


def _max_evidence(sigma, x2, outside, n: int, d: int, max_iter: int, tol: float) -> float:
    import numpy as np

    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * x2 / (sigma + t) ** 2).sum())  # m'm
        res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + outside  # ||F m - y||^2
        alpha = gamma / max(m2, 1e-300)
        beta = (n - gamma) / max(res2, 1e-300)
        if abs(alpha / beta - t) <= tol * t:
            break
    t = alpha / beta
    m2 = float((sigma * x2 / (sigma + t) ** 2).sum())
    res2 = float((x2 * (t / (sigma + t)) ** 2).sum()) + outside
    log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)


class LogME(tlbench.Score):
    """Log maximum evidence of a Bayesian linear model on the features (You et al. 2021); higher is better."""

    name = "logme"

    def estimate(self, model, train, ctx):
        features, labels = training_features(model, train, ctx)
        return logme(features, labels)


# -- H-score -----------------------------------------------------------------------------------


def h_score(features, labels) -> float:
    """H-score (Bao et al. 2019): tr(cov(f)^-1 cov(E[f | y])), how much of the features'
    variance the class means explain. The feature covariance is the Ledoit-Wolf shrinkage
    estimate (Ibrahim et al. 2022): the plain one is singular when features outnumber images."""
    import numpy as np
    from sklearn.covariance import ledoit_wolf

    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    f = f - f.mean(0)
    covariance, _ = ledoit_wolf(f, assume_centered=True)
    class_means = np.zeros_like(f)
    for c in np.unique(labels):
        class_means[labels == c] = f[labels == c].mean(0)
    between = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.solve(covariance, between)))


class HScore(tlbench.Score):
    """Class-mean variance over feature variance, shrinkage covariance (Bao et al. 2019); higher is better."""

    name = "h_score"

    def estimate(self, model, train, ctx):
        features, labels = training_features(model, train, ctx)
        return h_score(features, labels)


# -- kNN accuracy ------------------------------------------------------------------------------


def knn_accuracy(features, labels, k: int = 20, temperature: float = 0.07) -> float:
    """Leave-one-out accuracy of knn_probe's vote (cosine, weights exp(similarity / T)) on the
    training features: each image is classified by the others."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from tlbench_plugins.machinery.knn import weighted_votes

    f = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    num_classes = int(y.max()) + 1
    correct = 0
    for start in range(0, len(f), 1024):  # blocks of rows keep the similarity matrix small
        rows = torch.arange(start, min(start + 1024, len(f)))
        votes = weighted_votes(f[rows], f, y, num_classes, k, temperature, itself=rows)
        correct += (votes.argmax(1) == y[rows]).sum().item()
    return correct / len(f)


class KnnAccuracy(tlbench.Score):
    """Leave-one-out accuracy of knn_probe's weighted k-NN vote on the training features; higher is better."""

    name = "knn_accuracy"

    @dataclass(frozen=True)
    class Options:
        k: int = tlbench.option(20, "neighbours that vote")
        temperature: float = tlbench.option(0.07, "vote weight exp(cosine / temperature)")

    def estimate(self, model, train, ctx):
        features, labels = training_features(model, train, ctx)
        return knn_accuracy(features, labels, self.options.k, self.options.temperature)


@tlbench.hookimpl
def register_scores(register):
    for score in (LogME, HScore, KnnAccuracy):
        register(score)
