"""Decoding image files into uint8 arrays, in parallel on all of the machine's cores.

One function decodes for both places decoded images are kept (memory, ``data.cache``), so the
two hold the same pixels. OpenCV's ``imdecode`` and ``resize`` release the GIL: a thread pool
writing straight into the output array (a memory map for the cache, whose pages each chunk
then releases: ``data.pages``) decodes on every core with no copy between processes
(``bench/bench_data_scale.py`` measures it against the decode limit).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import cv2
import numpy as np
from PIL import Image

from data import pages
from data.files import read_bytes

CHUNK = 64  # images per task: big enough to amortise the pool, small for an even spread
REPORT_EVERY_S = 5.0  # seconds between progress lines
Progress = Callable[[int, int, float], None]  # (images done, of total, seconds so far)


# JPEG's decoder scales by 1/2, 1/4 or 1/8 inside the DCT, several times faster than decoding
# every pixel and then shrinking: used while the scaled image still covers the target size.
REDUCED = {  # factor -> (colour flag, grey flag)
    8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
}


def decode(path: str, size: int, grayscale: bool) -> np.ndarray | None:
    """One image as uint8 (C, size, size), RGB or grey; None when it can't be read or decoded."""
    try:
        blob = np.frombuffer(read_bytes(path), dtype=np.uint8)
        image = cv2.imdecode(blob, _flag(blob, size, grayscale))
    except (OSError, ValueError, cv2.error):  # unreadable, empty (imdecode rejects those)
        return None
    if image is None:
        return None
    # INTER_AREA averages pixels when shrinking, which avoids aliasing on large photos.
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    if grayscale:
        return image[None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)


def _flag(blob: np.ndarray, size: int, grayscale: bool) -> int:
    """OpenCV's flag for decoding ``blob``: a JPEG at the smallest scale that still covers
    ``size`` pixels on its shorter side (its header read by Pillow), anything else whole."""
    plain = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR  # both give 8-bit pixels
    if blob[:2].tobytes() != b"\xff\xd8":  # not a JPEG
        return plain
    try:
        shorter = min(Image.open(io.BytesIO(blob.tobytes())).size)
    except (OSError, ValueError):  # a header Pillow can't read: OpenCV decides
        return plain
    for factor, flags in REDUCED.items():
        if shorter // factor >= size:
            return flags[grayscale]
    return plain


def decode_into(
    out: np.ndarray,
    paths: Sequence[str],
    *,
    grayscale: bool,
    workers: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Decode ``paths[i]`` into ``out[i]`` (uint8 (N, C, S, S)), then move the images that
    decoded to the front, in order; returns the indices of those that did not.

    ``progress`` is called every few seconds and at the end.
    """
    size, total = out.shape[-1], len(paths)
    failed: list[int] = []

    def chunk(start: int) -> list[int]:
        missed = []
        for i in range(start, min(start + CHUNK, total)):
            image = decode(paths[i], size, grayscale)
            if image is None:
                missed.append(i)
            else:
                out[i] = image
        pages.forget(out[start : start + CHUNK])  # written: a cache's builder keeps no pages
        return missed

    began = last = time.monotonic()
    done = 0
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for future in as_completed([pool.submit(chunk, s) for s in range(0, total, CHUNK)]):
            failed += future.result()
            done += CHUNK
            if progress and time.monotonic() - last >= REPORT_EVERY_S:
                last = time.monotonic()
                progress(min(done, total), total, last - began)
    if progress:
        progress(total, total, time.monotonic() - began)
    failed.sort()
    _compact(out, failed)
    if failed:
        pages.forget(out)
    return np.asarray(failed, dtype=np.int64)


def _compact(out: np.ndarray, failed: list[int]) -> None:
    """Shift the decoded images over the failed ones' rows, keeping their order."""
    if not failed:
        return
    write = failed[0]
    for bad, next_bad in zip(failed, [*failed[1:], len(out)], strict=True):
        # Rows only move towards the front, in blocks of CHUNK: each block is read before a
        # later one overwrites it (numpy copies an overlapping block first).
        for start in range(bad + 1, next_bad, CHUNK):
            stop = min(start + CHUNK, next_bad)
            out[write : write + stop - start] = out[start:stop]
            write += stop - start
