"""A disk cache of feature arrays, shared by every trial on a node and across experiments.

Entries are ``.npy`` files named by a hash of what produced them, so nothing a user writes in a
spec becomes part of a path. A file lock per entry makes concurrent trials compute an entry once;
writes go to a temporary file that is renamed into place, so no reader sees a torn file.
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


def array_digest(array: np.ndarray) -> str:
    """A content hash of an array (values, shape and dtype): the data's identity in cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def cache_key(kind: str, **parts: Any) -> str:
    """The one way a key is made: ``kind`` and a hash of the parts that determine the result."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return f"{kind}-{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"


class FeatureCache:
    """``get(key, compute)``: the cached array, or compute it once, store it and return it."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory).expanduser() if directory else None
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if self.directory is None:
            self.misses += 1
            return compute()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npy"
        if path.exists():
            self.hits += 1
            return np.load(path)
        with open(self.directory / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second trial waits here, then reads the file
            if path.exists():
                self.hits += 1
                return np.load(path)
            array = compute()
            with tempfile.NamedTemporaryFile(
                dir=self.directory, suffix=".tmp", delete=False
            ) as tmp:
                np.save(tmp, array)
            os.replace(tmp.name, path)
            self.misses += 1
            return array
