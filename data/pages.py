"""Reading a shared split without keeping its pages: a process's memory stays flat in N.

Images kept once per node are a shared mapping in every process that reads them: a memory map
of the node's cache (``data.cache``), or Ray's object store (shared memory, read zero-copy).
The kernel keeps each page a process has touched mapped in it until the mapping goes, and a
page mapped by only one process counts as that process's own (its USS: the driver testing
alone after the trials end, the last trial running, a cache's builder). So a full pass over a
split would leave the whole split in the reader's private memory.

``forget`` drops this process's mapping of pages it has read (``madvise(MADV_DONTNEED)``): the
data stays where it lives (the page cache, shared memory) and the next read maps it again, a
minor fault. Only regions ``register``ed as a shared mapping are ever touched: on private
memory the same call would zero the data, so anything else is left alone.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # linux/mman.h
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
_LOCK = threading.Lock()
# (start, end) of a registered array's mapping -> the array, weakly: while it is alive its
# mapping is too, so the address range can't have been reused by private memory.
_REGIONS: dict[tuple[int, int], weakref.ref] = {}


def _span(array: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """The bytes ``[start, end)`` from an array's or tensor's first element to its last (all of
    them for a contiguous one; every k-th row of a split spans the rows between too)."""
    if isinstance(array, np.ndarray):
        return np.lib.array_utils.byte_bounds(array)
    if array.numel() == 0 or array.device.type != "cpu":
        return 0, 0
    start = array.data_ptr()
    last = sum((n - 1) * abs(s) for n, s in zip(array.shape, array.stride(), strict=True))
    return start, start + (last + 1) * array.element_size()


def _shared_mapping(start: int, end: int) -> tuple[int, int] | None:
    """The shared mapping (``s`` in /proc/self/maps) that holds ``[start, end)``, if one does."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:  # not Linux: nothing is ever released
        return None
    for line in lines:
        fields = line.split(maxsplit=2)
        low, high = (int(v, 16) for v in fields[0].split("-"))
        if low <= start and end <= high:
            return (low, high) if fields[1][3] == "s" else None
    return None


def register(array: np.ndarray) -> bool:
    """Let ``forget`` release the pages of ``array`` (and of views into it), when it lies in a
    shared mapping; returns whether it does. Call once per array, where it is opened."""
    if _LIBC is None or array.nbytes == 0:
        return False
    region = _shared_mapping(*_span(array))
    if region is None:
        return False
    with _LOCK:
        _REGIONS[region] = weakref.ref(array)
    return True


def forget(part: np.ndarray | torch.Tensor) -> None:
    """Unmap from this process the pages under ``part`` (a split, or rows of it; a CPU array
    or tensor with positive strides) when a registered shared mapping holds them; a no-op for
    anything else."""
    start, end = _span(part)
    if end <= start or not _REGIONS:
        return
    with _LOCK:
        for (low, high), alive in list(_REGIONS.items()):
            if alive() is None:
                del _REGIONS[low, high]
            elif low <= start and end <= high:
                # Whole pages only, within the mapping: a neighbour's page is just read again.
                first = max(low, start - start % PAGE)
                last = min(high, end + (-end) % PAGE)
                _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)
                return


def forget_rows(x: torch.Tensor, index: torch.Tensor | slice) -> None:
    """``forget`` the rows of ``x`` from the first to the last that ``index`` reads."""
    if not _REGIONS or x.device.type != "cpu":  # nothing shared here: no index to read back
        return
    if isinstance(index, slice):
        forget(x[index])
    elif len(index):
        forget(x[int(index.min()) : int(index.max()) + 1])
