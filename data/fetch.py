"""Download a dataset through torchvision, into the layout its loader reads.

Only for machines with a network (``python -m tuner data fetch NAME --root DIR``); loaders and
tests never download. Afterwards ``data.root: DIR`` finds the files: the loaders also look in
torchvision's sub-folders (DIR/MNIST/raw, DIR/FashionMNIST/raw, DIR/cifar-10-batches-py).
"""

from __future__ import annotations

from pathlib import Path

from data.registry import DatasetError

# name -> (torchvision.datasets class name, folder under root that the loader reads)
FETCHABLE = {
    "cifar10": ("CIFAR10", Path("cifar-10-batches-py")),
    "mnist": ("MNIST", Path("MNIST", "raw")),
    "fashion_mnist": ("FashionMNIST", Path("FashionMNIST", "raw")),
}


def fetch(name: str, root: Path) -> Path:
    """Download dataset ``name`` (both splits) under ``root``; returns the folder of its files.

    Raises DatasetError for a dataset that can't be fetched or when the download fails.
    """
    if name not in FETCHABLE:
        raise DatasetError(
            f"{name!r} can't be fetched; fetchable datasets: {', '.join(sorted(FETCHABLE))} "
            "(digits ships with scikit-learn; image_folder is your own images)"
        )
    from torchvision import datasets  # here, not at the top: only fetching needs it

    class_name, folder = FETCHABLE[name]
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    dataset = getattr(datasets, class_name)
    try:
        for train in (True, False):
            dataset(str(root), train=train, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; bad checksums RuntimeError
        reason = " ".join(str(error).split())  # torchvision's message spans lines; keep one
        raise DatasetError(f"{name}: download into {root} failed: {reason}") from None
    return root / folder
