"""Frozen-network passes over many batches: the network folded once, batches two at a time.

``Extraction`` is what frozen feature extraction (features.py) and the one pass over a
partly frozen network's frozen part (freeze_boundary.py) run their batches through.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import torch
from torch import nn

from tlbench.frozen.folding import folded


class Extraction:
    """The network that frozen-extraction passes run, as a ``with`` block around them.

    Folded on the first batch it is asked for (so no extra images are read to probe it), then
    the same for every later batch and split until the block ends. Folding is done in fp32 on
    the CPU only, where it was measured: under bf16 autocast the folded weights round
    differently from the network the core scores, and CUDA's default TF32 convolutions differ
    from fp32 by more than the check allows.

    ``outputs`` runs the batches; on the CPU it runs two at a time (see there).
    """

    def __init__(self, model: nn.Module, ctx):
        self.model, self.ctx = model, ctx
        self.fold = ctx.precision == "fp32" and ctx.device.type == "cpu"
        self._stack = ExitStack()
        self._network = None

    def __enter__(self) -> "Extraction":
        self._stack.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    def network(self, batch: torch.Tensor) -> nn.Module:
        if self._network is None:
            self.model.eval()
            if self.fold:
                self._network = self._stack.enter_context(folded(self.model, batch[:2], self.ctx.log))
            else:
                self._network = self.model
                self.ctx.log(folded_batchnorms=0)
        return self._network

    def outputs(self, batches, compute):
        """``compute(network, x)`` for each batch ``x``, in order, without gradients and in fp32
        whatever ``ctx.precision`` (TF32 where the GPU allows it): frozen outputs are computed
        once and reused by every epoch and cell, so their precision costs little and counts
        (bf16 features cost a linear probe points of accuracy: benchmarks/README.md).

        On the CPU, with two or more threads, the batches run two at a time, each on half the
        threads (2 + 1 of 3): a frozen forward is hundreds of small operations, and splitting
        each across threads costs a synchronisation per operation (measured gain:
        benchmarks/README.md, "Frozen extraction two batches at a time"). At most three batches
        are in memory beyond the one the caller holds. Close the generator (contextlib.closing)
        inside the block: until it is closed or exhausted it holds the two workers."""
        def run(network, x):
            with torch.no_grad():  # per thread
                return compute(network, x)

        batches = iter(batches)
        first = next(batches, None)
        if first is None:
            return
        network = self.network(first)  # folds, on this thread
        batches = itertools.chain([first], batches)
        threads = torch.get_num_threads()
        if self.ctx.device.type != "cpu" or threads < 2:
            for x in batches:
                yield run(network, x)
            return
        with ThreadPoolExecutor(2, thread_name_prefix="tlbench-extraction") as pool:
            _start_workers(pool, [threads - threads // 2, threads // 2])  # 3 threads: 2 + 1
            pending = deque()
            while (x := _next_on(batches, threads // 2, threads)) is not None:
                pending.append(pool.submit(run, network, x))
                if len(pending) > 2:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def _next_on(batches, threads: int, normal: int):
    """The next batch (None at the end), made on ``threads`` threads: the batch's preparation
    on this thread would otherwise start a team of ``normal`` threads whose spinning takes the
    workers' cores and slows the extraction (benchmarks/README.md). The setting goes back
    before this returns, so no other thread sees it but one that first uses torch meanwhile."""
    torch.set_num_threads(threads)
    try:
        return next(batches, None)
    finally:
        torch.set_num_threads(normal)


def _start_workers(pool: ThreadPoolExecutor, shares: list) -> None:
    """Start one of ``pool``'s workers per entry of ``shares``, each with that many intra-op
    threads.

    torch takes a thread's count from the process-wide setting once, at that thread's first
    use, so the setting is changed only while each worker starts and is put back before
    anything else runs: the caller, and any other thread of the process, keep their own.
    Each worker stays busy until all have started, so every start lands on a new thread."""
    started = [threading.Event() for _ in shares]
    release = threading.Event()

    def start(index: int) -> None:
        torch.get_num_threads()  # this thread's first use: it takes the setting of the moment
        started[index].set()
        release.wait()

    normal = torch.get_num_threads()
    futures = []
    try:
        for index, share in enumerate(shares):
            torch.set_num_threads(share)
            futures.append(pool.submit(start, index))
            started[index].wait()
    finally:
        torch.set_num_threads(normal)
        release.set()
    for future in futures:
        future.result()
