"""CIFAR-10 from the standard python-pickle batches (a directory or the tarball)."""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data.registry import DatasetError, RawDataset, register

BATCH_DIR = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


@register("cifar10")
def cifar10(root: Path | None = None) -> RawDataset:
    """``root`` is the batches directory, its parent, or the tarball (or a directory holding it)."""
    if root is None:
        raise DatasetError(_missing("(data.root is not set)"))
    for candidate in (root, root / BATCH_DIR):
        if (candidate / "test_batch").is_file():
            return _from_files(lambda name, base=candidate: (base / name).read_bytes())
    for tarball in (root, root / TARBALL):
        if tarball.is_file() and tarfile.is_tarfile(tarball):
            return _from_files(_read_tarball(tarball).__getitem__)
    raise DatasetError(_missing(str(root)))


def _read_tarball(tarball: Path) -> dict[str, bytes]:
    wanted = {*TRAIN_BATCHES, "test_batch", "batches.meta"}
    with tarfile.open(tarball) as archive:
        files = {
            Path(member.name).name: archive.extractfile(member).read()
            for member in archive.getmembers()
            if member.isfile() and Path(member.name).name in wanted
        }
    missing = wanted - set(files)
    if missing:
        raise DatasetError(f"cifar10: {tarball} lacks {', '.join(sorted(missing))}")
    return files


def _missing(where: str) -> str:
    return (
        f"cifar10: no CIFAR-10 batches under {where} (looked for data_batch_1..5 and test_batch, "
        f"or {TARBALL}); download with `python -m tuner data fetch cifar10 --root DIR` "
        "or point data.root at them"
    )


def _unpickle(blob: bytes) -> dict[str, Any]:
    # The batches are pickles made by the dataset's authors; only trusted files belong here.
    batch = pickle.loads(blob, encoding="bytes")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _from_files(read: Callable[[str], bytes]) -> RawDataset:
    def images_labels(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_unpickle(read(name)) for name in names]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        return x.reshape(-1, 3, 32, 32), y

    x, y = images_labels(TRAIN_BATCHES)
    test_x, test_y = images_labels(("test_batch",))
    meta = _unpickle(read("batches.meta"))
    classes = tuple(n.decode() if isinstance(n, bytes) else n for n in meta["label_names"])
    return RawDataset(x, y, classes, test_x, test_y)
