"""Splits: fixed by split_seed, stratified, k-shot drawn with the cell's seed."""

import numpy as np

from tlbench.data import per_class_subsample, stratified_split

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
