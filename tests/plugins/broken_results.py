"""Test-only strategies whose result the harness must check rather than trust: each one fails
(or misbehaves) in a way a real strategy might, inside its own cell."""

import tlbench


class Explodes(tlbench.Strategy):
    """Raises during fit."""

    name = "explodes"

    def fit(self, model, train, val, ctx):
        raise RuntimeError("boom")


class OutOfMemory(tlbench.Strategy):
    """Raises what PyTorch raises when CUDA runs out of memory."""

    name = "oom"

    def fit(self, model, train, val, ctx):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class WrongShape(tlbench.Strategy):
    """Returns a model whose output is not one logit per class."""

    name = "wrong_shape"

    def fit(self, model, train, val, ctx):
        import torch

        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))


class NanLogits(tlbench.Strategy):
    """Returns a model whose logits are NaN."""

    name = "nan_logits"

    def fit(self, model, train, val, ctx):
        import torch

        with torch.no_grad():
            model.get_classifier().bias.fill_(float("nan"))
        return model


class ReturnsNone(tlbench.Strategy):
    """Forgets to return the model."""

    name = "returns_none"

    def fit(self, model, train, val, ctx):
        return None


class Exits(tlbench.Strategy):
    """Calls sys.exit() inside its fit."""

    name = "exits"

    def fit(self, model, train, val, ctx):
        import sys

        sys.exit(3)


class LogsOddValues(tlbench.Strategy):
    """Logs values JSON cannot hold."""

    name = "logs_odd_values"

    def fit(self, model, train, val, ctx):
        import torch

        ctx.log(nan=float("nan"), obj=object(), tensor=torch.tensor(0.25), pair=(1, 2))
        return model


class AlwaysZero(tlbench.Strategy):
    """Answers class 0 whatever the image: a model that learned nothing."""

    name = "always_zero"

    def fit(self, model, train, val, ctx):
        import torch

        head = model.get_classifier()
        with torch.no_grad():
            head.weight.zero_()
            head.bias.zero_()
            head.bias[0] = 1.0
        for p in model.parameters():
            p.requires_grad_(False)
        return model


class GpuFault(tlbench.Strategy):
    """Raises what PyTorch raises after a device-side assert (a fault that breaks the process's
    CUDA context), simulated on any device."""

    name = "gpu_fault"

    def fit(self, model, train, val, ctx):
        raise RuntimeError("CUDA error: device-side assert triggered\nCUDA kernel errors might be "
                           "asynchronously reported at some other API call")


@tlbench.hookimpl
def register_strategies(register):
    for strategy in (Explodes, OutOfMemory, WrongShape, NanLogits, ReturnsNone, Exits, LogsOddValues,
                     AlwaysZero, GpuFault):
        register(strategy)
