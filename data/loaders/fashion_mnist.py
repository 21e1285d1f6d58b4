"""Fashion-MNIST (Zalando): 28x28 grey clothing images in MNIST's idx format, 10 classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np

from data.loaders.idx import find_idx_dir, load_idx_dir, missing_message
from data.registry import DatasetError, RawDataset, register
from models.options import Range

# Debian's `dataset-fashion-mnist` package installs the four .gz files here.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_DIR = Path("FashionMNIST", "raw")  # where torchvision.datasets.FashionMNIST puts them
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@register("fashion_mnist")
def fashion_mnist(
    root: Path | None = None, classes: Sequence[Annotated[int, Range(0, 9)]] | None = None
) -> RawDataset:
    """Fashion-MNIST from ``root`` (or ``root/FashionMNIST/raw``); Debian's copy when unset.

    ``classes``: only these labels (0-9), relabelled 0, 1, ... in the order given, train and
    test alike: two searches on disjoint classes (pretrain on 0-4, fine-tune on 5-9) show
    transfer without another dataset (docs/pretrained.md).
    """
    return only_classes(_load(root), classes)


def _load(root: Path | None) -> RawDataset:
    if root is None:
        if find_idx_dir([DEBIAN_DIR]) is None:
            raise DatasetError(
                f"fashion_mnist: data.root is not set and no idx files are in {DEBIAN_DIR}; "
                "install them with `apt-get install dataset-fashion-mnist`, or download with "
                "`python -m tuner data fetch fashion_mnist --root DIR` and set data.root to DIR"
            )
        return load_idx_dir(DEBIAN_DIR, "fashion_mnist", CLASSES)
    looked = [root, root / TORCHVISION_DIR]
    found = find_idx_dir(looked)
    if found is None:
        raise DatasetError(missing_message("fashion_mnist", root, looked))
    return load_idx_dir(found, "fashion_mnist", CLASSES)


def only_classes(raw: RawDataset, classes: Sequence[int] | None) -> RawDataset:
    """``raw`` with only the images of ``classes`` (label indices), relabelled in their order;
    all of it when None."""
    if classes is None:
        return raw
    if not classes or len(set(classes)) < len(classes):
        raise DatasetError(
            f"fashion_mnist: classes={list(classes)!r} must name each label at most once, "
            "and at least one"
        )
    relabel = np.full(len(raw.classes), -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))

    def kept(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = relabel[y] >= 0
        return x[rows], relabel[y[rows]]

    (x, y), (test_x, test_y) = kept(raw.x, raw.y), kept(raw.test_x, raw.test_y)
    names = tuple(raw.classes[label] for label in classes)
    return replace(raw, x=x, y=y, classes=names, test_x=test_x, test_y=test_y)
