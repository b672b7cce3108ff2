"""Shared pieces of the speed benchmarks (run on demand: ``python -m pytest benchmarks/ -s``).

The machines these run on are shared and noisy, so every benchmark measures two contenders in
the same run (alternating them where that helps) and asserts a RATIO, never an absolute time.
What was measured goes into ``benchmark.extra_info`` (kept by ``--benchmark-json``) and is
printed as one line per benchmark.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from tlbench.grid import load_grid
from tlbench.plugins import load_registry
from tlbench.progress import Progress
from tlbench.runner import Runner


def pytest_addoption(parser):
    parser.addoption("--threads", type=int, default=0,
                     help="torch intra-op threads for the benchmarks (default: torch's own choice, "
                          "as tlbench runs). On a loaded shared machine 1 gives steadier numbers.")


def pytest_configure(config):
    threads = config.getoption("--threads", default=0)
    if threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(autouse=True)
def private_cache_dir(tmp_path, monkeypatch):
    """Feature caches go to a fresh folder per benchmark, so a "cold" run really is cold and
    nothing touches the user's ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def make_cell(registry, tmp_path):
    """The cells of a grid written from TOML text (first cell by default)."""
    count = [0]

    def make(text: str, index: int = 0):
        count[0] += 1
        path = tmp_path / f"grid{count[0]}.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_grid(str(path), registry).cells[index]

    return make


class StepClock(Progress):
    """A silent progress reporter that times every step of every loop a strategy wraps in
    ``ctx.progress`` (feature extraction, "frozen part", "epoch i/n").

    Step ``i`` is timed from handing batch ``i`` to the strategy until batch ``i+1`` is ready
    (or the loop ends): the step itself plus fetching the next batch. Between steps of the loops
    whose description starts with ``pause_in`` (default: all loops) the clock calls ``pause()``
    (default: nothing), which is where a benchmark alternates another contender; the time spent
    there is left out. ``sync`` (e.g. ``torch.cuda.synchronize``) runs at a loop's step 0, at its
    step ``warmup``, before every pause and at its end, never otherwise, so the loop keeps its
    own pace on an accelerator.

    Pause only in loops that compute on the calling thread: frozen extraction keeps up to two
    batches running on worker threads, which would go on computing during the other
    contender's turn and slow its steps.
    """

    def __init__(self, sync=None, warmup: int = 0, pause=None, pause_in: str = ""):
        super().__init__(enabled=False)
        self.loops: list[dict] = []
        self.sync = sync or (lambda: None)
        self.warmup = warmup
        self.pause = pause
        self.pause_in = pause_in
        self.paused_s = 0.0

    def steps(self, iterable, total=None, desc=""):
        loop = {"desc": desc, "sizes": [], "steps": [], "first_fetch": 0.0}
        self.loops.append(loop)

        pause = self.pause if desc.startswith(self.pause_in) else None

        def timed():
            mark = time.perf_counter()
            for i, item in enumerate(iterable):
                if i in (0, self.warmup) or pause:
                    self.sync()
                now = time.perf_counter()
                if i == 0:
                    loop["first_fetch"] = now - mark
                else:
                    loop["steps"].append(now - mark)
                if pause:
                    pause()
                    self.paused_s += time.perf_counter() - now
                loop["sizes"].append(len(item[1]) if isinstance(item, (tuple, list)) and len(item) > 1 else 1)
                mark = time.perf_counter()
                yield item
            self.sync()
            if loop["sizes"]:
                loop["steps"].append(time.perf_counter() - mark)

        return timed()

    def loop_seconds(self, prefix: str = "") -> list[float]:
        """Time of each loop whose description starts with ``prefix`` (pauses left out)."""
        return [l["first_fetch"] + sum(l["steps"]) for l in self.loops if l["desc"].startswith(prefix)]

    def seconds(self, prefix: str = "") -> float:
        return sum(self.loop_seconds(prefix))

    def step_times(self, prefix: str = "epoch", skip: int = 0) -> list[tuple[int, float]]:
        """(images, seconds) of each step of the loops matching ``prefix``, leaving out the
        first ``skip`` steps of the first of them (warm-up)."""
        steps = [step for loop in self.loops if loop["desc"].startswith(prefix)
                 for step in zip(loop["sizes"], loop["steps"])]
        return steps[skip:]

    def steady(self, prefix: str = "epoch", skip: int = 0) -> tuple[int, float]:
        """(images, seconds) summed over ``step_times``."""
        steps = self.step_times(prefix, skip)
        return sum(n for n, _ in steps), sum(s for _, s in steps)

    def step_sizes(self, prefix: str = "epoch") -> list[int]:
        return [n for l in self.loops if l["desc"].startswith(prefix) for n in l["sizes"]]


class Lockstep:
    """Runs functions in threads that take turns: exactly one runs at any moment, and each hands
    the turn to the next whenever it calls ``turn()`` (once a training step). Whatever else
    loads a shared machine then falls on every contender alike, step by step, instead of on
    whichever happened to run during a busy minute. ``paused_s[i]`` is the time function ``i``
    spent waiting for its turn. The torch RNG state travels with the turn, so each function
    draws the same random numbers (dropout, shuffles) as it would alone.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._local = threading.local()
        self._current = 0
        self._done: list[bool] = []
        self._rng: list = []
        self.paused_s: list[float] = []

    def _rng_state(self):
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return torch.get_rng_state(), cuda

    def _set_rng_state(self, state):
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def _hand_over(self, me: int) -> None:  # with self._cond held
        self._rng[me] = self._rng_state()
        n = len(self._done)
        nxt = next(((me + k) % n for k in range(1, n + 1) if not self._done[(me + k) % n]), -1)
        self._current = nxt
        self._cond.notify_all()

    def _take(self, me: int) -> None:  # with self._cond held
        self._cond.wait_for(lambda: self._current == me)
        if self._rng[me] is not None:
            self._set_rng_state(self._rng[me])

    def turn(self) -> None:
        me = self._local.index
        start = time.perf_counter()
        with self._cond:
            self._hand_over(me)
            self._take(me)
        self.paused_s[me] += time.perf_counter() - start

    def run(self, *functions):
        """Run ``functions`` taking turns; returns their results (re-raises the first error)."""
        n = len(functions)
        self._done, self._rng, self.paused_s = [False] * n, [None] * n, [0.0] * n
        self._current = 0
        results, errors = [None] * n, [None] * n

        def body(i, function):
            self._local.index = i
            with self._cond:
                self._take(i)
            try:
                results[i] = function()
            except BaseException as exc:  # handed to the main thread
                errors[i] = exc
            finally:
                with self._cond:
                    self._done[i] = True
                    self._hand_over(i)

        threads = [threading.Thread(target=body, args=(i, f), name=f"lockstep-{i}")
                   for i, f in enumerate(functions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for error in errors:
            if error is not None:
                raise error
        return results


@pytest.fixture
def lockstep():
    return Lockstep()


@pytest.fixture
def runner_with_clock(registry, tmp_path):
    """(Runner, StepClock): the Runner's cells report every step to the clock."""

    def make(cache_dir: Path | None = None, **clock_args):
        clock = StepClock(**clock_args)
        runner = Runner(registry, tmp_path / "results", progress=clock,
                        cache_dir=str(cache_dir) if cache_dir else None)
        return runner, clock

    return make


@pytest.fixture(scope="session")
def warm_cpu():
    """Run efficientnet_lite0 forward and backward once, so one-time costs of the process
    (kernel selection, allocator growth, lazy imports) land on neither contender."""
    import timm

    model = timm.create_model("efficientnet_lite0", num_classes=10)
    x = torch.randn(32, 3, 64, 64)
    with torch.no_grad():
        model.eval()(x)
    model.train()
    model(x).sum().backward()
    torch.optim.Adam(model.parameters()).step()  # the first optimizer step imports a lot (~1 s)
    return True


@pytest.fixture
def report(benchmark):
    """report(title, **numbers): keep the numbers in the benchmark's JSON (extra_info) and print
    one line with them (shown with ``-s``)."""

    def write(title: str, **numbers) -> None:
        numbers["torch_threads"] = torch.get_num_threads()
        benchmark.extra_info.update(numbers)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in numbers.items())
        print(f"\n[bench] {title}: {shown}", flush=True)

    return write
