"""CIFAR-10 from the standard python-pickle batches: a directory or the tarball.

The layout is what https://www.cs.toronto.edu/~kriz/cifar.html ships and what
``torchvision.datasets.CIFAR10(root, download=True)`` leaves in ``root``:
``cifar-10-python.tar.gz`` and ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.
Each batch is a pickled dict: ``data`` uint8 (10000, 3072) in channel-major RGB order, ``labels``.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data.registry import DatasetError, RawDataset, register

BATCH_DIR = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = (*TRAIN_BATCHES, "test_batch", "batches.meta")
IMAGE_SHAPE = (3, 32, 32)  # channels, height, width


@register("cifar10")
def cifar10(root: Path | None = None) -> RawDataset:
    """``root`` is the batches directory, its parent, the tarball, or a directory holding it."""
    if root is None:
        raise DatasetError(_missing("(data.root is not set)", "DIR"))
    for directory in (root, root / BATCH_DIR):
        present = [name for name in FILES if (directory / name).is_file()]
        if present and len(present) < len(FILES):
            missing = ", ".join(name for name in FILES if name not in present)
            raise DatasetError(f"cifar10: {directory} has CIFAR-10 batches but lacks {missing}")
        if present:
            return _from_files(directory, lambda name, base=directory: (base / name).read_bytes())
    for tarball in (root, root / TARBALL):
        if tarball.is_file():
            return _from_files(tarball, _read_tarball(tarball).__getitem__)
    raise DatasetError(_missing(str(root), str(root)))


def _missing(where: str, root: str) -> str:
    return (
        f"cifar10: no CIFAR-10 batches under {where} (looked for data_batch_1..5 and test_batch "
        f"in it and in {BATCH_DIR}/, or {TARBALL}); download with "
        f"`python -m tuner data fetch cifar10 --root {root}` or point data.root at them"
    )


def _read_tarball(tarball: Path) -> dict[str, bytes]:
    """The batch files inside the tarball, by base name, read into memory (~180 MB)."""
    try:
        with tarfile.open(tarball) as archive:
            return {
                Path(member.name).name: archive.extractfile(member).read()
                for member in archive.getmembers()
                if member.isfile() and Path(member.name).name in FILES
            }
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"cifar10: cannot read {tarball} as a tar archive: {error}") from None


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # arrays pickled by numpy 1 (the originals)
        ("numpy._core.multiarray", "_reconstruct"),  # ... and by numpy 2
        ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict[str, Any]:
    try:
        # encoding="bytes": the batches were pickled by Python 2 (as the CIFAR page shows).
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as error:  # a non-pickle can raise almost any exception type
        raise DatasetError(f"cifar10: {where} is not a CIFAR-10 pickle batch ({error})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"cifar10: {where} is not a CIFAR-10 pickle batch (not a dict)")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _from_files(where: Path, read: Callable[[str], bytes]) -> RawDataset:
    """All six batches and the class names, through ``read(file name) -> bytes``."""

    def batch(name: str) -> dict[str, Any]:
        try:
            blob = read(name)
        except KeyError:  # a tarball without this member
            raise DatasetError(f"cifar10: {where} lacks {name}") from None
        return _unpickle(blob, f"{name} in {where}")

    def images_labels(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            content = batch(name)
            if "data" not in content or "labels" not in content:
                raise DatasetError(f"cifar10: {name} in {where} has no 'data' and 'labels'")
            x = np.asarray(content["data"], dtype=np.uint8)
            y = np.asarray(content["labels"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != np.prod(IMAGE_SHAPE) or len(x) != len(y):
                raise DatasetError(
                    f"cifar10: {name} in {where} holds data {x.shape} and {len(y)} labels, "
                    "expected (N, 3072) and N"
                )
            xs.append(x.reshape(-1, *IMAGE_SHAPE))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    meta = batch("batches.meta")
    if "label_names" not in meta:
        raise DatasetError(f"cifar10: batches.meta in {where} has no 'label_names'")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"])
    x, y = images_labels(TRAIN_BATCHES)
    test_x, test_y = images_labels(("test_batch",))
    labels = np.concatenate([y, test_y])
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"cifar10: labels in {where} don't match its {len(classes)} classes")
    return RawDataset(x, y, classes, test_x, test_y)
