"""The arithmetic behind a leaderboard: confidence intervals, ranks and Pareto fronts.

Plain Python on lists of numbers, so every claim a leaderboard makes can be checked by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` values and the half-width of its confidence interval (None for n < 2)."""

    mean: Optional[float]
    half_width: Optional[float]
    n: int
    std: Optional[float] = None

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student t critical value: P(|T| <= q) = confidence with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean ± t-interval half-width over seeds: t(df=n-1) · s / sqrt(n), s the sample std (ddof=1).

    With one value there is no interval (a single seed says nothing about seed variance);
    with none there is no mean.
    """
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Estimate(None, None, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, None, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, t_quantile(n - 1, confidence) * std / math.sqrt(n), n, std)


def average_ranks(scores: dict, higher_is_better: bool = True) -> dict:
    """Rank 1 for the best score; tied scores share the average of the ranks they span."""
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1] if higher_is_better else kv[1]))
    ranks, i = {}, 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1][1] == ordered[i][1]:
            j += 1
        for key, _ in ordered[i:j + 1]:
            ranks[key] = (i + 1 + j + 1) / 2.0
        i = j + 1
    return ranks


def pareto_front(points: dict) -> set:
    """Keys of the points (cost, score) that no other point beats: none costs no more and scores
    at least as much while being strictly better in one of the two."""
    front = set()
    for key, (cost, score) in points.items():
        dominated = any(c <= cost and s >= score and (c < cost or s > score)
                        for other, (c, s) in points.items() if other != key)
        if not dominated:
            front.add(key)
    return front
