"""A folder of images, one sub-folder per class (cats/, dogs/; 15-scene's bedroom/, ...).

Images of any size and format OpenCV reads are decoded once, resized to a square and kept as
uint8 (N, C, size, size): a few thousand photos at 64 px are a few tens of MB in memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np

from data.registry import DatasetError, RawDataset, register
from models.options import POSITIVE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@register("image_folder")
def image_folder(
    root: Path | None = None,
    *,
    image_size: Annotated[int, POSITIVE] = 64,  # pixels; checked by the registry (data.load)
    grayscale: bool = False,
    test_root: str | Path | None = None,
) -> RawDataset:
    """Images under ``root/<class>/`` resized to ``image_size`` x ``image_size`` pixels.

    ``grayscale`` gives 1 channel, else 3 (RGB). ``test_root`` is an optional separate test
    folder with the same class sub-folders; without it ``load`` carves a test split out.
    Unreadable files are skipped with one warning giving their count.
    """
    if root is None:
        raise DatasetError(
            "image_folder: data.root is not set; point it at a folder with one sub-folder "
            "of images per class"
        )
    x, y, classes = _read_tree(root, image_size, bool(grayscale))
    if test_root is None:
        return RawDataset(x, y, classes)
    test_dir = Path(test_root).expanduser()
    test_x, test_y, test_classes = _read_tree(test_dir, image_size, bool(grayscale))
    if test_classes != classes:
        raise DatasetError(
            f"image_folder: test_root {test_dir} has classes {list(test_classes)}, "
            f"but {root} has {list(classes)}; they must match"
        )
    return RawDataset(x, y, classes, test_x, test_y)


def _read_tree(
    root: Path, size: int, grayscale: bool
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Every image under ``root``'s class folders, its label, and the class (folder) names."""
    if not root.is_dir():
        raise DatasetError(
            f"image_folder: {root} is not a directory; point data.root (or test_root) at a "
            "folder with one sub-folder of images per class"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DatasetError(
            f"image_folder: {root} needs one sub-folder of images per class (2 or more), "
            f"found {len(folders)}"
        )
    images, labels, unreadable = [], [], 0
    for label, folder in enumerate(folders):
        files = _image_files(folder)
        if not files:
            kinds = " ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetError(f"image_folder: class folder {folder} has no images ({kinds})")
        decoded = [
            image for image in (_decode(p, size, grayscale) for p in files) if image is not None
        ]
        if not decoded:
            raise DatasetError(f"image_folder: none of the {len(files)} images in {folder} decode")
        unreadable += len(files) - len(decoded)
        images += decoded
        labels += [label] * len(decoded)
    if unreadable:
        warnings.warn(
            f"image_folder: skipped {unreadable} unreadable image(s) under {root}", stacklevel=3
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64), tuple(f.name for f in folders)


def _image_files(folder: Path) -> list[Path]:
    """Image files below ``folder`` by suffix, sorted; hidden ones (macOS ``._x.jpg``) left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _decode(path: Path, size: int, grayscale: bool) -> np.ndarray | None:
    """One image as uint8 (C, size, size), or None when OpenCV can't decode it."""
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR  # both give 8-bit pixels
    try:
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flag)
    except (OSError, cv2.error):  # unreadable file, or an empty one (imdecode rejects those)
        return None
    if image is None:
        return None
    # INTER_AREA averages pixels when shrinking, which avoids aliasing on large photos.
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if grayscale:
        return image[None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
