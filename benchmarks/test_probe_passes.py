"""The probe's passes over its features that are not the solver's iterations (issue #29, item 6):
the finiteness check of every fit and the standardisation of the path and the refit, as they
are against as they were, on the same features in one run.

    python -m pytest benchmarks/test_probe_passes.py -s

See benchmarks/README.md (benchmark 10).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from tlbench_plugins.machinery import linear_head, softmax_regression

GRID = """
name = "passes"
backbones  = ["efficientnet_lite0"]
strategies = ["linear_probe"]
datasets   = ["mnist5k"]

[settings]
image_size = 48
"""


def standardization_before(features, standardization=linear_head.Standardization):
    """linear_head.Standardization as it was: the statistics taken on one copy of the kept
    columns, then the training features indexed and standardised again by calling it."""
    view = object.__new__(standardization)
    view.width = features.shape[1]
    view.columns = linear_head.varying(features)
    kept = features[:, view.columns]
    view.mean, view.scale = kept.mean(0), kept.std(0).clamp_min(1e-6)
    view.standardized = view(features)
    return view


@contextlib.contextmanager
def as_before():
    """The probe's code with its former finiteness check (a mask as large as the features) and
    standardisation."""
    kept = linear_head.Standardization, softmax_regression.all_finite
    linear_head.Standardization = standardization_before
    softmax_regression.all_finite = lambda values: bool(torch.isfinite(values).all())
    try:
        yield
    finally:
        linear_head.Standardization, softmax_regression.all_finite = kept


def alternating(contenders: dict, times: int) -> dict:
    """{name: median seconds} of each contender, run in turn ``times`` times."""
    seconds = {name: [] for name in contenders}
    for _ in range(times):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(each) for name, each in seconds.items()}


def test_probe_fit_passes_now_and_before(benchmark, report, make_cell, runner_with_clock, warm_cpu):
    """The probe's path and refit (linear_probe's defaults, refit on train + val) on
    efficientnet_lite0's features of mnist5k at 48 px, now against before, alternating five
    times: the same heads to the bit, the whole reported per fit. The passes that changed,
    alternating 21 times on the training features: the finiteness check >= 3x and the
    standardisation >= 1.2x as fast as before (the whole path's share of them is within the
    noise of a loaded machine)."""
    from tlbench.frozen.features import frozen_features
    from tlbench_plugins.machinery import training
    from tlbench_plugins.strategies.linear_probe import LinearProbe

    cs = runner_with_clock()[0].setup(make_cell(GRID))
    training.freeze(cs.model)
    (train_x, val_x), _ = frozen_features(cs.model, [cs.train, cs.val], cs.ctx, use_cache=False)
    train_y, val_y = cs.train.labels, cs.val.labels
    options, classes = LinearProbe.Options(), cs.ctx.num_classes
    heads = {}

    def path_and_refit(name):
        with as_before() if name == "before" else contextlib.nullcontext():
            path = linear_head.probe_path(train_x, train_y, val_x, val_y, classes, options.penalties(),
                                          options.max_iter)
            l2, _, state = max(path, key=lambda step: step[1])
            heads[name] = len(path), linear_head.fit_probe(torch.cat([train_x, val_x]), torch.cat([train_y, val_y]),
                                                           classes, l2, options.max_iter, start=state)

    solver_x = linear_head.Standardization(train_x).standardized

    def measure():
        whole = alternating({name: lambda name=name: path_and_refit(name) for name in ("now", "before")}, 5)
        parts = alternating({
            "check_now": lambda: softmax_regression.all_finite(solver_x),
            "check_before": lambda: bool(torch.isfinite(solver_x).all()),
            "standardisation_now": lambda: linear_head.Standardization(train_x),
            "standardisation_before": lambda: standardization_before(train_x),
        }, 21)
        return whole, parts

    whole, parts = benchmark.pedantic(measure, rounds=1, iterations=1)
    fits = heads["now"][0] + 1
    check = parts["check_before"] / parts["check_now"]
    standardisation = parts["standardisation_before"] / parts["standardisation_now"]
    report("10 probe path + refit: its passes now vs before (finiteness check, standardisation)",
           per_fit_now_s=whole["now"] / fits, per_fit_before_s=whole["before"] / fits,
           whole_speedup=whole["before"] / whole["now"], fits=fits, features=list(train_x.shape),
           check_ms={k: round(v * 1e3, 2) for k, v in parts.items() if k.startswith("check")},
           standardisation_ms={k: round(v * 1e3, 2) for k, v in parts.items() if k.startswith("stand")},
           check_speedup=check, standardisation_speedup=standardisation, threads=torch.get_num_threads())
    (now_weight, now_bias), (before_weight, before_bias) = heads["now"][1], heads["before"][1]
    assert heads["now"][0] == heads["before"][0]
    assert torch.equal(now_weight, before_weight) and torch.equal(now_bias, before_bias)
    assert check >= 3, f"the finiteness check is only {check:.2f}x as fast as before"
    assert standardisation >= 1.2, f"the standardisation is only {standardisation:.2f}x as fast as before"
