"""The MNIST idx file format (plain or gzipped), shared by the `mnist` and `fashion_mnist` loaders.

An idx file is a 4-byte magic number (0, 0, dtype code, ndim), ndim big-endian uint32 sizes,
then the values. Images are (N, 28, 28) uint8, labels (N,) uint8.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from data.registry import DatasetError, RawDataset

UNSIGNED_BYTE = 0x08  # the only dtype code MNIST-style datasets use
FILES = {  # split -> file name without .gz
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
NDIM = {"train_x": 3, "train_y": 1, "test_x": 3, "test_y": 1}


def read_idx(path: Path, dataset: str = "idx") -> np.ndarray:
    """One idx file of unsigned bytes as a writable uint8 array; ``.gz`` files are decompressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # corrupt gzip streams raise all three
        raise DatasetError(f"{dataset}: cannot read {path}: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UNSIGNED_BYTE:
        raise DatasetError(
            f"{dataset}: {path} is not an idx file of unsigned bytes (bad magic number)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{dataset}: {path} is truncated inside its header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise DatasetError(
            f"{dataset}: {path} is truncated: header says {dims}, found {data.size} values"
        )
    return data.reshape(dims).copy()  # copy: frombuffer is read-only, torch wants writable


def find_idx_dir(candidates: list[Path]) -> Path | None:
    """The first directory among ``candidates`` holding all four idx files, else None."""
    for directory in candidates:
        if all(_find(directory, stem) for stem in FILES.values()):
            return directory
    return None


def load_idx_dir(root: Path, dataset: str, classes: tuple[str, ...]) -> RawDataset:
    """The four idx files of an MNIST-format dataset in ``root``; the official test split kept."""
    paths = {key: _find(root, stem) for key, stem in FILES.items()}
    if None in paths.values():
        raise DatasetError(missing_message(dataset, root, [root]))
    arrays = {key: read_idx(path, dataset) for key, path in paths.items()}
    for key, array in arrays.items():
        if array.ndim != NDIM[key]:
            raise DatasetError(
                f"{dataset}: {paths[key]} has {array.ndim} dimensions, expected {NDIM[key]}"
            )
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DatasetError(f"{dataset}: {split} images and labels differ in count under {root}")
    labels = np.concatenate([arrays["train_y"], arrays["test_y"]])
    if labels.size and labels.max() >= len(classes):
        raise DatasetError(
            f"{dataset}: labels under {root} go up to {labels.max()}, expected < {len(classes)}"
        )
    return RawDataset(
        x=arrays["train_x"][:, None],  # add the channel axis: (N, 1, H, W)
        y=arrays["train_y"].astype(np.int64),
        classes=classes,
        test_x=arrays["test_x"][:, None],
        test_y=arrays["test_y"].astype(np.int64),
    )


def missing_message(dataset: str, root: Path, looked: list[Path]) -> str:
    """One line: what is missing, every directory searched, and how to get the files."""
    where = ", ".join(str(p) for p in looked)
    return (
        f"{dataset}: no idx files under {where} (looked for {FILES['train_x']}[.gz] and the "
        f"other three); download with `python -m tuner data fetch {dataset} --root {root}` "
        "or point data.root at them"
    )


def _find(directory: Path, stem: str) -> Path | None:
    # Some mirrors write "train-images.idx3-ubyte"; torchvision keeps both plain and .gz.
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None
