"""Frozen extraction on the CPU runs two batches at a time: same outputs, same order, threads put back."""

import contextlib
import copy
import threading

import pytest
import torch

from tlbench_plugins.machinery import freeze_boundary, training
from tlbench.frozen.extraction import Extraction
from tlbench.frozen.features import pooled_features


@pytest.fixture
def threads():
    """Sets torch's thread count for a test and puts the original back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def features(cell_setup, set_threads, count: int) -> torch.Tensor:
    set_threads(count)
    with Extraction(cell_setup.model, cell_setup.ctx) as extraction:
        result, = pooled_features(extraction, [cell_setup.train], cell_setup.ctx)
    assert torch.get_num_threads() == count  # the streams' share is given back
    return result


def test_two_streams_give_one_streams_features_in_order(setup_cell, threads):
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    one = features(cell_setup, threads, 1)  # a single stream: batch after batch
    two = features(cell_setup, threads, 2)  # two batches at a time, one thread each
    assert one.shape == (len(cell_setup.train), cell_setup.model.num_features)
    assert torch.allclose(two, one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("count, shares", [(2, {1}), (3, {1, 2}), (4, {2})])
def test_batches_run_on_two_worker_threads_with_half_the_threads_each(setup_cell, threads, count, shares):
    """Each worker's share of the threads; with an odd count one takes the extra thread, so
    no core is left idle."""
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    threads(count)
    seen = set()

    def compute(network, x):
        seen.add((threading.current_thread().name, torch.get_num_threads(), torch.is_grad_enabled()))
        return network.forward_features(x).mean()

    images = (x for x, _ in cell_setup.train.batches(32))
    with Extraction(cell_setup.model, cell_setup.ctx) as extraction:
        with contextlib.closing(extraction.outputs(images, compute)) as outputs:
            assert len(list(outputs)) == cell_setup.train.num_batches(32)
    assert {name.startswith("tlbench-extraction") for name, _, _ in seen} == {True}
    assert len({name for name, _, _ in seen}) == 2
    assert {grad for _, _, grad in seen} == {False}
    assert {workers for _, workers, _ in seen} == shares
    assert len(seen) == 2  # one share per worker thread
    assert torch.get_num_threads() == count


def test_a_failing_batch_ends_extraction_with_its_error_and_threads_put_back(setup_cell, threads):
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    threads(2)
    seen = []
    lock = threading.Lock()

    def compute(network, x):
        with lock:  # two workers append
            seen.append(len(x))
            fourth = len(seen) == 4
        if fourth:
            raise RuntimeError("unreadable batch")
        return x.mean()

    images = (x for x, _ in cell_setup.train.batches(32))
    with pytest.raises(RuntimeError, match="unreadable batch"):
        with Extraction(cell_setup.model, cell_setup.ctx) as extraction:
            list(extraction.outputs(images, compute))
    assert torch.get_num_threads() == 2
    assert len(seen) < cell_setup.train.num_batches(32)  # it stopped, not ran to the end


def test_each_stream_captures_its_own_boundary_activation(setup_cell, threads):
    """The boundary hook is shared by both streams; each batch must get its own input back."""
    cell_setup, _ = setup_cell("partial_unfreeze", "[strategy.partial_unfreeze]\nblocks = 2\n")
    model, train, ctx = cell_setup.model, cell_setup.train, cell_setup.ctx
    training.freeze(model)
    training.unfreeze(model.blocks[-1].parameters())
    sample, _ = next(iter(train.batches(8)))
    split = freeze_boundary.find_split(model, sample)
    assert split is not None
    threads(2)
    cached = freeze_boundary.cached_batches(model, split, train, ctx)
    unit = model.get_submodule(split.boundary)
    with torch.no_grad():
        expected = torch.cat([freeze_boundary.capture(model.eval(), unit, x) for x, _ in train.batches(ctx.settings.batch_size)])
    assert cached.activations.shape == expected.shape
    assert torch.allclose(cached.activations, expected, rtol=1e-4, atol=1e-4)


def test_splits_extracted_in_one_stream_come_back_apart(setup_cell, threads):
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    threads(2)
    train, val, ctx = cell_setup.train, cell_setup.val, cell_setup.ctx
    with Extraction(cell_setup.model, ctx) as extraction:
        together = pooled_features(extraction, [val, train], ctx)
        apart = [pooled_features(extraction, [split], ctx)[0] for split in (val, train)]
    assert [len(f) for f in together] == [len(val), len(train)]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(together, apart))


def test_an_empty_split_gets_no_features_of_the_same_width(setup_cell, threads):
    """A class with fewer than three images puts none in val: such a split has no rows."""
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    train, ctx = cell_setup.train, cell_setup.ctx
    empty = copy.copy(cell_setup.val)
    empty.indices, empty.labels = empty.indices[:0], empty.labels[:0]
    if empty.pixels is not None:
        empty.pixels = empty.pixels[:0]
    assert len(empty) == 0 and list(empty.batches(8)) == []
    with Extraction(cell_setup.model, ctx) as extraction:
        first, gap, last = pooled_features(extraction, [train, empty, train], ctx)
    assert gap.shape == (0, first.shape[1]) and torch.allclose(first, last, rtol=1e-4, atol=1e-5)


def test_other_threads_keep_the_normal_thread_count_during_extraction(setup_cell, threads):
    """Only the two workers run on half the threads: the caller, and a thread that first uses
    torch while extraction is under way, get the process's normal count."""
    cell_setup, _ = setup_cell("linear_probe")
    training.freeze(cell_setup.model)
    threads(2)
    seen = {}

    def newcomer():
        seen["newcomer"] = torch.get_num_threads()

    images = (x for x, _ in cell_setup.train.batches(32))
    with Extraction(cell_setup.model, cell_setup.ctx) as extraction:
        with contextlib.closing(extraction.outputs(images, lambda network, x: x.mean())) as outputs:
            next(outputs)
            seen["caller"] = torch.get_num_threads()
            thread = threading.Thread(target=newcomer)
            thread.start()
            thread.join()
            assert len(list(outputs)) == cell_setup.train.num_batches(32) - 1
    assert seen == {"caller": 2, "newcomer": 2}
