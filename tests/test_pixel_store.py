"""A dataset too large to hold decoded in memory is decoded once into a file under the cache
folder, which every later cell, epoch and process reads instead of decoding again."""

import errno
import os
import time

import numpy as np
import pytest
import torch

from tlbench import pixel_store
from tlbench.decoding import Resample, decode_all
from tlbench.pixel_store import PixelStore, store_key


def numbered(count):
    return [np.full((5, 7), (9 * i) % 256, dtype=np.uint8) for i in range(count)]


def a_store(cache, samples, size=6):
    key = store_key("numbered", len(samples), size, Resample())
    return PixelStore(str(cache), key, samples, size, Resample())


def test_rows_are_decoded_once_and_read_back_as_decoded(tmp_path, monkeypatch):
    samples = numbered(30)
    store = a_store(tmp_path, samples)
    rows = store.rows(np.array([29, 4, 7, 4]))
    expected = decode_all(samples, np.array([29, 4, 7, 4]), 6, Resample())
    assert torch.equal(rows[torch.arange(4)], expected)
    assert torch.equal(rows[torch.tensor([2, 0])], expected[[2, 0]])
    assert store.done.sum() == 3  # 4, 7 and 29, each once
    # another cell or process: the same file, its rows read, not decoded again; opening it
    # decodes nothing, and its first rows() decodes a few done rows once, to check the file
    # (see the damaged-store test)
    decoded = []
    monkeypatch.setattr(pixel_store, "decode_all", lambda s, rows, *a: decoded.append(rows.tolist()) or
                        decode_all(s, rows, *a))
    again = a_store(tmp_path, samples)
    assert decoded == []
    assert torch.equal(again.rows(np.array([7, 29]))[torch.arange(2)], expected[[2, 0]])
    assert torch.equal(again.rows(np.array([4]))[torch.arange(1)], expected[[1]])
    assert decoded == [[4, 7, 29]]  # the check, of the 3 done rows; then nothing


@pytest.mark.parametrize("damage", ["written over", "marks written over", "truncated"])
def test_a_damaged_store_is_said_removed_and_decoded_again(tmp_path, capsys, damage):
    samples = numbered(30)
    store = a_store(tmp_path, samples)
    store.rows(np.arange(30))
    path, size = store.path, store.path.stat().st_size
    del store
    pixels_bytes = 30 * 3 * 6 * 6
    with open(path, "r+b") as f:
        if damage == "written over":  # other pixels, the same size, the row marks intact
            f.write(np.random.default_rng(0).integers(0, 256, pixels_bytes, dtype=np.uint8).tobytes())
        elif damage == "marks written over":
            f.seek(pixels_bytes)
            f.write(bytes(range(2, 32)))
        else:
            f.truncate(size // 2)
    again = a_store(tmp_path, samples)
    rows = again.rows(np.arange(30))  # written-over pixels are found by the first rows()' check
    assert "is damaged" in capsys.readouterr().err
    assert path.stat().st_size == size
    assert torch.equal(rows[torch.arange(30)], decode_all(samples, np.arange(30), 6, Resample()))


def test_a_second_store_on_the_same_file_never_truncates_the_first(tmp_path):
    samples = numbered(10)
    first = a_store(tmp_path, samples)
    first.rows(np.arange(5))
    second = a_store(tmp_path, samples)  # opened while the first is in use
    assert second.done[:5].all() and not second.done[5:].any()
    assert torch.equal(second.rows(np.arange(5))[torch.arange(5)], decode_all(samples, np.arange(5), 6, Resample()))



def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_store_another_process_is_creating_is_never_seen_half_made(tmp_path, monkeypatch):
    """Two processes create one store at once: the second, coming in while the first is sizing
    its file, makes (or finds) the whole file, never a 0-byte one; both then share it."""
    samples = numbered(10)
    second = []
    real = {name: getattr(os, name) for name in ("ftruncate", "posix_fallocate")}

    def sizing(name):
        def size(fd, *args):
            if not second:  # the other process arrives while this one sizes its file
                second.append(None)
                second[0] = a_store(tmp_path, samples)
            return real[name](fd, *args)
        return size

    for name in real:
        monkeypatch.setattr(os, name, sizing(name))
    first = a_store(tmp_path, samples)
    first.rows(np.arange(4))
    expected = decode_all(samples, np.arange(4), 6, Resample())
    assert torch.equal(second[0].rows(np.arange(4))[torch.arange(4)], expected)
    assert second[0].done[:4].all() and not second[0].done[4:].any()  # written by the first: one file


def test_a_full_disk_when_the_store_is_made_is_an_error_not_a_crash(tmp_path, monkeypatch):
    """The space is reserved before the file is mapped, so a full disk is an OSError while the
    store is made (the cell then decodes without it) instead of SIGBUS at the first write."""
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(os, "ftruncate", no_space)
    with pytest.raises(OSError) as caught:
        a_store(tmp_path, numbered(10))
    assert caught.value.errno == errno.ENOSPC
    assert list((tmp_path / "pixels").iterdir()) == []  # nothing half made, no temporary left


def test_a_temporary_a_killed_process_left_is_removed_and_a_live_ones_kept(tmp_path):
    """A process killed with -9 while it made the store leaves a temporary with the whole store's
    space reserved; the next one to make that store removes it once it is an hour old."""
    samples = numbered(10)
    (tmp_path / "pixels").mkdir()
    store = a_store(tmp_path, samples)
    store.path.unlink()
    stale, live = (tmp_path / "pixels" / f".{store.path.name}.{tag}.tmp" for tag in ("killed", "running"))
    for tmp in (stale, live):
        tmp.write_bytes(b"\0" * 64)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    a_store(tmp_path, samples)
    assert not stale.exists() and live.exists()

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
        threads = 1
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
    assert stored["status"] == "ok", stored.get("traceback")
    assert stored["top1"] == in_memory["top1"]
    (store_file,) = (private_cache_dir / "pixels").glob("*.u8")
    assert store_file.stat().st_size == 200 * 3 * 16 * 16 + 200  # faces: 200 images, and a byte each: done
    monkeypatch.setattr(pixel_store.PixelStore, "room_for", staticmethod(lambda *a: False))
    streamed = Runner(registry, tmp_path / "c").run_cell(cell)  # no room on disk: per batch
    assert streamed["pixels"] == "decoded per batch" and streamed["top1"] == in_memory["top1"]


def test_a_disk_that_fills_before_the_store_is_made_leaves_the_cell_decoding_per_batch(
        registry, write_grid, tmp_path, monkeypatch, capsys, probe_cell_text):
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    cell = load_grid(str(write_grid(probe_cell_text)), registry).cells[0]
    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", "0")
    monkeypatch.setattr(os, "posix_fallocate", no_space)  # room_for saw room; then the disk filled
    monkeypatch.setattr(os, "ftruncate", no_space)
    record = Runner(registry, tmp_path / "r").run_cell(cell)
    assert record["status"] == "ok" and record["pixels"] == "decoded per batch"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "decoded-pixel store" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "TLBENCH_CACHE_DIR" in warnings[0]


SMALL_CELL_OF_FACES = """
    name = "part"
    backbones = ["test_efficientnet"]
    strategies = ["linear_probe"]
    datasets = ["faces"]
    [settings]
    image_size = 48
    train_size = 30
    test_size = 10
    pretrained = false
    threads = 1
"""


def test_where_pixels_go_and_the_disk_they_take_follow_the_cells_images(registry, write_grid, tmp_path,
                                                                      monkeypatch, private_cache_dir):
    """faces at 48 px is 1.4 MB of decoded pixels; a cell of 40 of its 200 images, 0.28 MB: in
    1 MB of memory it is held there, and with none, its store takes the disk of its own rows
    (the file has a row for each of the 200, sparse)."""
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    cell = load_grid(str(write_grid(SMALL_CELL_OF_FACES)), registry).cells[0]
    row, full = 3 * 48 * 48, 200 * (3 * 48 * 48 + 1)
    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", "1")
    held = Runner(registry, tmp_path / "a").run_cell(cell)
    assert held["status"] == "ok" and held["pixels"] == "held on cpu"
    assert not (private_cache_dir / "pixels").exists()
    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", "0")
    stored = Runner(registry, tmp_path / "b").run_cell(cell)
    assert stored["pixels"] == "stored decoded on disk" and stored["top1"] == held["top1"]
    (store_file,) = (private_cache_dir / "pixels").glob("*.u8")
    used = sum(held["split_sizes"].values())
    assert used == 40 and store_file.stat().st_size == full
    # each row's blocks: its bytes, and at most a 4 KB block more at each end; the marks' block
    assert used * row <= store_file.stat().st_blocks * 512 <= used * (row + 2 * 4096) + 4096 < full


def test_cells_of_one_dataset_share_decoded_pixels_only_while_they_fit(registry, write_grid, tmp_path, monkeypatch):
    """Cells that draw other images of a dataset (another seed's train_size sample) add theirs to
    the pixels held in memory while all of them fit in TLBENCH_MATERIALIZE_MB; past that, the
    next cell starts afresh instead of holding more than the limit."""
    from tlbench.grid import load_grid
    from tlbench.runner import Runner

    monkeypatch.setenv("TLBENCH_MATERIALIZE_MB", "1")  # 151 faces at 48 px; a cell holds 70
    text = SMALL_CELL_OF_FACES.replace("train_size = 30", "train_size = 60")
    cells = load_grid(str(write_grid(text.replace('name = "part"', 'name = "part"\nseeds = [0, 1, 2, 3, 4, 5]'))),
                      registry).cells
    runner, held, seen = Runner(registry, tmp_path), [], set()
    for cell in cells:
        setup = runner.setup(cell)
        for split in (setup.train, setup.val, setup.test):
            list(split.batches(64))
            seen |= set(split.indices.tolist())
        (pixels,) = runner.data._pixels.values()
        held.append((id(pixels), int(pixels.decoded.sum())))
    assert len(seen) > 151  # the cells' images together would not fit
    assert all(count * 3 * 48 * 48 <= 2**20 for _, count in held)
    assert held[1][0] == held[0][0] and held[1][1] > held[0][1]  # the second cell's images joined the first's
    assert len({identity for identity, _ in held}) > 1  # and a later cell started afresh
