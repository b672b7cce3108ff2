"""Multinomial logistic regression, full batch, L2 on the weights: the linear probe's solver.

L-BFGS written for the probe's problem: a few thousand rows of a thousand-odd features, fitted
a few hundred iterations along a path of penalties. There every pass over the feature matrix X
is memory-bound and costs more than all other arithmetic of an iteration together, so an
iteration here makes exactly two passes:

- the change of the logits along the search direction D, ``D X^T``. Along that line the loss,
  its slope and its curvature are elementwise sums over the K x n logits, so the line search
  (1-D Newton, bracketed) needs no further pass however many steps it tries;
- the gradient ``R X`` at the accepted point (R: softmax minus one-hot).

torch.optim.LBFGS's strong-Wolfe search instead evaluates loss and gradient (two passes) at
every trial step, and applies its memory as 2m separate vector updates; here the memory is
applied in the compact form of Byrd, Nocedal & Schnabel (1994): two matrix-vector products
and an m x m solve. Benchmark 1b (benchmarks/test_speed.py) compares the probe's path and refit
(this solver, with linear_head.py leaving out constant features) against the same written with
torch.optim.LBFGS; its measurements are in benchmarks/README.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class LBFGSMemory:
    """The last ``size`` steps s and gradient changes y, as rows of one matrix (a ring), and
    the products of the inverse-Hessian estimate H they define with a vector.

    An iteration reads the memory twice: once for its products with the new gradient, once to
    combine it into the direction. The inner products a new pair needs with the older ones
    (s_i . y and y_i . y; the compact form uses s_i . y_j only for i <= j) are differences of
    two gradients' products, so they are not read again: at 20 pairs the memory is 40% the
    size of the probe's feature matrix, and each read costs as much as a third of a pass."""

    def __init__(self, size: int, like: torch.Tensor):
        self.size, self.count = size, 0
        self.pairs = like.new_zeros(2 * size, len(like))  # rows: s slots, then y slots
        self.s_dot_y = np.zeros((size, size))  # [i, j] = s_i . y_j for i no newer than j, slot order, float64
        self.y_dot_y = np.zeros((size, size))
        self._products = (None, None)  # (gradient, pairs @ gradient)

    def products(self, gradient: torch.Tensor) -> np.ndarray:
        known, products = self._products
        if known is not gradient:
            products = (self.pairs @ gradient).cpu().double().numpy()
            self._products = (gradient, products)
        return products

    def push(self, s: torch.Tensor, y: torch.Tensor, previous: torch.Tensor, gradient: torch.Tensor) -> None:
        """Add the step s and y = ``gradient`` - ``previous`` (the gradient s was taken from)."""
        m, slot = self.size, self.count % self.size
        old, new = self.products(previous), (self.pairs @ gradient).cpu().double().numpy()
        s_with_y, y_with_y = new[:m] - old[:m], new[m:] - old[m:]  # s_i . y, y_i . y
        self.pairs[slot] = s
        self.pairs[m + slot] = y
        s_with_y[slot] = s_y = (s @ y).item()
        y_with_y[slot] = y_y = (y @ y).item()
        self.s_dot_y[:, slot] = s_with_y
        self.y_dot_y[:, slot] = self.y_dot_y[slot, :] = y_with_y
        new[slot], new[m + slot] = (s @ gradient).item(), (y @ gradient).item()
        self._products = (gradient, new)
        self.count += 1
        kept = min(self.count, m)
        self.order = np.arange(self.count - kept, self.count) % m  # slots, oldest first
        self.upper = np.triu(self.s_dot_y[np.ix_(self.order, self.order)])
        self.diagonal = np.diag(self.upper).copy()
        self.y_gram = self.y_dot_y[np.ix_(self.order, self.order)]
        self.gamma = s_y / y_y  # H0 = gamma I (Nocedal & Wright 7.20)

    def direction(self, gradient: torch.Tensor) -> torch.Tensor:
        """-H gradient: H = gamma I + [S gamma Y] B [S gamma Y]^T in compact form, with
        B = [[U^-T (D + gamma Y^T Y) U^-1, -U^-T], [-U^-1, 0]], U = triu(S^T Y), D = its diagonal."""
        if self.count == 0:
            return -gradient
        m, order, gamma = self.size, self.order, self.gamma
        products = self.products(gradient)
        s_g, y_g = products[order], products[m + order]
        u = np.linalg.solve(self.upper, s_g)
        top = np.linalg.solve(self.upper.T, self.diagonal * u + gamma * (self.y_gram @ u) - gamma * y_g)
        coefficients = np.zeros(2 * m)
        coefficients[order] = top
        coefficients[m + order] = -gamma * u
        return torch.addmv(gradient, self.pairs.t(), torch.from_numpy(coefficients).to(gradient),
                           beta=gamma).neg_()


class Objective:
    """Mean cross-entropy of softmax(X W^T + b) plus l2/2 |W|^2, over a flat parameter vector
    [W (K x p, row-major), b (K)].

    Logits are kept class-major (K x n): the softmax then reduces over the outer dimension,
    elementwise across samples, which is faster than reducing over short rows of K (measured:
    benchmarks/README.md, "The probe's solver")."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float):
        self.features, self.l2 = features, l2
        self.count, self.dims = features.shape
        self.classes = num_classes
        self.onehot = torch.nn.functional.one_hot(labels, num_classes).to(features.dtype).t().contiguous()

    def weight(self, vector: torch.Tensor) -> torch.Tensor:
        return vector[: self.classes * self.dims].view(self.classes, self.dims)

    def logits(self, vector: torch.Tensor) -> torch.Tensor:
        """W X^T + b, K x n."""
        return torch.addmm(vector[self.classes * self.dims:, None], self.weight(vector), self.features.t())

    def gradient(self, vector: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """From residual = (softmax - onehot) / n, K x n."""
        gradient = torch.empty_like(vector)
        torch.addmm(self.weight(vector), residual, self.features, beta=self.l2, out=self.weight(gradient))
        torch.sum(residual, 1, out=gradient[self.classes * self.dims:])
        return gradient


class LineSearch:
    """The loss along ``vector + t * direction`` from the logits L and their change M = D X^T
    (one pass); every trial step is elementwise over K x n. Keeps the last trial's softmax,
    which the accepted step's gradient reuses."""

    def __init__(self, objective: Objective, vector, direction, logits, change):
        self.objective, self.logits, self.change = objective, logits, change
        weight, step = objective.weight(vector).flatten(), objective.weight(direction).flatten()
        n = objective.count
        self.weight_step = (weight @ step).item()  # W . D_W
        self.step_norm = (step @ step).item()  # |D_W|^2
        self.weight_norm = (weight @ weight).item()
        self.label_change = (objective.onehot * change).sum().item() / n  # mean change of the label's logit

    def penalty(self, t: float) -> float:
        return 0.5 * self.objective.l2 * (self.weight_norm + 2 * t * self.weight_step + t * t * self.step_norm)

    def evaluate(self, t: float) -> tuple[float, float]:
        """(loss, slope) at t; keeps the softmax at t."""
        n, l2 = self.objective.count, self.objective.l2
        log_softmax = torch.add(self.logits, self.change, alpha=t).log_softmax(0)
        loss = cross_entropy(self.objective, log_softmax) + self.penalty(t)
        self.softmax = log_softmax.exp_()
        self.weighted = (self.softmax * self.change).sum(0)  # E_softmax[M] per sample
        slope = self.weighted.sum().item() / n - self.label_change + l2 * (self.weight_step + t * self.step_norm)
        return loss, slope

    def curvature(self) -> float:
        """Second derivative at the last evaluated t: mean softmax variance of M, plus l2 |D_W|^2."""
        n = self.objective.count
        second = (self.softmax * self.change).mul_(self.change).sum() - self.weighted.pow(2).sum()
        return second.item() / n + self.objective.l2 * self.step_norm

    def search(self, loss0: float, slope0: float, first: float = 1.0, tolerance: float = 0.1,
               max_steps: int = 25) -> float | None:
        """A step t with a lower loss and |slope(t)| <= tolerance |slope(0)| (bracketed 1-D
        Newton from t = ``first``), or the lowest-loss step tried; None if no step lowered the
        loss. Leaves the softmax of the returned step in ``self.softmax`` and its loss in
        ``self.loss``."""
        low, high, t = 0.0, math.inf, first
        best = None  # (loss, t)
        for _ in range(max_steps):
            loss, slope = self.evaluate(t)
            if math.isfinite(loss) and loss < loss0:
                if abs(slope) <= tolerance * abs(slope0):
                    self.loss = loss
                    return t
                best = min(best or (loss, t), (loss, t))
            if slope < 0 and math.isfinite(loss):
                low = t
            else:
                high = t
            curvature = self.curvature() if math.isfinite(loss) else 0.0
            newton = t - slope / curvature if curvature > 0 else math.nan
            if low < newton < high:
                t = newton
            else:
                t = (low + high) / 2 if math.isfinite(high) else 2 * t
        if best is None:
            return None
        self.loss, t = best
        self.evaluate(t)
        return t


def cross_entropy(objective: Objective, log_softmax: torch.Tensor) -> float:
    """Mean cross-entropy from the log-softmax (K x n): the label's log-probability, read
    directly, keeps its precision where the fit is good (log normaliser minus the label's
    logit would subtract two large numbers)."""
    return -(objective.onehot * log_softmax).sum().item() / objective.count


def loss_and_residual(objective: Objective, vector: torch.Tensor, logits: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The loss at ``vector`` and (softmax - onehot) / n, from its logits."""
    log_softmax = logits.log_softmax(0)
    weight = objective.weight(vector).flatten()
    loss = cross_entropy(objective, log_softmax) + 0.5 * objective.l2 * (weight @ weight).item()
    return loss, log_softmax.exp_().sub_(objective.onehot).div_(objective.count)


def all_finite(values: torch.Tensor) -> bool:
    """Whether no entry of ``values`` is NaN or infinite, from their smallest and largest (NaN
    propagates to both), in one read: ``torch.isfinite(values).all()`` first writes a mask as
    large as ``values``, which took as long as several of the solver's passes over them
    (benchmarks/README.md, benchmark 9)."""
    if not values.numel():
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def fit(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, l2: float,
        max_iter: int, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
        memory: int = 20, tolerance_grad: float = 1e-6,
        tolerance_change: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight K x p, bias K) minimising mean cross-entropy + l2/2 |weight|^2 (the bias is not
    penalised), from ``weight``/``bias`` (zeros if None), in at most ``max_iter`` iterations.

    Stops early, as torch.optim.LBFGS does, when the largest gradient entry is <=
    tolerance_grad, or when an iteration changes the loss or every parameter by less than
    tolerance_change."""
    if not all_finite(features):
        raise ValueError("features contain NaN or infinite values; the probe cannot be fitted")
    objective = Objective(features, labels, num_classes, l2)
    k, p = num_classes, features.shape[1]
    vector = features.new_zeros(k * p + k)
    if weight is not None:
        vector[: k * p].copy_(weight.detach().flatten())
    if bias is not None:
        vector[k * p:].copy_(bias.detach())
    logits = objective.logits(vector)
    loss, residual = loss_and_residual(objective, vector, logits)
    gradient = objective.gradient(vector, residual)
    history = LBFGSMemory(memory, vector)
    for _ in range(max_iter):
        if gradient.abs().max().item() <= tolerance_grad:
            break
        direction = history.direction(gradient)
        slope0 = (gradient @ direction).item()
        if not slope0 < 0:  # the estimate lost positive definiteness: restart from steepest descent
            history = LBFGSMemory(memory, vector)
            direction = -gradient
            slope0 = (gradient @ direction).item()
        # a steepest-descent step is as long as the gradient: scale its first trial (as torch does)
        first = 1.0 if history.count else min(1.0, 1.0 / gradient.abs().sum().item())
        change = objective.logits(direction)  # D_W X^T + D_b: the logits move by t * change
        search = LineSearch(objective, vector, direction, logits, change)
        t = search.search(loss, slope0, first)
        if t is None:  # no step lowers the loss: as converged as float32 allows
            break
        vector.add_(direction, alpha=t)
        logits.add_(change, alpha=t)
        residual = search.softmax.sub_(objective.onehot).div_(objective.count)
        new_gradient = objective.gradient(vector, residual)
        step, gradient_change = direction.mul_(t), new_gradient - gradient
        if (step @ gradient_change).item() > 1e-10:  # keeps H positive definite
            history.push(step, gradient_change, gradient, new_gradient)
        gradient, previous, loss = new_gradient, loss, search.loss
        if abs(loss - previous) < tolerance_change or step.abs().max().item() <= tolerance_change:
            break
    return objective.weight(vector).clone(), vector[k * p:].clone()
