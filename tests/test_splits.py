"""Splits: fixed by split_seed, stratified, k-shot drawn with the cell's seed."""

import numpy as np
import pytest

from tlbench.splits import fixed_size_train_val, per_class_subsample, stratified_sample, stratified_split

LABELS = np.repeat(np.arange(4), [50, 30, 20, 10])


def test_every_class_is_split_in_proportion():
    split = stratified_split(LABELS, 0.2, 0.2, seed=0)
    for cls, count in enumerate([50, 30, 20, 10]):
        for part in (split.val, split.test):
            assert np.sum(LABELS[part] == cls) == round(count * 0.2)
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(len(LABELS)))


def test_split_depends_on_split_seed_only():
    assert stratified_split(LABELS, 0.2, 0.2, 3).digest() == stratified_split(LABELS, 0.2, 0.2, 3).digest()
    assert stratified_split(LABELS, 0.2, 0.2, 3).digest() != stratified_split(LABELS, 0.2, 0.2, 4).digest()


def test_official_test_split_is_kept_and_the_rest_split_into_train_and_val():
    official = np.arange(0, len(LABELS), 5)
    split = stratified_split(LABELS, 0.2, 0.2, 0, test_indices=official)
    assert split.test.tolist() == official.tolist()
    assert not set(split.train) & set(official) and not set(split.val) & set(official)
    assert len(split.train) + len(split.val) == len(LABELS) - len(official)
    assert abs(len(split.val) / (len(LABELS) - len(official)) - 0.25) < 0.05  # 0.2 of the whole


def test_k_shot_keeps_k_per_class_and_varies_with_seed():
    train = stratified_split(LABELS, 0.2, 0.2, 0).train
    five = per_class_subsample(train, LABELS, 5, seed=0)
    assert np.bincount(LABELS[five]).tolist() == [5, 5, 5, 5]
    assert set(five) <= set(train)
    assert per_class_subsample(train, LABELS, 5, seed=0).tolist() == five.tolist()
    assert per_class_subsample(train, LABELS, 5, seed=1).tolist() != five.tolist()
    # a class with fewer than k training examples keeps them all
    assert np.bincount(LABELS[per_class_subsample(train, LABELS, 40, seed=0)]).tolist() == [30, 18, 12, 6]


def test_stratified_sample_draws_exactly_n_in_proportion_to_the_classes():
    pool = np.arange(len(LABELS))
    drawn = stratified_sample(pool, LABELS, 37, seed=0)
    assert len(drawn) == len(set(drawn)) == 37
    # 50/30/20/10 of 110 -> 16.8, 10.1, 6.7, 3.4: floors 16+10+6+3 = 35, the two largest remainders +1
    assert np.bincount(LABELS[drawn]).tolist() == [17, 10, 7, 3]
    assert stratified_sample(pool, LABELS, 37, seed=0).tolist() == drawn.tolist()
    assert stratified_sample(pool, LABELS, 37, seed=1).tolist() != drawn.tolist()


def test_vtab_1k_protocol_draws_800_train_and_200_val_outside_the_test_split():
    labels = np.repeat(np.arange(10), 300)  # 3,000 images, 10 classes
    official_test = np.arange(0, 3000, 3)
    base = stratified_split(labels, 0.2, 0.2, 0, test_indices=official_test)
    split = fixed_size_train_val(base, labels, 1000, 0.2, seed=4)
    assert (len(split.train), len(split.val), len(split.test)) == (800, 200, 1000)
    assert split.test.tolist() == official_test.tolist()
    assert not set(split.train) & set(split.val)
    assert not (set(split.train) | set(split.val)) & set(official_test)
    assert np.bincount(labels[split.train]).tolist() == [80] * 10
    assert np.bincount(labels[split.val]).tolist() == [20] * 10
    other = fixed_size_train_val(base, labels, 1000, 0.2, seed=5)
    assert other.train.tolist() != split.train.tolist()  # the cell's seed draws the examples


def test_vtab_1k_protocol_says_when_the_dataset_is_too_small():
    base = stratified_split(LABELS, 0.2, 0.2, 0)
    with pytest.raises(ValueError, match="only 88 examples outside its test split"):
        fixed_size_train_val(base, LABELS, 500, 0.2, seed=0)


# -- a split too large to hold decoded is decoded per batch, by workers kept between passes ------


def _numbered_images(count: int):
    """Images whose pixels say which image they are, labelled by parity."""
    import tlbench

    return tlbench.Images(samples=[np.full((6, 6), 10 * i, dtype=np.uint8) for i in range(count)],
                          labels=[i % 2 for i in range(count)], classes=["even", "odd"])


def test_streamed_batches_are_the_held_ones_pass_after_pass():
    import torch

    from tlbench.batches import ImageSplit
    from tlbench.decoding import Resample, decode_all

    images = _numbered_images(12)
    indices = np.array([11, 3, 5, 0, 8, 9, 1])
    held = ImageSplit(images, indices, 4, (0.5,) * 3, (0.25,) * 3,
                      pixels=decode_all(images.samples, indices, 4, Resample()))
    streamed = ImageSplit(images, indices, 4, (0.5,) * 3, (0.25,) * 3)
    for batch_size, shuffle, seed in [(3, False, 0), (3, True, 1), (3, True, 2), (4, True, 1)]:
        a = list(held.batches(batch_size, shuffle=shuffle, seed=seed))
        b = list(streamed.batches(batch_size, shuffle=shuffle, seed=seed))
        assert len(a) == len(b) == held.num_batches(batch_size)
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loader = streamed._persistent[1]
    list(streamed.batches(4, shuffle=True, seed=9))
    assert streamed._persistent[1] is loader  # the same loader, and workers, for the next epoch


def test_a_pass_inside_another_and_an_abandoned_pass_are_served_right():
    import torch

    from tlbench.batches import ImageSplit

    split = ImageSplit(_numbered_images(9), np.arange(9), 4, (0.0,) * 3, (1.0,) * 3)

    def first_pixels(batches):
        return [round(float(x[0, 0, 0, 0]) * 255) for x, _ in batches]

    outer = split.batches(3, shuffle=True, seed=4)
    x, _ = next(outer)  # a pass left half-way ...
    inner = first_pixels(split.batches(3))  # ... while another runs: a loader of its own
    assert inner == [0, 30, 60]
    assert torch.equal(x, next(iter(split.batches(3, shuffle=True, seed=4)))[0])
    outer.close()
    assert first_pixels(split.batches(3)) == [0, 30, 60]  # the kept loader after the abandoned pass


def test_decoding_on_threads_gives_the_same_pixels_in_the_same_rows(monkeypatch):
    import torch

    from tlbench import decoding

    images = [np.full((20 + i, 30, 3), (7 * i) % 256, dtype=np.uint8) for i in range(40)]
    rows = np.arange(39, -1, -1)
    alone = decoding.decode_all(images, rows, 8, decoding.Resample(), threads=1)
    monkeypatch.setattr(decoding, "THREADED_DECODE_S", 0.0)  # as for photos: every image is worth a thread
    threaded = decoding.decode_all(images, rows, 8, decoding.Resample(), threads=2)
    assert torch.equal(alone, threaded)
    assert [int(x[0, 4, 4]) for x in threaded[:3]] == [(7 * 39) % 256, (7 * 38) % 256, (7 * 37) % 256]


def _photo(path, size=(1200, 900), exif_orientation=None):
    """A smooth colour gradient saved as JPEG (smooth: its reduced decodes agree closely)."""
    from PIL import Image

    x = np.linspace(0, 255, size[0])[None, :, None]
    y = np.linspace(0, 255, size[1])[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)),
                             np.broadcast_to(y, (size[1], size[0], 1)),
                             np.full((size[1], size[0], 1), 128.0)], axis=2).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(path, "JPEG", quality=95, exif=exif)


def test_a_large_jpeg_from_a_folder_is_decoded_at_a_fraction_of_its_size(tmp_path):
    from PIL import Image

    from tlbench.decoding import Resample, to_rgb_uint8
    from tlbench_plugins.datasets import ImageFiles

    _photo(tmp_path / "a.jpg")
    sample = ImageFiles([tmp_path / "a.jpg"])[0]
    assert sample.tile  # opened, not decoded: the core decides at what size
    drafted = to_rgb_uint8(sample, 64, Resample())
    assert sample.size == (150, 113)  # decoded at 1/8: the smallest scale that still covers 64 px
    with Image.open(tmp_path / "a.jpg") as full:
        full.load()
        reference = to_rgb_uint8(full, 64, Resample())
    assert drafted.shape == reference.shape == (64, 64, 3)
    assert np.abs(drafted.astype(int) - reference.astype(int)).mean() < 2.0
    # an image only a little larger than the size is decoded whole
    small = ImageFiles([tmp_path / "a.jpg"])[0]
    to_rgb_uint8(small, 600, Resample())
    assert small.size == (1200, 900)


def test_a_rotated_photo_is_still_turned_upright(tmp_path):
    from tlbench_plugins.datasets import ImageFiles

    _photo(tmp_path / "r.jpg", size=(120, 90), exif_orientation=6)  # 6: rotate 90° to display
    sample = ImageFiles([tmp_path / "r.jpg"])[0]
    assert sample.size == (90, 120) and not getattr(sample, "tile", None)  # turned, so decoded


def test_a_file_that_cannot_be_decoded_is_named(tmp_path):
    from tlbench.decoding import Resample, to_rgb_uint8
    from tlbench_plugins.datasets import ImageFiles

    _photo(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])  # truncated after the header
    sample = ImageFiles([tmp_path / "t.jpg"])[0]
    with pytest.raises(OSError, match=r"cannot decode image .*t\.jpg.*Remove or replace it"):
        to_rgb_uint8(sample, 64, Resample())


def test_split_sizes_the_data_cannot_give_are_recorded_and_said_once_per_grid(write_grid, cli, tmp_path):
    import json

    grid = write_grid("""
        name = "caps"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["faces"]
        seeds = [0, 1]
        [settings]
        image_size = 16
        pretrained = false
        threads = 1
        test_size = 500
        train_per_class = 100
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path)
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "caps" / "records").glob("*.json"))]
    assert len(records) == 2
    for record in records:  # what was used, beside the settings the grid gave (and the run_id hashes)
        test, fewest = record["capped"]["test_size"]["used"], record["capped"]["train_per_class"]["used"]
        assert record["capped"] == {"test_size": {"set": 500, "used": test},
                                    "train_per_class": {"set": 100, "used": fewest}}
        assert record["settings"]["test_size"] == 500 and record["split_sizes"]["test"] == test < 500
        assert record["split_sizes"]["train"] >= 2 * fewest and 0 < fewest < 100
    assert err.count(f"warning: test_size = 500 was capped to {test} (all its test split has) on faces, "
                     "in 2 cell(s)") == 1
    assert err.count("warning: train_per_class = 100 was capped to") == 1


def test_a_split_first_served_while_scoring_keeps_plain_pixels(monkeypatch):
    """Scoring serves the test split first, under torch.inference_mode: its pixels are decoded
    then (on threads, which are not in that mode), kept as plain tensors, and serve later passes
    outside it."""
    import torch

    from tlbench import decoding
    from tlbench.batches import ImageSplit
    from tlbench.decoding import DecodedPixels, Resample, decode_all

    monkeypatch.setattr(decoding, "THREADED_DECODE_S", 0.0)  # threads whenever there are CPUs for them
    images = _numbered_images(24)
    held = DecodedPixels(images.samples, 4, Resample())
    split = ImageSplit(images, np.arange(24), 4, (0.0,) * 3, (1.0,) * 3, pixels=lambda: held.rows(np.arange(24)))
    with torch.inference_mode():
        scored = torch.cat([x for x, _ in split.batches(16)])
    assert not split.pixels.pixels.is_inference() and split.decode_s > 0
    again = torch.cat([x for x, _ in split.batches(16)])
    expected = decode_all(images.samples, np.arange(24), 4, Resample()).float() / 255
    assert torch.equal(scored, expected) and torch.equal(again, expected)


def test_images_decoded_on_threads_in_inference_mode_come_back_whole(monkeypatch):
    import torch

    from tlbench import decoding
    from tlbench.decoding import Resample, decode_all

    monkeypatch.setattr(decoding, "THREADED_DECODE_S", 0.0)
    images = _numbered_images(24)
    with torch.inference_mode():
        inside = decode_all(images.samples, np.arange(24), 4, Resample(), threads=2)
    assert torch.equal(inside, decode_all(images.samples, np.arange(24), 4, Resample(), threads=1))
