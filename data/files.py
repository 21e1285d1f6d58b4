"""Images still in files: what a loader of photos returns, and the ``manifest`` loader.

A loader of a large collection lists its files and labels (``ImageFiles``) and never decodes:
``data.load`` makes the splits on the labels first, then decodes each split once, in parallel,
into memory or into the node's cache (``data.cache``). Paths are local files or URIs that
``fsspec`` opens (``file://``, ``s3://``, ``gs://``; the last two need ``s3fs`` / ``gcsfs``).
The loaders of files: ``image_folder`` and ``manifest`` (``data.loaders``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")  # what a row's split may say
SHOWN = 3  # bad rows or files a warning names; its count covers the rest


@dataclass(frozen=True)
class ImageFiles:
    """Images in files, not yet decoded: one path, label and (optional) split per row.

    ``split`` holds "train", "val" or "test" per row when the source fixes it (a test folder,
    a manifest's split column); rows without a fixed split are carved out by ``data.load``.
    Every image is decoded to ``image_size`` x ``image_size`` pixels, 1 channel if
    ``grayscale`` else 3 (RGB).
    """

    paths: tuple[str, ...]
    labels: np.ndarray  # int64 class indices into ``classes``
    classes: tuple[str, ...]
    split: tuple[str, ...] | None = None
    image_size: int = 64
    grayscale: bool = False

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.paths):
            raise DatasetError(f"{len(self.paths)} image paths but {len(self.labels)} labels")
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise DatasetError(f"labels must be 0..{len(self.classes) - 1}, one per class")
        if self.split is not None and len(self.split) != len(self.paths):
            raise DatasetError(f"{len(self.paths)} image paths but {len(self.split)} splits")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def decoded_bytes(self) -> int:
        """What every image decoded takes, known before decoding any (uint8 pixels)."""
        return len(self.paths) * self.channels * self.image_size**2


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names a file through a file-system layer (``s3://...``), not locally."""
    return "://" in str(path)


def read_bytes(path: str) -> bytes | np.ndarray:
    """A file's whole content: a local path read directly, a URI through fsspec."""
    if not is_uri(path):
        return np.fromfile(path, dtype=np.uint8)
    import fsspec  # only for URIs

    with fsspec.open(path, "rb") as stream:
        return stream.read()


def stamp(path: str) -> tuple[int, str]:
    """(size in bytes, modification time or version) of a file, (-1, "") when it can't be
    read: what tells a cache that the file changed."""
    try:
        if not is_uri(path):
            status = os.stat(path)
            return status.st_size, str(status.st_mtime_ns)
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
        info = fs.info(inner)
        # Object stores name a version differently: local files an mtime, S3 a LastModified
        # and an ETag, GCS an mtime and a generation.
        version = [str(info.get(k, "")) for k in ("mtime", "LastModified", "ETag", "generation")]
        return int(info.get("size") or 0), "/".join(version)
    except (OSError, ValueError):
        return -1, ""
