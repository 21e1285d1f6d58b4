"""MNIST handwritten digits from its four idx files (official 60,000 / 10,000 split)."""

from __future__ import annotations

from pathlib import Path

from data.loaders.idx import find_idx_dir, load_idx_dir, missing_message
from data.registry import DatasetError, RawDataset, register

CLASSES = tuple(str(digit) for digit in range(10))
TORCHVISION_DIR = Path("MNIST", "raw")  # where torchvision.datasets.MNIST(root) puts the files


@register("mnist")
def mnist(root: Path | None = None) -> RawDataset:
    """MNIST from idx files (plain or .gz) in ``root`` or in ``root/MNIST/raw`` (a fetch)."""
    if root is None:
        raise DatasetError(
            "mnist: data.root is not set (MNIST is not bundled); download it with "
            "`python -m tuner data fetch mnist --root DIR` and set data.root to DIR"
        )
    looked = [root, root / TORCHVISION_DIR]
    found = find_idx_dir(looked)
    if found is None:
        raise DatasetError(missing_message("mnist", root, looked))
    return load_idx_dir(found, "mnist", CLASSES)
