"""Decoded images kept once per node: memory-mapped files, shared by every process on it.

``data.splits`` asks for two entries per dataset: train+val (adjacent, in one file) and test.
An entry is a folder ``<cache_dir>/<key>/`` holding ``images.u8`` (uint8 (N, C, S, S), raw, in
the order of the paths asked for, undecodable ones left out) and ``meta.json`` (its shape and
the rows it skipped, so labels stay aligned). The key hashes each path with its size and
modification time, and the preprocessing (size, channels): a changed, added or removed file
is another entry, and a second search on the same files opens this one at once.

Old entries go by themselves: each open marks its entry used (the folder's mtime), and when an
entry is built, the entries of the same source (the folder all its files lie under) not used
for PRUNE_AFTER_S are removed, under their own lock (one being built or removed by another
process is skipped) and renamed away before they are deleted, so no reader ever opens half of
one. A process that still maps a removed entry reads on: the file lives until it unmaps it.

One build per node: a file lock lets the first process build while the others wait for it,
and the build writes to ``<key>.partial`` and renames it when complete, so a build killed
halfway is never opened (the next one starts it again). The page cache holds the images once
for every process that maps them, which is why a dataset larger than memory still trains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from data import pages
from data.decode import REPORT_EVERY_S, decode_into
from data.files import is_uri, stamp

DEFAULT_DIR = "~/.cache/tuner/images"  # on each node's own disk
FORMAT = 1  # bump when the layout or the decoding changes: old entries are then not opened
# An entry of a source not opened for this long is removed when another entry of that source is
# built (its files or preprocessing changed): long enough for an earlier search to be resumed.
PRUNE_AFTER_S = 7 * 24 * 3600
WRITEBACK_S = 1.0  # how often a build sends what it wrote so far to disk
Say = Callable[[str], None]


@dataclass(frozen=True)
class Decoded:
    """The images of some paths, decoded: ``images[i]`` is ``paths[kept[i]]``."""

    images: np.ndarray  # uint8 (N, C, S, S): in memory, or a read-only memory map
    skipped: np.ndarray  # indices of the paths that could not be read or decoded

    def kept(self, total: int) -> np.ndarray:
        """Indices of the paths whose images these are (``total``: how many were asked for)."""
        return np.setdiff1d(np.arange(total), self.skipped)


def in_memory(paths: Sequence[str], size: int, grayscale: bool, say: Say | None = None) -> Decoded:
    """The images decoded into this process's memory, on all cores."""
    out = np.empty((len(paths), 1 if grayscale else 3, size, size), dtype=np.uint8)
    skipped = decode_into(out, paths, grayscale=grayscale, progress=_progress(say, "memory"))
    return Decoded(out[: len(paths) - len(skipped)], skipped)


def cached(
    paths: Sequence[str], size: int, grayscale: bool, cache_dir: str, say: Say | None = None
) -> Decoded:
    """The images from this node's cache under ``cache_dir``, built first if missing (by this
    process, or by another that is building it: then this one waits)."""
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / key(paths, size, grayscale)
    if _complete(entry):
        with contextlib.suppress(FileNotFoundError):  # removed as unused since: built again
            return _open(entry)
    lock = FileLock(f"{entry}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if say:
            say(f"data: waiting for another process that is building the cache {entry}")
        lock.acquire()
    try:
        if not _complete(entry):  # not built by the process we waited for
            _build(entry, paths, size, grayscale, say)
            prune(folder, source_of(paths), keep=entry)
    finally:
        lock.release()
    return _open(entry)


def key(paths: Sequence[str], size: int, grayscale: bool) -> str:
    """The cache entry's name: a hash of every path, its size and mtime, and the decoding."""
    digest = hashlib.sha256(json.dumps([FORMAT, size, bool(grayscale)]).encode())
    if any(is_uri(p) for p in paths):  # one request per object: many at once
        with ThreadPoolExecutor(32) as pool:
            stamps = list(pool.map(stamp, paths))
    else:
        stamps = [stamp(p) for p in paths]
    for path, (length, modified) in zip(paths, stamps, strict=True):
        digest.update(f"{path}\0{length}\0{modified}\n".encode())
    return digest.hexdigest()[:32]


def _complete(entry: Path) -> bool:
    return (entry / "meta.json").is_file()  # written last, then the folder renamed


def _build(entry: Path, paths: Sequence[str], size: int, grayscale: bool, say: Say | None) -> None:
    partial = entry.with_name(f"{entry.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # a build killed halfway: never used, redone
    partial.mkdir()
    channels = 1 if grayscale else 3
    shape = (len(paths), channels, size, size)
    if paths:
        out = np.memmap(partial / "images.u8", dtype=np.uint8, mode="w+", shape=shape)
        pages.register(out)  # each chunk written is released: the builder holds no pages
        with _written_to_disk(partial / "images.u8"):
            skipped = decode_into(out, paths, grayscale=grayscale, progress=_progress(say, entry))
        del out  # unmapped before the file is cut to the images kept
    else:
        skipped = np.zeros(0, dtype=np.int64)
    kept = len(paths) - len(skipped)
    os.truncate(partial / "images.u8", kept * channels * size * size)
    meta = {
        "shape": [kept, channels, size, size],
        "skipped": skipped.tolist(),
        "source": source_of(paths),
    }
    (partial / "meta.json").write_text(json.dumps(meta))
    os.replace(partial, entry)


@contextlib.contextmanager
def _written_to_disk(path: Path) -> Iterator[None]:
    """On disk when the block ends, so an entry never outlives a machine crash half-written:
    a thread syncs the file every WRITEBACK_S while the block writes it (``os.fsync`` waits on
    the disk, not the GIL), which leaves the last sync little to write."""
    done = threading.Event()
    fd = os.open(path, os.O_RDONLY)

    def sync_while_writing() -> None:
        while not done.wait(WRITEBACK_S):
            os.fsync(fd)

    syncer = threading.Thread(target=sync_while_writing, name="tuner-cache-sync", daemon=True)
    syncer.start()
    try:
        yield
    finally:
        done.set()
        syncer.join()
        os.fsync(fd)
        os.close(fd)


def source_of(paths: Sequence[str]) -> str:
    """The folder (or URI prefix) every one of ``paths`` lies under: what "the same source"
    means to ``prune``."""
    # Cut at the last "/": a common prefix of strings ("/a/photos" of /a/photos1 and
    # /a/photos2) becomes a folder (/a); commonpath would mangle URIs (s3://).
    common = os.path.commonprefix(list(paths))  # noqa: RUF071
    return common.rpartition("/")[0] if paths else ""


def prune(folder: Path, source: str, *, keep: Path, now: float | None = None) -> list[Path]:
    """Remove the entries of ``source`` in ``folder`` other than ``keep`` not opened for
    PRUNE_AFTER_S; returns those removed. Entries another process holds the lock of (building
    or removing them) are left alone."""
    old = (now or time.time()) - PRUNE_AFTER_S
    removed = []
    for other in folder.iterdir():
        if other == keep or other.suffix or not _unused_since(other, source, old):
            continue
        lock = FileLock(f"{other}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            if _unused_since(other, source, old):  # not opened while we waited for the lock
                gone = other.with_name(f"{other.name}.removed")
                os.replace(other, gone)  # a reader either opens it whole or finds it missing
                shutil.rmtree(gone, ignore_errors=True)
                removed.append(other)
        finally:
            lock.release()
    return removed


def _unused_since(entry: Path, source: str, moment: float) -> bool:
    """Whether ``entry`` is a complete entry of ``source`` last opened before ``moment``."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        return meta.get("source") == source and entry.stat().st_mtime < moment
    except (OSError, ValueError):  # not an entry, or one being removed
        return False


def _open(entry: Path) -> Decoded:
    meta = json.loads((entry / "meta.json").read_text())
    with contextlib.suppress(PermissionError):  # a cache someone else owns: they prune it
        os.utime(entry)  # used now: kept by ``prune`` for PRUNE_AFTER_S from here
    shape = tuple(meta["shape"])
    if shape[0] == 0:  # numpy can't map an empty file
        images = np.zeros(shape, dtype=np.uint8)
    else:
        images = np.memmap(entry / "images.u8", dtype=np.uint8, mode="r", shape=shape)
        pages.register(images)  # readers release what they have read (data.pages)
    return Decoded(images, np.asarray(meta["skipped"], dtype=np.int64))


def _progress(say: Say | None, where: object) -> Callable[[int, int, float], None] | None:
    """A progress line every few seconds: images done, rate, and the time left."""
    if say is None:
        return None

    def report(done: int, total: int, seconds: float) -> None:
        if done == total and seconds < REPORT_EVERY_S:
            return  # done before the first line was due: nothing to say
        rate = done / seconds if seconds > 0 else 0.0
        left = (total - done) / rate if rate else 0.0
        state = f"about {left:.0f} s left" if done < total else f"done in {seconds:.1f} s"
        say(
            f"data: decoding {total:,} images into {where}: {done:,} ({done / total:.0%}), "
            f"{rate:,.0f} images/s, {state}"
        )

    return report


def to_stderr(text: str) -> None:
    """The default ``say``: a line on stderr (trial workers' lines reach the driver's log)."""
    print(text, file=sys.stderr, flush=True)
