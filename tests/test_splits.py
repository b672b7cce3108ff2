"""Splits: fixed by split_seed, stratified, k-shot drawn with the cell's seed."""

import numpy as np
import pytest

from tlbench.data import fixed_size_train_val, per_class_subsample, stratified_sample, stratified_split

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
