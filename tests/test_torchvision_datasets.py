"""The torchvision-backed datasets loaded from tiny copies of their REAL on-disk layout.

Each test writes, under tmp_path, a few tiny images in exactly the folders, file names and
split/label files that torchvision 0.29.1 reads (cifar.py, dtd.py, eurosat.py, flowers102.py,
food101.py, oxford_iiit_pet.py), then loads it through the plugin with ``download = false``: the
whole path (plugin -> torchvision parser -> PIL decoding) is the real one.

Two datasets guard their files with md5 sums of the official downloads, which no tiny copy can
match: CIFAR-10/100 (every batch file and the meta file) and Flowers-102 (imagelabels.mat and
setid.mat). Their tests replace torchvision's ``check_integrity`` in that one module by a check
that the file exists (torchvision's own ``check_integrity`` without an md5); the parsing is real.
Those tests say so in their names; separate tests show the tiny copies are refused without it.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

import tlbench
from tlbench.options import build_options


def load(registry, name, root):
    cls = registry.get("datasets", name)
    options = build_options(cls.Options, {"root": str(root), "download": False}, f"[dataset.{name}]")
    return cls(options).load()


def save(path, size, color=(90, 140, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def names(images):
    """The class name of every image, in the plugin's order."""
    return [images.classes[label] for label in np.asarray(images.labels)]


def decoded_sizes(images):
    samples = pickle.loads(pickle.dumps(images.samples))  # as DataLoader workers receive them
    assert len(samples) == len(images.labels)
    decoded = [samples[i] for i in range(len(samples))]
    assert all(isinstance(image, Image.Image) and image.mode == "RGB" for image in decoded)
    with pytest.raises(IndexError):
        samples[len(samples)]
    return [image.size for image in decoded]


def skip_md5_check(monkeypatch, module_name):
    """Replace torchvision's md5 check in one dataset module by "the file exists" (the same
    ``check_integrity`` without an md5): the official md5 sums cannot match a tiny copy."""
    import importlib

    from torchvision.datasets import utils

    module = importlib.import_module(f"torchvision.datasets.{module_name}")
    monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: utils.check_integrity(fpath))


# -- CIFAR-10 / CIFAR-100: pickled batches --------------------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables "
    "household_electrical_devices household_furniture insects large_carnivores "
    "large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores "
    "medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2"
).split()


def cifar_image(number):
    """A 32×32×3 image that is different for every number and asymmetric (rows != columns),
    so a transposed or channel-swapped decoding is caught."""
    y, x = np.mgrid[0:32, 0:32]
    return np.stack([(y * 8 + number) % 256, (x * 4 + 3 * number) % 256,
                     np.full((32, 32), 250 - number)], axis=-1).astype(np.uint8)


def write_cifar_batch(path, numbers, labels, label_key, **extra):
    """One batch as the official python version stores it: a pickled dict whose ``data`` is an
    N×3072 uint8 array, each row the 1024 red, then green, then blue pixels, row by row."""
    images = [cifar_image(n) for n in numbers]
    data = np.stack([image.transpose(2, 0, 1).reshape(-1) for image in images])
    entry = {"batch_label": path.name, "data": data, label_key: list(labels),
             "filenames": [f"image_{n}.png" for n in numbers], **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))
    return images


def check_cifar_pixels(images, written):
    for i, expected in enumerate(written):
        assert np.array_equal(np.asarray(images.samples[i]), expected), i


def make_cifar10(root):
    """cifar-10-batches-py/data_batch_1..5 (2 images each), test_batch (3), batches.meta."""
    folder = root / "cifar-10-batches-py"
    train_labels = [[6, 9], [9, 4], [1, 1], [2, 7], [8, 3]]  # the first real labels are 6, 9, 9, 4, 1
    written = []
    for b, labels in enumerate(train_labels):
        written += write_cifar_batch(folder / f"data_batch_{b + 1}", [2 * b, 2 * b + 1], labels, "labels")
    written += write_cifar_batch(folder / "test_batch", [10, 11, 12], [3, 8, 0], "labels")
    meta = {"num_cases_per_batch": 10000, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def make_cifar100(root):
    """cifar-100-python/train (4 images), test (2), meta: fine and (different) coarse labels."""
    folder = root / "cifar-100-python"
    written = write_cifar_batch(folder / "train", [0, 1, 2, 3], [19, 29, 0, 99], "fine_labels",
                                coarse_labels=[11, 15, 4, 13])
    written += write_cifar_batch(folder / "test", [4, 5], [49, 33], "fine_labels",
                                 coarse_labels=[10, 10])
    meta = {"fine_label_names": CIFAR100_CLASSES, "coarse_label_names": CIFAR100_COARSE}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_cifar10_from_real_batch_files_with_torchvision_md5_check_bypassed(
    registry, tmp_path, monkeypatch
):
    skip_md5_check(monkeypatch, "cifar")
    written = make_cifar10(tmp_path)
    images = load(registry, "cifar10", tmp_path)
    assert images.classes == CIFAR10_CLASSES
    assert len(images.samples) == len(images.labels) == 13
    assert list(images.labels) == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3, 3, 8, 0]
    assert names(images)[10:] == ["cat", "ship", "airplane"]  # the test batch, in its order
    assert list(images.test_indices) == [10, 11, 12]
    assert decoded_sizes(images) == [(32, 32)] * 13
    check_cifar_pixels(images, written)


def test_cifar100_from_real_files_uses_fine_labels_with_torchvision_md5_check_bypassed(
    registry, tmp_path, monkeypatch
):
    skip_md5_check(monkeypatch, "cifar")
    written = make_cifar100(tmp_path)
    images = load(registry, "cifar100", tmp_path)
    assert len(images.classes) == 100 and images.classes == CIFAR100_CLASSES
    assert len(images.samples) == 6
    assert names(images) == ["cattle", "dinosaur", "apple", "worm", "mountain", "forest"]
    assert list(images.test_indices) == [4, 5]
    assert decoded_sizes(images) == [(32, 32)] * 6
    check_cifar_pixels(images, written)


@pytest.mark.parametrize("name, make", [("cifar10", make_cifar10), ("cifar100", make_cifar100)])
def test_cifar_tiny_copy_fails_torchvision_md5_check(registry, tmp_path, name, make):
    """Why the CIFAR tests bypass the check: torchvision compares every batch file's md5 with the
    official one, so a tiny copy is (rightly) refused, as one clear config error."""
    make(tmp_path)
    with pytest.raises(tlbench.ConfigError, match="corrupted"):
        load(registry, name, tmp_path)


# -- Flowers-102: jpg/image_NNNNN.jpg + imagelabels.mat + setid.mat -------------------------------

# image id -> official label (1-based, as imagelabels.mat stores it)
FLOWER_LABELS = {1: 77, 2: 77, 3: 1, 4: 1, 5: 102, 6: 102, 7: 77, 8: 1, 9: 102, 10: 1}
FLOWER_SPLITS = {"trnid": [1, 3, 5], "valid": [2, 4, 6], "tstid": [7, 8, 9, 10]}


def flower_size(image_id):
    return (10 + image_id, 20 + image_id)


def make_flowers102(root):
    from scipy.io import savemat

    base = root / "flowers-102"
    for image_id in FLOWER_LABELS:
        save(base / "jpg" / f"image_{image_id:05d}.jpg", flower_size(image_id))
    # the official files hold 1×N arrays: uint8 labels, uint16 image ids (1-based)
    labels = np.array([[FLOWER_LABELS[i] for i in sorted(FLOWER_LABELS)]], dtype=np.uint8)
    savemat(base / "imagelabels.mat", {"labels": labels})
    savemat(base / "setid.mat", {key: np.array([ids], dtype=np.uint16)
                                 for key, ids in FLOWER_SPLITS.items()})


def test_flowers102_from_real_mat_files_with_torchvision_md5_check_bypassed(
    registry, tmp_path, monkeypatch
):
    from torchvision.datasets import Flowers102

    skip_md5_check(monkeypatch, "flowers102")
    make_flowers102(tmp_path)
    images = load(registry, "flowers102", tmp_path)
    # all 102 species, numbered as the official labels 1..102 (minus one)
    assert len(images.classes) == 102 and images.classes == list(Flowers102.classes)
    assert images.classes[0] == "pink primrose" and images.classes[76] == "passion flower"
    assert images.classes[101] == "blackberry lily"
    assert len(images.samples) == 10
    order = FLOWER_SPLITS["trnid"] + FLOWER_SPLITS["valid"] + FLOWER_SPLITS["tstid"]
    assert list(images.labels) == [FLOWER_LABELS[i] - 1 for i in order]
    assert names(images) == ["passion flower", "pink primrose", "blackberry lily"] * 3 + ["pink primrose"]
    assert list(images.test_indices) == [6, 7, 8, 9]  # exactly setid.mat's tstid images
    assert decoded_sizes(images) == [flower_size(i) for i in order]


def test_flowers102_tiny_copy_fails_torchvision_md5_check(registry, tmp_path):
    make_flowers102(tmp_path)
    with pytest.raises(tlbench.ConfigError, match="corrupted"):
        load(registry, "flowers102", tmp_path)


# -- Oxford-IIIT Pets: images/*.jpg + annotations/{trainval,test}.txt ----------------------------

# the 37 breeds in the order of their official class ids 1..37 (cats capitalised, as the files)
PET_BREEDS = (
    "Abyssinian american_bulldog american_pit_bull_terrier basset_hound beagle Bengal Birman "
    "Bombay boxer British_Shorthair chihuahua Egyptian_Mau english_cocker_spaniel english_setter "
    "german_shorthaired great_pyrenees havanese japanese_chin keeshond leonberger Maine_Coon "
    "miniature_pinscher newfoundland Persian pomeranian pug Ragdoll Russian_Blue saint_bernard "
    "samoyed scottish_terrier shiba_inu Siamese Sphynx staffordshire_bull_terrier wheaten_terrier "
    "yorkshire_terrier"
).split()
PET_CLASSES = [  # torchvision's names, written out by hand
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle",
    "Bengal", "Birman", "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau",
    "English Cocker Spaniel", "English Setter", "German Shorthaired", "Great Pyrenees",
    "Havanese", "Japanese Chin", "Keeshond", "Leonberger", "Maine Coon", "Miniature Pinscher",
    "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll", "Russian Blue", "Saint Bernard",
    "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx",
    "Staffordshire Bull Terrier", "Wheaten Terrier", "Yorkshire Terrier",
]


def pet_size(k):
    return (4 + k % 10, 4 + k // 10)  # a different size for every image


def make_pets(root):
    """trainval: one image per breed; test: one per breed plus a second Abyssinian. Lines are
    "IMAGE CLASS-ID SPECIES BREED-ID" (species 1 = cat, 2 = dog), as in the official files."""
    base = root / "oxford-iiit-pet"
    splits = {"trainval": [(breed, 100) for breed in PET_BREEDS],
              "test": [("Abyssinian", 201), ("Abyssinian", 202)]
              + [(breed, 200) for breed in PET_BREEDS[1:]]}
    k = 0
    for split, entries in splits.items():
        lines = []
        for breed, number in entries:
            class_id = PET_BREEDS.index(breed) + 1
            cat = breed[0].isupper()
            species = 1 if cat else 2
            breed_id = sum(b[0].isupper() == cat for b in PET_BREEDS[:class_id])
            lines.append(f"{breed}_{number} {class_id} {species} {breed_id}")
            save(base / "images" / f"{breed}_{number}.jpg", pet_size(k))
            k += 1
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (base / "annotations" / "trimaps").mkdir()
    return k


def test_pets_from_real_annotation_files(registry, tmp_path):
    count = make_pets(tmp_path)
    images = load(registry, "pets", tmp_path)
    assert count == 75 and len(images.samples) == 75
    assert images.classes == PET_CLASSES  # 37 breeds, not cat/dog
    assert list(images.labels[:37]) == list(range(37))  # trainval, one per breed in id order
    assert list(images.labels[37:]) == [0, 0, *range(1, 37)]
    assert names(images)[35:40] == ["Wheaten Terrier", "Yorkshire Terrier",
                                    "Abyssinian", "Abyssinian", "American Bulldog"]
    assert list(images.test_indices) == list(range(37, 75))
    assert decoded_sizes(images) == [pet_size(k) for k in range(75)]


# -- DTD: dtd/dtd/images/CLASS/CLASS_NNNN.jpg + dtd/dtd/labels/{train,val,test}N.txt -------------


def dtd_size(k):
    return (6 + k, 9 + k)


def make_dtd(root):
    """Partition 1 (the one the plugin uses) and a partition 2 that splits the images otherwise."""
    data = root / "dtd" / "dtd"
    files = {cls: [f"{cls}/{cls}_{n:04d}.jpg" for n in (3, 7, 12)]
             for cls in ("banded", "dotted", "zigzagged")}
    partition1 = {split: sorted(paths[i] for paths in files.values())
                  for i, split in enumerate(("train", "val", "test"))}
    partition1["test"].append("dotted/dotted_0099.jpg")
    partition2 = {"train": partition1["test"], "val": partition1["val"], "test": partition1["train"]}
    (data / "labels").mkdir(parents=True)
    for number, partition in ((1, partition1), (2, partition2)):
        for split, paths in partition.items():
            (data / "labels" / f"{split}{number}.txt").write_text("\n".join(paths) + "\n")
    order = partition1["train"] + partition1["val"] + partition1["test"]
    for k, path in enumerate(order):
        save(data / "images" / path, dtd_size(k))
    return order


def test_dtd_from_real_label_files_partition_1(registry, tmp_path):
    order = make_dtd(tmp_path)
    images = load(registry, "dtd", tmp_path)
    assert images.classes == ["banded", "dotted", "zigzagged"]  # sorted names
    assert len(images.samples) == 10
    assert names(images) == ["banded", "dotted", "zigzagged"] * 3 + ["dotted"]
    assert list(images.labels) == [0, 1, 2] * 3 + [1]
    assert list(images.test_indices) == [6, 7, 8, 9]  # test1.txt, not test2.txt
    assert decoded_sizes(images) == [dtd_size(k) for k in range(len(order))]


# -- EuroSAT: eurosat/2750/CLASS/CLASS_N.jpg (an image folder, no official split) -----------------

EUROSAT_CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                   "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]


def eurosat_color(cls, n):
    return (EUROSAT_CLASSES.index(cls) * 25, n * 20, 128)


def test_eurosat_from_real_image_folder(registry, tmp_path):
    base = tmp_path / "eurosat" / "2750"
    files = {cls: [1, 2] for cls in reversed(EUROSAT_CLASSES)}  # created in reverse order
    files["River"] = [1, 2, 10]  # file names sort as strings: River_1, River_10, River_2
    for cls, numbers in files.items():
        for n in numbers:
            save(base / cls / f"{cls}_{n}.jpg", (64, 64), eurosat_color(cls, n))
    images = load(registry, "eurosat", tmp_path)
    assert images.classes == EUROSAT_CLASSES
    assert len(images.samples) == 21
    expected = [(cls, n) for cls in EUROSAT_CLASSES
                for n in ([1, 10, 2] if cls == "River" else [1, 2])]
    assert names(images) == [cls for cls, _ in expected]
    assert images.test_indices is None  # the core draws the test split
    assert decoded_sizes(images) == [(64, 64)] * 21
    for i, (cls, n) in enumerate(expected):  # each sample is the file its label says
        pixel = np.asarray(images.samples[i])[32, 32].astype(int)
        assert np.abs(pixel - eurosat_color(cls, n)).max() <= 3, (i, cls, n)


# -- Food-101: food-101/images/CLASS/ID.jpg + food-101/meta/{train,test}.json --------------------

FOOD_SPLITS = {
    "train": {"apple_pie": ["1005649", "1014775"], "baby_back_ribs": ["1005293", "1007102"],
              "waffles": ["1008849", "1012253"]},
    "test": {"apple_pie": ["1011328", "101251", "1034399"], "baby_back_ribs": ["1008261"],
             "waffles": ["1000941"]},
}


def food_size(k):
    return (5 + k, 12 - k)


def make_food101(root):
    base = root / "food-101"
    (base / "meta").mkdir(parents=True)
    k = 0
    for split, classes in FOOD_SPLITS.items():
        meta = {cls: [f"{cls}/{image_id}" for image_id in ids] for cls, ids in classes.items()}
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
        (base / "meta" / f"{split}.txt").write_text(
            "".join(f"{path}\n" for paths in meta.values() for path in paths))
        for paths in meta.values():
            for path in paths:
                save(base / "images" / f"{path}.jpg", food_size(k))
                k += 1
    (base / "meta" / "classes.txt").write_text("apple_pie\nbaby_back_ribs\nwaffles\n")
    (base / "meta" / "labels.txt").write_text("Apple pie\nBaby back ribs\nWaffles\n")
    return k


def test_food101_from_real_json_split_files(registry, tmp_path):
    count = make_food101(tmp_path)
    images = load(registry, "food101", tmp_path)
    assert images.classes == ["apple_pie", "baby_back_ribs", "waffles"]
    assert count == len(images.samples) == 11
    assert names(images) == ["apple_pie"] * 2 + ["baby_back_ribs"] * 2 + ["waffles"] * 2 + \
        ["apple_pie"] * 3 + ["baby_back_ribs", "waffles"]
    assert list(images.labels) == [0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 2]
    assert list(images.test_indices) == [6, 7, 8, 9, 10]  # exactly meta/test.json's images
    assert decoded_sizes(images) == [food_size(k) for k in range(11)]
