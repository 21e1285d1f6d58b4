"""The dataset registry and the one place where train / val / test splits are made.

The registry is ``models.options.Registry``, the one every name in a spec maps through: a loader's
options are its signature's keyword parameters, checked by their annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.options import Registry


@dataclass(frozen=True)
class RawDataset:
    """What a loader returns: images as uint8 arrays (N, C, H, W) and int labels.

    ``test_x`` / ``test_y`` are set when the dataset ships its own test split (MNIST, CIFAR-10);
    otherwise ``load`` carves a stratified test split out of ``x`` / ``y``.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None


@dataclass(frozen=True)
class Splits:
    """Train / val / test tensors: images uint8 (N, C, H, W), labels int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def sizes(self) -> str:
        """Images per split, e.g. ``train=1257 val=180 test=360``: recorded, checked on resume."""
        return f"train={len(self.train_y)} val={len(self.val_y)} test={len(self.test_y)}"

    def with_val_in_train(self) -> Splits:
        """The validation images added to training (to retrain a chosen config on both).

        The validation split stays as it was for code that expects one; nothing may select
        on it any more.
        """
        return Splits(
            torch.cat([self.train_x, self.val_x]),
            torch.cat([self.train_y, self.val_y]),
            self.val_x,
            self.val_y,
            self.test_x,
            self.test_y,
            classes=self.classes,
        )


class DatasetError(ValueError):
    """Data that is missing or malformed; the message says where it looked and how to fix it."""


Loader = Callable[..., RawDataset]
DATASETS: Registry[Loader] = Registry("dataset", error=DatasetError, fixed=("root",))
# Decorator: make a loader ``fn(root: Path | None, **options) -> RawDataset`` known by name.
register = DATASETS.register


def load(
    name: str,
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    **options: object,
) -> Splits:
    """Load dataset ``name`` and split it: stratified, seeded, test never used for selection.

    ``test_fraction`` applies only to datasets without their own test split. ``max_train`` /
    ``max_test`` take a stratified subset (of train+val before splitting, and of test), for quick
    searches and tests.
    """
    raw = DATASETS.build(name, Path(root).expanduser() if root else None, **options)
    x, y = raw.x, raw.y
    if raw.test_x is None or raw.test_y is None:
        x, test_x, y, test_y = _stratified_split(x, y, test_fraction, seed)
    else:
        test_x, test_y = raw.test_x, raw.test_y
    x, y = _subset(x, y, max_train, seed)
    test_x, test_y = _subset(test_x, test_y, max_test, seed)
    train_x, val_x, train_y, val_y = _stratified_split(x, y, val_fraction, seed)
    return Splits(
        *(torch.from_numpy(np.ascontiguousarray(a)) for a in (train_x, train_y, val_x, val_y)),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(np.ascontiguousarray(test_y)),
        classes=raw.classes,
    )


def _stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # ~1 s to import: only to split

    return train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed)


def _subset(
    x: np.ndarray, y: np.ndarray, limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    kept_x, _, kept_y, _ = train_test_split(x, y, train_size=limit, stratify=y, random_state=seed)
    return kept_x, kept_y
