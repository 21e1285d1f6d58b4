"""MNIST-format idx files (plain or gzipped): `mnist` and `fashion_mnist`."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from data.registry import DatasetError, RawDataset, register

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # package dataset-fashion-mnist
FASHION_CLASSES = (
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
FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DTYPE = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """One idx file: magic (0, 0, dtype, ndim), big-endian dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        raw = stream.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPE:
        raise DatasetError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).copy()  # writable for torch
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {dims}, found {data.size} values")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def load_idx_dir(root: Path, dataset: str, classes: tuple[str, ...]) -> RawDataset:
    """The four idx files of an MNIST-format dataset in ``root`` (official test split kept)."""
    paths = {key: _find(root, stem) for key, stem in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise DatasetError(
            f"{dataset}: no idx files under {root} (missing {', '.join(missing)}[.gz]); "
            f"download with `python -m tuner data fetch {dataset} --root {root}` "
            "or point data.root at them"
        )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DatasetError(f"{dataset}: {split} images and labels differ in count under {root}")
    return RawDataset(
        x=arrays["train_x"][:, None],
        y=arrays["train_y"].astype(np.int64),
        classes=classes,
        test_x=arrays["test_x"][:, None],
        test_y=arrays["test_y"].astype(np.int64),
    )


@register("mnist")
def mnist(root: Path | None = None) -> RawDataset:
    """MNIST from its idx files in ``root``."""
    if root is None:
        raise DatasetError(
            "mnist: set data.root to a directory of MNIST idx files; download them with "
            "`python -m tuner data fetch mnist --root DIR` where a network exists"
        )
    return load_idx_dir(root, "mnist", tuple(str(c) for c in range(10)))


@register("fashion_mnist")
def fashion_mnist(root: Path | None = None) -> RawDataset:
    """Fashion-MNIST from ``root``, or from Debian's dataset-fashion-mnist when root is unset."""
    if root is None:
        if not DEBIAN_FASHION_MNIST.is_dir():
            raise DatasetError(
                f"fashion_mnist: not found at {DEBIAN_FASHION_MNIST}; install it with "
                "`apt-get install dataset-fashion-mnist`, or set data.root to its idx files"
            )
        root = DEBIAN_FASHION_MNIST
    return load_idx_dir(root, "fashion_mnist", FASHION_CLASSES)
