"""Train / val / test splits: the one place they are made, and the tensors they are kept in.

Splits are made on the labels alone (stratified, seeded), before any image is decoded: a
loader's arrays are then indexed, and image files are decoded split by split into memory or
into the node's cache (``data.cache``), the same pixels either way. Train and val are kept
adjacent in one array, so training on both (``with_val_in_train``) copies nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from data import cache
from data.errors import DatasetError
from data.files import SHOWN, ImageFiles
from data.registry import RawDataset


@dataclass(frozen=True)
class Splits:
    """Train / val / test tensors: images uint8 (N, C, H, W), labels int64 (N,).

    The images may be read-only (a memory map of the node's cache, Ray's object store read
    zero-copy): index batches from them, never write to them or copy them whole.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    # How a process that receives these splits opens them again (data.DataSource.load_once on
    # the node's cache, or tuner's object-store reference); None: they are pickled whole.
    reopen: Callable[[], Splits] | None = field(default=None, compare=False, repr=False)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Sent to a Ray task, splits that can be opened again travel as how to open them: a
        # cache's memory maps would otherwise be copied whole into the pickle.
        if self.reopen is not None:
            return (_opened, (self.reopen,))
        return super().__reduce_ex__(protocol)

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
            joined(self.train_x, self.val_x),
            joined(self.train_y, self.val_y),
            self.val_x,
            self.val_y,
            self.test_x,
            self.test_y,
            classes=self.classes,
        )


def _opened(reopen: Callable[[], Splits]) -> Splits:
    return reopen()


def joined(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``torch.cat([first, second])``; a view, no copy, where ``second`` follows ``first`` in
    one block of memory (train and val as ``split`` keeps them)."""
    adjacent = (
        first.is_contiguous()
        and second.is_contiguous()
        and first.dtype == second.dtype
        and first.shape[1:] == second.shape[1:]
        and first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
        and second.data_ptr() == first.data_ptr() + first.nbytes
    )
    if not adjacent:
        return torch.cat([first, second])
    shape = (len(first) + len(second), *first.shape[1:])
    return first.as_strided(shape, first.stride(), first.storage_offset())


def tensors(
    x: np.ndarray, y: np.ndarray, train: int, test_x: np.ndarray, test_y: np.ndarray, classes
) -> Splits:
    """Splits over arrays without copying them: ``x[:train]`` trains, ``x[train:]`` validates.

    Read-only arrays (a memory map, Ray's object store) stay read-only; torch's warning that it
    can't make them writable is expected here and silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x_, y_, tx, ty = (torch.from_numpy(np.asarray(a)) for a in (x, y, test_x, test_y))
    return Splits(x_[:train], y_[:train], x_[train:], y_[train:], tx, ty, classes=tuple(classes))


@dataclass(frozen=True)
class Rows:
    """Which rows of the dataset each split holds; ``test`` indexes the loader's own test
    images when it has them (``RawDataset.test_x``)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_rows(
    labels: np.ndarray,
    *,
    fixed: Sequence[str] | None = None,
    test_labels: np.ndarray | None = None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    max_train: int | None,
    max_test: int | None,
) -> Rows:
    """The rows of each split, stratified and seeded; test never used for selection.

    ``fixed``: a split per row (train / val / test) where the source sets it; the splits it
    does not name are carved as usual. ``test_labels``: the loader's own test split's labels.
    ``test_fraction`` applies only without a test split; ``max_train`` / ``max_test`` take a
    stratified subset (of train+val before splitting, and of test).
    """
    every = np.arange(len(labels))
    given = np.asarray(fixed if fixed is not None else [""] * len(labels))
    pool = every[(given != "test") & (given != "val")]
    if test_labels is not None:
        test, test_of = np.arange(len(test_labels)), test_labels
    elif (given == "test").any():
        test, test_of = every[given == "test"], labels
    else:
        pool, test = _stratified(pool, labels, test_fraction, seed)
        test_of = labels
    pool = _subset(pool, labels, max_train, seed)
    test = _subset(test, test_of, max_test, seed)
    if (given == "val").any():
        return Rows(pool, every[given == "val"], test)
    train, val = _stratified(pool, labels, val_fraction, seed)
    return Rows(train, val, test)


def _stratified(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken): ``fraction`` of ``rows`` taken, stratified on their labels."""
    from sklearn.model_selection import train_test_split  # ~1 s to import: only to split

    try:
        kept, taken = train_test_split(
            rows, test_size=fraction, stratify=labels[rows], random_state=seed
        )
    except ValueError as error:  # too few images of a class for the fraction asked
        raise DatasetError(f"cannot split {len(rows)} images stratified: {error}") from None
    return kept, taken


def _subset(rows: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= len(rows):
        return rows
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(rows, train_size=limit, stratify=labels[rows], random_state=seed)
    return kept


# ---------------------------------------------------------------------------------------------
# Splits from what a loader returned
# ---------------------------------------------------------------------------------------------


def splits_of(
    dataset: RawDataset | ImageFiles,
    rows: Rows,
    *,
    name: str,
    where: Literal["memory", "cache"] = "memory",
    cache_dir: str = cache.DEFAULT_DIR,
    say: cache.Say | None = None,
) -> Splits:
    """The splits' images and labels: arrays indexed, or files decoded into memory or into the
    node's cache (``where``). Images that don't decode are left out, with one warning."""
    trainval = np.concatenate([rows.train, rows.val])
    if isinstance(dataset, RawDataset):
        own = dataset.test_x is not None and dataset.test_y is not None
        test_x, test_y = (dataset.test_x, dataset.test_y) if own else (dataset.x, dataset.y)
        return tensors(
            dataset.x[trainval],
            dataset.y[trainval],
            len(rows.train),
            test_x[rows.test],
            test_y[rows.test],
            dataset.classes,
        )
    size, grey, parts = dataset.image_size, dataset.grayscale, [trainval, rows.test]
    decoded = []
    for part in parts:
        paths = [dataset.paths[row] for row in part]
        if where == "cache":
            decoded.append(cache.cached(paths, size, grey, cache_dir, say))
        else:
            decoded.append(cache.in_memory(paths, size, grey, say))
    _check_decoded(dataset, name, parts, decoded)
    (images, kept), (test_images, test_kept) = (
        (d.images, part[d.kept(len(part))]) for part, d in zip(parts, decoded, strict=True)
    )
    train = len(rows.train) - int(np.sum(decoded[0].skipped < len(rows.train)))
    labels = dataset.labels
    return tensors(images, labels[kept], train, test_images, labels[test_kept], dataset.classes)


def _check_decoded(
    dataset: ImageFiles, name: str, parts: list[np.ndarray], decoded: list[cache.Decoded]
) -> None:
    """One warning counting the images that did not decode (naming the first few); an error
    when none of a class's images did."""
    bad = np.sort(np.concatenate([part[d.skipped] for part, d in zip(parts, decoded, strict=True)]))
    if not len(bad):
        return
    listed = np.concatenate(parts)
    total = np.bincount(dataset.labels[listed], minlength=len(dataset.classes))
    lost = np.bincount(dataset.labels[bad], minlength=len(dataset.classes))
    for label in np.flatnonzero((total > 0) & (lost == total)):
        first = dataset.paths[bad[dataset.labels[bad] == label][0]]
        raise DatasetError(
            f"{name}: none of the {total[label]} images of class {dataset.classes[label]!r} "
            f"decode (e.g. {first})"
        )
    shown = ", ".join(dataset.paths[row] for row in bad[:SHOWN])
    more = ", ..." if len(bad) > SHOWN else ""
    warnings.warn(
        f"{name}: skipped {len(bad)} unreadable image(s) of {len(listed):,}: {shown}{more}",
        stacklevel=4,
    )
