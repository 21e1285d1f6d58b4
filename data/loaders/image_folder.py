"""A folder of images, one sub-folder per class (cats/, dogs/; 15-scene's bedroom/, ...).

Listed, not decoded: ``data.load`` decodes the images of any size and format OpenCV reads once,
resized to a square, into memory or into each node's cache. The folder may be local or a URI
(``s3://bucket/photos``) listed through fsspec.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np

from data.files import ImageFiles, is_uri
from data.registry import DatasetError, register
from models.options import POSITIVE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@register("image_folder")
def image_folder(
    root: Path | str | None = None,
    *,
    image_size: Annotated[int, POSITIVE] = 64,  # pixels; checked by the registry (data.load)
    grayscale: bool = False,
    test_root: str | Path | None = None,
) -> ImageFiles:
    """Images under ``root/<class>/``, to be resized to ``image_size`` x ``image_size`` pixels.

    ``grayscale`` gives 1 channel, else 3 (RGB). ``test_root`` is an optional separate test
    folder with the same class sub-folders; without it ``load`` carves a test split out.
    Unreadable files are skipped when decoded, with one warning giving their count.
    """
    if root is None:
        raise DatasetError(
            "image_folder: data.root is not set; point it at a folder with one sub-folder "
            "of images per class"
        )
    classes, groups = _list_tree(root)
    paths, labels = _rows(groups)
    split = None
    if test_root is not None:
        test_dir = str(test_root) if is_uri(test_root) else Path(test_root).expanduser()
        test_classes, test_groups = _list_tree(test_dir)
        if test_classes != classes:
            raise DatasetError(
                f"image_folder: test_root {test_dir} has classes {list(test_classes)}, "
                f"but {root} has {list(classes)}; they must match"
            )
        test_paths, test_labels = _rows(test_groups)
        split = ("train",) * len(paths) + ("test",) * len(test_paths)
        paths, labels = paths + test_paths, labels + test_labels
    return ImageFiles(
        tuple(paths),
        np.asarray(labels, dtype=np.int64),
        classes,
        split,
        image_size=image_size,
        grayscale=bool(grayscale),
    )


def _rows(groups: list[list[str]]) -> tuple[list[str], list[int]]:
    """Every path, class after class, and its label."""
    paths = [path for group in groups for path in group]
    labels = [label for label, group in enumerate(groups) for _ in group]
    return paths, labels


def _list_tree(root: Path | str) -> tuple[tuple[str, ...], list[list[str]]]:
    """The class (sub-folder) names under ``root`` and each one's image files, sorted."""
    tree = _uri_tree(str(root)) if is_uri(root) else _local_tree(Path(root))
    if len(tree) < 2:
        raise DatasetError(
            f"image_folder: {root} needs one sub-folder of images per class (2 or more), "
            f"found {len(tree)}"
        )
    for name, files in tree.items():
        if not files:
            kinds = " ".join(sorted(IMAGE_SUFFIXES))
            raise DatasetError(f"image_folder: class folder {root}/{name} has no images ({kinds})")
    names = sorted(tree)
    return tuple(names), [sorted(tree[name]) for name in names]


def _local_tree(root: Path) -> dict[str, list[str]]:
    if not root.is_dir():
        raise DatasetError(
            f"image_folder: {root} is not a directory; point data.root (or test_root) at a "
            "folder with one sub-folder of images per class"
        )
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return {folder.name: list(_images_under(str(folder))) for folder in folders}


def _images_under(folder: str) -> Iterator[str]:
    """The image files at any depth under ``folder``: a directory's entries say what they are
    without a ``stat`` per file (only a link is followed to see where it points)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                yield from _images_under(entry.path)
            elif _is_image(entry.name) and entry.is_file():
                yield entry.path


def _uri_tree(root: str) -> dict[str, list[str]]:
    """A folder in an object store or remote file system, listed once through fsspec."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    try:
        found = fs.find(base, withdirs=True, detail=True)
    except OSError as error:
        raise DatasetError(f"image_folder: cannot list {root}: {error}") from None
    if not found:
        raise DatasetError(
            f"image_folder: {root} is not a directory (or is empty); point data.root at a "
            "folder with one sub-folder of images per class"
        )
    tree: dict[str, list[str]] = {}
    for path, info in found.items():
        parts = path[len(base.rstrip("/")) + 1 :].split("/")
        if parts[0].startswith(".") or not parts[0]:
            continue
        if info.get("type") == "directory" and len(parts) == 1:
            tree.setdefault(parts[0], [])
        elif len(parts) > 1 and info.get("type") != "directory" and _is_image(parts[-1]):
            tree.setdefault(parts[0], []).append(fs.unstrip_protocol(path))
    return tree


def _is_image(name: str) -> bool:
    """An image by its suffix; hidden files (macOS ``._x.jpg``) left out."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
