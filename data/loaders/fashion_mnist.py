"""Fashion-MNIST (Zalando): 28x28 grey clothing images in MNIST's idx format, 10 classes."""

from __future__ import annotations

from pathlib import Path

from data.loaders.idx import find_idx_dir, load_idx_dir, missing_message
from data.registry import DatasetError, RawDataset, register

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
def fashion_mnist(root: Path | None = None) -> RawDataset:
    """Fashion-MNIST from ``root`` (or ``root/FashionMNIST/raw``); Debian's copy when unset."""
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
