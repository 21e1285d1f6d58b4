"""`data.pages`: a pass over a shared split leaves none of its pages in the reader's private
memory, the data stays intact, and private memory is never touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data import pages

SHAPE = (1000, 3, 64, 64)  # 12 MB


def _private_mb(path: Path) -> float:
    """The pages of ``path`` this process maps and no other does, MB: what USS counts of it."""
    mb, inside = 0.0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and not line.endswith(":"):  # a mapping's first line
            inside = line.endswith(str(path))
        elif inside and line.startswith("Private_"):
            mb += int(line.split()[1]) / 1024
    return mb


def test_a_mapped_split_read_through_leaves_no_private_pages_and_reads_the_same(tmp_path):
    path = tmp_path / "images.u8"
    written = np.memmap(path, dtype=np.uint8, mode="w+", shape=SHAPE)
    assert pages.register(written)
    written[:] = np.arange(SHAPE[0], dtype=np.uint8)[:, None, None, None]  # dirty, unwritten
    assert _private_mb(path) > 10  # the writer alone maps them: its own (USS)
    pages.forget(written)
    assert _private_mb(path) < 2
    written.flush()
    del written

    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=SHAPE)
    assert pages.register(mapped)
    x = torch.from_numpy(np.array(mapped, copy=False))
    sums = [int(x[i : i + 100].sum()) for i in range(0, SHAPE[0], 100)]
    assert _private_mb(path) > 10
    for i in range(0, SHAPE[0], 100):  # as a trial's batches do: rows from first to last read
        pages.forget_rows(x, torch.tensor([i, i + 99]))
    assert _private_mb(path) < 2
    assert sums == [int(x[i : i + 100].sum()) for i in range(0, SHAPE[0], 100)]  # read again
    assert int(x[999, 0, 0, 0]) == 999 % 256


def test_private_memory_is_never_released():
    private = np.full(SHAPE, 7, dtype=np.uint8)
    assert not pages.register(private)  # only a shared mapping can be released
    pages.forget(private)
    pages.forget_rows(torch.from_numpy(private), slice(0, 500))
    assert (private == 7).all()
