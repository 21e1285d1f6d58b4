"""Where a dataset's decoded images are kept: in memory, or in each node's cache on disk.

In memory is the fastest and is held once per node (the caller shares it: tuner puts it in
Ray's object store, read zero-copy). A collection too large for that is decoded once into each
node's cache (``data.cache``) and memory-mapped by every process. ``auto`` decides from the
decoded size, known before decoding (N x C x S x S bytes), and the node's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from data.errors import DatasetError
from data.files import ImageFiles
from data.registry import RawDataset

KeepIn = Literal["auto", "memory", "cache"]
# auto keeps images in memory up to this share of the node's memory: the object store holds
# them (Ray gives it 30% of memory by default), beside the trials' own working memory.
MEMORY_SHARE = 0.1
# ... and up to this size: the driver holds a decoded copy while it puts them in the object
# store (twice their size at its peak). Above it the cache is as fast to train from
# (docs/benchmarks.md), shared by every process alike, kept for the next search, with no peak.
MEMORY_CAP = 512_000_000


@dataclass(frozen=True)
class Placement:
    """Where the images go (``memory`` or ``cache``), and why, in words."""

    where: Literal["memory", "cache"]
    reason: str


def place(
    dataset: RawDataset | ImageFiles, keep_in: KeepIn, memory: int | None = None
) -> Placement:
    """Where ``dataset``'s images are kept under ``keep_in`` on a node of ``memory`` bytes
    (this one's when None). A loader's arrays (``RawDataset``) are in memory already."""
    if isinstance(dataset, RawDataset):
        if keep_in == "cache":
            raise DatasetError(
                "data.keep_in: cache needs a loader that lists image files (image_folder, "
                "manifest); this one returns decoded arrays: use auto or memory"
            )
        return Placement("memory", "decoded by its loader")
    memory = memory or node_memory()
    size = dataset.decoded_bytes
    what = (
        f"{len(dataset.paths):,} images, {_size(size)} decoded at {dataset.image_size} px "
        f"({size / memory:.0%} of this node's {_size(memory)})"
    )
    if keep_in == "auto":
        share, cap = f"{MEMORY_SHARE:.0%}", _size(MEMORY_CAP)
        if size > MEMORY_SHARE * memory:
            where, why = "cache", f"data.keep_in: auto, over {share}"
        elif size > MEMORY_CAP:
            where, why = "cache", f"data.keep_in: auto, over {cap}"
        else:
            where, why = "memory", f"data.keep_in: auto, within {share} and {cap}"
    else:
        where, why = keep_in, f"data.keep_in: {keep_in}"
    kept = "in memory, once per node" if where == "memory" else "in each node's cache on disk"
    return Placement(where, f"{what}: kept {kept} ({why})")


def _size(count: int) -> str:
    """Bytes in MB below a GB, else in GB (decimal units, as `df -H` and `free --si`)."""
    return f"{count / 1e6:.1f} MB" if count < 1e9 else f"{count / 1e9:.1f} GB"


def node_memory() -> int:
    """This machine's physical memory, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
