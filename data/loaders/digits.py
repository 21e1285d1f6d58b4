"""scikit-learn's 8x8 handwritten digits: 1,797 images shipped inside the package (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.registry import RawDataset, register


@register("digits")
def digits(root: Path | None = None) -> RawDataset:
    """The embedded default: pixel values 0..16 scaled to uint8 0..255, shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits  # here: trial workers import this module too

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None, :, :]
    return RawDataset(images, bunch.target.astype(np.int64), tuple(str(c) for c in range(10)))
