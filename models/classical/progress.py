"""Progress bars for the slow steps of the classical features, drawn only where someone watches.

Dense SIFT over tens of thousands of images, assigning their visual words and fitting the
k-means vocabulary take minutes. Each of them runs inside ``with progress(total, desc, unit)
as advance:`` and calls ``advance(n)`` as it goes. The bar is, per process:

- by default tqdm's, on stderr, and only when stderr is a terminal (tqdm's ``disable=None``):
  a shell running the bench or a search's final refit shows it; pytest's captured stderr, log
  files and Ray's workers (whose stderr is a file) show nothing;
- whatever tqdm-like class ``use`` was given: ``ray.experimental.tqdm_ray.tqdm`` in a Ray
  worker, which prints its state as JSON lines that the driver draws as bars, provided Ray
  forwards workers' output to it (``ray.init(log_to_driver=True)``). This package never
  imports Ray itself; the caller that knows it runs in Ray chooses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

# A tqdm-like class: called with total=, desc=, unit=; the bar has update(n) and close().
Bar = Callable[..., Any]

TERMINAL_BAR: Bar = functools.partial(tqdm, disable=None)  # None: off unless stderr is a tty
_bar: Bar = TERMINAL_BAR


def use(bar: Bar | None) -> None:
    """Draw this process's bars with ``bar`` from now on (None: tqdm on a terminal again)."""
    global _bar
    _bar = bar or TERMINAL_BAR


@contextmanager
def progress(total: int, desc: str, unit: str) -> Iterator[Callable[[int], object]]:
    """A bar of ``total`` ``unit``s named ``desc``; the block calls ``advance(n)`` as it goes.

    The bar is closed (it shows its elapsed time) when the block ends, also by an exception.
    """
    bar = _bar(total=total, desc=desc, unit=unit)
    try:
        yield bar.update
    finally:
        bar.close()
