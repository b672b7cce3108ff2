"""tlbench.ConcatenatedSamples: a dataset's parts end to end, each sample read only when indexed."""

import pickle

import numpy as np
import pytest

import tlbench


class CountingPart(list):
    """A part that counts the items read from it."""

    reads = 0

    def __getitem__(self, index):
        type(self).reads += 1
        return super().__getitem__(index)


def test_samples_run_across_parts_in_order_and_empty_parts_take_no_index():
    samples = tlbench.ConcatenatedSamples([["a", "b"], [], ["c"], ["d", "e"]])
    assert len(samples) == 5 and list(samples) == ["a", "b", "c", "d", "e"]
    assert samples.starts == [0, 2, 2, 3, 5]


def test_field_picks_the_sample_out_of_each_item():
    pairs = tlbench.ConcatenatedSamples([[("x", 0)], [("y", 1)]], field=0)
    rows = tlbench.ConcatenatedSamples([[{"image": "x", "label": 0}], [{"image": "y", "label": 1}]],
                                       field="image")
    assert list(pairs) == list(rows) == ["x", "y"]


def test_indices_count_from_the_end_accept_numpy_integers_and_stop_at_the_length():
    samples = tlbench.ConcatenatedSamples([[0, 1, 2], [3, 4]])
    assert samples[-1] == 4 and samples[np.int64(3)] == 3
    with pytest.raises(IndexError):
        samples[5]
    with pytest.raises(IndexError):
        samples[-6]
    with pytest.raises(TypeError):
        samples[1.0]


def test_building_and_measuring_reads_no_sample():
    CountingPart.reads = 0
    samples = tlbench.ConcatenatedSamples([CountingPart(range(100)), CountingPart(range(50))])
    assert len(samples) == 150 and CountingPart.reads == 0
    assert samples[120] == 20 and CountingPart.reads == 1


def test_it_pickles_as_its_parts_do_for_dataloader_workers():
    samples = tlbench.ConcatenatedSamples([[("x", 0), ("y", 1)], [("z", 2)]], field=0)
    copy = pickle.loads(pickle.dumps(samples))
    assert list(copy) == ["x", "y", "z"] and copy.starts == samples.starts
