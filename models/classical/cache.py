"""A disk cache of feature arrays, shared by every trial on a node and across experiments.

Layout: ``<cache_dir>/<kind>/<hash>.npy`` (kind = ``sift``, ``vocabulary``, ``histograms``, and
``neighbours`` for the kNN) and a ``<hash>.lock`` beside each entry. The hash covers everything
that determines the array (see ``cache_key``), so nothing a user types becomes part of a path,
and an entry can be reused by any later experiment that asks for the same thing. Deleting the
directory between runs is safe.

Concurrency: a trial takes an exclusive ``flock`` on the entry's lock file before computing it,
so two trials asking for the same entry at once compute it once (the second waits, then reads).
Writes go to a temporary file in the same directory that is renamed into place, so a reader never
sees a torn file, even if the writer is killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the way an entry is computed changes, so stale entries are never read back.
FORMAT_VERSION = 1


def array_digest(array: np.ndarray) -> str:
    """A content hash of an array (its bytes, shape and dtype): the data's identity in keys."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def cache_key(kind: str, **parts: Any) -> str:
    """The one place a key is made: ``<kind>/<hash of the parts and the format version>``.

    ``parts`` are JSON-able values (array digests, parameters); their order does not matter.
    """
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return f"{kind}/{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


class FeatureCache:
    """``get(key, compute)``: the stored array, or ``compute()`` once, store it and return it.

    With ``directory=None`` nothing is stored and every ``get`` computes. ``hits`` and
    ``misses`` count how each ``get`` was answered (a miss is one computation).
    """

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The array stored under ``key``, computing and storing it first if it is missing."""
        if self.directory is None:
            self.misses += 1
            return compute()
        path = self.directory / f"{key}.npy"
        if path.exists():  # the fast path: no lock needed, files only ever appear whole
            self.hits += 1
            return np.load(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if path.exists():  # another process filled it while we waited
                self.hits += 1
                return np.load(path)
            array = compute()
            _write_atomically(path, array)
            self.misses += 1
            return array


def _write_atomically(path: Path, array: np.ndarray) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, array)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
