"""Storage formats for decoded images: write speed and random-batch read speed, measured alike.

The same N decoded uint8 images (3 x S x S) and labels are written to, then read from:

- memmap: tuner's cache (``data.cache``): one raw file, memory-mapped, batches by fancy index;
- LitData: ``litdata.optimize`` chunks, read by index through ``litdata.StreamingDataset``;
- WebDataset: one tar of ``.npy`` samples, read in order (it has no random access; a shuffle
  buffer is its way to mix).

Decoding is left out: it is the same for all (``data.decode``), and it dominates a build.
LitData and WebDataset are not tuner dependencies; install them beside it to run this:

    pip install --target /tmp/evalpkgs litdata==0.2.76 webdataset==1.0.2 ...
    PYTHONPATH=/tmp/evalpkgs python bench/bench_data_formats.py --images 4000 --size 128
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

BATCH = 64
BATCHES = 20


def images(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 3, size, size), dtype=np.uint8), rng.integers(0, 4, count)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def memmap(x: np.ndarray, y: np.ndarray, where: Path) -> tuple[float, float]:
    def write() -> None:
        out = np.memmap(where / "images.u8", dtype=np.uint8, mode="w+", shape=x.shape)
        for start in range(0, len(x), 64):  # as the cache's threads write: a chunk at a time
            out[start : start + 64] = x[start : start + 64]
        out.flush()

    seconds = timed(write)
    mapped = np.memmap(where / "images.u8", dtype=np.uint8, mode="r", shape=x.shape)
    rng = np.random.default_rng(1)
    read = timed(
        lambda: [mapped[np.sort(rng.choice(len(x), BATCH, replace=False))] for _ in range(BATCHES)]
    )
    return len(x) / seconds, BATCH * BATCHES / read


SOURCE: dict[str, np.ndarray] = {}  # in LitData's (spawned) workers: the images, mapped


def _sample(index: int) -> dict:
    if not SOURCE:
        SOURCE["x"] = np.load(os.environ["BENCH_FORMATS_X"], mmap_mode="r")
        SOURCE["y"] = np.load(os.environ["BENCH_FORMATS_Y"])
    return {"image": np.array(SOURCE["x"][index]), "label": int(SOURCE["y"][index])}


def litdata_format(x: np.ndarray, y: np.ndarray, where: Path) -> tuple[float, float]:
    import litdata

    np.save(where.parent / "x.npy", x)
    np.save(where.parent / "y.npy", y)
    os.environ["BENCH_FORMATS_X"] = str(where.parent / "x.npy")
    os.environ["BENCH_FORMATS_Y"] = str(where.parent / "y.npy")
    seconds = timed(
        lambda: litdata.optimize(
            fn=_sample,
            inputs=list(range(len(x))),
            output_dir=str(where),
            chunk_bytes="64MB",
            num_workers=2,
        )
    )
    dataset = litdata.StreamingDataset(str(where))
    rng = np.random.default_rng(1)
    read = timed(
        lambda: [
            [dataset[int(i)] for i in rng.choice(len(x), BATCH, replace=False)]
            for _ in range(BATCHES)
        ]
    )
    return len(x) / seconds, BATCH * BATCHES / read


def webdataset_format(x: np.ndarray, y: np.ndarray, where: Path) -> tuple[float, float]:
    import webdataset as wds

    tar = str(where / "shard-000000.tar")

    def write() -> None:
        with wds.TarWriter(tar) as sink:
            for index in range(len(x)):
                sink.write({"__key__": f"{index:06d}", "npy": x[index], "cls": int(y[index])})

    seconds = timed(write)
    count = BATCH * BATCHES

    def read() -> None:
        stream = wds.WebDataset(tar, shardshuffle=False).shuffle(1000).decode()
        for seen, _ in enumerate(stream, 1):
            if seen >= count:
                break

    return len(x) / seconds, count / timed(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_data_formats"))
    args = parser.parse_args()
    x, y = images(args.images, args.size)
    print(f"{args.images:,} images of 3x{args.size}x{args.size} ({x.nbytes / 1e6:,.0f} MB)")
    for name, run in (
        ("memmap", memmap),
        ("litdata", litdata_format),
        ("webdataset", webdataset_format),
    ):
        where = args.work / name
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        try:
            write, read = run(x, y, where)
        except ImportError as error:
            print(f"{name:<11} not installed ({error})")
            continue
        print(f"{name:<11} write {write:>9,.0f} images/s   random batches {read:>9,.0f} images/s")


if __name__ == "__main__":
    main()
