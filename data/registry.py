"""The dataset registry: names to loaders, and what a loader returns.

The registry is ``models.options.Registry``, the one every name in a spec maps through: a loader's
options are its signature's keyword parameters, checked by their annotations. A loader returns
its images decoded (``RawDataset``: small data) or still in files (``data.ImageFiles``: photos,
decoded once by ``data.load`` into memory or each node's cache).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import DatasetError
from data.files import ImageFiles, is_uri
from models.options import Registry

__all__ = ["DATASETS", "DatasetError", "RawDataset", "read", "register"]


@dataclass(frozen=True)
class RawDataset:
    """What a loader of small data returns: images as uint8 arrays (N, C, H, W), int labels.

    ``test_x`` / ``test_y`` are set when the dataset ships its own test split (MNIST, CIFAR-10);
    otherwise ``load`` carves a stratified test split out of ``x`` / ``y``.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None


Loader = Callable[..., RawDataset | ImageFiles]
DATASETS: Registry[Loader] = Registry("dataset", error=DatasetError, fixed=("root",))
# Decorator: make a loader ``fn(root: Path | None, **options) -> RawDataset | ImageFiles``
# known by name.
register = DATASETS.register


def read(name: str, root: str | Path | None = None, **options: Any) -> RawDataset | ImageFiles:
    """What loader ``name`` returns for ``root`` (a folder, a file, or a URI kept as text)."""
    if root and not is_uri(root):
        root = Path(root).expanduser()
    dataset = DATASETS.build(name, root or None, **options)
    if not isinstance(dataset, RawDataset | ImageFiles):
        raise DatasetError(
            f"{name}: its loader returned {type(dataset).__name__}; a loader returns "
            "data.RawDataset (decoded arrays) or data.ImageFiles (image files and labels)"
        )
    return dataset
