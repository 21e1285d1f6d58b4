"""A folder of images, one sub-folder per class (cats/, dogs/; 15-scene's bedroom/, ...)."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from data.registry import DatasetError, RawDataset, register

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@register("image_folder")
def image_folder(
    root: Path | None = None,
    *,
    image_size: int = 64,
    grayscale: bool = False,
    test_root: str | None = None,
) -> RawDataset:
    """Images of any size resized to ``image_size`` (pixels, square); ``test_root`` is an
    optional separate test folder with the same class sub-folders."""
    if root is None:
        raise DatasetError("image_folder: set data.root to a folder with one sub-folder per class")
    x, y, classes = _read_tree(root, image_size, grayscale)
    if test_root is None:
        return RawDataset(x, y, classes)
    test_x, test_y, test_classes = _read_tree(Path(test_root).expanduser(), image_size, grayscale)
    if test_classes != classes:
        raise DatasetError(
            f"image_folder: test_root {test_root} has classes {list(test_classes)}, "
            f"but {root} has {list(classes)}; they must match"
        )
    return RawDataset(x, y, classes, test_x, test_y)


def _read_tree(
    root: Path, size: int, grayscale: bool
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not root.is_dir():
        raise DatasetError(f"image_folder: {root} is not a directory; set data.root to your images")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DatasetError(
            f"image_folder: {root} needs one sub-folder per class (2 or more), found {len(folders)}"
        )
    images, labels, unreadable = [], [], 0
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            kinds = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetError(f"image_folder: class folder {folder} has no images ({kinds})")
        for path in files:
            image = _decode(path, size, grayscale)
            if image is None:
                unreadable += 1
                continue
            images.append(image)
            labels.append(label)
    if unreadable:
        warnings.warn(
            f"image_folder: skipped {unreadable} unreadable image(s) under {root}", stacklevel=2
        )
    if not images:
        raise DatasetError(f"image_folder: no readable images under {root}")
    return np.stack(images), np.asarray(labels, dtype=np.int64), tuple(f.name for f in folders)


def _decode(path: Path, size: int, grayscale: bool) -> np.ndarray | None:
    """One image as uint8 (C, size, size), or None when it can't be decoded."""
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flag)
    if image is None:
        return None
    # INTER_AREA averages pixels when shrinking, which avoids aliasing on large photos.
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if grayscale:
        return image[None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
