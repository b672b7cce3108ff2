"""Hugging Face ``datasets`` as a tlbench dataset: a dataset on the hub, a folder written by
``save_to_disk``, or a local folder of data files that ``load_dataset`` reads.

Written only against tlbench's public API, exactly as a third-party plugin would be.
``datasets``, numpy and PIL are imported inside functions, so that ``tlbench --help`` and
``tlbench ls`` never import them.

Mistakes are looked for twice. When the grid is read, the options' ``__post_init__`` opens the
dataset's description (a saved folder's features, or the hub's metadata without downloading the
data) and checks the splits and columns, so the CLI stops with status 2 before anything runs.
``load`` checks the data itself again: some problems (a split without labels) only show there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tlbench

INSTALL = 'pip install "tlbench[hf]"'
# What load_dataset looks up on the hub when no local folder has the name: "beans", "user/name".
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# save_to_disk writes one of these at the top of its folder (DatasetDict, Dataset).
SAVED_MARKERS = ("dataset_dict.json", "state.json")
SAVED_DATASET_SPLIT = "train"  # a saved Dataset (not a DatasetDict) is one split with this name
LABEL_NAMES = ("label", "labels")  # label columns found by name when no column is a ClassLabel


@dataclass(frozen=True)
class HuggingFaceOptions:
    path: str = tlbench.option(
        help="hub dataset name ('beans', 'user/name'), a folder written by save_to_disk, or a "
        "local folder of data files", path=True
    )
    config: str = tlbench.option(
        "", "configuration (subset) of a hub dataset, load_dataset's second argument; '' = none"
    )
    image_column: str = tlbench.option(
        "", "column holding the images; '' = the one column whose feature is Image"
    )
    label_column: str = tlbench.option(
        "", "column holding the labels; '' = the one ClassLabel column, else 'label' or 'labels'"
    )
    train_split: str = tlbench.option(
        "train", "split to train on; other splits (validation, ...) join the training pool"
    )
    test_split: str = tlbench.option(
        "test", "official test split, kept as is for the score; '' = none (tlbench draws one)"
    )
    revision: str = tlbench.option(
        "", "hub revision (branch, tag or commit) to pin the data; '' = the latest"
    )
    cache_dir: str = tlbench.option(
        "", "folder for hub downloads; '' = datasets' own (HF_DATASETS_CACHE)", path=True
    )

    def __post_init__(self):
        if not self.path.strip():
            raise ValueError("path must name a hub dataset or a folder written by save_to_disk")
        if not self.train_split.strip():
            raise ValueError('train_split must name a split, e.g. train_split = "train"')
        if self.test_split == self.train_split:
            raise ValueError(
                f"train_split and test_split are both {self.train_split!r}: a model may not be "
                "scored on its training images; name another test split, or '' for none"
            )
        check_before_running(self)


# -- one line for every mistake ----------------------------------------------------------------


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as a short single line, for messages the CLI prints as one line."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(features) -> str:
    """'img: Image, label: ClassLabel(3 names), id: Value(int64)' for error messages."""
    import datasets

    def kind(feature) -> str:
        if isinstance(feature, datasets.ClassLabel):
            return f"ClassLabel({feature.num_classes} names)"
        if isinstance(feature, datasets.Value):
            return f"Value({feature.dtype})"
        return type(feature).__name__

    return ", ".join(f"{name}: {kind(feature)}" for name, feature in features.items()) or "none"


def _dataset_name(options) -> str:
    config = f" (config {options.config!r})" if options.config else ""
    return f"Hugging Face dataset {options.path!r}{config}"


def _import_datasets():
    try:
        import datasets
    except ImportError as exc:  # also a broken install (e.g. a pyarrow it cannot use)
        raise tlbench.ConfigError(
            f"The hf dataset needs Hugging Face datasets, which cannot be imported "
            f"({_one_line(exc)}). Fix: {INSTALL}"
        ) from None
    return datasets


def _offline_mode() -> bool:
    """HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set (datasets < 2.19 knows only the first name)."""
    import datasets

    return any(getattr(datasets.config, name, False) for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_error(options, exc: BaseException) -> tlbench.ConfigError:
    if _offline_mode():
        fix = ("offline mode (HF_DATASETS_OFFLINE=1) found no copy in the cache: load it once "
               "with a network into the same cache (HF_HOME or cache_dir)")
    else:
        fix = ("check the name, config and revision on huggingface.co/datasets (log in for "
               "gated ones); without a network, set HF_DATASETS_OFFLINE=1 to use the cache")
    return tlbench.ConfigError(
        f"{_dataset_name(options)} could not be loaded ({_one_line(exc)}). Fix: {fix}, or save "
        "it with save_to_disk(FOLDER) and set path = FOLDER."
    )


# -- where the data is ---------------------------------------------------------------------------


def _saved_folder(options):
    """The folder when ``path`` is one written by save_to_disk (read with load_from_disk)."""
    folder = Path(options.path).expanduser()
    if folder.is_dir() and any((folder / marker).is_file() for marker in SAVED_MARKERS):
        return folder
    return None


def _check_path(options) -> None:
    """A path that names nothing locally and cannot be a hub name is a typo: say so now rather
    than after load_dataset has retried the hub for half a minute."""
    local = Path(options.path).expanduser()
    if local.is_file():
        raise tlbench.ConfigError(
            f"{_dataset_name(options)}: {str(local)!r} is a file. Fix: point path at a folder "
            "written by save_to_disk, a folder of data files, or a hub dataset name."
        )
    if not local.exists() and not HUB_NAME.match(options.path):
        raise tlbench.ConfigError(
            f"{_dataset_name(options)}: {str(local)!r} does not exist and is not a hub dataset "
            "name. Fix: point path at a folder written by save_to_disk (or a folder of data "
            "files), or give a hub name such as 'beans' or 'user/name'."
        )


def _hub_arguments(options) -> tuple[tuple, dict]:
    """load_dataset's arguments: a local folder of data files by its expanded path (datasets
    does not expand "~"), else the hub name."""
    local = Path(options.path).expanduser()
    path = str(local) if local.is_dir() else options.path
    cache_dir = str(Path(options.cache_dir).expanduser()) if options.cache_dir else None
    return (path, options.config or None), {"revision": options.revision or None,
                                            "cache_dir": cache_dir}


def _open_saved(options, folder) -> dict:
    """{split name: datasets.Dataset} of a save_to_disk folder (memory-mapped, nothing decoded)."""
    datasets = _import_datasets()
    if options.config:
        raise tlbench.ConfigError(
            f"{_dataset_name(options)}: config applies to hub datasets, and {str(folder)!r} is a "
            "save_to_disk folder, which holds one configuration. Fix: remove config."
        )
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as exc:  # a half-written or foreign folder
        raise tlbench.ConfigError(
            f"{_dataset_name(options)}: {str(folder)!r} cannot be read with load_from_disk "
            f"({_one_line(exc)}). Fix: write it again with save_to_disk."
        ) from exc
    if isinstance(saved, datasets.DatasetDict):
        return dict(saved)
    return {SAVED_DATASET_SPLIT: saved}


def _open_hub(options) -> dict:
    """{split name: datasets.Dataset} from load_dataset (downloads once into the cache)."""
    datasets = _import_datasets()
    args, kwargs = _hub_arguments(options)
    try:
        loaded = datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # not found, offline, bad config, gated: one message for all
        raise _hub_error(options, exc) from exc
    return dict(loaded)


def _check_hub_answers(options) -> None:
    """Outside offline mode, one connection to the hub before load_dataset_builder, which
    retries an unreachable hub for about 25 s before it says so."""
    from huggingface_hub import constants

    why = None if _offline_mode() else tlbench.unreachable(constants.ENDPOINT)
    if why is not None:
        raise tlbench.ConfigError(
            f"{_dataset_name(options)} could not be loaded: the hub ({constants.ENDPOINT}) does not "
            f"answer ({why}). Fix: without a network, set HF_DATASETS_OFFLINE=1 to use the copy in the "
            "cache (load it once with a network into the same cache), or save it with "
            "save_to_disk(FOLDER) and set path = FOLDER.")


def _hub_description(options):
    """({split: features}, or None where the hub's metadata does not say) without downloading
    the data: load_dataset_builder reads only the dataset card and file list."""
    datasets = _import_datasets()
    args, kwargs = _hub_arguments(options)
    if not Path(args[0]).is_dir():  # a hub name, not a local folder of data files
        _check_hub_answers(options)
    try:
        info = datasets.load_dataset_builder(*args, **kwargs).info
    except Exception as exc:
        raise _hub_error(options, exc) from exc
    if not info.splits:
        return None
    return {name: info.features for name in info.splits}


# -- which splits and columns --------------------------------------------------------------------


def _pool_order(options, available) -> list[str]:
    """The splits in the order their images are concatenated: train split, official test split,
    then every other split (they join the training pool)."""
    names = ", ".join(available)
    wanted = [("train_split", options.train_split)]
    if options.test_split:
        wanted.append(("test_split", options.test_split))
    for option, split in wanted:
        if split not in available:
            unset = ' or test_split = "" to let tlbench draw one' if option == "test_split" else ""
            raise tlbench.ConfigError(
                f"{_dataset_name(options)} has no split {split!r} (its splits: {names}). "
                f"Fix: set {option} to one of them{unset} in the dataset's table."
            )
    chosen = [split for _, split in wanted]
    return chosen + [split for split in available if split not in chosen]


def _is_image(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def _label_kind(feature) -> str:
    """'classlabel', 'int', 'string', or '' for a feature that cannot hold class labels."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "classlabel"
    if isinstance(feature, datasets.Value):
        if feature.dtype.startswith(("int", "uint")):
            return "int"
        if feature.dtype in ("string", "large_string"):
            return "string"
    return ""


def _column_error(options, split, features, problem: str, option: str) -> tlbench.ConfigError:
    return tlbench.ConfigError(
        f"{_dataset_name(options)}: {problem} in split {split!r} (columns: {_describe(features)}). "
        f"Fix: set {option} to the right column in the dataset's table."
    )


def _image_column(options, split, features) -> str:
    if options.image_column:
        if options.image_column not in features:
            problem = f"no column {options.image_column!r}"
        elif not _is_image(features[options.image_column]):
            problem = f"column {options.image_column!r} is not an Image feature"
        else:
            return options.image_column
        raise _column_error(options, split, features, problem, "image_column")
    found = [name for name, feature in features.items() if _is_image(feature)]
    if len(found) != 1:
        problem = "several Image columns" if found else "no Image column"
        raise _column_error(options, split, features, problem, "image_column")
    return found[0]


def _label_column(options, split, features) -> str:
    if options.label_column:
        column = options.label_column
        if column not in features:
            raise _column_error(options, split, features, f"no column {column!r}", "label_column")
    else:
        found = [name for name, feature in features.items() if _label_kind(feature) == "classlabel"]
        found = found or [name for name in LABEL_NAMES if name in features]
        if len(found) != 1:
            problem = ("several label columns" if found
                       else "no ClassLabel column and none named label or labels")
            raise _column_error(options, split, features, problem, "label_column")
        column = found[0]
    if not _label_kind(features[column]):
        problem = f"label column {column!r} holds neither integers nor strings"
        raise _column_error(options, split, features, problem, "label_column")
    return column


def _columns(options, features_by_split: dict) -> tuple[str, str]:
    """(image column, label column), found in the train split and present alike in the others
    (an extra split without the label column, often an unlabelled test split, is left out)."""
    train = options.train_split
    image = _image_column(options, train, features_by_split[train])
    label = _label_column(options, train, features_by_split[train])
    expected = features_by_split[train][label]
    for split, features in features_by_split.items():
        if _is_extra(options, split) and label not in features:
            continue
        if image not in features or not _is_image(features[image]):
            problem = f"no Image column {image!r} (the train split has one)"
            raise _column_error(options, split, features, problem, "image_column")
        if label not in features or not _same_labels(features[label], expected):
            problem = f"label column {label!r} differs from the train split's"
            raise _column_error(options, split, features, problem, "label_column")
    return image, label


def _is_extra(options, split: str) -> bool:
    """A split that joins the training pool because it is neither train_split nor test_split."""
    return split not in (options.train_split, options.test_split)


def _same_labels(feature, expected) -> bool:
    """Two ClassLabels must be equal (same names, same order); plain values of one kind (int32
    in one split, int64 in another) mean the same classes."""
    kind = _label_kind(feature)
    return feature == expected or (kind in ("int", "string") and kind == _label_kind(expected))


def check_before_running(options) -> None:
    """Every mistake visible in the dataset's description, raised when the grid is read."""
    _import_datasets()
    _check_path(options)
    folder = _saved_folder(options)
    if folder:
        splits = _open_saved(options, folder)
        features_by_split = {name: split.features for name, split in splits.items()}
    else:
        features_by_split = _hub_description(options)
        if features_by_split is None:  # a folder of data files, or a card without metadata
            return
    order = _pool_order(options, list(features_by_split))
    if all(features_by_split[split] for split in order):
        _columns(options, {split: features_by_split[split] for split in order})


# -- labels ----------------------------------------------------------------------------------------


def _label_values(split, column: str) -> list:
    # to_dict reads the column in one Arrow pass; list(split[column]) goes row by row, far slower
    # on large splits (measured: benchmarks/README.md, "Reading a label column")
    return split.select_columns([column]).with_format(None).to_dict()[column]


def _is_missing(value, kind: str) -> bool:
    return value is None or (kind == "classlabel" and value < 0)  # ClassLabel: -1 = no label


def _classes(feature, values) -> list[str]:
    """Class names: a ClassLabel's own, else the sorted distinct values."""
    if _label_kind(feature) == "classlabel":
        return list(feature.names)
    return [str(value) for value in sorted(set(values))]


def _encode(feature, values, classes: list[str]):
    import numpy as np

    if _label_kind(feature) == "classlabel":
        return np.asarray(values, dtype=np.int64)
    number = {name: i for i, name in enumerate(classes)}
    return np.asarray([number[str(value)] for value in values], dtype=np.int64)


def _unlabelled_error(options, split: str, count: int, column: str) -> tlbench.ConfigError:
    fix = ('set test_split = "" so tlbench draws a labelled test split'
           if split == options.test_split else "filter them out and save_to_disk")
    return tlbench.ConfigError(
        f"{_dataset_name(options)}: split {split!r} has {count} images without a label in "
        f"column {column!r} (hub test splits often are unlabelled). Fix: {fix}."
    )


def _labels_by_split(options, splits: dict, order: list[str], label: str):
    """({split: its label values}, [extra splits left out because they have no labels]).

    An extra split without labels cannot train anything, so it is left out; missing labels in
    the train or test split, or in some rows of an extra split, are the user's to fix."""
    kind = _label_kind(splits[options.train_split].features[label])
    values, skipped = {}, []
    for name in order:
        split_values = _label_values(splits[name], label) if label in splits[name].features else []
        missing = sum(_is_missing(value, kind) for value in split_values)
        if _is_extra(options, name) and missing == len(split_values):
            skipped.append(name)
        elif missing:
            raise _unlabelled_error(options, name, missing, label)
        else:
            values[name] = split_values
    return values, skipped


# -- the dataset -----------------------------------------------------------------------------------


def _lazy_images(splits, column: str) -> tlbench.ConcatenatedSamples:
    """The image column of several splits end to end, as a lazy sequence: one image is decoded
    (to a PIL image) only when it is indexed. A datasets.Dataset read from disk or the cache is
    memory-mapped and pickles as its file paths, so DataLoader workers receive it cheaply."""
    import datasets

    parts = [split.select_columns([column]).with_format(None) for split in splits]
    # a dataset saved with Image(decode=False) would hand out {"bytes", "path"} dicts
    parts = [part if part.features[column].decode else part.cast_column(column, datasets.Image())
             for part in parts]
    return tlbench.ConcatenatedSamples(parts, field=column)


def _check_test_classes_are_trained(options, labels, test_indices: list, classes: list) -> None:
    """A class the test split has and the training pool lacks cannot be learnt: every test image
    of it would count as an error no strategy could avoid (the `folder` dataset refuses this too)."""
    import numpy as np

    held_out = np.zeros(len(labels), dtype=bool)
    held_out[test_indices] = True
    unseen = sorted(set(labels[held_out].tolist()) - set(labels[~held_out].tolist()))
    if unseen:
        names = ", ".join(str(classes[label]) for label in unseen)
        raise tlbench.ConfigError(
            f"{_dataset_name(options)}: test split {options.test_split!r} has classes with no training "
            f"images ({names}). Fix: add them to the training splits, filter them out of the test "
            'split and save_to_disk, or set test_split = "" so tlbench draws a stratified test split.'
        )


def _arrow_files(splits) -> list[str]:
    """The Arrow files behind the splits (a save_to_disk folder's, or the hub cache's): what
    changes when the data does under the same path and options."""
    return [entry["filename"] for split in splits for entry in split.cache_files]


class HuggingFaceDataset(tlbench.Dataset):
    """Hugging Face datasets from the hub or save_to_disk; image and label columns detected."""

    name = "hf"
    Options = HuggingFaceOptions

    def load(self) -> tlbench.Images:
        options = self.options
        _check_path(options)
        folder = _saved_folder(options)
        splits = _open_saved(options, folder) if folder else _open_hub(options)
        order = _pool_order(options, list(splits))
        image, label = _columns(options, {name: splits[name].features for name in order})
        feature = splits[options.train_split].features[label]
        values, skipped = _labels_by_split(options, splits, order, label)
        order = [name for name in order if name in values]
        every_value = [value for name in order for value in values[name]]
        classes = _classes(feature, every_value)
        test_indices = None
        labels = _encode(feature, every_value, classes)
        if options.test_split:  # it comes right after the train split (see _pool_order)
            start = len(values[options.train_split])
            test_indices = list(range(start, start + len(values[options.test_split])))
            _check_test_classes_are_trained(options, labels, test_indices, classes)
        return tlbench.Images(
            samples=_lazy_images([splits[name] for name in order], image),
            labels=labels,
            classes=classes,
            test_indices=test_indices,
            source=self._source(options, order, skipped),
            content=tlbench.files_digest(_arrow_files([splits[name] for name in order])),
        )

    @staticmethod
    def _source(options, order: list[str], skipped: list[str]) -> str:
        test = f", test split {options.test_split!r}" if options.test_split else ""
        pool = [name for name in order if name != options.test_split]
        unused = f", unlabelled {', '.join(skipped)} left out" if skipped else ""
        revision = f"@{options.revision}" if options.revision else ""
        return f"{_dataset_name(options)}{revision}: training pool {'+'.join(pool)}{test}{unused}"


@tlbench.hookimpl
def register_datasets(register):
    register(HuggingFaceDataset)
