"""The arithmetic behind a leaderboard: confidence intervals, ranks, Pareto fronts, paired tests
between rows and what holds across tasks (bootstrap, probability of improvement, Friedman).

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
    # scipy.stats.t.ppf is this function; scipy.special alone imports in a quarter of the time,
    # which every `tlbench run` and `report` pays
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + confidence / 2.0))


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


# -- paired comparisons ------------------------------------------------------------------------


def paired_t_p(differences: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of the paired t-test on per-seed differences (``scipy.stats.ttest_rel``
    on the two rows gives the same): t = mean / (s / sqrt(n)), n - 1 degrees of freedom.

    None below two differences. With s = 0 there is no noise to test against: p = 1 when every
    difference is 0, else 0 (ttest_rel gives nan and a warning there).
    """
    n = len(differences)
    if n < 2:
        return None
    est = mean_ci(differences)
    if est.std == 0.0:
        return 1.0 if est.mean == 0.0 else 0.0
    from scipy.special import stdtr  # scipy.stats.t.sf(x, df) is stdtr(df, -x)

    return min(1.0, float(2.0 * stdtr(n - 1, -abs(est.mean) / (est.std / math.sqrt(n)))))


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment of a family of p-values (None entries stay None and are not
    in the family): the i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    family = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(family)
    adjusted: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for j, (p, i) in enumerate(family):
        running = max(running, min(1.0, (m - j) * p))
        adjusted[i] = running
    return adjusted


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar test on paired right/wrong answers: of the images exactly one of
    two models gets right (``only_first`` + ``only_second``), is the split further from half than
    chance? The binomial(n, 1/2) tail, doubled and capped at 1 (``scipy.stats.binomtest(b, b + c)
    .pvalue``), computed with integers so the bytes never change. No discordant image: p = 1."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); C(n, i + 1) = C(n, i) (n - i) / (i + 1), exact in integers
    for i in range(min(only_first, only_second)):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2 ** n)


# -- across tasks ------------------------------------------------------------------------------


def stratified_bootstrap_ci(values_by_task: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0,
                            confidence: float = CONFIDENCE) -> tuple[Optional[float], Optional[float]]:
    """Percentile interval of the mean over tasks of each task's mean, resampling each task's
    seeds with replacement independently (rliable's stratified bootstrap). ``RandomState`` draws
    are frozen across numpy versions, so the same values give the same interval. (None, None)
    when no task has two values (a resample would only repeat them)."""
    if not values_by_task or all(len(v) < 2 for v in values_by_task):
        return None, None
    import numpy as np

    draws = np.random.RandomState(seed)
    total = np.zeros(resamples)
    for values in values_by_task:
        values = np.asarray(values, dtype=float)
        picks = np.floor(draws.random_sample((resamples, values.size)) * values.size).astype(int)
        total += values[picks].mean(axis=1)
    means = total / len(values_by_task)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def probability_of_improvement(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Optional[float]:
    """rliable's P(X > Y): per task, the share of (run of X, run of Y) pairs where X's run scores
    higher, a tie counting 1/2 (the Mann-Whitney U over n·m); averaged over the tasks given as
    (X's values, Y's values). None without a task where both have values."""
    shares = []
    for xs, ys in pairs:
        if xs and ys:
            wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in xs for y in ys)
            shares.append(wins / (len(xs) * len(ys)))
    return math.fsum(shares) / len(shares) if shares else None


@dataclass(frozen=True)
class Friedman:
    """Friedman's test over N tasks (blocks) and k rows (treatments), with the rows' mean ranks
    (1 = best) and Nemenyi's critical difference between two mean ranks at ``alpha``."""

    mean_ranks: list[float]
    statistic: float
    p_value: float
    critical_difference: float
    tasks: int


def friedman(scores: Sequence[Sequence[float]], alpha: float = 1.0 - CONFIDENCE) -> Friedman:
    """``scores[task][row]``, higher is better. The statistic is scipy.stats.friedmanchisquare's
    (ranks averaged over ties, with its tie correction), chi-square with k - 1 degrees of freedom;
    CD = q_alpha * sqrt(k (k + 1) / (6 N)) with q_alpha the studentized range quantile for k
    means over sqrt(2) (Demšar 2006)."""
    from scipy.stats import chi2, studentized_range

    n, k = len(scores), len(scores[0])
    ranks = [average_ranks(dict(enumerate(task))) for task in scores]
    mean_ranks = [math.fsum(r[j] for r in ranks) / n for j in range(k)]
    rank_sums = [math.fsum(r[j] for r in ranks) for j in range(k)]
    statistic = 12.0 / (n * k * (k + 1)) * math.fsum(s * s for s in rank_sums) - 3.0 * n * (k + 1)
    ties = 0
    for task in scores:
        for value in set(task):
            t = list(task).count(value)
            ties += t ** 3 - t
    correction = 1.0 - ties / (n * k * (k * k - 1))
    statistic = statistic / correction if correction > 0 else 0.0
    p_value = float(chi2.sf(statistic, k - 1))
    q = float(studentized_range.ppf(1.0 - alpha, k, float("inf"))) / math.sqrt(2.0)
    return Friedman(mean_ranks, statistic, p_value, q * math.sqrt(k * (k + 1) / (6.0 * n)), n)
