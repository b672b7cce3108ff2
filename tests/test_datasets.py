"""The first-party datasets plugin: offline datasets, the image folder, torchvision datasets.

Everything here runs offline: torchvision datasets are checked with download = false, against
an empty folder and against tiny fake copies of their on-disk layout.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tlbench
from tlbench.options import build_options

OFFLINE = {  # name: (images, classes), as documented
    "digits": (1797, 10),
    "mnist5k": (5000, 10),
    "textures": (768, 3),
    "faces": (200, 2),
}
TORCHVISION = ["cifar10", "cifar100", "flowers102", "pets", "dtd", "eurosat", "food101"]


def load(registry, name, **options):
    cls = registry.get("datasets", name)
    return cls(build_options(cls.Options, options, f"[dataset.{name}]")).load()


@pytest.fixture(scope="module")
def offline(registry):
    """Each offline dataset loaded once for the module."""
    return {name: load(registry, name) for name in OFFLINE}


def test_every_dataset_is_registered_with_a_description(registry):
    assert set(registry.names("datasets")) >= {*OFFLINE, "folder", *TORCHVISION}
    for name in registry.names("datasets"):
        assert registry.get("datasets", name).summary()


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_dataset_has_documented_size_and_format(offline, name):
    images = offline[name]
    count, num_classes = OFFLINE[name]
    labels = np.asarray(images.labels)
    assert len(images.samples) == len(labels) == count
    assert len(images.classes) == num_classes
    assert sorted(np.unique(labels)) == list(range(num_classes))  # every class, nothing else
    assert images.test_indices is None  # the core draws the test split
    for sample in (images.samples[0], images.samples[count - 1]):
        assert sample.dtype == np.uint8 and sample.ndim == 2


def test_pixel_values_use_the_full_uint8_range(offline):
    for name in ("digits", "mnist5k", "faces"):
        samples = np.asarray(offline[name].samples)
        assert samples.max() == 255, name


def test_faces_come_first_and_non_faces_second(offline):
    images = offline["faces"]
    names = [images.classes[label] for label in images.labels]
    assert names == ["face"] * 100 + ["non-face"] * 100


@pytest.mark.parametrize("patch_size", [32, 64, 48])
def test_texture_patches_tile_each_image_without_overlap(registry, patch_size):
    import skimage.data

    images = load(registry, "textures", patch_size=patch_size)
    tiles_per_side = 512 // patch_size
    per_class = np.bincount(images.labels)
    assert per_class.tolist() == [tiles_per_side**2] * 3
    # the brick patches, put back in reading order, are exactly the brick image: no pixel twice
    brick = np.asarray(images.samples[: per_class[0]])
    grid = brick.reshape(tiles_per_side, tiles_per_side, patch_size, patch_size).swapaxes(1, 2)
    side = tiles_per_side * patch_size
    assert np.array_equal(grid.reshape(side, side), skimage.data.brick()[:side, :side])


@pytest.mark.parametrize("patch_size", [4, 300])
def test_texture_patch_size_out_of_range_is_a_config_error(registry, patch_size):
    options = registry.get("datasets", "textures").Options
    with pytest.raises(tlbench.ConfigError, match="patch_size"):
        build_options(options, {"patch_size": patch_size}, "[dataset.textures]")


# -- the stratified split the core draws on these datasets -----------------------------------


@pytest.mark.parametrize("name", ["digits", "textures", "faces"])
def test_core_split_is_reproducible_and_stratified(offline, name):
    from tlbench.splits import stratified_split

    labels = np.asarray(offline[name].labels)
    first, again = (stratified_split(labels, 0.1, 0.2, seed=0) for _ in range(2))
    other = stratified_split(labels, 0.1, 0.2, seed=1)
    assert first.digest() == again.digest()
    assert not np.array_equal(first.test, other.test)
    everything = np.concatenate([first.train, first.val, first.test])
    assert sorted(everything) == list(range(len(labels)))  # disjoint and complete
    for cls in np.unique(labels):
        in_class = np.sum(labels == cls)
        assert abs(np.sum(labels[first.test] == cls) - 0.2 * in_class) <= 1


# -- the user's image folder -----------------------------------------------------------------


def save(path, size, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def make_tree(root):
    """Two classes × three images of different sizes and modes, plus files to be ignored."""
    save(root / "dogs" / "1.png", (10, 12), "RGB")
    save(root / "dogs" / "2.PNG", (7, 5), "RGBA")
    save(root / "dogs" / "nested" / "3.jpeg", (9, 9), "L")
    for i, size in enumerate([(4, 4), (5, 6), (20, 8)]):
        save(root / "cats" / f"{i}.bmp", size, "RGB")
    save(root / "cats" / ".ipynb_checkpoints" / "0-checkpoint.png", (3, 3), "RGB")
    (root / "cats" / "notes.txt").write_text("not an image")
    return root


def test_folder_classes_are_sorted_subfolders_and_images_load_lazily(
    registry, tmp_path, monkeypatch
):
    make_tree(tmp_path)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))

    images = load(registry, "folder", path=str(tmp_path))
    assert opened == []  # listing the folder decodes nothing
    assert images.classes == ["cats", "dogs"]
    assert list(images.labels) == [0, 0, 0, 1, 1, 1]
    assert images.test_indices is None
    loaded = [images.samples[i] for i in range(len(images.samples))]
    assert len(opened) == 6
    assert [image.size for image in loaded[3:]] == [(10, 12), (7, 5), (9, 9)]
    assert [image.mode for image in loaded[3:]] == ["RGB", "RGBA", "L"]


def test_folder_samples_become_rgb_arrays_in_the_core(registry, tmp_path):
    from tlbench.decoding import to_rgb_uint8

    images = load(registry, "folder", path=str(make_tree(tmp_path)))
    samples = pickle.loads(pickle.dumps(images.samples))  # as DataLoader workers receive them
    for i in range(len(samples)):
        assert to_rgb_uint8(samples[i], 16).shape == (16, 16, 3)


def test_folder_train_and_test_subtrees_are_an_official_split(registry, tmp_path):
    for part, count in (("train", 3), ("test", 2)):
        for cls in ("b", "a"):
            for i in range(count):
                save(tmp_path / part / cls / f"{i}.png", (6, 6), "RGB")
    images = load(registry, "folder", path=str(tmp_path))
    assert images.classes == ["a", "b"]
    assert list(images.test_indices) == [6, 7, 8, 9]
    assert list(images.labels) == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]


def split_trees(root, counts: dict):
    """root/SPLIT/{a,b}/N.png with counts[SPLIT] images per class."""
    for part, count in counts.items():
        for cls in ("b", "a"):
            for i in range(count):
                save(root / part / cls / f"{i}.png", (6, 6), "RGB")
    return root


def test_folder_train_and_val_trees_are_one_training_pool_not_two_classes(registry, tmp_path):
    images = load(registry, "folder", path=str(split_trees(tmp_path, {"train": 3, "Validation": 2})))
    assert images.classes == ["a", "b"]  # never "train" and "val"
    assert len(images.samples) == 10 and images.test_indices is None  # the core draws the test split
    assert "train/ + Validation/ the training pool)" in images.source


def test_folder_train_val_and_test_trees_keep_test_and_pool_train_with_val(registry, tmp_path):
    images = load(registry, "folder", path=str(split_trees(tmp_path, {"train": 3, "val": 1, "test": 2})))
    assert images.classes == ["a", "b"] and len(images.samples) == 12  # no image left out
    assert list(images.test_indices) == [8, 9, 10, 11]
    assert list(images.labels) == [0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1]
    assert "train/ + val/ the training pool, test/ the test split" in images.source


@pytest.mark.parametrize("extra, problem", [
    ({"cats": 1}, "mixes split folders (test/, train/) with other folders (cats/)"),
    ({"train": 0}, "has test/ but no train/ folder"),
    ({"training": 1}, "has two train folders (train/, training/)"),
])
def test_folder_split_layouts_that_are_ambiguous_are_refused(registry, tmp_path, extra, problem):
    counts = {"train": 2, "test": 1, **extra}
    if extra.get("train") == 0:
        del counts["train"]
    if "cats" in extra:
        save(tmp_path / "cats" / "kitten" / "1.png", (6, 6), "RGB")
        del counts["cats"]
    split_trees(tmp_path, counts)
    with pytest.raises(tlbench.ConfigError) as error:
        load(registry, "folder", path=str(tmp_path))
    assert problem in str(error.value)


@pytest.mark.parametrize(
    "layout, problem",
    [
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("empty", "no class sub-folders"),
        ("loose images", "no class sub-folders"),
        ("no images", "no images"),
        ("one empty class", "without images: b"),
        ("one class", "only one class"),
    ],
)
def test_folder_mistakes_are_config_errors_naming_the_path(registry, tmp_path, layout, problem):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("")
    elif layout != "missing":
        root.mkdir()
    if layout == "loose images":
        save(root / "1.png", (4, 4), "RGB")
    if layout in ("no images", "one empty class"):
        (root / "a").mkdir()
        (root / "b").mkdir()
        (root / "a" / "readme.txt").write_text("")
    if layout == "one empty class":
        save(root / "a" / "1.png", (4, 4), "RGB")
    if layout == "one class":
        save(root / "a" / "1.png", (4, 4), "RGB")
    with pytest.raises(tlbench.ConfigError, match=problem) as error:
        load(registry, "folder", path=str(root))
    assert str(root) in str(error.value) and "CLASS_NAME" in str(error.value)


def test_folder_path_is_required(registry):
    with pytest.raises(tlbench.ConfigError, match="path"):
        build_options(registry.get("datasets", "folder").Options, {}, "[dataset.folder]")


# -- torchvision datasets, offline -----------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_dataset_missing_without_download_is_one_clear_config_error(
    registry, tmp_path, name
):
    with pytest.raises(tlbench.ConfigError) as error:
        load(registry, name, root=str(tmp_path), download=False)
    message = str(error.value)
    assert repr(name) in message and str(tmp_path) in message and "download" in message


def test_torchvision_root_defaults_to_tlbench_data(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_DATA", str(tmp_path / "store"))
    with pytest.raises(tlbench.ConfigError, match=str(tmp_path / "store")):
        load(registry, "eurosat", download=False)


def test_eurosat_labels_come_from_its_image_folder(registry, tmp_path):
    """EuroSAT is an ImageFolder: labels from ``.targets``, no official split."""
    base = tmp_path / "eurosat" / "2750"
    for cls, count in (("Forest", 2), ("River", 3)):
        for i in range(count):
            save(base / cls / f"{cls}_{i}.jpg", (8, 8), "RGB")
    images = load(registry, "eurosat", root=str(tmp_path), download=False)
    assert images.classes == ["Forest", "River"]
    assert list(images.labels) == [0, 0, 1, 1, 1]
    assert images.test_indices is None
    samples = pickle.loads(pickle.dumps(images.samples))  # as DataLoader workers receive them
    assert samples[-1].size == (8, 8)
    with pytest.raises(IndexError):
        samples[5]


def test_dtd_splits_are_concatenated_with_the_test_split_kept(registry, tmp_path):
    """DTD numbers classes per split file; "val" here lacks a class, so numbers must be mapped."""
    data = tmp_path / "dtd" / "dtd"
    split_files = {"train": ["banded/a.jpg", "zigzag/b.jpg"], "val": ["zigzag/c.jpg"],
                   "test": ["banded/d.jpg", "zigzag/e.jpg", "zigzag/f.jpg"]}
    for split, files in split_files.items():
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(files) + "\n")
        for file in files:
            save(data / "images" / file, (6, 6), "RGB")
    images = load(registry, "dtd", root=str(tmp_path), download=False)
    assert images.classes == ["banded", "zigzag"]
    assert list(images.labels) == [0, 1, 1, 0, 1, 1]
    assert list(images.test_indices) == [3, 4, 5]
    assert [images.samples[i].size for i in (0, 5)] == [(6, 6), (6, 6)]


def test_importing_the_plugin_does_not_import_torch():
    code = "import tlbench_plugins.datasets, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- Fashion-MNIST from idx files, Animal Shape from its pip package ---------------------------


def write_idx(path, array, gz=True):
    """An idx file as LeCun's format defines it: zero, zero, type 0x08 (ubyte), ndim, dims."""
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(str(path) + (".gz" if gz else ""), "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def tiny_fashion(folder, train=30, test=10, gz=True):
    """Distinct images (pixel (0, 0) holds the index) with labels cycling through 10 classes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {}
    for split, count, prefix in (("train", train, "train"), ("test", test, "t10k")):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(count)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        parts[split] = (images, labels)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files_from_root_with_the_official_test_split(registry, tmp_path, gz):
    parts = tiny_fashion(tmp_path / "fm", gz=gz)
    images = load(registry, "fashion_mnist", root=str(tmp_path / "fm"), download=False)
    assert len(images.samples) == len(images.labels) == 40
    assert list(images.test_indices) == list(range(30, 40))
    assert images.classes[0] == "T-shirt/top" and images.classes[9] == "Ankle boot"
    assert np.array_equal(images.samples[:30], parts["train"][0])
    assert np.array_equal(images.samples[30:], parts["test"][0])
    assert images.labels.tolist() == [i % 10 for i in range(30)] + [i % 10 for i in range(10)]


def test_fashion_mnist_looks_in_tlbench_data_in_torchvisions_layout(registry, tmp_path, monkeypatch):
    tiny_fashion(tmp_path / "data" / "FashionMNIST" / "raw", gz=False)
    monkeypatch.setenv("TLBENCH_DATA", str(tmp_path / "data"))
    images = load(registry, "fashion_mnist", download=False)
    assert len(images.samples) == 40
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in images.source


@pytest.fixture(scope="module")
def installed(registry):
    """name -> the default grid's dataset as this machine has it installed (TLBENCH_DATA unset,
    nothing downloaded), loaded once for the module."""
    loaded = {}
    offline = {"fashion_mnist": {"download": False}}

    def get(name):
        if name not in loaded:
            with pytest.MonkeyPatch.context() as env:
                env.delenv("TLBENCH_DATA", raising=False)
                loaded[name] = load(registry, name, **offline.get(name, {}))
        return loaded[name]

    return get


def test_fashion_mnist_from_debians_dataset_package(installed):
    """The default grid's source: `apt-get install dataset-fashion-mnist` (.ci/run installs it)."""
    images = installed("fashion_mnist")
    assert "/usr/share/datasets/fashion-mnist" in images.source
    assert len(images.samples) == 70000 and len(images.test_indices) == 10000
    assert np.bincount(images.labels).tolist() == [7000] * 10
    assert images.samples.shape[1:] == (28, 28) and images.samples.dtype == np.uint8


def test_fashion_mnist_missing_without_download_names_both_ways_to_get_it(write_grid, cli, tmp_path):
    grid = write_grid(f"""
        name = "fm"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["fashion_mnist"]
        [dataset.fashion_mnist]
        root = "{tmp_path / 'empty'}"
        download = false
    """)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "apt-get install dataset-fashion-mnist" in err and "download = true" in err
    assert not (tmp_path / "results").exists()


def test_a_truncated_idx_file_is_reported_not_guessed(registry, tmp_path):
    tiny_fashion(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(tlbench.ConfigError, match="truncated or corrupt"):
        load(registry, "fashion_mnist", root=str(tmp_path / "fm"), download=False)


def test_animal_shape_is_de_duplicated(installed):
    images = installed("animal_shape")
    samples = np.asarray(images.samples)
    assert samples.shape == (9716, 28, 28) and samples.dtype == np.uint8
    assert len(np.unique(samples.reshape(len(samples), -1), axis=0)) == len(samples)  # 284 copies gone
    assert images.classes == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse",
                              "sheep", "zebra"]
    # 1,000 a class as shipped; most copies were birds
    assert np.bincount(images.labels).tolist() == [937, 812, 992, 996, 997, 1000, 1000, 997, 985, 1000]
    assert images.test_indices is None


def test_animal_shape_unpickles_numpy_arrays_and_nothing_else():
    import io
    import pickle

    from tlbench_plugins.datasets import _NumpyArraysOnly

    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert np.array_equal(_NumpyArraysOnly.load(io.BytesIO(pickle.dumps(array))), array)

    class Hostile:
        def __reduce__(self):
            return (print, ("this ran",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        _NumpyArraysOnly.load(io.BytesIO(pickle.dumps(Hostile())))


@pytest.mark.parametrize("name", ["fashion_mnist", "animal_shape"])
def test_no_image_is_in_two_splits_of_the_default_grids_protocol(installed, name):
    """Exact copies across splits would score memorised images as transferred ones."""
    import hashlib

    from tlbench.splits import fixed_size_train_val, stratified_split

    images = installed(name)
    samples = np.asarray(images.samples)
    base = stratified_split(images.labels, 0.2, 0.2, 0, images.test_indices)
    splits = fixed_size_train_val(base, images.labels, 300, 0.2, seed=1)
    digests = {part: {hashlib.sha1(samples[i].tobytes()).digest() for i in getattr(splits, part)}
               for part in ("train", "val", "test")}
    assert len(digests["train"]) == 240 and len(digests["val"]) == 60
    assert not digests["train"] & digests["test"] and not digests["val"] & digests["test"]
    assert not digests["train"] & digests["val"]
    # and none anywhere in the whole dataset
    assert len({hashlib.sha1(s.tobytes()).digest() for s in samples}) == len(samples)


@pytest.mark.parametrize("mode, make, expected", [
    ("1", lambda: Image.new("1", (4, 4), 1), 255),
    ("L", lambda: Image.new("L", (4, 4), 100), 100),
    ("P", lambda: Image.new("L", (4, 4), 100).convert("P"), 100),
    ("RGBA", lambda: Image.new("RGBA", (4, 4), (100, 100, 100, 128)), 100),
    ("CMYK", lambda: Image.new("RGB", (4, 4), (100, 100, 100)).convert("CMYK"), 100),
    ("I;16", lambda: Image.fromarray(np.full((4, 4), 100 * 257, np.uint16)), 100),
    ("I", lambda: Image.fromarray(np.full((4, 4), 100, np.int32)), 100),
    ("F", lambda: Image.fromarray(np.full((4, 4), 100 / 255, np.float32)), 100),
])
def test_every_image_mode_a_folder_may_hold_becomes_faithful_rgb(tmp_path, mode, make, expected):
    """Written to a real file and read back as a folder dataset would (16-bit PNGs used to come
    out solid white: PIL's convert clips 16-bit levels at 255)."""
    from tlbench.decoding import to_rgb_uint8
    from tlbench_plugins.datasets import ImageFiles

    suffix = ".tiff" if mode in ("F", "CMYK", "I") else ".png"
    path = tmp_path / f"image{suffix}"
    make().save(path)
    (loaded,) = [ImageFiles([path])[0]]
    pixels = to_rgb_uint8(loaded, 4)
    assert pixels.shape == (4, 4, 3) and pixels.dtype == np.uint8
    assert np.all(np.abs(pixels.astype(int) - expected) <= 1), (loaded.mode, pixels[0, 0])


def test_a_sixteen_bit_gradient_keeps_its_levels(tmp_path):
    from tlbench.decoding import to_rgb_uint8
    from tlbench_plugins.datasets import ImageFiles

    levels = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "g.png")
    pixels = to_rgb_uint8(ImageFiles([tmp_path / "g.png"])[0], 16)
    assert pixels[:, :, 0].ravel().tolist() == list(range(256))


def test_digits_are_scikit_learns_read_without_importing_it():
    """digits reads load_digits()'s file itself (importing scikit-learn took 3 s of a one-cell run)."""
    code = ("import sys\n"
            "from tlbench_plugins.datasets import Digits\n"
            "images = Digits().load()\n"
            "assert 'sklearn' not in sys.modules\n"
            "import numpy as np\n"
            "from sklearn.datasets import load_digits\n"
            "d = load_digits()\n"
            "assert np.array_equal(np.asarray(images.samples), np.round(d.images * 255 / 16))\n"
            "assert np.array_equal(np.asarray(images.labels), d.target)\n"
            "assert list(images.classes) == [str(n) for n in d.target_names]\n")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("labels, classes, problem", [
    ([0, 1] * 10, ["a", "b"], "returned 30 samples but 20 labels"),
    ([0, 1, 2] * 10, ["a", "b"], "labels from 0 to 2; they must be integers 0 to 1"),
    ([-1, 0, 1] * 10, ["a", "b", "c"], "labels from -1 to 1; they must be integers 0 to 2"),
    ([0.0, 1.0, 1.0] * 10, ["a", "b"], "they must be integers 0 to 1"),
    ([0] * 30, ["a"], "1 class(es): a classifier needs at least 2"),
])
def test_a_plugin_datasets_mistake_is_said_in_its_words_not_torchs(labels, classes, problem):
    """A label past the class names failed deep in torch ("Class values must be smaller than
    num_classes"); the core now names the dataset and what Images promises."""
    import numpy as np

    from tlbench.cell_data import check_images

    images = tlbench.Images(samples=np.zeros((30, 8, 8), np.uint8), labels=labels, classes=classes)
    with pytest.raises(ValueError, match="dataset 'mine' ") as info:
        check_images("mine", images)
    assert problem in str(info.value)
    check_images("mine", tlbench.Images(samples=np.zeros((30, 8, 8), np.uint8), labels=[0, 1, 2] * 10,
                                        classes=["a", "b", "c"]))  # a right one passes
