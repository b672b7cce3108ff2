"""The `hf` dataset plugin (Hugging Face `datasets`), on tiny DatasetDicts written with
save_to_disk: offline, a few seconds."""

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import tlbench
from tlbench.options import build_options

datasets = pytest.importorskip("datasets")

CLASSES = ["ant", "bee", "cat"]
TRAIN_LABELS = [0, 1, 2] * 4  # 3 classes × 4 train images, interleaved to catch reordering
TEST_LABELS = [2, 1, 0] * 2  # 3 classes × 2 test images
TRAIN_VALUES = [10 * i for i in range(12)]  # each image's own pixel value: 0..110
TEST_VALUES = [150 + 10 * i for i in range(6)]  # 150..200, distinct from every train image


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never reach for the hub (in this process or in a CLI subprocess)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)


def pixels(value: int) -> np.ndarray:
    """A 5×6 RGB image that only the image with this value has (a gradient, so flips show)."""
    image = np.zeros((5, 6, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = 255 - value
    image[..., 2] = value // 2 + np.arange(6)
    return image


def image(value: int):
    from PIL import Image

    return Image.fromarray(pixels(value))


def save(folder, splits: dict, features: dict):
    """save_to_disk a DatasetDict of {split: {column: values}} with these features."""
    datasets.disable_progress_bars()  # keep the tests' captured stderr to what tlbench prints
    try:
        features = datasets.Features(features)
        datasets.DatasetDict({
            name: datasets.Dataset.from_dict(columns, features=features)
            for name, columns in splits.items()
        }).save_to_disk(str(folder))
    finally:
        datasets.enable_progress_bars()
    return folder


def labelled(values, labels, label_column="label", image_column="image"):
    return {image_column: [image(v) for v in values], label_column: labels}


STANDARD_FEATURES = {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}


@pytest.fixture
def standard(tmp_path):
    """3 classes × 4 train + 2 test images, ClassLabel names."""
    return save(tmp_path / "standard", {
        "train": labelled(TRAIN_VALUES, TRAIN_LABELS),
        "test": labelled(TEST_VALUES, TEST_LABELS),
    }, STANDARD_FEATURES)


@pytest.fixture
def hf(registry):
    """Load through the registered plugin, options checked as a grid's would be."""
    plugin = registry.get("datasets", "hf")

    def load(**options):
        return plugin(build_options(plugin.Options, options, "[dataset.hf]")).load()

    return load


def pixels_of(sample) -> np.ndarray:
    return np.asarray(sample.convert("RGB"))


# -- loading --------------------------------------------------------------------------------------


def test_train_then_official_test_split_with_class_names(hf, standard):
    images = hf(path=str(standard))
    assert len(images.samples) == len(images.labels) == 18
    assert list(images.classes) == CLASSES
    assert list(images.labels) == TRAIN_LABELS + TEST_LABELS
    assert list(images.test_indices) == list(range(12, 18))
    assert "standard" in images.source


def test_every_sample_is_the_image_written_in_its_place(hf, standard):
    images = hf(path=str(standard))
    for i, value in enumerate(TRAIN_VALUES + TEST_VALUES):
        np.testing.assert_array_equal(pixels_of(images.samples[i]), pixels(value))
    np.testing.assert_array_equal(pixels_of(images.samples[-1]), pixels(TEST_VALUES[-1]))
    with pytest.raises(IndexError):
        images.samples[18]


def test_samples_decode_lazily_one_at_a_time_and_pickle(hf, standard, monkeypatch):
    decoded = []
    original = datasets.Image.decode_example
    monkeypatch.setattr(datasets.Image, "decode_example",
                        lambda self, *a, **k: decoded.append(1) or original(self, *a, **k))
    images = hf(path=str(standard))
    assert not decoded and not isinstance(images.samples, (list, tuple, np.ndarray))
    images.samples[13]
    assert len(decoded) == 1
    copy = pickle.loads(pickle.dumps(images.samples))  # what a DataLoader worker gets
    assert len(copy) == 18
    np.testing.assert_array_equal(pixels_of(copy[13]), pixels(TEST_VALUES[1]))


def test_other_splits_join_the_training_pool_after_the_test_split(hf, tmp_path):
    folder = save(tmp_path / "three", {
        "train": labelled(TRAIN_VALUES[:6], TRAIN_LABELS[:6]),
        "validation": labelled(TRAIN_VALUES[6:], TRAIN_LABELS[6:]),
        "test": labelled(TEST_VALUES, TEST_LABELS),
    }, STANDARD_FEATURES)
    images = hf(path=str(folder))
    assert list(images.test_indices) == list(range(6, 12))
    assert list(images.labels) == TRAIN_LABELS[:6] + TEST_LABELS + TRAIN_LABELS[6:]
    np.testing.assert_array_equal(pixels_of(images.samples[12]), pixels(TRAIN_VALUES[6]))
    assert "train+validation" in images.source


def test_named_splits_and_columns_override_detection(hf, tmp_path):
    features = {"photo": datasets.Image(), "mask": datasets.Image(),
                "coarse": datasets.ClassLabel(names=["x", "y"]),
                "fine": datasets.ClassLabel(names=CLASSES)}

    def split(values, labels):
        return {"photo": [image(v) for v in values], "mask": [image(255 - v) for v in values],
                "coarse": [label % 2 for label in labels], "fine": labels}

    folder = save(tmp_path / "two-columns", {
        "fit": split(TRAIN_VALUES, TRAIN_LABELS), "holdout": split(TEST_VALUES, TEST_LABELS),
    }, features)
    with pytest.raises(tlbench.ConfigError, match="several Image columns"):
        hf(path=str(folder), train_split="fit", test_split="holdout")
    images = hf(path=str(folder), train_split="fit", test_split="holdout",
                image_column="photo", label_column="fine")
    assert list(images.classes) == CLASSES and list(images.test_indices) == list(range(12, 18))
    np.testing.assert_array_equal(pixels_of(images.samples[3]), pixels(TRAIN_VALUES[3]))
    masks = hf(path=str(folder), train_split="fit", test_split="holdout",
               image_column="mask", label_column="coarse")
    assert list(masks.classes) == ["x", "y"]
    assert list(masks.labels) == [label % 2 for label in TRAIN_LABELS + TEST_LABELS]
    np.testing.assert_array_equal(pixels_of(masks.samples[3]), pixels(255 - TRAIN_VALUES[3]))


def test_string_labels_become_sorted_classes(hf, tmp_path):
    names = ["dog", "cat", "ant"]
    features = {"img": datasets.Image(), "labels": datasets.Value("string")}
    folder = save(tmp_path / "strings", {
        "train": labelled(TRAIN_VALUES, [names[i] for i in TRAIN_LABELS], "labels", "img"),
        "test": labelled(TEST_VALUES, [names[i] for i in TEST_LABELS], "labels", "img"),
    }, features)
    images = hf(path=str(folder))
    assert list(images.classes) == ["ant", "cat", "dog"]
    expected = [["ant", "cat", "dog"].index(names[i]) for i in TRAIN_LABELS + TEST_LABELS]
    assert list(images.labels) == expected


def test_integer_labels_become_classes_in_numeric_order(hf, tmp_path):
    features = {"image": datasets.Image(), "label": datasets.Value("int32")}
    codes = [7, 10, 3]  # numeric order 3, 7, 10; as text it would be 10, 3, 7
    folder = save(tmp_path / "ints", {
        "train": labelled(TRAIN_VALUES, [codes[i] for i in TRAIN_LABELS]),
        "test": labelled(TEST_VALUES, [codes[i] for i in TEST_LABELS]),
    }, features)
    images = hf(path=str(folder))
    assert list(images.classes) == ["3", "7", "10"]
    assert list(images.labels[:3]) == [1, 2, 0]


def test_a_test_class_the_training_splits_lack_is_refused_naming_it(hf, tmp_path):
    folder = save(tmp_path / "unseen", {"train": labelled(TRAIN_VALUES[:4], [0, 1, 0, 1]),
                                        "test": labelled(TEST_VALUES[:3], [0, 1, 2])}, STANDARD_FEATURES)
    with pytest.raises(tlbench.ConfigError, match=f"test split 'test' has classes with no training images "
                                                  f"\\({CLASSES[2]}\\)"):
        hf(path=str(folder))


def test_an_image_too_large_to_decode_is_named_by_its_sample_and_row(hf, tmp_path, monkeypatch):
    from PIL import Image

    folder = save(tmp_path / "bomb", {"train": labelled(TRAIN_VALUES[:4], [0, 1, 0, 1])},
                  STANDARD_FEATURES)
    images = hf(path=str(folder), test_split="")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 5x6 images: over twice the limit, a "bomb"
    with pytest.raises(OSError, match=r"cannot read sample 3 \(row 3 of part 0\): .*decompression bomb"):
        images.samples[3]


def test_without_a_test_split_the_core_draws_one(hf, tmp_path):
    folder = save(tmp_path / "train-only", {"train": labelled(TRAIN_VALUES, TRAIN_LABELS)},
                  STANDARD_FEATURES)
    with pytest.raises(tlbench.ConfigError, match=r"no split 'test' \(its splits: train\)"):
        hf(path=str(folder))
    images = hf(path=str(folder), test_split="")
    assert images.test_indices is None and len(images.samples) == 12


def test_a_saved_dataset_is_one_train_split(hf, tmp_path):
    dataset = datasets.Dataset.from_dict(labelled(TRAIN_VALUES, TRAIN_LABELS),
                                         features=datasets.Features(STANDARD_FEATURES))
    dataset.save_to_disk(str(tmp_path / "single"))
    images = hf(path=str(tmp_path / "single"), test_split="")
    assert list(images.labels) == TRAIN_LABELS and images.test_indices is None


def test_an_unlabelled_test_split_is_named_and_left_out_when_not_used(hf, tmp_path):
    folder = save(tmp_path / "unlabelled", {
        "train": labelled(TRAIN_VALUES, TRAIN_LABELS),
        "test": labelled(TEST_VALUES, [-1] * 6),  # how hub test splits without labels look
    }, STANDARD_FEATURES)
    with pytest.raises(tlbench.ConfigError, match="split 'test' has 6 images without a label"):
        hf(path=str(folder))
    images = hf(path=str(folder), test_split="")
    assert len(images.samples) == 12 and "unlabelled test left out" in images.source


def test_an_extra_split_without_a_label_column_is_left_out(hf, standard, tmp_path):
    splits = datasets.load_from_disk(str(standard))
    splits["unlabeled"] = datasets.Dataset.from_dict(
        {"image": [image(250)]}, features=datasets.Features(image=datasets.Image()))
    splits.save_to_disk(str(tmp_path / "extra"))
    images = hf(path=str(tmp_path / "extra"))
    assert len(images.samples) == 18 and "unlabelled unlabeled left out" in images.source


def test_a_local_folder_of_image_files_is_read_by_load_dataset(hf, tmp_path):
    """PATH/train/CLASS/IMAGE and PATH/test/CLASS/IMAGE: datasets' imagefolder, found by itself."""
    folder = tmp_path / "files"
    parts = (("train", TRAIN_VALUES, TRAIN_LABELS), ("test", TEST_VALUES, TEST_LABELS))
    for split, values, labels in parts:
        for i, (value, label) in enumerate(zip(values, labels)):
            (folder / split / CLASSES[label]).mkdir(parents=True, exist_ok=True)
            image(value).save(folder / split / CLASSES[label] / f"{i:02d}.png")
    images = hf(path=str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert list(images.classes) == CLASSES and list(images.test_indices) == list(range(12, 18))
    written = dict(zip(TRAIN_VALUES + TEST_VALUES, TRAIN_LABELS + TEST_LABELS))
    for sample, label in zip(images.samples, images.labels):  # every file once, with its class
        value = int(pixels_of(sample)[0, 0, 0])
        assert written.pop(value) == label
    assert not written

# -- the command line -----------------------------------------------------------------------------


def hf_grid(write_grid, **options):
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
    return write_grid(f"""
name = "hf"
backbones = ["test_efficientnet"]
strategies = ["linear_probe"]
datasets = ["hf"]

[settings]
image_size = 32
epochs = 1
pretrained = false
threads = 1

[dataset.hf]
{table}
""")


def test_a_grid_runs_end_to_end_on_the_official_test_split(cli, write_grid, standard, tmp_path):
    results = tmp_path / "results"
    code, out, err = cli("run", "--grid", hf_grid(write_grid, path=str(standard)),
                         "--results", results, "--quiet")
    assert code == 0, err
    (record_file,) = (results / "hf" / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok" and record["dataset"] == "hf"
    assert record["split_sizes"]["test"] == len(TEST_VALUES)
    assert record["split_sizes"]["train"] + record["split_sizes"]["val"] == len(TRAIN_VALUES)
    assert record["num_classes"] == 3


def test_tlbench_ls_lists_hf_without_importing_datasets():
    code = ("import sys; from tlbench.cli import main; main(['ls', 'datasets']); "
            "print('IMPORTED' if 'datasets' in sys.modules else 'NOT IMPORTED')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "\nhf " in done.stdout and "NOT IMPORTED" in done.stdout, done.stdout + done.stderr


def assert_one_line_error(code, err, *expected):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for text in expected:
        assert text in lines[0], lines[0]


def variant(name, features, train_columns, test_columns=None):
    """A dataset maker for the bad-input cases: (folder) -> folder."""
    def make(folder):
        splits = {"train": train_columns()}
        if test_columns:
            splits["test"] = test_columns()
        return save(folder / name, splits, features)
    return make


def columns(**extra):
    return lambda: {"image": [image(v) for v in TRAIN_VALUES[:3]], **extra}


STANDARD = variant("standard", STANDARD_FEATURES, columns(label=[0, 1, 2]),
                   columns(label=[0, 1, 2]))
BAD_DATASETS = {
    "no image column": (
        variant("no-image",
                {"pixels": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASSES)},
                lambda: {"pixels": ["a", "b", "c"], "label": [0, 1, 2]}),
        {"test_split": ""}, ["no Image column", "pixels: Value(string)", "image_column"]),
    "two image columns": (
        variant("two-images", {**STANDARD_FEATURES, "mask": datasets.Image()},
                columns(label=[0, 1, 2], mask=[image(1), image(2), image(3)])),
        {"test_split": ""}, ["several Image columns", "mask: Image", "image_column"]),
    "named image column missing": (
        STANDARD, {"image_column": "img"}, ["no column 'img'", "image: Image"]),
    "named image column not images": (
        STANDARD, {"image_column": "label"}, ["column 'label' is not an Image feature"]),
    "no label column": (
        variant("no-label", {"image": datasets.Image(), "caption": datasets.Value("string")},
                columns(caption=["a", "b", "c"])),
        {"test_split": ""}, ["no ClassLabel column", "caption: Value(string)", "label_column"]),
    "two label columns": (
        variant("two-labels", {**STANDARD_FEATURES, "fine": datasets.ClassLabel(names=CLASSES)},
                columns(label=[0, 1, 2], fine=[0, 1, 2])),
        {"test_split": ""}, ["several label columns", "fine: ClassLabel(3 names)"]),
    "float labels": (
        variant("float", {"image": datasets.Image(), "label": datasets.Value("float32")},
                columns(label=[0.0, 1.0, 2.0])),
        {"test_split": ""},
        ["'label' holds neither integers nor strings", "label: Value(float32)"]),
    "missing train split": (
        STANDARD, {"train_split": "training"},
        ["no split 'training' (its splits: train, test)", "train_split"]),
    "missing test split": (
        variant("train-only", STANDARD_FEATURES, columns(label=[0, 1, 2])), {},
        ["no split 'test' (its splits: train)", 'test_split = ""']),
    "test split is the train split": (STANDARD, {"test_split": "train"}, ["both 'train'"]),
    "config for a saved folder": (STANDARD, {"config": "small"}, ["remove config"]),
}


@pytest.mark.parametrize("case", BAD_DATASETS)
def test_dataset_mistakes_stop_the_run_with_one_line(case, cli, write_grid, tmp_path):
    make, options, expected = BAD_DATASETS[case]
    grid = hf_grid(write_grid, path=str(make(tmp_path)), **options)
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert_one_line_error(code, err, "[dataset.hf]", *expected)
    assert not (tmp_path / "results" / "hf").exists()  # nothing ran


@pytest.mark.parametrize("path, expected", [
    ("{tmp}/missing/folder", ["does not exist", "save_to_disk"]),
    ("{tmp}/grid.toml", ["is a file"]),
    ("  ", ["path must name"]),
])
def test_path_mistakes_stop_the_run_with_one_line(path, expected, cli, write_grid, tmp_path):
    grid = hf_grid(write_grid, path=path.format(tmp=tmp_path))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert_one_line_error(code, err, *expected)


def test_missing_datasets_package_names_the_extra(cli, write_grid, standard, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now fails
    code, out, err = cli("run", "--grid", hf_grid(write_grid, path=str(standard)),
                         "--results", tmp_path / "results")
    assert_one_line_error(code, err, 'pip install "tlbench[hf]"')


def test_unreachable_hub_dataset_names_offline_mode_and_save_to_disk(cli, write_grid, tmp_path):
    # offline (the autouse fixture), with an empty cache: nothing to fall back on
    grid = hf_grid(write_grid, path="someone/no-such-dataset", cache_dir=str(tmp_path / "empty-cache"))
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert_one_line_error(code, err, "'someone/no-such-dataset' could not be loaded", "HF_DATASETS_OFFLINE=1",
                          "save_to_disk")


def test_a_hub_that_does_not_answer_outside_offline_mode_fails_fast_naming_offline_mode(
        cli, write_grid, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # online, as a user without
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False, raising=False)  # the variables
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    nobody = "http://127.0.0.1:9"  # a hub nothing answers for: a machine without a network
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", nobody)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", nobody)
    grid = hf_grid(write_grid, path="someone/no-such-dataset", cache_dir=str(tmp_path / "empty-cache"))
    started = time.monotonic()
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "results")
    assert time.monotonic() - started < 5  # not the hub client's ~25 s of retries
    assert_one_line_error(code, err, "'someone/no-such-dataset' could not be loaded", "does not answer",
                          "HF_DATASETS_OFFLINE=1", "save_to_disk")


# -- options that are not paths -------------------------------------------------------------------


def test_a_split_name_beside_a_file_of_that_name_is_no_file(standard, write_grid, registry, tiny_settings, tmp_path,
                                                            monkeypatch):
    """Only options declared paths are files: "train" beside ./train changes no cell id, and
    a cluster run does not refuse it as a relative path."""
    from pathlib import Path

    from tlbench.grid import build_grid, read_grid_file
    from tlbench.node_check import DriverView
    from tlbench.runner import Runner

    monkeypatch.chdir(tmp_path)
    source = write_grid(f"""
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["hf"]
        [dataset.hf]
        path = "{standard}"
        {tiny_settings}
    """)

    def grid():
        return build_grid(*read_grid_file(source), registry)

    before = grid().cells[0].run_id
    Path("train").write_text("not the split")  # train_split = "train", test_split = "test"
    Path("test").mkdir()
    after = grid()
    assert after.cells[0].run_id == before and after.cells[0].files == {}
    DriverView(registry, after, Runner(registry, tmp_path / "results"))  # no relative-path refusal
