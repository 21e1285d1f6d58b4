"""Every registered dataset and `data.load`'s splits: errors, seeding, disjointness."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
from data.fetch import FETCHABLE

BUNDLED = {"digits"}  # datasets that ship inside a package and ignore data.root


@pytest.mark.parametrize("name", sorted(set(data.DATASETS) - BUNDLED))
def test_a_missing_root_is_one_line_saying_where_and_how(tmp_path, name):
    nowhere = tmp_path / "nowhere"
    with pytest.raises(data.DatasetError) as error:
        data.load(name, root=nowhere)
    message = str(error.value)
    assert message.startswith(f"{name}: ") and str(nowhere) in message
    assert "\n" not in message
    if name in FETCHABLE:
        assert f"`python -m tuner data fetch {name} --root {nowhere}`" in message


def test_splits_are_seeded_stratified_and_together_exactly_the_dataset():
    a = data.load("digits", seed=1)
    b = data.load("digits", seed=1)
    c = data.load("digits", seed=2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    everything = sorted(bytes(im.numpy()) for im in torch.cat([a.train_x, a.val_x, a.test_x]))
    original = data.DATASETS["digits"](None).x
    assert everything == sorted(bytes(im) for im in original)  # nothing shared, nothing lost
    # 20% test, then 20% of the rest for val, each class in proportion (within one image).
    full = np.bincount(data.DATASETS["digits"](None).y)
    assert np.abs(np.bincount(a.test_y) - full * 0.2).max() <= 1
    assert len(a.val_y) == math.ceil(0.2 * (full.sum() - len(a.test_y)))  # sklearn rounds up


def test_max_train_and_max_test_take_stratified_subsets():
    splits = data.load("digits", max_train=500, max_test=100, val_fraction=0.2)
    assert len(splits.train_y) == 400 and len(splits.val_y) == 100 and len(splits.test_y) == 100
    assert np.bincount(splits.test_y, minlength=10).min() >= 9


def test_an_unknown_dataset_lists_the_known_ones():
    known = ", ".join(sorted(data.DATASETS))
    with pytest.raises(data.DatasetError, match=f"known datasets: {known}"):
        data.load("imagenet")


@pytest.mark.slow
def test_the_data_package_imports_neither_ray_nor_mlflow():
    code = "import sys, data, data.augment, data.fetch; print({'ray', 'mlflow'} & {*sys.modules})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"
