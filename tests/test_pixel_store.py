"""A dataset too large to hold decoded in memory is decoded once into a file under the cache
folder, which every later cell, epoch and process reads instead of decoding again."""

import numpy as np
import pytest
import torch

from tlbench import pixel_store
from tlbench.decoding import Resample, decode_all
from tlbench.pixel_store import PixelStore, store_key


def numbered(count):
    return [np.full((5, 7), (9 * i) % 256, dtype=np.uint8) for i in range(count)]


def a_store(cache, samples, size=6):
    key = store_key("numbered", {}, len(samples), size, Resample())
    return PixelStore(str(cache), key, samples, size, Resample())


def test_rows_are_decoded_once_and_read_back_as_decoded(tmp_path, monkeypatch):
    samples = numbered(30)
    store = a_store(tmp_path, samples)
    rows = store.rows(np.array([29, 4, 7, 4]))
    expected = decode_all(samples, np.array([29, 4, 7, 4]), 6, Resample())
    assert torch.equal(rows[torch.arange(4)], expected)
    assert torch.equal(rows[torch.tensor([2, 0])], expected[[2, 0]])
    assert store.done.sum() == 3  # 4, 7 and 29, each once
    # another cell or process: the same file, nothing decoded again
    monkeypatch.setattr(pixel_store, "decode_all", lambda *a: pytest.fail("decoded twice"))
    again = a_store(tmp_path, samples)
    assert torch.equal(again.rows(np.array([7, 29]))[torch.arange(2)], expected[[2, 0]])


def test_a_second_store_on_the_same_file_never_truncates_the_first(tmp_path):
    samples = numbered(10)
    first = a_store(tmp_path, samples)
    first.rows(np.arange(5))
    second = a_store(tmp_path, samples)  # opened while the first is in use
    assert second.done[:5].all() and not second.done[5:].any()
    assert torch.equal(second.rows(np.arange(5))[torch.arange(5)], decode_all(samples, np.arange(5), 6, Resample()))


@pytest.fixture
def probe_cell_text():
    return """
        name = "store"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        [settings]
        image_size = 16
        pretrained = false
    """


def test_a_cell_on_a_dataset_too_large_for_memory_reads_the_store(registry, write_grid, tmp_path, monkeypatch,
                                                                  private_cache_dir, probe_cell_text):
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    cell = load_grid(str(write_grid(probe_cell_text)), registry).cells[0]
    in_memory = Runner(registry, tmp_path / "a").run_cell(cell)
    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", "0")  # as if faces were too large to hold decoded
    stored = Runner(registry, tmp_path / "b").run_cell(cell)
    assert (in_memory["pixels"], stored["pixels"]) == ("held on cpu", "stored decoded on disk")
    assert stored["status"] == "ok" and stored["top1"] == in_memory["top1"]
    (store_file,) = (private_cache_dir / "pixels").glob("*.u8")
    assert store_file.stat().st_size == 200 * 3 * 16 * 16  # faces: 200 images
    monkeypatch.setattr(pixel_store.PixelStore, "room_for", staticmethod(lambda *a: False))
    streamed = Runner(registry, tmp_path / "c").run_cell(cell)  # no room on disk: per batch
    assert streamed["pixels"] == "decoded per batch" and streamed["top1"] == in_memory["top1"]
