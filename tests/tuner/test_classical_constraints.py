"""``constraints`` in the classical trainable: a pipeline's size is known from its config and
the data's shapes, so a config over the limits is rejected before anything is computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import data
from tuner.trainables import Settings
from tuner.trainables.classical import fit, size_before_fit, train
from tuner.trainables.size import size_of

DIGITS = tuple(str(digit) for digit in range(10))
SIFT = {"name": "bag_of_sift", "resize": 16, "step": 4, "patch_size": 8, "vocab_size": 8}


def _splits(digits: tuple[np.ndarray, np.ndarray], classes: int, channels: int) -> data.Splits:
    """120 training digits of the first ``classes`` classes, grey or repeated into RGB."""
    images, labels = digits
    keep = labels < classes
    x = torch.from_numpy(np.repeat(images[keep], channels, axis=1))
    y = torch.from_numpy(labels[keep])
    return data.Splits(x[:120], y[:120], x[120:160], y[120:160], x[160:], y[160:], DIGITS[:classes])


@pytest.mark.parametrize("classes", [2, 3])  # an SVM keeps one hyperplane for two classes
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "features",
    [
        {"name": "tiny_image", "size": 4},
        {"name": "tiny_image", "size": 5, "grayscale": False},
        {**SIFT, "pyramid_levels": 1},
    ],
)
@pytest.mark.parametrize("classifier", [{"name": "knn", "k": 1}, {"name": "linear_svm"}])
def test_the_estimate_is_the_fitted_size(
    digits: Any,
    classes: int,
    channels: int,
    features: dict[str, Any],
    classifier: dict[str, Any],
) -> None:
    splits = _splits(digits, classes, channels)
    config = {"features": features, "classifier": classifier}
    settings = Settings(max_epochs=1, seed=0, metric="val_acc", mode="max", cache_dir=None)
    assert size_before_fit(config, splits) == size_of(fit(config, splits, settings))


def test_a_config_over_the_limit_is_rejected_before_any_feature_is_computed(
    digits: Any, tmp_path: Path
) -> None:
    splits = _splits(digits, classes=3, channels=1)
    config = {"features": SIFT, "classifier": {"name": "knn", "k": 1}}
    cache = tmp_path / "cache"
    limits = {"max_epochs": 1, "seed": 0, "metric": "val_acc", "mode": "max"}
    # The vocabulary alone is 8 x 128 numbers.
    tight = Settings(**limits, cache_dir=str(cache), max_params=1000)
    with pytest.warns(UserWarning, match="report"):  # tune.report outside a Tune session
        train(config, splits=splits, settings=tight)
    assert not cache.exists() or not any(cache.rglob("*.npy"))
    # The same config within limits does fill the cache: the check above could fail.
    fit(config, splits, Settings(**limits, cache_dir=str(cache)))
    assert any(cache.rglob("*.npy"))
